"""The analysts' snapshot: a consistent read-only copy of the live database, refreshed while served.

While `callstatus serve` holds the database file no other process may open it, so the server
copies it to `settings.snapshot_path` (ATTACH a temporary file, `COPY FROM DATABASE` in one
transaction, DETACH, atomic rename). Readers holding the previous file keep reading it. The
snapshot file's modification time is the last moment it was known to equal the live data: a check
that finds nothing changed touches it instead of copying.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

import duckdb

from callstatus.core.db import Database
from callstatus.core.jobs import PeriodicJob
from callstatus.core.storage import events_count_and_last

log = logging.getLogger("callstatus.snapshot")

# The name the temporary copy is attached under; never visible to analysts, whose catalog is
# named after the file they open.
TMP_ALIAS = "callstatus_snapshot_tmp"
CHECK_ALIAS = "callstatus_snapshot_check"

Fingerprint = tuple[object, ...]


def _ident(name: str) -> str:
    """A quoted SQL identifier (catalog names come from file names and cannot be bound)."""
    return '"' + name.replace('"', '""') + '"'


def fingerprint(cur: duckdb.DuckDBPyConnection, catalog: str) -> Fingerprint:
    """What changes whenever data or schema changes: the tables are append-only (rejected_webhooks
    loses its oldest rows, webhook_repeats' counts only grow), so row counts and the newest
    receipt time of each, the repeats counted, plus the applied migrations, are enough."""
    c = _ident(catalog)
    # fetchall, not fetchone: a result left unread keeps a read transaction open until this
    # thread's next query, a minute later.
    rows = cur.execute(
        f"SELECT counted.*,"
        f" (SELECT count(*) FROM {c}.main.rejected_webhooks),"
        f" (SELECT max(received_at) FROM {c}.main.rejected_webhooks),"
        f" (SELECT coalesce(sum(repeats), 0) FROM {c}.main.webhook_repeats),"
        f" (SELECT string_agg(name, ',' ORDER BY name) FROM {c}.main.schema_migrations)"
        f" FROM ({events_count_and_last(c)}) AS counted"
    ).fetchall()
    return tuple(rows[0]) if rows else ()


def current_catalog(cur: duckdb.DuckDBPyConnection) -> str:
    (row,) = cur.execute("SELECT current_database()").fetchall()
    return str(row[0])


def tmp_path_for(target: Path) -> Path:
    # Same folder as the target so that os.replace is an atomic rename, hidden so that nobody
    # mistakes a half-written copy for the snapshot.
    return target.with_name(f".{target.name}.tmp")


def _remove(path: Path) -> None:
    for leftover in (path, path.with_name(path.name + ".wal")):
        leftover.unlink(missing_ok=True)


def write_snapshot(cur: duckdb.DuckDBPyConnection, target: Path) -> Fingerprint:
    """Copy the cursor's database to `target` atomically; return the fingerprint of the copy.

    The copy runs in one transaction of `cur`, so it is one point in time: a batch committed by
    the writer meanwhile is either wholly in it or wholly out. Writers keep committing (more
    slowly while the copy competes with them for CPU)."""
    catalog = current_catalog(cur)
    tmp = tmp_path_for(target)
    _remove(tmp)  # a crash during an earlier copy may have left one
    try:
        copied = _copy(cur, catalog, tmp)
        os.replace(tmp, target)
    except BaseException:
        _remove(tmp)
        raise
    return copied


def _copy(cur: duckdb.DuckDBPyConnection, catalog: str, tmp: Path) -> Fingerprint:
    cur.execute("ATTACH ? AS " + TMP_ALIAS, [str(tmp)])
    try:
        cur.execute("BEGIN")
        try:
            copied = fingerprint(cur, catalog)
            cur.execute(f"COPY FROM DATABASE {_ident(catalog)} TO {TMP_ALIAS}")
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
    finally:
        # DETACH checkpoints the copy, so the single file holds everything (no .wal to move).
        cur.execute("DETACH " + TMP_ALIAS)
    return copied


def read_fingerprint(cur: duckdb.DuckDBPyConnection, snapshot: Path) -> Fingerprint | None:
    """The fingerprint of an existing snapshot file, or None if it is missing or unreadable."""
    if not snapshot.exists():
        return None
    try:
        cur.execute(f"ATTACH ? AS {CHECK_ALIAS} (READ_ONLY)", [str(snapshot)])
    except duckdb.Error as exc:
        log.warning("cannot read the snapshot %s, writing a new one: %s", snapshot, exc)
        return None
    try:
        return fingerprint(cur, CHECK_ALIAS)
    except duckdb.Error:
        return None  # an older schema, say: a new copy replaces it
    finally:
        cur.execute("DETACH " + CHECK_ALIAS)


def age_s(snapshot: Path) -> float | None:
    """Seconds since the snapshot was last known current, None if there is none."""
    try:
        return max(0.0, time.time() - snapshot.stat().st_mtime)
    except FileNotFoundError:
        return None


class SnapshotJob:
    """Refreshes the snapshot at most once per interval, only when the data changed."""

    def __init__(self, database: Database, target: Path, interval_s: float) -> None:
        self.database = database
        self.target = target
        self._written: Fingerprint | None = None
        self._lock = threading.Lock()  # one copy at a time
        self.loop = PeriodicJob("snapshot", self.refresh, interval_s)

    def refresh(self) -> bool:
        """Write a new snapshot if the live data differs from the last one; True if written."""
        with self._lock:
            cur = self.database.cursor()
            if self._written is None:
                self._written = read_fingerprint(cur, self.target)
            unchanged = self._written == fingerprint(cur, current_catalog(cur))
            if unchanged and self.target.exists():
                os.utime(self.target)  # confirmed current: its age restarts
                return False
            started = time.perf_counter()
            self._written = write_snapshot(cur, self.target)
            log.info(
                "snapshot written to %s (%.1f MB in %.2f s)",
                self.target,
                self.target.stat().st_size / 1e6,
                time.perf_counter() - started,
            )
            return True
