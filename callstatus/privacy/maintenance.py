"""What retention and erasure share: the rollup job paused while they delete, and a checkpoint
after.

The rollups read webhook_rows from a watermark on its `seq` column (callstatus/core/rollups.py,
migration 0016), which deletions leave alone. It was the `rowid` before: DuckDB renumbers rows
when a checkpoint's vacuum packs row groups that lost rows, and which checkpoint does it cannot be
relied on (measured with DuckDB 2.0.1: a checkpoint while another transaction is open never
vacuums, and a table's trailing row groups are packed only once enough rows follow them), so a
watermark could be left above renumbered rows and new webhooks skipped.

A deletion runs while the rollup job is paused, right after a refresh, so it never races the
move from the inbox; then it checkpoints at once, so the freed blocks are reused soon.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator

import duckdb

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


def settle(cur: duckdb.DuckDBPyConnection) -> bool:
    """After a deletion: checkpoint. False when no checkpoint could run (logged): the space of
    the deleted rows then waits for a later checkpoint; the rollups' watermark needs nothing."""
    return checkpoint(cur)
