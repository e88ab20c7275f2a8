"""Completeness on Receiver health: calls with webhooks against Plivo's call records, checked
against plain SQL counts over a database holding every kind of call; the last reconcile run as
text; webhook figures that leave records out; the overview's notice."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pytest

from callstatus.core import rollups
from callstatus.core import settings as settings_module
from callstatus.core.db import Database
from callstatus.core.records import EventRecord, make_record
from callstatus.core.storage import insert_events
from callstatus.core.typed import CDR_KIND
from callstatus.dashboard import connection
from callstatus.dashboard.filters import Filters
from callstatus.dashboard.queries import completeness, health, overview
from callstatus.dashboard.queries.relations import ROLLUPS, VIEWS
from callstatus.dashboard.screens.completeness import duration, next_run, run_summary
from callstatus.dashboard.text import code
from tests.factories import make_settings

OURS = "+14155550100"
# 10:00 in New York (EST, -05:00): the sample's calls span two local days, and one call at
# 23:30 local falls on the next day in UTC.
DAY0 = datetime(2026, 11, 2, 15, 0, tzinfo=UTC)

# (name, hours after day0, what we know of it, direction). `webhooks`: answer and hangup
# webhooks, no record; `both`: the same and its record; `completed`: the answer webhook and the
# record (the hangup webhook was lost); `added`: the record only; `live`: an answer webhook only
# (in progress, no record yet).
CALLS: tuple[tuple[str, float, str, str], ...] = (
    ("w1", 0, "webhooks", "inbound"),
    ("w2", 1, "webhooks", "inbound"),
    ("b1", 2, "both", "inbound"),
    ("c1", 3, "completed", "inbound"),
    ("a1", 4, "added", "inbound"),
    ("a2", 5, "added", "outbound"),
    ("n1", 13.5, "added", "inbound"),
    ("w3", 24, "webhooks", "inbound"),
    ("b2", 25, "both", "inbound"),
    ("b3", 26, "both", "outbound"),
    ("c2", 27, "completed", "inbound"),
    ("c3", 28, "completed", "inbound"),
    ("a3", 29, "added", "inbound"),
    ("p1", 30, "live", "inbound"),
)
# What the sample holds, by construction (the tests also count it with plain SQL).
EXPECTED = {
    "calls": 14,
    "reported": 10,
    "with_webhooks": 10,
    "completed": 3,
    "added": 4,
}
# Per day in New York, newest first: (calls, reported, with_webhooks, completed, added).
EXPECTED_NEW_YORK = [(7, 5, 6, 2, 1), (7, 5, 4, 1, 3)]
EXPECTED_UTC = [(8, 6, 6, 2, 2), (6, 4, 4, 1, 2)]
FETCHED_AFTER = timedelta(hours=31)  # when the records were fetched, after day0


def call_id(name: str, day0: datetime) -> str:
    """A UUID per call and sample, stable for one day0."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{name}@{day0.isoformat()}"))


def _plivo_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _numbers(direction: str, name: str) -> tuple[str, str]:
    them = "+1555000" + str(sum(map(ord, name))).zfill(4)
    return (them, OURS) if direction == "inbound" else (OURS, them)


def _webhooks(name: str, start: datetime, how: str, direction: str, day0: datetime) -> list[Any]:
    call = call_id(name, day0)
    source, dest = _numbers(direction, name)
    common = {"CallUUID": call, "Direction": direction, "From": source, "To": dest}
    answer = make_record(
        "answer", "POST", {**common, "CallStatus": "in-progress"}, "unchecked", start
    )
    if how in ("completed", "live"):
        return [answer]
    end = start + timedelta(minutes=2)
    hangup = {
        **common,
        "CallStatus": "completed",
        "HangupCauseCode": "4000",
        "HangupCauseName": "Normal Hangup",
        "HangupCause": "NORMAL_CLEARING",
        "HangupSource": "Caller",
        "StartTime": _plivo_time(start),
        "AnswerTime": _plivo_time(start + timedelta(seconds=5)),
        "EndTime": _plivo_time(end),
        "Duration": "120",
        "BillDuration": "115",
    }
    return [answer, make_record("hangup", "POST", hangup, "unchecked", end)]


def call_record(
    call: str, start: datetime, direction: str, numbers: tuple[str, str], parent: str | None = None
) -> dict[str, Any]:
    """A record as Plivo's Call API returns one (contract: fields kept verbatim)."""
    end = start + timedelta(minutes=2)
    return {
        "call_uuid": call,
        "parent_call_uuid": parent,
        "call_direction": direction,
        "from_number": numbers[0],
        "to_number": numbers[1],
        "initiation_time": f"{_plivo_time(start)}+00:00",
        "answer_time": f"{_plivo_time(start + timedelta(seconds=5))}+00:00",
        "end_time": f"{_plivo_time(end)}+00:00",
        "call_duration": 120,
        "bill_duration": 115,
        "billed_duration": 120,
        "hangup_cause_code": 4000,
        "hangup_cause_name": "Normal Hangup",
        "hangup_source": "Caller",
        "total_amount": "0.00950",
        "total_rate": "0.00475",
        "resource_uri": f"/v1/Account/MA0000/Call/{call}/",
    }


def sample_records(day0: datetime) -> list[EventRecord]:
    """Every webhook and record of the sample (CALLS), plus two B-leg records (never calls)."""
    fetched = day0 + FETCHED_AFTER
    stored: list[EventRecord] = []
    for name, hours, how, direction in CALLS:
        start = day0 + timedelta(hours=hours)
        if how != "added":
            stored += _webhooks(name, start, how, direction, day0)
        if how in ("both", "completed", "added"):
            record = call_record(call_id(name, day0), start, direction, _numbers(direction, name))
            stored.append(make_record(CDR_KIND, "GET", record, "api", fetched))
    for a_leg in ("b1", "a1"):
        b_leg = call_record(
            call_id(a_leg + "-b", day0),
            day0 + timedelta(hours=2),
            "outbound",
            (OURS, "+17005550001"),
            parent=call_id(a_leg, day0),
        )
        stored.append(make_record(CDR_KIND, "GET", b_leg, "api", fetched))
    return stored


def add_run(
    cur: duckdb.DuckDBPyConnection,
    started: datetime,
    status: str = "ok",
    trigger: str = "job",
    error: str | None = None,
    finished: datetime | None = None,
) -> None:
    """One reconcile_runs row, as a run of callstatus/reconcile would leave it."""
    cur.execute(
        "INSERT INTO reconcile_runs VALUES (?, ?, ?, ?, ?, ?, 12, 12, 3, 3, 4, 2, ?, ?)",
        [
            str(uuid.uuid4()),
            started,
            None if status == "running" else (finished or started + timedelta(seconds=4)),
            trigger,
            started - timedelta(days=2),
            started - timedelta(minutes=5),
            status,
            error,
        ],
    )


def store_sample(db: Database, day0: datetime, *, run: bool = True) -> None:
    """The sample's webhooks and records in `db`, and (with `run`) the run that fetched them."""
    cur = db.cursor()
    cur.execute("BEGIN")
    insert_events(cur, sample_records(day0), "UTC")
    if run:
        add_run(cur, day0 + FETCHED_AFTER)
    cur.execute("COMMIT")


# Plain definitions, on the views: what the dashboard's figures must equal.
HAND_TOTALS = """
SELECT count(*), count(*) FILTER (WHERE source IN ('cdr', 'both')),
       count(*) FILTER (WHERE source IN ('webhooks', 'both')),
       count(*) FILTER (WHERE source = 'both' AND end_source = 'cdr'),
       count(*) FILTER (WHERE source = 'cdr')
FROM calls WHERE started_at >= $start AND started_at < $end
"""
HAND_PER_DAY = """
SELECT CAST(timezone($tz, started_at) AS DATE) AS day, count(*),
       count(*) FILTER (WHERE source IN ('cdr', 'both')),
       count(*) FILTER (WHERE source IN ('webhooks', 'both')),
       count(*) FILTER (WHERE source = 'both' AND end_source = 'cdr'),
       count(*) FILTER (WHERE source = 'cdr')
FROM calls WHERE started_at >= $start AND started_at < $end GROUP BY day ORDER BY day DESC
"""


def hand_counts(path: Path, sql: str, params: dict[str, object]) -> list[tuple[Any, ...]]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        con.execute("SET TimeZone = 'UTC'")
        return con.execute(sql, params).fetchall()
    finally:
        con.close()


@pytest.fixture(params=["rollups", "views"])
def sample(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    path = tmp_path / "records.duckdb"
    database = Database(path)
    store_sample(database, DAY0)
    if request.param == "rollups":
        rollups.refresh(database.cursor())
    database.close()
    monkeypatch.setenv("CALLSTATUS_DB", str(path))
    settings_module.get_settings.cache_clear()
    yield path
    settings_module.get_settings.cache_clear()


RANGE = Filters(
    start=DAY0 - timedelta(hours=1),
    end=DAY0 + timedelta(days=2),
    bucket="1 day",
    tz="America/New_York",
)
FIGURES = ["calls", "reported", "with_webhooks", "completed", "added"]


def test_totals_equal_plain_counts_and_the_sample(
    sample: Path, request: pytest.FixtureRequest
) -> None:
    rel = connection.relations()
    assert rel is (ROLLUPS if request.node.callspec.params["sample"] == "rollups" else VIEWS)
    result = completeness.totals(rel, RANGE)
    assert ("calls_rollup" in result.sql) == rel.stored
    row = result.frame.iloc[0]
    [hand] = hand_counts(sample, HAND_TOTALS, {"start": RANGE.start, "end": RANGE.end})
    assert tuple(int(row[name]) for name in FIGURES) == hand
    assert {name: int(row[name]) for name in FIGURES} == EXPECTED
    assert row["missed_share"] == pytest.approx(4 / 14)


@pytest.mark.parametrize(
    ("tz", "expected"), [("America/New_York", EXPECTED_NEW_YORK), ("UTC", EXPECTED_UTC)]
)
def test_per_day_equals_plain_counts_in_the_zone(
    sample: Path, tz: str, expected: list[tuple[int, ...]]
) -> None:
    f = Filters(start=RANGE.start, end=RANGE.end, bucket="1 day", tz=tz)
    frame = completeness.per_day(connection.relations(), f).frame
    hand = hand_counts(sample, HAND_PER_DAY, {"start": f.start, "end": f.end, "tz": tz})
    got = [
        (row.day.date(), *(int(getattr(row, name)) for name in FIGURES))
        for row in frame.itertuples()
    ]
    assert got == [tuple(row) for row in hand]
    assert [row[1:] for row in got] == expected
    shares = list(frame["missed_share"])
    assert shares == pytest.approx([added / calls for calls, *_, added in expected])


def test_a_range_cuts_calls_by_their_start(sample: Path) -> None:
    # From 02:30 UTC on day two: n1 (04:30 UTC) and the second day's calls, not the first's.
    f = Filters(start=DAY0 + timedelta(hours=11, minutes=30), end=RANGE.end, tz="UTC")
    row = completeness.totals(connection.relations(), f).frame.iloc[0]
    [hand] = hand_counts(sample, HAND_TOTALS, {"start": f.start, "end": f.end})
    assert tuple(int(row[name]) for name in FIGURES) == hand == (8, 6, 6, 2, 2)
    empty = Filters(start=DAY0 - timedelta(days=9), end=DAY0 - timedelta(days=8))
    none = completeness.totals(connection.relations(), empty).frame.iloc[0]
    assert int(none["calls"]) == 0 and pd.isna(none["missed_share"])
    assert completeness.per_day(connection.relations(), empty).frame.empty


def test_the_last_run_is_the_newest(sample: Path) -> None:
    database = Database(sample)
    cur = database.cursor()
    later = DAY0 + FETCHED_AFTER + timedelta(hours=1)
    add_run(cur, later, status="error", trigger="command", error="401 from Plivo")
    database.close()
    settings_module.get_settings.cache_clear()
    frame = completeness.last_run().frame
    assert len(frame) == 1
    run = frame.iloc[0]
    assert (run["status"], run["trigger"], run["error"]) == ("error", "command", "401 from Plivo")
    # The job's newest run ended 4 s after it started; the command's does not count.
    assert pd.Timestamp(run["last_job_end"]) == pd.Timestamp(
        DAY0 + FETCHED_AFTER + timedelta(seconds=4)
    )


def test_no_run_gives_no_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "none.duckdb"
    Database(path).close()
    monkeypatch.setenv("CALLSTATUS_DB", str(path))
    settings_module.get_settings.cache_clear()
    try:
        assert completeness.last_run().frame.empty
    finally:
        settings_module.get_settings.cache_clear()


def test_webhook_figures_leave_records_out(sample: Path) -> None:
    f = Filters(start=RANGE.start, end=DAY0 + timedelta(days=3), bucket="1 hour")
    rel = connection.relations()
    counts = hand_counts(
        sample,
        "SELECT count(*) FILTER (WHERE kind <> 'cdr'), count(*) FILTER (WHERE kind = 'cdr'), "
        "max(received_at) FILTER (WHERE kind <> 'cdr') FROM webhook_events",
        {},
    )
    webhooks, records, last = counts[0]
    assert records == 12 and webhooks == 16  # else this test proves nothing
    per_kind = health.webhooks_per_kind(rel, f).frame
    assert CDR_KIND not in set(per_kind["kind"])
    assert int(per_kind["webhooks"].sum()) == webhooks
    totals = health.receiver_totals(rel, f).frame.iloc[0]
    assert int(totals["webhooks"]) == webhooks
    # The records were fetched after the last webhook: "since last webhook" ignores them.
    assert pd.Timestamp(totals["last_event_at"]) == pd.Timestamp(last)


def test_overview_counts_calls_known_only_from_records(sample: Path) -> None:
    rel = connection.relations()
    row = overview.kpis(rel, RANGE).frame.iloc[0]
    assert (int(row["records_only_calls"]), int(row["calls"])) == (4, 14)
    assert row["records_only_share"] == pytest.approx(4 / 14)
    # The overview's slices apply: a2 is the one outbound call added from records.
    inbound = overview.kpis(rel, Filters(RANGE.start, RANGE.end, direction="inbound")).frame
    assert int(inbound.iloc[0]["records_only_calls"]) == 3


# -- the last run as text ----------------------------------------------------------------------


def _run(**changes: object) -> pd.Series:
    started = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
    row: dict[str, object] = {
        "started_at": pd.Timestamp(started),
        "finished_at": pd.Timestamp(started + timedelta(seconds=42)),
        "trigger": "job",
        "window_start": pd.Timestamp(started - timedelta(minutes=15)),
        "window_end": pd.Timestamp(started - timedelta(minutes=5)),
        "records_read": 1204,
        "records_new": 17,
        "calls_had": 1187,
        "calls_completed": 9,
        "calls_added": 8,
        "legs_added": 1,
        "status": "ok",
        "error": None,
        "last_job_end": pd.Timestamp(started + timedelta(seconds=42)),
    }
    row.update(changes)
    return pd.Series(row)


def test_an_ok_run_says_what_it_found_in_the_chosen_zone() -> None:
    kind, text = run_summary(_run(), "Asia/Kolkata")
    assert kind == "ok"
    assert text == (
        "Last reconcile run **ok** at 2026-12-01 15:30 (by the background job, records that "
        "ended 2026-12-01 15:15 → 2026-12-01 15:25): 1,204 records read, 17 new; 1,187 calls "
        "had every webhook, 9 completed and 8 added from records, 1 B leg added."
    )


def test_a_failed_run_quotes_its_error_as_code() -> None:
    planted = "HTTP 401 [login](http://evil.example) `x`"
    kind, text = run_summary(_run(status="error", error=planted, trigger="command"), "UTC")
    assert kind == "error"
    assert "**failed**" in text and "by `callstatus reconcile`" in text
    assert code(planted) in text and "[login](http" not in text.replace(code(planted), "")


def test_a_running_run_says_since_when() -> None:
    kind, text = run_summary(_run(status="running", finished_at=None), "UTC")
    assert kind == "running"
    assert text.startswith("A reconcile run is **running** since 2026-12-01 10:00")


def test_the_next_background_run(tmp_path: Path) -> None:
    configured = make_settings(tmp_path, PLIVO_AUTH_ID="MA0001", PLIVO_API_TOKEN="t")
    run = _run()
    soon = datetime(2026, 12, 1, 10, 5, tzinfo=UTC)
    assert next_run(configured, True, run, "UTC", soon) == (
        "Next background run due about 2026-12-01 10:10 (every 10 min)."
    )
    late = soon + timedelta(hours=1)
    assert (
        next_run(configured, True, run, "UTC", late)
        == "Next background run due now (every 10 min)."
    )
    assert next_run(configured, False, run, "UTC", soon) == "Background runs every 10 min."
    off = make_settings(
        tmp_path, PLIVO_AUTH_ID="MA0001", PLIVO_API_TOKEN="t", CALLSTATUS_RECONCILE_INTERVAL=0
    )
    assert next_run(off, True, run, "UTC", soon) == (
        "Background runs are off (`CALLSTATUS_RECONCILE_INTERVAL=0`)."
    )
    unset = make_settings(tmp_path, PLIVO_AUTH_ID=None)
    assert "`PLIVO_AUTH_ID`" in next_run(unset, True, run, "UTC", soon)
    assert duration(600) == "10 min" and duration(7200) == "2 h" and duration(45) == "45 s"
