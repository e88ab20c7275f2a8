"""After a deletion DuckDB may renumber webhook_rows' rowids at some later checkpoint (its vacuum
packs row groups that lost rows; which checkpoint does it cannot be relied on). The rollups read
from a watermark on `seq` (migration 0016), which nothing renumbers: every refresh after a
deletion reads every new webhook and rebuilds nothing, whether the newest rows were deleted too,
and whether a reader was open during the deletion."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from callstatus.core import rollups
from callstatus.core.db import Database
from callstatus.privacy.maintenance import settle
from tests.factories import assert_rollups_equal_views
from tests.privacy.growth import NOW, add_day

# Two row groups of DuckDB's 122,880 rows, nine calls in ten removed from each (the table's
# tail is packed at a checkpoint after later appends, not at once).
CALLS = 65_000
GONE = "hash(call_uuid) % 10 <> 0"
# Enough appended rows (two a call) for that later checkpoint to pack the tail.
LATER = 20_000


def seqs(cur: duckdb.DuckDBPyConnection, ids: list[str]) -> dict[str, tuple[int, int]]:
    """(seq, rowid) per event_id."""
    rows = cur.execute(
        "SELECT event_id::VARCHAR, seq, rowid FROM webhook_rows WHERE event_id::VARCHAR IN"
        " (SELECT unnest($ids))",
        {"ids": ids},
    ).fetchall()
    return {r[0]: (int(r[1]), int(r[2])) for r in rows}


@pytest.mark.parametrize("reader", [False, True], ids=["alone", "reader-open"])
def test_new_webhooks_are_read_after_a_vacuum(tmp_path: Path, reader: bool) -> None:
    db = Database(tmp_path / "vacuum.duckdb")
    try:
        cur = db.cursor()
        add_day(db, 0, 1, calls=CALLS)
        cur.execute("CHECKPOINT")
        top = rollups.last_seq(cur)
        assert rollups.watermark(cur) == top == 2 * CALLS - 1
        counted = cur.execute("SELECT sum(webhooks) FROM webhook_counts").fetchall()[0][0]
        other = db.con.cursor()
        if reader:
            # A read transaction begun before the delete: DuckDB's checkpoints are then
            # "concurrent" ones, which vacuum nothing until later.
            other.execute("BEGIN")
            other.execute("SELECT count(*) FROM rollup_state").fetchall()
        # Nine calls in ten, and the newest call whatever its hash: the last seq given is gone.
        (newest,) = cur.execute(
            "SELECT call_uuid FROM webhook_rows ORDER BY seq DESC LIMIT 1"
        ).fetchall()[0]
        doomed = f"({GONE}) OR call_uuid = '{newest}'"
        cur.execute("BEGIN")
        cur.execute(f"DELETE FROM webhook_rows WHERE {doomed}")
        cur.execute(f"DELETE FROM calls_rollup WHERE {doomed}")
        cur.execute("COMMIT")
        kept = [
            str(r[0])
            for r in cur.execute("SELECT event_id FROM webhook_rows ORDER BY seq").fetchall()
        ]
        ends = [kept[0], kept[-1]]
        before = seqs(cur, ends)
        assert before[kept[-1]][0] < top
        assert settle(cur)
        if reader:
            other.execute("ROLLBACK")
        # Later appends and checkpoints (the refreshes', DuckDB's automatic ones): rowids may
        # move, seq does not; new rows come after every seq given, the deleted newest included.
        add_day(db, 0, 0, at=NOW, calls=LATER)
        cur.execute("CHECKPOINT")
        add_day(db, 0, 0, at=NOW, calls=500)
        cur.execute("CHECKPOINT")
        after = seqs(cur, ends)
        assert {k: v[0] for k, v in after.items()} == {k: v[0] for k, v in before.items()}
        (first_new,) = cur.execute(
            "SELECT min(seq) FROM webhook_rows WHERE received_at >= ?", [NOW]
        ).fetchall()[0]
        assert first_new == top + 1
        assert rollups.watermark(cur) == rollups.last_seq(cur) == top + 2 * (LATER + 500)
        assert_rollups_equal_views(db)
        # No rebuild: the removed calls' webhooks are still counted, every new one once.
        total = cur.execute("SELECT sum(webhooks) FROM webhook_counts").fetchall()[0][0]
        assert total == counted + 2 * (LATER + 500)
        moved = before[kept[-1]][1] != after[kept[-1]][1]
        print(f"rowid of the last kept row {'moved' if moved else 'stayed'}: {before} -> {after}")
    finally:
        db.close()
