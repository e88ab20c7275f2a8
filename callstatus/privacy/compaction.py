"""Compaction: the database copied into a fresh file, which replaces it, so the file shrinks to
its data.

DuckDB reuses the blocks that deleted rows free, and truncates free blocks at the end of the
file, but does not move data to close gaps: under daily retention the file stops growing at about
1.6 times the size of its data (docs/benchmarks.md, "Retention"). A copy (`ATTACH` +
`COPY FROM DATABASE`, as the snapshot is made) holds the data only. It is worth it once retention
removed, since the last compaction, at least MIN_REMOVED_SHARE as many webhooks as the file still
holds (DuckDB's free-block count does not tell: the space is lost inside blocks still in use,
measured). A compaction is recorded in retention_runs with trigger 'compaction', and logged.

Two ways:
- `compact`, on a file no process holds: `serve` runs it at start, before it opens the database.
- `LiveCompactor`, inside a running `serve`, after a retention run (never restarted, the file
  still stops growing). It pauses every writer of the file but the receiver (the rollup,
  snapshot, alerts and reconcile jobs, by their locks; any other thread's `Database.cursor()`
  waits) and diverts the receiver's writer to the spool, so webhooks are still acknowledged only
  once durable (fsynced in the spool) and nothing is written to the old file after the copy's
  snapshot. Readers (dashboard pages, the SQL page's snapshot, /api/v1) go on reading the old
  file during the copy. Then the swap (`Database.swap`): closed to readers while in-flight
  queries finish, the old instance closed first (DuckDB removes `<path>.wal` by name at close:
  closed after the rename it would remove the new file's WAL, measured), the file checked
  unchanged since the copy began (else the copy is discarded), the copy renamed over it, and
  the database reopened as a new generation: every cursor, the dashboard's and the writer's
  appender, renewed. Then the writer replays the spool into the new file and the jobs go on.

Safe against kill -9 at any point: the live file is checkpointed (no WAL) before the copy, and
nothing writes to it until the rename; the copy is fsynced before the rename and a leftover copy
is removed by the next attempt; webhooks acknowledged meanwhile are in the spool, replayed at
start.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import duckdb

from callstatus.core import rollups
from callstatus.core.db import Database, SwapRefused, connect
from callstatus.privacy.maintenance import checkpoint

log = logging.getLogger("callstatus.compaction")

# A copy costs about 2.5 s per 100 MB at start: worth it once this share of the rows went.
MIN_REMOVED_SHARE = 0.1
# Rows removed by retention since the last compaction (or ever): what makes a copy worthwhile.
REMOVED_SINCE = """
SELECT coalesce(sum(coalesce(removed->>'webhook_events', '0')::BIGINT), 0)
FROM retention_runs
WHERE trigger <> 'compaction' AND status = 'ok' AND finished_at > coalesce(
    (SELECT max(finished_at) FROM retention_runs WHERE trigger = 'compaction'),
    '-infinity'::TIMESTAMPTZ)
"""
COPY_ALIAS = "callstatus_compact"
# How long a live compaction waits for a job's run to end, and for the writer's batch.
PAUSE_TIMEOUT_S = 300.0
DIVERT_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Compaction:
    bytes_before: int
    bytes_after: int
    seconds: float
    live: bool = False
    # Live: how long readers waited for the swap, at most.
    swap_seconds: float = 0.0

    def describe(self) -> str:
        text = (
            f"compacted the database from {self.bytes_before / 2**20:.1f} MiB to "
            f"{self.bytes_after / 2**20:.1f} MiB in {self.seconds:.1f} s"
        )
        if self.live:
            text += f" while serving (webhooks spooled meanwhile; swap {self.swap_seconds:.2f} s)"
        return text


def copy_path(path: Path) -> Path:
    """Where the copy is written: beside the file (an atomic rename), hidden."""
    return path.with_name(f".{path.name}.compact")


def _remove_copy(path: Path) -> None:
    copy = copy_path(path)
    for leftover in (copy, copy.with_name(copy.name + ".wal")):
        leftover.unlink(missing_ok=True)


def removed_since_last(con: duckdb.DuckDBPyConnection) -> int:
    """Webhooks retention removed since the last compaction (0 on a file without the table)."""
    try:
        (row,) = con.execute(REMOVED_SINCE).fetchall()
    except duckdb.CatalogException:
        return 0
    return int(row[0])


def worth_it(con: duckdb.DuckDBPyConnection, min_removed_share: float = MIN_REMOVED_SHARE) -> bool:
    removed = removed_since_last(con)
    if removed == 0:
        return False
    (row,) = con.execute("SELECT count(*) FROM webhook_events").fetchall()
    return removed >= min_removed_share * int(row[0])


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def compact(
    path: Path,
    *,
    force: bool = False,
    memory_limit: str | None = None,
    min_removed_share: float = MIN_REMOVED_SHARE,
) -> Compaction | None:
    """Replace the file at `path` by a compact copy when retention removed, since the last
    compaction, at least `min_removed_share` as many webhooks as the file holds (or `force`);
    None when not worth it. No other process may hold the file (DuckDB's lock makes sure)."""
    _remove_copy(path)  # an interrupted attempt's
    if not path.exists():
        return None
    started = time.perf_counter()
    before = path.stat().st_size
    copy = copy_path(path)
    con = connect(path, memory_limit=memory_limit)
    try:
        con.execute("CHECKPOINT")
        if not force and not worth_it(con, min_removed_share):
            return None
        # Current rollups first: the copy then holds no webhook they have not read.
        rollups.refresh(con)
        write_copy(con, copy, before)
    except BaseException:
        con.close()
        _remove_copy(path)
        raise
    con.close()  # checkpoints the live file: its WAL is gone before the copy replaces it
    try:
        _fsync(copy)
        os.replace(copy, path)
        _fsync(path.parent)
    except BaseException:
        _remove_copy(path)
        raise
    done = Compaction(before, path.stat().st_size, time.perf_counter() - started)
    log.info("%s", done.describe())
    return done


def write_copy(con: duckdb.DuckDBPyConnection, copy: Path, bytes_before: int) -> int:
    """The database of `con` copied into a fresh file at `copy` (webhook_rows' `seq` and the
    rollups' watermark with it) and the compaction recorded in it; the run_id it is recorded
    under. The rollups must be current and nothing may write to the database meanwhile."""
    (row,) = con.execute("SELECT current_database()").fetchall()
    source = '"' + str(row[0]).replace('"', '""') + '"'
    con.execute(f"ATTACH ? AS {COPY_ALIAS}", [str(copy)])
    try:
        con.execute(f"COPY FROM DATABASE {source} TO {COPY_ALIAS}")
        # Written before the copy's first checkpoint (at DETACH): changed after it, these
        # two small tables would leave freed blocks inside the fresh file.
        con.execute(f"USE {COPY_ALIAS}")
        try:
            return _record(con, bytes_before)
        finally:
            con.execute(f"USE {source}")
    finally:
        con.execute(f"DETACH {COPY_ALIAS}")


def _record(con: duckdb.DuckDBPyConnection, bytes_before: int) -> int:
    """The compaction as a retention_runs row (in the copy: it holds what the file will)."""
    (row,) = con.execute(
        "INSERT INTO retention_runs (run_id, started_at, finished_at, trigger, horizon, status,"
        " removed) SELECT coalesce(max(run_id), 0) + 1, now(), now(), 'compaction', now(), 'ok',"
        " json_object('file_bytes_before', $before) FROM retention_runs RETURNING run_id",
        {"before": bytes_before},
    ).fetchall()
    return int(row[0])


def _is_copy(run_id: int, bytes_before: int) -> Callable[[duckdb.DuckDBPyConnection], bool]:
    """Whether a database is the copy: it holds the compaction's own row."""

    def check(con: duckdb.DuckDBPyConnection) -> bool:
        rows = con.execute(
            "SELECT 1 FROM retention_runs WHERE run_id = ? AND trigger = 'compaction'"
            " AND removed->>'file_bytes_before' = ?",
            [run_id, str(bytes_before)],
        ).fetchall()
        return bool(rows)

    return check


def _stamp(path: Path) -> tuple[int, int, int, bool]:
    """What tells whether the file was written: its size, times, and whether it has a WAL."""
    st = path.stat()
    wal = path.with_name(path.name + ".wal")
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, wal.exists() and wal.stat().st_size > 0)


class Diverter(Protocol):
    """The receiver's writer, as a live compaction uses it (callstatus/receiver/writer.py)."""

    def divert(self, timeout_s: float) -> bool: ...

    def undivert(self) -> None: ...


class LiveCompactor:
    """Compacts the file of a running server's database (see the module's docstring)."""

    def __init__(
        self,
        database: Database,
        writer: Diverter | None,
        pauses: Callable[[], Sequence[threading.Lock]],
        *,
        min_removed_share: float = MIN_REMOVED_SHARE,
        pause_timeout_s: float = PAUSE_TIMEOUT_S,
    ) -> None:
        self.database = database
        self.writer = writer
        # The locks that hold the other writers of the file between two of their runs, in the
        # order they are taken elsewhere (a job's loop before its own lock).
        self.pauses = pauses
        self.min_removed_share = min_removed_share
        self.pause_timeout_s = pause_timeout_s
        self.last: Compaction | None = None
        self._cursor: duckdb.DuckDBPyConnection | None = None
        self._cancelled = threading.Event()

    def cancel(self) -> None:
        """Stop a compaction under way (the server is stopping): the copy is discarded."""
        self._cancelled.set()
        cur = self._cursor
        if cur is not None:
            with contextlib.suppress(duckdb.Error):
                cur.interrupt()

    def run(self, *, force: bool = False) -> Compaction | None:
        """Compact when worth it (or `force`); None when not worth it or given up (logged:
        the file stays as it was, nothing lost, the next retention run tries again)."""
        path = self.database.absolute_path
        _remove_copy(path)
        if not force and not self._worth_it(path):
            return None
        try:
            return self._run(path)
        except SwapRefused as exc:
            log.warning("compaction given up, the file stays as it was: %s", exc)
        except (duckdb.Error, OSError) as exc:
            if self._cancelled.is_set():
                log.info("compaction stopped with the server, the file stays as it was")
            else:
                log.warning("compaction failed, the file stays as it was: %s", exc)
        finally:
            _remove_copy(path)
            self._cursor = None
        return None

    def _worth_it(self, path: Path) -> bool:
        """The rule of `compact`, or the file grown by MIN_REMOVED_SHARE over what the last
        compaction left: a retention run's own checkpoint rewrites the row groups that lost
        rows into new blocks, and the file keeps the old ones (measured: 5.3 MiB after a copy,
        8.5 MiB after the next run's delete and checkpoint, in tests/privacy's live test)."""
        if worth_it(self.database.cursor(), self.min_removed_share):
            return True
        last = self.last
        grown = path.stat().st_size
        return last is not None and grown >= (1 + self.min_removed_share) * last.bytes_after

    def _run(self, path: Path) -> Compaction | None:
        started = time.perf_counter()
        before = path.stat().st_size
        copy = copy_path(path)
        with contextlib.ExitStack() as held:
            for lock in self.pauses():
                if not lock.acquire(timeout=self.pause_timeout_s):
                    raise SwapRefused(f"a job was still running after {self.pause_timeout_s} s")
                held.callback(lock.release)
            if self.writer is not None:
                held.callback(self.writer.undivert)
                if not self.writer.divert(DIVERT_TIMEOUT_S):
                    raise SwapRefused("the receiver's writer did not turn to the spool")
            held.enter_context(self.database.pause_cursors())
            if self._cancelled.is_set():
                return None
            cur = self._cursor = self.database.cursor()
            rollups.refresh(cur)
            if not checkpoint(cur):
                raise SwapRefused("the database could not be checkpointed before the copy")
            stamp = _stamp(path)
            if stamp[3]:
                raise SwapRefused("the WAL was not empty after a checkpoint")
            run_id = write_copy(cur, copy, before)
            _fsync(copy)
            self._cursor = None
            if self._cancelled.is_set():
                return None
            swap_started = time.perf_counter()
            self.database.swap(copy, lambda: _stamp(path) == stamp, _is_copy(run_id, before))
            swapped = time.perf_counter() - swap_started
        done = Compaction(before, path.stat().st_size, time.perf_counter() - started, True, swapped)
        self.last = done
        log.info("%s", done.describe())
        return done


def compact_at_start(db_path: Path, memory_limit: str | None = None) -> Compaction | None:
    """`serve`'s compaction before it opens the database; a failure is logged, and the server
    starts on the file as it is."""
    try:
        return compact(db_path, memory_limit=memory_limit)
    except (duckdb.Error, OSError) as exc:
        log.warning("could not compact %s, starting on it as it is: %s", db_path, exc)
        return None
