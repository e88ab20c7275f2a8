"""After a deletion a later checkpoint may renumber webhook_rows (DuckDB's vacuum packs row groups
that lost rows), and which one cannot be relied on: `settle` leaves webhook_rows so that no later
checkpoint renumbers it and realigns the rollups' watermark, so that every refresh after it reads
every new webhook and rebuilds nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from callstatus.core import rollups
from callstatus.core.db import Database
from callstatus.privacy.maintenance import settle, stored_rows
from tests.factories import assert_rollups_equal_views
from tests.privacy.growth import NOW, add_day

# Two row groups of DuckDB's 122,880 rows, nine calls in ten removed from each: too few rows
# left for DuckDB 2.0 to pack the table's tail at once, it does at a checkpoint after appends.
CALLS = 65_000
GONE = "hash(call_uuid) % 10 <> 0"
# Enough appended rows (two a call) for that later checkpoint to pack the tail.
LATER = 20_000


def rowids(db: Database, ids: list[str]) -> list[int]:
    cur = db.cursor()
    return [
        int(cur.execute("SELECT rowid FROM webhook_rows WHERE event_id = ?", [i]).fetchall()[0][0])
        for i in ids
    ]


@pytest.mark.parametrize("reader", [False, True], ids=["alone", "reader-open"])
def test_new_webhooks_are_read_after_a_vacuum(tmp_path: Path, reader: bool) -> None:
    db = Database(tmp_path / "vacuum.duckdb")
    try:
        cur = db.cursor()
        add_day(db, 0, 1, calls=CALLS)
        cur.execute("CHECKPOINT")
        assert rollups.watermark(cur) == rollups.last_rowid(cur)
        counted = cur.execute("SELECT sum(webhooks) FROM webhook_counts").fetchall()[0][0]
        other = db.con.cursor()
        if reader:
            # A read transaction begun before the delete: DuckDB's checkpoints are then
            # "concurrent" ones, which vacuum nothing.
            other.execute("BEGIN")
            other.execute("SELECT count(*) FROM rollup_state").fetchall()
        cur.execute("BEGIN")
        cur.execute(f"DELETE FROM webhook_rows WHERE {GONE}")
        cur.execute(f"DELETE FROM calls_rollup WHERE {GONE}")
        cur.execute("COMMIT")
        order = [
            r[0] for r in cur.execute("SELECT event_id FROM webhook_rows ORDER BY rowid").fetchall()
        ]
        settle(cur)
        if reader:
            other.execute("ROLLBACK")
        # Same rows, same order; the watermark on the last one.
        after = [
            r[0] for r in cur.execute("SELECT event_id FROM webhook_rows ORDER BY rowid").fetchall()
        ]
        assert after == order
        assert rollups.watermark(cur) == rollups.last_rowid(cur)
        rows, _, span = stored_rows(cur)
        assert rows == len(order)
        assert span == rows  # contiguous rowids: no gap a vacuum would close
        ends = [order[0], order[-1]]
        settled = rowids(db, ends)
        # Later appends and checkpoints (the refreshes', DuckDB's automatic ones) renumber
        # nothing: without settle's rewrite, this one packs the table and the rows move down.
        add_day(db, 0, 0, at=NOW, calls=LATER)
        cur.execute("CHECKPOINT")
        assert rowids(db, ends) == settled
        add_day(db, 0, 0, at=NOW, calls=500)
        cur.execute("CHECKPOINT")
        assert rowids(db, ends) == settled
        assert rollups.watermark(cur) == rollups.last_rowid(cur)
        assert_rollups_equal_views(db)
        # No rebuild: the removed calls' webhooks are still counted.
        total = cur.execute("SELECT sum(webhooks) FROM webhook_counts").fetchall()[0][0]
        assert total == counted + 2 * (LATER + 500)
    finally:
        db.close()
