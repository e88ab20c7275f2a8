"""Compaction: the database copied into a fresh file, which replaces it, so the file shrinks to
its data.

DuckDB reuses the blocks that deleted rows free, and truncates free blocks at the end of the
file, but does not move data to close gaps: under daily retention the file stops growing at about
1.6 times the size of its data (docs/benchmarks.md, "Retention"). A copy (`ATTACH` +
`COPY FROM DATABASE`, as the snapshot is made) holds the data only.

The writer treats a database file replaced under it as lost (callstatus/receiver/writer.py), so
compaction runs while no server holds the file: `serve` compacts at start, before it opens the
database, when retention removed, since the last compaction, at least MIN_REMOVED_SHARE as many
webhooks as the file still holds. (DuckDB's free-block count does not tell: the space is lost
inside blocks still in use, measured.) Under daily runs that is every few days' restarts. A
compaction is recorded in retention_runs with trigger 'compaction'. Safe
against kill -9 at any point: the live file is closed cleanly (its WAL checkpointed) before the
copy is renamed over it, the copy is fsynced before the rename, and a leftover copy is removed
by the next attempt.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb

from callstatus.core import rollups
from callstatus.core.db import connect
from callstatus.privacy.maintenance import realign_watermark

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


@dataclass(frozen=True)
class Compaction:
    bytes_before: int
    bytes_after: int
    seconds: float

    def describe(self) -> str:
        return (
            f"compacted the database from {self.bytes_before / 2**20:.1f} MiB to "
            f"{self.bytes_after / 2**20:.1f} MiB in {self.seconds:.1f} s"
        )


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


def _worth_it(con: duckdb.DuckDBPyConnection, min_removed_share: float) -> bool:
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
        if not force and not _worth_it(con, min_removed_share):
            return None
        # Current rollups first: the copy renumbers webhook_rows, and its watermark is then
        # set to the copy's last row (callstatus/privacy/maintenance.py).
        rollups.refresh(con)
        (row,) = con.execute("SELECT current_database()").fetchall()
        source = '"' + str(row[0]).replace('"', '""') + '"'
        con.execute(f"ATTACH ? AS {COPY_ALIAS}", [str(copy)])
        try:
            con.execute(f"COPY FROM DATABASE {source} TO {COPY_ALIAS}")
            # Written before the copy's first checkpoint (at DETACH): changed after it, these
            # two small tables would leave freed blocks inside the fresh file.
            con.execute(f"USE {COPY_ALIAS}")
            try:
                realign_watermark(con)
                _record(con, before)
            finally:
                con.execute(f"USE {source}")
        finally:
            con.execute(f"DETACH {COPY_ALIAS}")
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


def _record(con: duckdb.DuckDBPyConnection, bytes_before: int) -> None:
    """The compaction as a retention_runs row (in the copy: it holds what the file will)."""
    con.execute(
        "INSERT INTO retention_runs (run_id, started_at, finished_at, trigger, horizon, status,"
        " removed) SELECT coalesce(max(run_id), 0) + 1, now(), now(), 'compaction', now(), 'ok',"
        " json_object('file_bytes_before', $before) FROM retention_runs",
        {"before": bytes_before},
    )


def compact_at_start(db_path: Path, memory_limit: str | None = None) -> Compaction | None:
    """`serve`'s compaction before it opens the database; a failure is logged, and the server
    starts on the file as it is."""
    try:
        return compact(db_path, memory_limit=memory_limit)
    except (duckdb.Error, OSError) as exc:
        log.warning("could not compact %s, starting on it as it is: %s", db_path, exc)
        return None
