"""Reconciliation end to end in one process: webhooks partly lost, Plivo's records served by a
local server that answers as the Call API does, and the views equal to what really happened."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from callstatus.core import rollups
from callstatus.core.db import Database
from callstatus.core.duplicates import DuplicateTracker
from callstatus.core.records import EventRecord, make_record
from callstatus.core.settings import Settings
from callstatus.reconcile.client import CallApi
from callstatus.reconcile.run import ReconcileJob, Window, reconcile
from callstatus.simulator.call_api import CallApiServer
from callstatus.simulator.traffic import Call, TrafficModel
from tests.factories import assert_rollups_equal_views, call_webhooks, deliver, make_settings

AUTH_ID = "MARECONCILE000000001"
TOKEN = "reconcile-token"
CALLS = 160
# Times that come from arrival on one side and from Plivo's clock on the other.
TOLERANCE = timedelta(seconds=12)

CALL_COLUMNS = (
    "call_uuid", "direction", "from_number", "to_number", "started_at", "answered_at", "ended_at",
    "duration_s", "bill_duration_s", "call_status", "hangup_cause_code", "hangup_cause_name",
    "hangup_source", "answered", "outcome",
)  # fmt: skip
LEG_COLUMNS = (
    "a_leg_uuid", "b_leg_uuid", "b_leg_to", "b_leg_from", "answered", "duration_s",
    "bill_duration_s", "hangup_cause_code", "hangup_cause_name", "hangup_source", "outcome",
)  # fmt: skip
CALL_KINDS = {"answer", "fallback", "hangup", "ring", "machine_detection"}
DIAL_COLUMNS = ("a_leg_uuid", "b_leg_uuid", "dial_status", "dial_ring_status")


def _calls(now: datetime) -> list[Call]:
    """CALLS calls of one seed over the two days before an hour ago (all ended by now)."""
    model = TrafficModel(seed=12)
    end = (now - timedelta(hours=1)).timestamp()
    starts = model.starts(CALLS, end, 2.0, model.rng(-1))
    return [model.call(i, at) for i, at in enumerate(starts)]


def lost(call: Call) -> str:
    """What this test's call loses, by index: everything, the hangup, the Dial's webhooks."""
    return ("everything", "hangup", "dial", "nothing", "nothing")[call.index % 5]


def _partial(call: Call) -> list[EventRecord]:
    loss = lost(call)
    if loss == "everything":
        return []
    if loss == "hangup":
        return call_webhooks(call, lambda hook: hook.kind != "hangup")
    if loss == "dial":
        return call_webhooks(call, lambda hook: hook.kind not in ("dial_action", "dial_callback"))
    return call_webhooks(call)


def _open(path: Path, records: list[EventRecord]) -> Database:
    db = Database(path)
    deliver(db, records, DuplicateTracker())
    return db


def _rows(db: Database, view: str, columns: tuple[str, ...], key: str) -> dict[str, dict[str, Any]]:
    cur = db.cursor()
    names = [*columns, "source"] if view != "dials" else [*columns, "source", "received_at"]
    extra = ", position, answered_at, ended_at, end_source" if view == "dial_legs" else ""
    extra += ", hangup_cause, end_source" if view == "calls" else ""
    result = cur.execute(f"SELECT {', '.join(names)}{extra} FROM {view}")
    found = [d[0] for d in result.description]
    return {row[found.index(key)]: dict(zip(found, row, strict=True)) for row in result.fetchall()}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    now = datetime.now(UTC)
    calls = _calls(now)
    folder = tmp_path_factory.mktemp("reconcile")
    truth = _open(folder / "truth.duckdb", [r for c in calls for r in call_webhooks(c)])
    partial = _open(folder / "partial.duckdb", [r for c in calls for r in _partial(c)])
    records = [record for call in calls for record in call.records]
    with CallApiServer(records, auth_id=AUTH_ID, token=TOKEN) as api:
        settings = make_settings(
            folder, CALLSTATUS_DB=folder / "partial.duckdb", PLIVO_AUTH_ID=AUTH_ID,
            PLIVO_API_TOKEN=TOKEN, PLIVO_API_URL=api.url,
        )  # fmt: skip
        window = Window(now - timedelta(days=3), now)
        client = CallApi.from_settings(settings)
        first = reconcile(partial.cursor(), client, window, settings, trigger="command")
        yield {
            "calls": calls, "truth": truth, "partial": partial, "first": first, "api": api,
            "settings": settings, "window": window, "client": client, "records": records,
        }  # fmt: skip
        client.close()
    truth.close()
    partial.close()


def test_calls_equal_what_really_happened(world: dict[str, Any]) -> None:
    truth = _rows(world["truth"], "calls", CALL_COLUMNS, "call_uuid")
    got = _rows(world["partial"], "calls", CALL_COLUMNS, "call_uuid")
    assert set(got) == set(truth) and len(got) == CALLS
    by_uuid = {c.call_uuid: c for c in world["calls"]}
    for uuid, row in got.items():
        want, loss = truth[uuid], lost(by_uuid[uuid])
        for column in CALL_COLUMNS:
            assert row[column] == want[column], (uuid, loss, column)
        # An outbound call that failed before ringing sends its hangup only.
        kept = {r.kind for r in _partial(by_uuid[uuid])} & CALL_KINDS
        assert row["source"] == ("both" if kept else "cdr"), (uuid, loss)
        assert row["end_source"] == ("cdr" if loss in ("everything", "hangup") else "webhooks")
        # Records carry no telephony cause: only a hangup webhook gives it.
        if row["end_source"] == "webhooks":
            assert row["hangup_cause"] == want["hangup_cause"]
        else:
            assert row["hangup_cause"] is None


def test_dial_legs_equal_what_really_happened(world: dict[str, Any]) -> None:
    truth = _rows(world["truth"], "dial_legs", LEG_COLUMNS, "b_leg_uuid")
    got = _rows(world["partial"], "dial_legs", LEG_COLUMNS, "b_leg_uuid")
    assert truth and set(got) == set(truth)
    legs_only_from_records = 0
    for uuid, row in got.items():
        want = truth[uuid]
        for column in LEG_COLUMNS:
            assert row[column] == want[column], (uuid, column)
        for column in ("answered_at", "ended_at"):
            if want[column] is None:
                assert row[column] is None, (uuid, column)
            else:
                assert abs(row[column] - want[column]) <= TOLERANCE, (uuid, column)
        if row["source"] == "cdr":
            legs_only_from_records += 1
            assert row["position"] is None  # records do not know it
        else:
            assert row["position"] == want["position"]
    assert legs_only_from_records == world["first"].legs_added > 0


def test_dials_equal_what_really_happened(world: dict[str, Any]) -> None:
    truth = _rows(world["truth"], "dials", DIAL_COLUMNS, "a_leg_uuid")
    got = _rows(world["partial"], "dials", DIAL_COLUMNS, "a_leg_uuid")
    assert truth and set(got) == set(truth)
    inferred = 0
    for uuid, row in got.items():
        for column in DIAL_COLUMNS:
            assert row[column] == truth[uuid][column], (uuid, column)
        assert abs(row["received_at"] - truth[uuid]["received_at"]) <= TOLERANCE
        inferred += row["source"] == "cdr"
    assert inferred > 0


def test_the_summary_counts_what_changed(world: dict[str, Any]) -> None:
    first, calls = world["first"], world["calls"]
    assert first.status == "ok", first.error
    assert first.records_read == first.records_new == len(world["records"])
    kept = [{r.kind for r in _partial(c)} & CALL_KINDS for c in calls]
    assert first.calls_added == sum(not k for k in kept)
    assert first.calls_completed == sum(
        bool(k) and lost(c) == "hangup" for c, k in zip(calls, kept, strict=True)
    )
    assert first.calls_had == CALLS - first.calls_added - first.calls_completed
    (row,) = (
        world["partial"]
        .cursor()
        .execute(
            "SELECT status, records_new, calls_added, calls_completed, trigger"
            " FROM reconcile_runs WHERE run_id = ?",
            [first.run_id],
        )
        .fetchall()
    )
    assert row == ("ok", first.records_new, first.calls_added, first.calls_completed, "command")


def test_a_second_run_adds_nothing(world: dict[str, Any]) -> None:
    db: Database = world["partial"]
    before = {v: _rows(db, v, c, k) for v, c, k in _VIEWS}
    (stored,) = db.cursor().execute("SELECT count(*) FROM webhook_events").fetchall()[0]
    again = reconcile(
        db.cursor(), world["client"], world["window"], world["settings"], trigger="command"
    )
    assert again.status == "ok" and again.records_read == len(world["records"])
    assert again.records_new == again.calls_added == again.calls_completed == 0
    assert "nothing new" in again.describe()
    assert db.cursor().execute("SELECT count(*) FROM webhook_events").fetchall()[0] == (stored,)
    assert {v: _rows(db, v, c, k) for v, c, k in _VIEWS} == before


def test_rollups_take_records_in(world: dict[str, Any]) -> None:
    db: Database = world["partial"]
    rollups.refresh(db.cursor(), full=True)
    assert_rollups_equal_views(db)


def test_rollups_refreshed_incrementally_take_late_records_in(tmp_path: Path) -> None:
    """Rollups built before the records came: a refresh finds the old webhooks of the calls
    the records complete, however long ago they arrived."""
    now = datetime.now(UTC)
    calls = _calls(now)[:40]
    db = _open(tmp_path / "late.duckdb", [r for c in calls for r in _partial(c)])
    rollups.refresh(db.cursor(), full=True)
    late = now + timedelta(days=5)  # fetched long after every webhook
    records = [
        make_record("cdr", "GET", dict(record), "api", late)
        for call in calls
        for record in call.records
    ]
    deliver(db, records, DuplicateTracker())
    assert rollups.refresh(db.cursor()) == len(records)
    assert_rollups_equal_views(db)
    (both,) = (
        db.cursor().execute("SELECT count(*) FROM calls_rollup WHERE source = 'both'").fetchall()[0]
    )
    assert both == sum(bool({r.kind for r in _partial(c)} & CALL_KINDS) for c in calls)
    db.close()


_VIEWS = (
    ("calls", CALL_COLUMNS, "call_uuid"),
    ("dial_legs", LEG_COLUMNS, "b_leg_uuid"),
    ("dials", DIAL_COLUMNS, "a_leg_uuid"),
)


def _record(uuid: str, end: datetime, **fields: Any) -> dict[str, Any]:
    return {
        "call_uuid": uuid, "parent_call_uuid": None, "call_direction": "outbound",
        "from_number": "14155550100", "to_number": "14155550199",
        "initiation_time": (end - timedelta(seconds=40)).isoformat(sep=" ", timespec="seconds"),
        "answer_time": (end - timedelta(seconds=30)).isoformat(sep=" ", timespec="seconds"),
        "end_time": end.isoformat(sep=" ", timespec="seconds"), "call_duration": 30,
        "bill_duration": 60, "hangup_cause_code": 4000, "hangup_cause_name": "Normal Hangup",
        "hangup_source": "Callee", **fields,
    }  # fmt: skip


def _job_settings(path: Path, url: str, **env: str) -> Settings:
    return make_settings(
        path.parent, CALLSTATUS_DB=path, PLIVO_AUTH_ID=AUTH_ID, PLIVO_API_TOKEN=TOKEN,
        PLIVO_API_URL=url, **env,
    )  # fmt: skip


def test_the_job_skips_calls_inside_the_grace_period(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    ended_long_ago = _record("call-long-ago", now - timedelta(minutes=20))
    just_ended = _record("call-just-ended", now - timedelta(seconds=60))
    with CallApiServer([ended_long_ago, just_ended], auth_id=AUTH_ID, token=TOKEN) as api:
        settings = _job_settings(tmp_path / "grace.duckdb", api.url)
        assert settings.reconcile_grace_s == 300
        db = Database(settings.db)
        summary = ReconcileJob(db, settings).run_due()
        ran = datetime.now(UTC)
        assert summary is not None and summary.status == "ok"
        uuids = {r[0] for r in db.cursor().execute("SELECT call_uuid FROM calls").fetchall()}
        assert uuids == {"call-long-ago"}
        # The window ends the grace period before the run's own moment.
        grace = timedelta(seconds=300)
        assert now - grace <= summary.window_end <= ran - grace
        db.close()


def test_the_job_resumes_after_a_restart_from_its_last_window(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    with CallApiServer(
        [_record("c1", now - timedelta(hours=2))], auth_id=AUTH_ID, token=TOKEN
    ) as api:
        settings = _job_settings(tmp_path / "resume.duckdb", api.url)
        db = Database(settings.db)
        first = ReconcileJob(db, settings).run_due()
        assert first is not None and first.records_new == 1
        db.close()
        # A restart: a new process, the same file. The next run starts at the last window's end
        # minus the overlap, not a day back.
        api.requests.clear()
        db = Database(settings.db)
        second = ReconcileJob(db, settings).run_due()
        assert second is not None and second.records_new == 0
        assert second.window_start == first.window_end - timedelta(hours=1)
        asked = {r.query.get("end_time__gte") for r in api.requests}
        assert asked == {(first.window_end - timedelta(hours=1)).strftime("%Y-%m-%d %H:%M:%S")}
        db.close()


def test_a_failing_api_is_a_failed_run_with_its_reason(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    with CallApiServer(
        [_record("c1", now - timedelta(hours=2))], auth_id=AUTH_ID, token="other"
    ) as api:
        settings = _job_settings(tmp_path / "fail.duckdb", api.url)
        db = Database(settings.db)
        job = ReconcileJob(db, settings)
        with pytest.raises(RuntimeError, match="PLIVO_AUTH_ID"):
            job.run_due()
        (row,) = db.cursor().execute("SELECT status, error FROM reconcile_runs").fetchall()
        assert row[0] == "error" and "PLIVO_AUTH_ID" in row[1] and TOKEN not in row[1]
        db.close()
