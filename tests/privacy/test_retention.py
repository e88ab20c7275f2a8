"""Retention: exactly the rows past the horizon go (whole calls, by their start), the archive
holds exactly them, a second run removes nothing, the rollups stay equal to the views and keep
being refreshed, aggregates outlive raw rows, and an interrupted run stores nothing twice."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from callstatus.core import rollups
from callstatus.core.db import Database
from callstatus.core.duplicates import DuplicateTracker
from callstatus.dashboard.filters import Filters
from callstatus.privacy import archive
from callstatus.privacy.retention import Horizons, run_retention
from callstatus.simulator.traffic import TrafficModel
from tests.factories import (
    assert_rollups_equal_views,
    deliver,
    make_settings,
    model_records,
    store,
)
from tests.privacy.charts import assert_same, charts

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
DAYS = 3
HORIZON = NOW - timedelta(days=DAYS)
KEY = "coalesce(dial_a_leg_uuid, call_uuid)"
STRADDLING = "11111111-2222-3333-4444-555555555555"
AT_HORIZON = "66666666-7777-8888-9999-000000000000"


def seed(db: Database, calls: int = 300, days: float = 7.0, model_seed: int = 11) -> None:
    """Simulated calls over the `days` before NOW, rollups refreshed."""
    model = TrafficModel(model_seed)
    end = NOW.timestamp() - model.max_span_s
    starts = model.starts(calls, end, days, random.Random(model_seed))
    deliver(db, model_records(model, starts), DuplicateTracker())
    rollups.refresh(db.cursor())


def call_around(db: Database, call_uuid: str, answered: datetime) -> None:
    """A call answered at `answered` and hung up two minutes later."""
    params = {
        "CallUUID": call_uuid,
        "From": "+14155550123",
        "To": "+14155550999",
        "Direction": "inbound",
        "CallStatus": "in-progress",
        "Event": "StartApp",
    }
    hangup = {
        **params,
        "CallStatus": "completed",
        "Event": "Hangup",
        "HangupCause": "NORMAL_CLEARING",
        "HangupCauseCode": "4000",
        "Duration": "120",
        "BillDuration": "120",
        "StartTime": answered.strftime("%Y-%m-%d %H:%M:%S"),
        "AnswerTime": answered.strftime("%Y-%m-%d %H:%M:%S"),
        "EndTime": (answered + timedelta(minutes=2)).strftime("%Y-%m-%d %H:%M:%S"),
    }
    store(db, [("answer", params), ("hangup", hangup)], start=answered, step=timedelta(minutes=2))


def add_rejected(db: Database, times: list[datetime]) -> None:
    for at in times:
        db.cursor().execute(
            "INSERT INTO rejected_webhooks VALUES (gen_random_uuid(), ?, 'bad_signature',"
            " '/plivo/hangup', 'POST', NULL, '{}', '{\"From\": \"+14155550100\"}', false)",
            [at],
        )


def events(db: Database) -> set[str]:
    rows = db.cursor().execute("SELECT event_id::VARCHAR FROM webhook_events").fetchall()
    return {r[0] for r in rows}


def doomed_events(db: Database) -> set[str]:
    """What the documented rule removes: rows received before the horizon, and every row of a
    call (by its A leg) that started before it."""
    rows = (
        db.cursor()
        .execute(
            f"SELECT event_id::VARCHAR FROM webhook_events WHERE received_at < $h OR {KEY} IN"
            f" (SELECT call_uuid FROM calls WHERE started_at < $h UNION"
            f"  SELECT {KEY} FROM webhook_events WHERE received_at < $h)",
            {"h": HORIZON},
        )
        .fetchall()
    )
    return {r[0] for r in rows}


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Simulated calls on both sides of the horizon, built once and copied for each test."""
    path = tmp_path_factory.mktemp("retention") / "template.duckdb"
    database = Database(path)
    seed(database)
    add_rejected(
        database,
        [HORIZON - timedelta(days=1), HORIZON - timedelta(microseconds=1), HORIZON, NOW],
    )
    # Calls straddling the horizon: one started a minute before it, one at it.
    call_around(database, STRADDLING, HORIZON - timedelta(minutes=1))
    call_around(database, AT_HORIZON, HORIZON)
    rollups.refresh(database.cursor())
    database.close()
    return path


@pytest.fixture
def seeded(template: Path, tmp_path: Path) -> Iterator[Database]:
    path = tmp_path / "retention.duckdb"
    shutil.copyfile(template, path)
    database = Database(path)
    yield database
    database.close()


def test_horizons_follow_the_settings(tmp_path: Path) -> None:
    assert Horizons.of(make_settings(tmp_path), NOW) is None
    h = Horizons.of(make_settings(tmp_path, CALLSTATUS_RETENTION_DAYS=30), NOW)
    assert h == Horizons(NOW - timedelta(days=30), None)
    h = Horizons.of(
        make_settings(
            tmp_path, CALLSTATUS_RETENTION_DAYS=30, CALLSTATUS_AGGREGATE_RETENTION_DAYS=400
        ),
        NOW,
    )
    assert h == Horizons(NOW - timedelta(days=30), NOW - timedelta(days=400))


def test_removes_exactly_the_calls_that_started_before_the_horizon(
    seeded: Database, tmp_path: Path
) -> None:
    cur = seeded.cursor()
    before = events(seeded)
    doomed = doomed_events(seeded)
    calls_before = cur.execute("SELECT call_uuid, started_at FROM calls").fetchall()
    assert 0 < len(doomed) < len(before)  # both sides of the horizon hold webhooks
    counts_before = cur.execute("SELECT sum(webhooks) FROM webhook_counts").fetchall()[0][0]

    settings = make_settings(tmp_path, CALLSTATUS_RETENTION_DAYS=DAYS)
    run = run_retention(cur, settings, now=NOW)

    assert run is not None and run.status == "ok"
    assert events(seeded) == before - doomed
    assert run.removed["webhook_events"] == len(doomed)
    assert (
        cur.execute(
            "SELECT count(*) FROM webhook_events WHERE received_at < ?", [HORIZON]
        ).fetchall()[0][0]
        == 0
    )
    kept = {c for c, started in calls_before if started >= HORIZON}
    assert {r[0] for r in cur.execute("SELECT call_uuid FROM calls").fetchall()} == kept
    # A call that started before the horizon went whole, its hangup after it included.
    assert STRADDLING not in kept and AT_HORIZON in kept
    left = cur.execute(
        "SELECT call_uuid, count(*) FROM webhook_events WHERE call_uuid IN (?, ?) GROUP BY ALL",
        [STRADDLING, AT_HORIZON],
    ).fetchall()
    assert left == [(AT_HORIZON, 2)]
    # Refused requests by their own time: the one exactly at the horizon stays.
    rejected = cur.execute("SELECT received_at FROM rejected_webhooks ORDER BY 1").fetchall()
    assert [r[0] for r in rejected] == [HORIZON, NOW]
    assert run.removed["rejected_webhooks"] == 2
    assert_rollups_equal_views(seeded)
    # Without an aggregate horizon the counts per 5 minutes stay, older days included.
    assert cur.execute("SELECT sum(webhooks) FROM webhook_counts").fetchall()[0][0] == counts_before
    row = cur.execute(
        "SELECT status, removed, horizon FROM retention_runs WHERE run_id = ?", [run.run_id]
    ).fetchall()[0]
    assert row[0] == "ok" and json.loads(row[1])["webhook_events"] == len(doomed)
    assert row[2] == HORIZON

    again = run_retention(cur, settings, now=NOW)
    assert again is not None and not any(again.removed.values())


def test_the_overview_of_the_kept_days_is_unchanged(
    seeded: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = seeded.path
    seeded.close()
    kept = Filters(HORIZON + timedelta(hours=1), NOW, bucket="1 hour", tz="Europe/Berlin")
    before = charts(path, kept, monkeypatch)
    assert int(before[0].iloc[0]["calls"]) > 50  # else the comparison proves little
    everything = Filters(NOW - timedelta(days=8), NOW, bucket="1 day")
    all_before = charts(path, everything, monkeypatch)
    # A copy: the dashboard's connection in this process keeps the first file open.
    purged = tmp_path / "purged.duckdb"
    shutil.copyfile(path, purged)
    db = Database(purged)
    run_retention(db.cursor(), make_settings(tmp_path, CALLSTATUS_RETENTION_DAYS=DAYS), now=NOW)
    assert db.cursor().execute("SELECT min(started_at) FROM calls").fetchall()[0][0] >= HORIZON
    db.close()
    assert_same(before, charts(purged, kept, monkeypatch))
    # Without an aggregate horizon the hourly aggregates keep the older days' totals.
    assert_same(all_before, charts(purged, everything, monkeypatch))
    # With one at the raw horizon, past it the figures did change (else this test compares
    # nothing), and the kept days' still did not: concurrency's level carried over the cut.
    again = tmp_path / "aggregates.duckdb"
    shutil.copyfile(path, again)
    db = Database(again)
    both = {"CALLSTATUS_RETENTION_DAYS": DAYS, "CALLSTATUS_AGGREGATE_RETENTION_DAYS": DAYS}
    run_retention(db.cursor(), make_settings(tmp_path, **both), now=NOW)
    db.close()
    assert_same(before, charts(again, kept, monkeypatch))
    assert int(charts(again, everything, monkeypatch)[0].iloc[0]["calls"]) < int(
        all_before[0].iloc[0]["calls"]
    )


def test_rollups_keep_refreshing_after_a_run(seeded: Database, tmp_path: Path) -> None:
    """The first checkpoint after a delete renumbers rows: the watermark is realigned, so new
    webhooks are read (none skipped) and no full rebuild drops the older counts."""
    cur = seeded.cursor()
    settings = make_settings(tmp_path, CALLSTATUS_RETENTION_DAYS=DAYS)
    counts_old = cur.execute(
        "SELECT sum(webhooks) FROM webhook_counts WHERE bucket_at < ?", [HORIZON]
    ).fetchall()[0][0]
    assert counts_old > 0
    run_retention(cur, settings, now=NOW)
    seed(seeded, calls=120, days=1.0, model_seed=5)
    assert_rollups_equal_views(seeded)
    assert (
        cur.execute(
            "SELECT sum(webhooks) FROM webhook_counts WHERE bucket_at < ?", [HORIZON]
        ).fetchall()[0][0]
        == counts_old
    )
    # Every new webhook counted once (buckets that lost rows to the run keep their counts).
    recent = "WHERE bucket_at >= $since"
    counted = cur.execute(
        f"SELECT * FROM webhook_counts {recent} EXCEPT SELECT * FROM"
        " (SELECT time_bucket(INTERVAL 5 MINUTE, received_at) AS bucket_at, kind, duplicate,"
        f" signature, count(*) FROM webhook_events GROUP BY ALL) {recent}",
        {"since": NOW - timedelta(days=1)},
    ).fetchall()
    assert counted == []


def test_aggregates_go_at_their_own_horizon(seeded: Database, tmp_path: Path) -> None:
    cur = seeded.cursor()
    settings = make_settings(
        tmp_path, CALLSTATUS_RETENTION_DAYS=DAYS, CALLSTATUS_AGGREGATE_RETENTION_DAYS=5
    )
    cur.execute(
        "INSERT INTO webhook_repeats VALUES (?, 'hangup', 3), (?, 'hangup', 4)",
        [HORIZON - timedelta(hours=1), NOW - timedelta(hours=1)],
    )
    older = cur.execute(
        "SELECT count(*) FROM webhook_counts WHERE bucket_at < ?", [NOW - timedelta(days=5)]
    ).fetchall()[0][0]
    assert older > 0
    run = run_retention(cur, settings, now=NOW)
    assert run is not None and run.removed["webhook_counts"] == older
    assert cur.execute("SELECT min(bucket_at) FROM webhook_counts").fetchall()[0][0] >= (
        NOW - timedelta(days=5)
    )
    assert cur.execute("SELECT repeats FROM webhook_repeats").fetchall() == [(4,)]
    for aggregate in rollups.AGGREGATES:
        (oldest,) = cur.execute(f"SELECT min(hour) FROM {aggregate.table}").fetchall()[0]
        assert oldest >= NOW - timedelta(days=5, hours=1), aggregate.table
        assert run.removed[aggregate.table] > 0, aggregate.table
    # concurrency's steps before the horizon kept as one carry per series: its levels sum to
    # those of the legs up across the horizon.
    carry = cur.execute(
        "SELECT series, net, top, area FROM concurrency_hourly WHERE hour < ? ORDER BY 1",
        [NOW - timedelta(days=5)],
    ).fetchall()
    assert all(top == 0 and area == 0 for _, _, top, area in carry)


def test_archive_holds_exactly_what_was_removed(seeded: Database, tmp_path: Path) -> None:
    folder = tmp_path / "archive"
    settings = make_settings(
        tmp_path, CALLSTATUS_RETENTION_DAYS=DAYS, CALLSTATUS_ARCHIVE_DIR=folder
    )
    cur = seeded.cursor()
    doomed = doomed_events(seeded)
    removed_rows = cur.execute(
        "SELECT * FROM webhook_events WHERE event_id::VARCHAR IN (SELECT unnest(?))"
        " ORDER BY event_id",
        [sorted(doomed)],
    ).fetchall()
    run = run_retention(cur, settings, now=NOW)
    assert run is not None
    assert run.archived == {"webhook_events": len(doomed), "rejected_webhooks": 2}
    files = archive.run_files(folder, run.run_id)
    assert files and all(f.name == f"part-{run.run_id}.parquet" for f in files)
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    glob = str(folder / "webhook_events" / "*" / "*.parquet")
    got = con.execute(
        f"SELECT * EXCLUDE (day) FROM read_parquet('{glob}', hive_partitioning = true)"
        " ORDER BY event_id"
    ).fetchall()
    assert got == removed_rows
    # Each row in the folder of its day of receipt (UTC).
    wrong = con.execute(
        f"SELECT count(*) FROM read_parquet('{glob}', hive_partitioning = true)"
        " WHERE received_at::DATE <> day::DATE"
    ).fetchall()[0][0]
    assert wrong == 0
    rejected = con.execute(
        f"SELECT received_at FROM read_parquet('{folder}/rejected_webhooks/*/*.parquet') ORDER BY 1"
    ).fetchall()
    assert [r[0] for r in rejected] == [
        HORIZON - timedelta(days=1),
        HORIZON - timedelta(microseconds=1),
    ]
    # A second run archives nothing more.
    again = run_retention(cur, settings, now=NOW)
    assert again is not None and again.archived == {"webhook_events": 0, "rejected_webhooks": 0}
    assert archive.run_files(folder, again.run_id) == []


CRASH = """
import os, sys
from datetime import datetime
from pathlib import Path
from callstatus.core.db import Database
from callstatus.privacy import archive, retention

db = Database(sys.argv[1])
cur = db.cursor()
now = datetime.fromisoformat(sys.argv[3])
# Die right after the archive's files are written, before the delete commits.
real = archive.write_days
def write_then_die(*args, **kwargs):
    written = real(*args, **kwargs)
    if args[2] == "rejected_webhooks":
        os._exit(9)
    return written
archive.write_days = write_then_die
from tests.factories import make_settings
settings = make_settings(Path(sys.argv[1]).parent, CALLSTATUS_DB=sys.argv[1],
                         CALLSTATUS_RETENTION_DAYS=int(sys.argv[4]),
                         CALLSTATUS_ARCHIVE_DIR=sys.argv[2])
retention.run_retention(cur, settings, now=now)
"""


def test_a_run_killed_before_its_delete_loses_nothing_and_stores_nothing_twice(
    seeded: Database, tmp_path: Path
) -> None:
    path = seeded.path
    doomed = doomed_events(seeded)
    seeded.close()
    folder = tmp_path / "archive"
    crashed = subprocess.run(
        [sys.executable, "-c", CRASH, str(path), str(folder), NOW.isoformat(), str(DAYS)],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert crashed.returncode == 9, crashed.stderr
    leftover = archive.all_files(folder)
    assert leftover  # the killed run had written its files
    db = Database(path)
    try:
        cur = db.cursor()
        assert doomed <= events(db)  # nothing was removed
        settings = make_settings(
            tmp_path,
            CALLSTATUS_DB=path,
            CALLSTATUS_RETENTION_DAYS=DAYS,
            CALLSTATUS_ARCHIVE_DIR=folder,
        )
        run = run_retention(cur, settings, now=NOW)
        assert run is not None and run.status == "ok"
        assert not any(p.exists() for p in leftover if f"part-{run.run_id}." not in p.name)
        stored = (
            duckdb.connect()
            .execute(
                f"SELECT event_id::VARCHAR FROM read_parquet('{folder}/webhook_events/*/*.parquet')"
            )
            .fetchall()
        )
        ids = [r[0] for r in stored]
        assert len(ids) == len(set(ids)) and set(ids) == doomed
        statuses = cur.execute("SELECT status FROM retention_runs ORDER BY run_id").fetchall()
        assert statuses == [("error",), ("ok",)]
    finally:
        db.close()


def test_every_stored_table_is_either_purged_or_kept_on_purpose(seeded: Database) -> None:
    """A new table holding webhooks must be added to retention (or here, saying why not)."""
    tables = {
        r[0]
        for r in seeded.cursor()
        .execute("SELECT table_name FROM duckdb_tables() WHERE NOT temporary")
        .fetchall()
    }
    purged = {
        "webhook_rows",
        "webhook_inbox",  # seconds of webhooks, moved into webhook_rows before each run
        "calls_rollup",
        "dials_rollup",
        "dial_legs_rollup",
        "a_legs_rollup",  # per A leg: goes with the A leg's B legs
        "rejected_webhooks",
        "webhook_repeats",
        "webhook_counts",
        "number_destinations",  # the numbers no webhook holds any more
        # Aggregates, at the aggregate horizon (test_aggregates_go_at_their_own_horizon).
        *(a.table for a in rollups.AGGREGATES),
    }
    # No personal data: settings, runs, alert state and deliveries, migrations.
    kept = {
        "schema_migrations",
        "rollup_state",
        "hangup_cause_groups",
        "reconcile_runs",
        "retention_runs",
        "erasures",
        "replica_state",  # clustered mode: how far the replica read
        "cluster_receivers",  # clustered mode: receivers' heartbeats
    }
    others = {t for t in tables - purged - kept if not t.startswith(("alert_", "report_"))}
    assert others == set(), f"tables retention does not know: {others}"


def test_rows_of_unknown_calls_before_the_horizon_go_too(tmp_path: Path) -> None:
    """A webhook without a call (no CallUUID) goes by its own receipt time."""
    db = Database(tmp_path / "odd.duckdb")
    try:
        store(db, [("hangup", {"Event": "Hangup"})], start=HORIZON - timedelta(hours=2))
        store(db, [("hangup", {"Event": "Hangup", "CallUUID": str(uuid.uuid4())})], start=NOW)
        rollups.refresh(db.cursor())
        run = run_retention(
            db.cursor(), make_settings(tmp_path, CALLSTATUS_RETENTION_DAYS=DAYS), now=NOW
        )
        assert run is not None and run.removed["webhook_events"] == 1
        assert len(events(db)) == 1
        assert_rollups_equal_views(db)
    finally:
        db.close()
