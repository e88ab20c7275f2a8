"""What retention and erasure share: deleting raw rows without upsetting the rollups' watermark.

The rollups read webhook_rows from a watermark, a `rowid` (callstatus/core/rollups.py). Deleting
rows does not change rowids, but a later checkpoint may vacuum: DuckDB then packs row groups that
lost rows, renumbering the rows that follow (measured with DuckDB 2.0: 1,000,000 rows, 90% deleted
in every row group, largest rowid 999,999 before the checkpoint and 99,999 after). A watermark set
before that vacuum is left above the renumbered rows: a refresh then skips webhooks, or rebuilds
every rollup from what is left, webhook_counts included, whose older days are kept longer than raw
rows.

Which checkpoint vacuums cannot be relied on (measured with DuckDB 2.0.1):
- a checkpoint while any other transaction of the instance that began before the last commit is
  still open (a dashboard read, another cursor) is a "concurrent" one, which never vacuums deletes;
  the table then counts as checkpointed, later CHECKPOINTs (even FORCE) skip it, and the vacuum
  comes at the first checkpoint after webhook_rows next changes: after the next refresh;
- a full checkpoint packs the last row groups only once they hold twice the rows of the first of
  them (DuckDB's guard against rewriting a table's tail at every small append): 130,000 rows, nine
  in ten deleted, are not packed at once but at a checkpoint after later appends.

So a deletion runs while the rollup job is paused, right after a refresh (every row of
webhook_rows is then in the rollups), deletes, and settles: it checkpoints, and unless
webhook_rows then stores no deleted row and has no gap in its rowids (nothing a vacuum could
pack), rewrites it: every row copied in rowid order to the table's end and the old ones deleted,
in one transaction. The copies are contiguous and nothing deleted follows them: later
checkpoints only drop the old row groups, all deleted, which renumbers nothing after them
(measured, concurrent checkpoints included). Then it sets the watermark to the largest rowid
left. Only the refresh appends to webhook_rows, so nothing is left unread in between. The
rewrite takes about 0.5-1 s per 100,000 rows on a busy 2-core machine.
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


def stored_rows(cur: duckdb.DuckDBPyConnection) -> tuple[int, int, int]:
    """(rows of webhook_rows, rows its storage holds, deleted ones included until a vacuum or a
    drop of their row group, span of its rowids: largest - smallest + 1)."""
    (row,) = cur.execute(
        "SELECT (SELECT count(*) FROM webhook_rows), (SELECT coalesce(sum(count), 0)"
        " FROM pragma_storage_info('webhook_rows') WHERE column_id = 0 AND column_path = '[0]'),"
        " (SELECT coalesce(max(rowid) - min(rowid) + 1, 0) FROM webhook_rows)"
    ).fetchall()
    return int(row[0]), int(row[1]), int(row[2])


def may_renumber(cur: duckdb.DuckDBPyConnection) -> bool:
    """Whether a later checkpoint may still renumber rows of webhook_rows: unless it stores no
    deleted row (nothing to vacuum) and its rowids follow each other (no gap a merge of row
    groups would close)."""
    rows, stored, span = stored_rows(cur)
    return stored != rows or span != rows


def rewrite_rows(cur: duckdb.DuckDBPyConnection) -> None:
    """Copy every row of webhook_rows, in rowid order, to the table's end and delete the old
    ones, in one transaction: the copies get contiguous rowids that no later vacuum renumbers.
    Only with the rollup job paused (nothing else appends to webhook_rows)."""
    cur.execute("BEGIN")
    try:
        top = rollups.last_rowid(cur)
        cur.execute("INSERT INTO webhook_rows SELECT * FROM webhook_rows ORDER BY rowid")
        # The copies' rowids are above `top` (transaction-local rows, then appended after it).
        cur.execute("DELETE FROM webhook_rows WHERE rowid <= $top", {"top": top})
        cur.execute("COMMIT")
    except BaseException:
        cur.execute("ROLLBACK")
        raise


def settle(cur: duckdb.DuckDBPyConnection) -> bool:
    """After a deletion: checkpoint; if a later checkpoint could still renumber webhook_rows,
    rewrite it (see the module docstring) and checkpoint again; then realign the watermark.
    False when a checkpoint could not run (logged): the watermark is aligned anyway, only the
    space of the deleted rows waits for a later checkpoint."""
    done = checkpoint(cur)
    if may_renumber(cur):
        started = time.perf_counter()
        rewrite_rows(cur)
        done = checkpoint(cur) and done
        log.info("webhook_rows rewritten after a deletion: %.2f s", time.perf_counter() - started)
    realign_watermark(cur)
    return done
