"""webhook_counts equals a count of webhook_events, however the webhooks came and were refreshed."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest

from callstatus.cli import main as cli_main
from callstatus.core import rollups
from callstatus.core.db import Database
from callstatus.core.duplicates import DuplicateTracker
from callstatus.core.records import EventRecord, make_record
from callstatus.simulator.traffic import TrafficModel
from tests.factories import T0, assert_rollups_equal_views, deliver, model_records, split

COUNTED = """
SELECT time_bucket(INTERVAL 5 MINUTE, received_at), kind, duplicate, signature, count(*)
FROM webhook_events GROUP BY ALL ORDER BY ALL
"""
STORED = "SELECT bucket_at, kind, duplicate, signature, webhooks FROM webhook_counts ORDER BY ALL"


def assert_counts_current(db: Database) -> None:
    cur = db.cursor()
    assert cur.execute(STORED).fetchall() == cur.execute(COUNTED).fetchall()
    assert rollups.is_current(cur)


def traffic(seed: int) -> list[EventRecord]:
    """A few hundred calls' webhooks over two hours, some signed, and retries of some."""
    rng = random.Random(seed)
    starts = [T0.timestamp() + 43.0 * i for i in range(160)]
    records = [
        replace(r, signature="valid") if rng.random() < 0.3 else r
        for r in model_records(TrafficModel(seed), starts)
    ]
    # Retries, minutes later: into the buckets of the originals or the next ones.
    return records + [
        make_record(
            r.kind,
            r.http_method,
            r.params,
            r.signature,
            r.received_at + timedelta(seconds=rng.uniform(1, 600)),
        )
        for r in rng.sample(records, 60)
    ]


@pytest.mark.parametrize("order", ["arrival", "shuffled"])
@pytest.mark.parametrize("seed", [1, 2])
def test_counts_equal_the_webhooks_after_every_refresh(db: Database, order: str, seed: int) -> None:
    rng = random.Random(seed)
    records = traffic(seed)
    if order == "shuffled":
        rng.shuffle(records)
    else:
        records.sort(key=lambda r: r.received_at)
    tracker = DuplicateTracker()
    for batch in split(records, 9, rng):
        deliver(db, batch, tracker)
        if rng.random() < 0.7:  # sometimes two batches before one refresh
            rollups.refresh(db.cursor())
            assert_counts_current(db)
    rollups.refresh(db.cursor())
    assert_counts_current(db)
    cur = db.cursor()
    duplicates = cur.execute("SELECT sum(webhooks) FROM webhook_counts WHERE duplicate")
    assert duplicates.fetchone()[0] >= 60  # type: ignore[index]  # ours, and the model's own
    signatures = cur.execute("SELECT DISTINCT signature FROM webhook_counts ORDER BY 1")
    assert signatures.fetchall() == [("unchecked",), ("valid",)]


def test_a_full_rebuild_gives_the_counts_of_incremental_refreshes(db: Database) -> None:
    rng = random.Random(3)
    tracker = DuplicateTracker()
    for batch in split(sorted(traffic(3), key=lambda r: r.received_at), 5, rng):
        deliver(db, batch, tracker)
        rollups.refresh(db.cursor())
    cur = db.cursor()
    incremental = cur.execute(STORED).fetchall()
    rollups.refresh(cur, full=True)
    assert cur.execute(STORED).fetchall() == incremental
    assert_counts_current(db)


def test_a_database_from_before_the_counts_migrates_and_counts(tmp_path: Path) -> None:
    """A file whose rollups were current before migration 0005: opening it adds the table, and
    the next refresh fills it (and leaves the other rollups equal to their views)."""
    path = tmp_path / "old.duckdb"
    db = Database(path)
    records = sorted(traffic(4), key=lambda r: r.received_at)
    tracker = DuplicateTracker()
    deliver(db, records[:300], tracker)
    rollups.refresh(db.cursor())
    cur = db.cursor()
    # As the file was before 0005: no table, no row of it in schema_migrations or rollup_state.
    cur.execute("DROP TABLE webhook_counts")
    cur.execute("DELETE FROM schema_migrations WHERE name = '0005_webhook_counts'")
    cur.execute("DELETE FROM rollup_state WHERE name = 'webhook_counts'")
    db.close()

    db = Database(path)
    try:
        cur = db.cursor()
        applied = cur.execute("SELECT name FROM schema_migrations").fetchall()
        assert ("0005_webhook_counts",) in applied
        assert cur.execute("SELECT count(*) FROM webhook_counts").fetchone() == (0,)
        assert not rollups.is_current(cur)  # the dashboard reads webhook_events meanwhile
        rollups.refresh(cur)
        assert_counts_current(db)
        assert_rollups_equal_views(db)
        deliver(db, records[300:], tracker)
        rollups.refresh(cur)
        assert_counts_current(db)
    finally:
        db.close()


def test_an_export_keeps_the_counts_of_the_days_asked_for(tmp_path: Path, db: Database) -> None:
    records = sorted(traffic(5), key=lambda r: r.received_at)
    later = [replace(r, received_at=r.received_at + timedelta(days=1)) for r in records]
    deliver(db, records + later, DuplicateTracker())
    rollups.refresh(db.cursor())
    db.close()
    out = tmp_path / "export"
    day = (T0 + timedelta(days=1)).date().isoformat()
    argv = ["export", "--db", str(db.path), "--out", str(out), "--format", "csv"]
    assert cli_main([*argv, "--since", day, "--until", day]) == 0
    counts = pd.read_csv(out / "webhook_counts.csv")
    assert counts["bucket_at"].str.startswith(day).all()
    assert counts["webhooks"].sum() == len(later)


def _remembered(tracker: DuplicateTracker) -> tuple[set[int], set[int]]:
    return set(tracker._current), set(tracker._previous)


@pytest.mark.parametrize("capacity", [7, 40, 10_000])
def test_a_warmed_tracker_remembers_the_newest_fingerprints_as_a_full_sort_finds_them(
    db: Database, capacity: int
) -> None:
    """warm() reads only the 5-minute buckets that hold the newest `capacity` webhooks (by
    webhook_counts); it must remember what a sort of the whole table gives, with counts
    current, with webhooks not yet counted, and with counts that overstate (rows erased)."""
    deliver(db, traffic(5), DuplicateTracker())
    rollups.refresh(db.cursor())
    cur = db.cursor()
    full = "SELECT params_hash FROM webhook_events ORDER BY received_at DESC, params_hash LIMIT ?"

    def reference() -> tuple[set[int], set[int]]:
        tracker = DuplicateTracker(capacity)
        rows = cur.execute(full, [capacity]).fetchall()
        tracker.flags(value for (value,) in reversed(rows))
        return _remembered(tracker)

    def warmed() -> tuple[set[int], set[int]]:
        tracker = DuplicateTracker(capacity)
        tracker.warm(cur)
        return _remembered(tracker)

    total = cur.execute("SELECT count(*) FROM webhook_events").fetchall()[0][0]
    assert total > 40, "enough webhooks to cut"
    assert warmed() == reference()
    deliver(db, traffic(6), DuplicateTracker())  # not counted yet: the counts understate
    assert warmed() == reference()
    # The newest hour erased after it was counted: the counts overstate what is left.
    cur.execute(
        "DELETE FROM webhook_rows WHERE received_at >= "
        "(SELECT max(received_at) - INTERVAL 1 HOUR FROM webhook_rows)"
    )
    assert warmed() == reference()
