"""What an attacker (or a stuck client) can make the database hold is bounded: repeats of one
webhook are counted, not stored; refused requests are pruned oldest first; the hourly budget of
refused rows survives a restart; the WAL is checkpointed past its bound."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import httpx
import pytest
from streamlit.testing.v1 import AppTest

from callstatus.analyst import sandbox as safe_sql
from callstatus.cli import main as callstatus_cli
from callstatus.core import rollups
from callstatus.core import settings as settings_module
from callstatus.core.db import Database
from callstatus.core.duplicates import DuplicateTracker, add_repeats
from callstatus.core.records import EventRecord, make_record
from callstatus.dashboard import tiles
from callstatus.receiver import metrics, rejected
from callstatus.receiver.rejected import RejectedRecord, row_bytes
from callstatus.receiver.spool import Spool
from callstatus.receiver.writer import Writer
from tests.factories import (
    T0,
    app_client,
    metric,
    read_file,
    rows,
    sample_records,
    signed_request,
    store,
    wait_until,
)
from tests.servers import start_server

TOKEN = "bounded-growth-token"
APP = str(Path(__file__).resolve().parents[2] / "callstatus" / "dashboard" / "app.py")


def test_a_replayed_signed_webhook_is_stored_three_times_and_the_rest_counted(
    tmp_path: Path,
) -> None:
    """The attack: one captured, validly signed webhook sent 500 times, concurrently. Then a
    flood of refused requests with 48 KB bodies: rejected_webhooks stays within 64 MiB."""
    db = tmp_path / "bounded.duckdb"
    server = start_server(db, {"PLIVO_AUTH_TOKEN": TOKEN})
    replayed = [("CallUUID", "replayed-1"), ("Event", "Hangup"), ("Duration", "42")]
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:

            def replay(_: int) -> int:
                response = signed_request(
                    client,
                    "POST",
                    "/plivo/hangup",
                    replayed,
                    base=server.url,
                    token=TOKEN,
                    nonce="captured-nonce",
                )
                return response.status_code

            def fresh(i: int) -> int:
                pairs = [("CallUUID", f"fresh-{i}"), ("Duration", "7")]
                response = signed_request(
                    client, "POST", "/plivo/hangup", pairs, base=server.url, token=TOKEN
                )
                return response.status_code

            with ThreadPoolExecutor(8) as pool:
                replies = list(pool.map(replay, range(500)))
                fresh_replies = list(pool.map(fresh, range(20)))
            assert replies == [200] * 500
            assert fresh_replies == [200] * 20
            counted = metric(client, "callstatus_webhook_repeats_not_stored_total", kind="hangup")

            # Refused requests: 1,450 unsigned 48 KB bodies, 70 MB of headers and parameters
            # against a bound of 64 MiB. The first 100 and the last 100 are sent alone.
            body = "x" * 48_000

            def refused(i: int) -> int:
                return client.post(
                    "/plivo/hangup", data={"CallUUID": f"refused-{i}", "Big": body}
                ).status_code

            statuses = [refused(i) for i in range(100)]
            with ThreadPoolExecutor(8) as pool:
                statuses += list(pool.map(refused, range(100, 1350)))
            statuses += [refused(i) for i in range(1350, 1450)]
            assert statuses == [403] * 1450
            # Refused requests are recorded by the writer without anyone waiting: a stored
            # webhook after them is settled only once they were written (and pruned).
            assert fresh(10_000) == 200
            pruned = metric(client, "callstatus_rejected_pruned_total")
    finally:
        assert server.stop(signal.SIGTERM) == 0
    assert counted == 497
    assert pruned > 0
    log = server.log.read_text()
    assert "Traceback" not in log, log[-3000:]

    [(stored,)] = read_file(
        db, "SELECT count(*) FROM webhook_events WHERE call_uuid = 'replayed-1'"
    )
    [(repeats,)] = read_file(db, "SELECT sum(repeats) FROM webhook_repeats WHERE kind = 'hangup'")
    [(fresh_stored,)] = read_file(
        db, "SELECT count(*) FROM webhook_events WHERE call_uuid LIKE 'fresh-%'"
    )
    assert stored == 3
    assert repeats == 497
    assert fresh_stored == 21
    # The analysts' snapshot, written at stop, holds the counts too.
    snapshot = db.with_name("bounded-snapshot.duckdb")
    assert read_file(snapshot, "SELECT sum(repeats) FROM webhook_repeats") == [(497,)]

    [(kept, kept_bytes)] = read_file(
        db,
        "SELECT count(*), sum(strlen(headers::VARCHAR) + strlen(params::VARCHAR))"
        " FROM rejected_webhooks",
    )
    kept_ids = {
        int(str(value).removeprefix("refused-"))
        for (value,) in read_file(db, "SELECT params->>'CallUUID' FROM rejected_webhooks")
    }
    assert isinstance(kept_bytes, int) and kept_bytes <= 64 * 2**20
    # Pruned to 90% of the bound, not to nothing: about 1,240 rows of 48 KB.
    assert isinstance(kept, int) and kept_bytes > 0.85 * 64 * 2**20 and kept > 1100
    # Oldest first: none of the first hundred is left, all of the last hundred are.
    assert not kept_ids & set(range(100))
    assert set(range(1350, 1450)) <= kept_ids


def _rejected(i: int, size: int, at: datetime) -> RejectedRecord:
    return RejectedRecord(
        rejected_id=f"00000000-0000-4000-8000-{i:012d}",
        received_at=at,
        reason="missing_signature",
        path="/plivo/hangup",
        http_method="POST",
        checked_url="http://testserver/plivo/hangup",
        headers_json='{"host": "testserver"}',
        params_json='{"Big": "' + "x" * size + '"}',
        truncated=False,
    )


@pytest.fixture
def writer(tmp_path: Path) -> Iterator[tuple[Writer, Database]]:
    database = Database(tmp_path / "writer.duckdb")
    writer = Writer(
        database,
        Spool(tmp_path / "spool"),
        "UTC",
        rejected_max_rows=100,
        rejected_max_bytes=200_000,
        wal_checkpoint_bytes=1 * 2**20,
    )
    writer.start()
    try:
        yield writer, database
    finally:
        writer.stop()
        database.close()


def _settled(writer: Writer, records: Sequence[EventRecord]) -> list[str]:
    """Store records concurrently from one event loop; their outcomes."""

    async def run() -> list[str]:
        return list(await asyncio.gather(*(writer.store(r) for r in records)))

    return asyncio.run(run())


@pytest.mark.parametrize(("size", "bound"), [(100, "rows"), (5_000, "bytes")])
def test_rejected_webhooks_keep_the_newest_rows_within_both_bounds(
    writer: tuple[Writer, Database], size: int, bound: str
) -> None:
    w, database = writer
    start = datetime.now(UTC)
    records = [_rejected(i, size, start + timedelta(milliseconds=i)) for i in range(600)]
    for chunk in range(0, 600, 50):
        for record in records[chunk : chunk + 50]:
            w.store_rejected(record)
        # Settled after the refused rows before it were written and pruned.
        _settled(w, [make_record("ring", "POST", {"CallUUID": f"c{chunk}"}, "unchecked", start)])
        (count, total) = (
            database.cursor()
            .execute(
                "SELECT count(*), coalesce(sum(strlen(headers::VARCHAR) + strlen(params::VARCHAR)),"
                " 0) FROM rejected_webhooks"
            )
            .fetchall()[0]
        )
        assert count <= 100 and total <= 200_000, (chunk, count, total)
    kept = [
        row[0]
        for row in database.cursor()
        .execute("SELECT rejected_id::VARCHAR FROM rejected_webhooks ORDER BY received_at")
        .fetchall()
    ]
    newest = [r.rejected_id for r in records[-len(kept) :]]
    assert kept == newest
    if bound == "rows":
        assert 90 <= len(kept) <= 100
    else:
        per_row = row_bytes(records[0])
        assert 0.9 * 200_000 - per_row <= len(kept) * per_row <= 200_000


def test_the_hourly_budget_of_refused_rows_survives_a_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The budget is per clock hour: keep the test inside one.
    left = 3600 - time.time() % 3600
    if left < 20:
        time.sleep(left + 0.5)
    monkeypatch.setattr(rejected, "ROWS_PER_HOUR", 3)
    signed = {"PLIVO_AUTH_TOKEN": TOKEN}
    with app_client(tmp_path, **signed) as client:
        for i in range(2):
            assert client.post("/plivo/ring", data={"CallUUID": f"a{i}"}).status_code == 403
        wait_until(lambda: rows("SELECT count(*) AS n FROM rejected_webhooks")[0]["n"] == 2)
    with app_client(tmp_path, **signed) as client:  # a restart
        before = metric(client, "callstatus_rejections_not_stored_total")
        for i in range(3):
            assert client.post("/plivo/ring", data={"CallUUID": f"b{i}"}).status_code == 403
        # One more fits this hour's budget of 3; the other two are only counted.
        wait_until(lambda: metric(client, "callstatus_rejections_not_stored_total") - before == 2)
        rt = client.app.runtime
        assert rt is not None
        wait_until(lambda: rt.writer.queue_depth() == 0)
        signed_request(
            client,
            "POST",
            "/plivo/ring",
            [("CallUUID", "ok")],
            base="http://testserver",
            token=TOKEN,
        )
        kept = sorted(
            r["id"] for r in rows("SELECT params->>'CallUUID' AS id FROM rejected_webhooks")
        )
    assert kept == ["a0", "a1", "b0"]


def test_repeats_past_the_limit_wait_for_their_batch_and_are_counted_per_bucket(
    writer: tuple[Writer, Database],
) -> None:
    w, database = writer
    at = datetime(2026, 11, 2, 9, 3, 59, tzinfo=UTC)
    copies = [
        make_record("hangup", "POST", {"CallUUID": "same"}, "valid", at + timedelta(seconds=i))
        for i in range(6)
    ]
    # One batch: the first three stored, the three after them counted once it commits.
    assert _settled(w, copies) == ["stored"] * 6
    cur = database.cursor()
    assert cur.execute("SELECT count(*) FROM webhook_events").fetchall() == [(3,)]
    # 09:03:59 and 09:04:0x fall in the bucket of 09:00; 09:05:0x in the next.
    later = [
        make_record("hangup", "POST", {"CallUUID": "same"}, "valid", at + timedelta(seconds=70))
        for _ in range(2)
    ]
    assert _settled(w, later) == ["stored"] * 2
    counted = cur.execute(
        "SELECT strftime(bucket, '%H:%M'), kind, repeats FROM webhook_repeats ORDER BY bucket"
    ).fetchall()
    assert counted == [("09:00", "hangup", 3), ("09:05", "hangup", 2)]
    assert cur.execute("SELECT count(*) FROM webhook_events").fetchall() == [(3,)]


def test_the_repeat_window_and_the_tracker_memory_are_bounded() -> None:
    tracker = DuplicateTracker(capacity=1000, repeat_capacity=100, window_s=600)

    def deliver(value: int, now: float) -> bool:
        record = make_record("ring", "POST", {"n": str(value)}, "unchecked", T0)
        record.params_hash = value
        stored, _ = tracker.admit([record], now)
        return bool(stored)

    # Three deliveries stored, then counted; a new window after 10 minutes of the first
    # repeat opens again with the repeat as its second delivery.
    assert [deliver(1, t) for t in (0, 1, 2, 3, 4)] == [True, True, True, False, False]
    assert [deliver(1, t) for t in (599, 602, 603, 604)] == [False, True, True, False]
    # Many repeated fingerprints: at most repeat_capacity counts are held.
    for value in range(10, 1000):
        deliver(value, 700)
        deliver(value, 700)
    assert tracker.counted <= 100
    assert tracker.size <= 1000


def _checkpoints() -> float:
    return metrics.REGISTRY.get_sample_value("callstatus_wal_checkpoints_total") or 0.0


def test_the_wal_is_checkpointed_past_its_bound(writer: tuple[Writer, Database]) -> None:
    w, database = writer
    before = _checkpoints()
    start = datetime.now(UTC)
    records = [
        make_record(
            "hangup", "POST", {"CallUUID": f"w{i}", "Pad": f"{i:06d}" * 150}, "valid", start
        )
        for i in range(3000)
    ]
    _settled(w, records)
    # DuckDB itself would wait for 16 MiB; the writer's bound here is 1 MiB.
    wal = database.wal_path
    # The metric counts a checkpoint once it returned, a moment after the WAL was reset.
    wait_until(
        lambda: _checkpoints() > before and (not wal.exists() or wal.stat().st_size < 2**20),
        timeout=10,
    )
    assert _checkpoints() > before
    assert database.absolute_path.stat().st_size > 2**20


def test_checkpoints_run_while_an_old_reader_is_open_and_the_rollups_refresh(
    tmp_path: Path,
) -> None:
    """What let the WAL reach 264 MB: a transaction with updates (the rollup refresh did
    UPDATE and upserts) committed while an older read transaction was open, and then DuckDB
    could run no checkpoint at all until that reader ended."""
    database = Database(tmp_path / "reader.duckdb")
    try:
        cur = database.cursor()
        calls = sample_records("inbound_simultaneous_dial", T0)
        store(database, [(r.kind, r.params) for r in calls[:3]])
        rollups.refresh(cur)
        reader = database.con.cursor()
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM webhook_events").fetchall()
        # The rest of those calls: touched calls, B legs, counts, watermark, and repeats.
        store(database, [(r.kind, r.params) for r in calls[3:]], start=T0 + timedelta(hours=1))
        assert rollups.refresh(cur) > 0
        cur.execute("BEGIN")
        add_repeats(cur, {(T0, "hangup"): 5})
        cur.execute("COMMIT")
        cur.execute("CHECKPOINT")  # refused before: "there are other write transactions"
        reader.execute("COMMIT")
        assert cur.execute("SELECT repeats FROM webhook_repeats").fetchall() == [(5,)]
        # Rows that changed were deleted and inserted again: the rollups still equal the views.
        assert cur.execute("SELECT * FROM calls_rollup EXCEPT SELECT * FROM calls").fetchall() == []
        assert (
            cur.execute(
                "SELECT * EXCLUDE (leg_at, a_started_at, a_outcome, a_direction, a_from, a_to,"
                " a_answered_at) FROM dial_legs_rollup EXCEPT SELECT * FROM dial_legs"
            ).fetchall()
            == []
        )
        assert cur.execute(
            "SELECT count(*) FROM dial_legs_rollup l JOIN calls c ON c.call_uuid = l.a_leg_uuid"
            " WHERE l.a_outcome IS DISTINCT FROM c.outcome"
            " OR l.a_started_at IS DISTINCT FROM c.started_at"
            " OR l.a_answered_at IS DISTINCT FROM c.answered_at"
        ).fetchall() == [(0,)]
    finally:
        database.close()


def test_the_health_page_shows_repeats_not_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "seeded.duckdb"
    assert (
        callstatus_cli(["seed", "--db", str(path), "--calls", "20", "--days", "1", "--seed", "3"])
        == 0
    )
    con = duckdb.connect(str(path))
    con.execute(
        "INSERT INTO webhook_repeats VALUES"
        " (time_bucket(INTERVAL 5 MINUTE, now() - INTERVAL 2 HOUR), 'hangup', 1200),"
        " (time_bucket(INTERVAL 5 MINUTE, now() - INTERVAL 1 HOUR), 'ring', 34),"
        " (time_bucket(INTERVAL 5 MINUTE, now() - INTERVAL 40 DAY), 'ring', 99999)"
    )
    con.close()
    monkeypatch.setenv("CALLSTATUS_DB", str(path))
    settings_module.get_settings.cache_clear()
    try:
        at = AppTest.from_file(APP, default_timeout=60)
        at.query_params["range"] = "Last 30 days"
        at.run()
        at.switch_page("screens/health.py").run()
        assert not at.exception, [e.value for e in at.exception]
        values = [m.value for m in at.metric if m.label == "Repeats not stored"]
    finally:
        settings_module.get_settings.cache_clear()
    assert values == [tiles.fmt_count(1234)]
    # Analysts see the table: in the SQL page's list, and exported (filtered on its bucket).
    assert "webhook_repeats" in safe_sql.schema(path)
    since = (datetime.now(UTC) - timedelta(days=30)).date().isoformat()
    out = tmp_path / "export"
    assert callstatus_cli(["export", "--db", str(path), "--out", str(out), "--since", since]) == 0
    exported = duckdb.sql(f"SELECT sum(repeats) FROM '{out / 'webhook_repeats.parquet'}'")
    assert exported.fetchall() == [(1234,)]
