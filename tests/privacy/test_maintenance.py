"""After a deletion the first checkpoint may renumber webhook_rows (DuckDB's vacuum packs row
groups that lost rows): `settle` checkpoints at once and realigns the rollups' watermark, so
the next refresh reads every new webhook and rebuilds nothing."""

from __future__ import annotations

from pathlib import Path

from callstatus.core import rollups
from callstatus.core.db import Database
from callstatus.privacy.maintenance import settle
from tests.factories import assert_rollups_equal_views
from tests.privacy.growth import NOW, add_day

# Two row groups of DuckDB's 122,880 rows, nine calls in ten removed from each.
CALLS = 65_000
GONE = "hash(call_uuid) % 10 <> 0"


def test_new_webhooks_are_read_after_a_vacuum(tmp_path: Path) -> None:
    db = Database(tmp_path / "vacuum.duckdb")
    try:
        cur = db.cursor()
        add_day(db, 0, 1, calls=CALLS)
        cur.execute("CHECKPOINT")
        top = rollups.last_rowid(cur)
        assert rollups.watermark(cur) == top
        counted = cur.execute("SELECT sum(webhooks) FROM webhook_counts").fetchall()[0][0]
        cur.execute("BEGIN")
        cur.execute(f"DELETE FROM webhook_rows WHERE {GONE}")
        cur.execute(f"DELETE FROM calls_rollup WHERE {GONE}")
        cur.execute("COMMIT")
        assert settle(cur)
        # The vacuum did renumber (else this test proves nothing), and the watermark followed.
        assert rollups.last_rowid(cur) < top
        assert rollups.watermark(cur) == rollups.last_rowid(cur)
        add_day(db, 0, 0, at=NOW, calls=500)
        assert_rollups_equal_views(db)
        # No rebuild: the removed calls' webhooks are still counted.
        total = cur.execute("SELECT sum(webhooks) FROM webhook_counts").fetchall()[0][0]
        assert total == counted + 1000
    finally:
        db.close()
