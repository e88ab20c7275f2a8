"""What retention and erasure share: deleting raw rows without upsetting the rollups' watermark.

The rollups read webhook_rows from a watermark, a `rowid` (callstatus/core/rollups.py). Deleting
rows does not change rowids, but the first checkpoint after the delete may vacuum: DuckDB then
packs the row groups that lost rows, renumbering the rows that follow, and the table's largest
rowid may fall below the watermark (measured with DuckDB 2.0: 1,000,000 rows, 90% deleted in
every row group, largest rowid 999,999 before the checkpoint and 99,999 after). A refresh would
then skip webhooks or rebuild every rollup from what is left, webhook_counts included, whose
older days are kept longer than raw rows.

So a deletion runs while the rollup job is paused, right after a refresh (every row of
webhook_rows is then in the rollups), deletes, checkpoints at once (a vacuum happens only at the
first checkpoint after the delete, measured), and sets the watermark to the largest rowid left.
Only that refresh appends to webhook_rows, so nothing is left unread in between.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator

import duckdb

from callstatus.core import rollups
from callstatus.core.rollups import RollupJob

log = logging.getLogger("callstatus.privacy")

CHECKPOINT_TRIES = 5
CHECKPOINT_RETRY_S = 0.5


@contextlib.contextmanager
def rollups_paused(job: RollupJob | None) -> Iterator[None]:
    """Hold the rollup job's loop between two refreshes (no pause without a job: a command
    working on the file alone)."""
    if job is None:
        yield
        return
    # PeriodicJob runs each refresh under this lock; holding it keeps the next one waiting.
    lock: threading.Lock = job.loop._lock
    with lock:
        yield


def checkpoint(cur: duckdb.DuckDBPyConnection) -> bool:
    """CHECKPOINT, retried a few times when a concurrent commit makes it fail; True if done."""
    for attempt in range(CHECKPOINT_TRIES):
        try:
            cur.execute("CHECKPOINT")
            return True
        except duckdb.Error as exc:
            log.warning("CHECKPOINT after a deletion failed (try %d): %s", attempt + 1, exc)
            time.sleep(CHECKPOINT_RETRY_S)
    return False


def realign_watermark(cur: duckdb.DuckDBPyConnection) -> None:
    """Set the rollups' watermark to the largest rowid of webhook_rows. Only right after a
    refresh, with the job paused: every row there is then in the rollups."""
    if rollups.watermark(cur) is None:
        return  # never built: the next refresh builds them whole anyway
    top = rollups.last_rowid(cur)
    cur.execute("BEGIN")
    try:
        cur.execute(
            "DELETE FROM rollup_state WHERE name IN (SELECT unnest($names))",
            {"names": list(rollups.TABLES)},
        )
        cur.execute(
            "INSERT INTO rollup_state (name, watermark, refreshed_at)"
            " SELECT unnest($names), $top, now()",
            {"names": list(rollups.TABLES), "top": top},
        )
        cur.execute("COMMIT")
    except BaseException:
        cur.execute("ROLLBACK")
        raise


def settle(cur: duckdb.DuckDBPyConnection) -> bool:
    """After a deletion: checkpoint (the vacuum happens now, while the rollups wait), then
    realign the watermark. False when no checkpoint could run (logged)."""
    done = checkpoint(cur)
    realign_watermark(cur)
    return done
