"""A dashboard's replica: what the receivers stored in PostgreSQL, copied into the local DuckDB
file (CALLSTATUS_DB) exactly once, every half second.

One sync step reads PostgreSQL in one REPEATABLE READ transaction and writes DuckDB in one
transaction, the rows and the point they were read up to (replica_state, migration 0014)
together: a crash between reading and committing leaves the replica as it was, and the next
step reads the same rows again.

Which rows are new (the design: callstatus/cluster/migrations/0001_webhooks.sql): every row
records the transaction that wrote it (`tx`). A step remembers the snapshot it read in; the next
one reads the rows whose transaction that snapshot did not see (still running then, or begun
after): `tx >= xmin AND NOT pg_visible_in_snapshot(tx, last)`. A transaction the last snapshot
saw had committed before it (or rolled back, leaving no rows), so its rows were all read then;
one it did not see is read now if it has committed since, or later. So a row arrives once,
whatever order transactions commit in, and no row is looked up in the replica.

The rows travel as PostgreSQL's COPY text format, which escapes only backslashes and control
characters (never the quotes JSON is full of, as CSV would), in chunks cut at line ends (a
value's line ends are escaped), each read by DuckDB's CSV reader straight into webhook_inbox.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

import duckdb
import psycopg

from callstatus.cluster import deletions, pg
from callstatus.core.db import Database
from callstatus.core.jobs import PeriodicJob

log = logging.getLogger("callstatus.replica")

SYNC_EVERY_S = 0.5
# A step hands DuckDB the rows in chunks of about this size: memory stays flat while a replica
# is rebuilt from millions of rows.
CHUNK_BYTES = 32 * 2**20
# A step that fails (PostgreSQL unreachable) is logged once, then again every this many seconds.
LOG_EVERY_S = 60.0
PROGRESS_EVERY_S = 10.0

# (column, DuckDB type, text written by COPY needs unescaping) of each table copied by tx.
_INBOX = (
    ("event_id", "UUID", False),
    ("received_at", "TIMESTAMPTZ", False),
    ("kind", "VARCHAR", True),
    ("http_method", "VARCHAR", True),
    ("params", "JSON", True),
    ("signature", "VARCHAR", True),
    ("duplicate", "BOOLEAN", False),
    ("params_hash", "BIGINT", False),
    ("typed", "JSON", True),
)
_REJECTED = (
    ("rejected_id", "UUID", False),
    ("received_at", "TIMESTAMPTZ", False),
    ("reason", "VARCHAR", True),
    ("path", "VARCHAR", True),
    ("http_method", "VARCHAR", True),
    ("checked_url", "VARCHAR", True),
    ("headers", "JSON", True),
    ("params", "JSON", True),
    ("truncated", "BOOLEAN", False),
)
_RECEIVERS = ("receiver", "started_at", "seen_at", "last_webhook_at", "spool_depth", "stored")

# COPY's text format writes these characters as a backslash and a letter.
_ESCAPES = (("n", 10), ("t", 9), ("r", 13), ("b", 8), ("f", 12), ("v", 11))


def _unescaped(column: str) -> str:
    """SQL undoing COPY's escapes in `column`. Text in PostgreSQL never holds a NUL, so a NUL
    stands in for escaped backslashes while the other escapes are replaced."""
    expr = f"replace({column}, '\\\\', chr(0))"
    for letter, code in _ESCAPES:
        expr = f"replace({expr}, '\\{letter}', chr({code}))"
    expr = f"replace({expr}, chr(0), '\\')"
    return f"CASE WHEN contains({column}, '\\') THEN {expr} ELSE {column} END"


@dataclass(frozen=True)
class _Copied:
    """A table read by transaction ids: its PostgreSQL SELECT and its DuckDB INSERT."""

    table: str
    columns: tuple[tuple[str, str, bool], ...]

    def copy_sql(self, since: bool) -> str:
        names = ", ".join(name for name, _, _ in self.columns)
        where = " WHERE tx >= %s::xid8 AND NOT pg_visible_in_snapshot(tx, %s::pg_snapshot)"
        return f"COPY (SELECT {names} FROM {self.table}{where if since else ''}) TO STDOUT"

    def insert_sql(self) -> str:
        names = ", ".join(name for name, _, _ in self.columns)
        # Read as text: DuckDB's reader has no JSON type, and escapes are undone before casts.
        types = ", ".join(
            f"'{name}': '{'VARCHAR' if kind == 'JSON' else kind}'" for name, kind, _ in self.columns
        )
        values = ", ".join(
            (_unescaped(name) if escaped else name) + ("::JSON" if kind == "JSON" else "")
            for name, kind, escaped in self.columns
        )
        return (
            f"INSERT INTO {self.table} ({names}) SELECT {values} FROM read_csv($path,"
            f" columns = {{{types}}}, delim = '\t', quote = '', escape = '', header = false,"
            " nullstr = '\\N', auto_detect = false)"
        )


INBOX = _Copied("webhook_inbox", _INBOX)
REJECTED = _Copied("rejected_webhooks", _REJECTED)


class ReplicaMismatch(RuntimeError):
    """The replica was built from another PostgreSQL: its position means nothing here."""


@dataclass(frozen=True)
class State:
    """How far the replica has read (replica_state)."""

    watermark: int
    snapshot: str
    synced_at: datetime
    finished_at: datetime
    total_webhooks: int
    source: str


@dataclass(frozen=True)
class SyncResult:
    webhooks: int
    rejected: int
    repeats_copied: bool
    receivers_copied: bool
    snapshot: str
    took_s: float


# Called inside a step's DuckDB transaction with (table, rows copied so far).
Progress = Callable[[str, int], None]


def state(cur: duckdb.DuckDBPyConnection) -> State | None:
    """The replica's position; None before its first sync (a new or deleted file)."""
    rows = cur.execute(
        "SELECT watermark, snapshot, synced_at, finished_at, total_webhooks, source"
        " FROM replica_state"
    ).fetchall()
    if not rows:
        return None
    w, snapshot, synced_at, finished_at, total, source = rows[0]
    return State(int(w), str(snapshot), synced_at, finished_at, int(total), str(source))


def source_of(con: psycopg.Connection[tuple[object, ...]]) -> str:
    """host:port/database of a connection: where a replica copies from, without credentials."""
    info = con.info
    return f"{info.host}:{info.port}/{info.dbname}"


def sync_once(
    con: psycopg.Connection[tuple[object, ...]],
    cur: duckdb.DuckDBPyConnection,
    *,
    progress: Progress | None = None,
    chunk_bytes: int = CHUNK_BYTES,
    folder: Path | None = None,
) -> SyncResult:
    """Copy what PostgreSQL committed since the last step into the replica, in one DuckDB
    transaction with the new position. `con` must not be in a transaction; the chunks pass
    through files in `folder` (the system's temporary folder by default)."""
    started = time.perf_counter()
    synced_at = datetime.now(UTC)  # before the snapshot: what was committed then is read
    last = state(cur)
    con.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
    try:
        # The first statement takes the transaction's snapshot, the one every read below sees.
        row = con.execute(
            "SELECT pg_current_snapshot()::text,"
            " pg_snapshot_xmin(pg_current_snapshot())::text::bigint"
        ).fetchone()
        assert row is not None
        snapshot, xmin = str(row[0]), int(str(row[1]))
        if last is not None:
            _check_same_store(con, last)
        else:
            _check_empty(cur)
        cur.execute("BEGIN")
        try:
            since = None if last is None else (str(last.watermark), last.snapshot)
            webhooks = _copy(con, cur, INBOX, since, progress, chunk_bytes, folder)
            rejected = _copy(con, cur, REJECTED, since, progress, chunk_bytes, folder)
            repeats = _copy_repeats(con, cur)
            receivers = _copy_receivers(con, cur)
            total = (0 if last is None else last.total_webhooks) + webhooks
            cur.execute("DELETE FROM replica_state")
            cur.execute(
                "INSERT INTO replica_state VALUES ($watermark, $snapshot, $synced_at, now(),"
                " $webhooks, $rejected, $total, $source)",
                {
                    "watermark": xmin,
                    "snapshot": snapshot,
                    "synced_at": synced_at,
                    "webhooks": webhooks,
                    "rejected": rejected,
                    "total": total,
                    "source": source_of(con),
                },
            )
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
    finally:
        # Read only: nothing to keep. A broken connection is left to the caller to close.
        status = con.info.transaction_status
        if status in (psycopg.pq.TransactionStatus.INTRANS, psycopg.pq.TransactionStatus.INERROR):
            con.execute("ROLLBACK")
    took = time.perf_counter() - started
    return SyncResult(webhooks, rejected, repeats, receivers, snapshot, took)


def _check_empty(cur: duckdb.DuckDBPyConnection) -> None:
    """A replica's first step finds no webhooks: one holding some did not get them from
    PostgreSQL (a single server's file), and adding PostgreSQL's would show two histories, only
    on this dashboard, and the calls imported from it twice."""
    count = foreign_webhooks(cur)
    if count:
        row = cur.execute(
            "SELECT path FROM duckdb_databases() WHERE database_name = current_database()"
        ).fetchone()
        raise ReplicaMismatch(not_a_replica(str(row[0]) if row else "this file", count))


def foreign_webhooks(cur: duckdb.DuckDBPyConnection) -> int:
    """The webhooks a DuckDB file holds that did not come from PostgreSQL: all of them while it
    has never synced (no replica_state row), else none. A file of any schema version."""
    listed = cur.execute(
        "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database()"
    ).fetchall()
    tables = {str(r[0]) for r in listed}
    if "replica_state" in tables:
        synced = cur.execute("SELECT count(*) FROM replica_state").fetchone()
        if synced is not None and synced[0]:
            return 0
    webhooks = ("webhook_inbox", "webhook_rows")
    parts = [f"(SELECT count(*) FROM {t})" for t in webhooks if t in tables]
    if not parts:
        return 0
    row = cur.execute("SELECT " + " + ".join(parts)).fetchone()
    return int(row[0]) if row is not None else 0


def not_a_replica(path: str, count: int) -> str:
    return (
        f"{path} holds {count:,} webhooks that did not come from PostgreSQL (a single server's "
        f"file): copy them into PostgreSQL with `callstatus import --from {path}` (the server "
        "stopped), then give this dashboard a new CALLSTATUS_DB; or move the file aside to show "
        "PostgreSQL's webhooks only"
    )


def _check_same_store(con: psycopg.Connection[tuple[object, ...]], last: State) -> None:
    """Transaction ids only grow: a replica that has read past the store's newest transaction
    was built from another PostgreSQL (or one restored from a backup)."""
    row = con.execute(
        "SELECT pg_snapshot_xmax(%s::pg_snapshot) > pg_snapshot_xmax(pg_current_snapshot())",
        (last.snapshot,),
    ).fetchone()
    if row is not None and row[0]:
        raise ReplicaMismatch(
            f"this replica has read up to transaction {last.snapshot.split(':')[1]} of "
            f"{last.source}, which has not reached it: it was built from another PostgreSQL. "
            "Delete the replica file (CALLSTATUS_DB) and restart: it is rebuilt from this one."
        )


def _copy(
    con: psycopg.Connection[tuple[object, ...]],
    cur: duckdb.DuckDBPyConnection,
    table: _Copied,
    since: tuple[str, str] | None,
    progress: Progress | None,
    chunk_bytes: int,
    folder: Path | None,
) -> int:
    """Copy a table's new rows; return how many. A thread writes PostgreSQL's next chunk to a
    file while DuckDB reads the last one."""
    reader = _Reader(con, table.copy_sql(since is not None), since, chunk_bytes, folder)
    insert = table.insert_sql()
    copied = 0
    try:
        for path in reader.chunks():
            try:
                (count,) = cur.execute(insert, {"path": str(path)}).fetchall()[0]
            finally:
                path.unlink(missing_ok=True)
            copied += int(count)
            if progress is not None:
                progress(table.table, copied)
    finally:
        reader.close()
    return copied


class _Reader:
    """COPY's output written by a thread into temporary files of about `chunk_bytes` each,
    handed over as they are complete (two waiting at most)."""

    def __init__(
        self,
        con: psycopg.Connection[tuple[object, ...]],
        sql: str,
        params: tuple[str, str] | None,
        chunk_bytes: int,
        folder: Path | None,
    ) -> None:
        self.chunk_bytes = chunk_bytes
        self.folder = folder
        self._queue: queue.Queue[Path | BaseException | None] = queue.Queue(maxsize=2)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._read, args=(con, sql, params), name="callstatus-replica-read"
        )
        self._thread.start()

    def _read(
        self,
        con: psycopg.Connection[tuple[object, ...]],
        sql: str,
        params: tuple[str, str] | None,
    ) -> None:
        out: BinaryIO | None = None
        path: Path | None = None
        size = 0
        try:
            with con.cursor() as pg_cur, pg_cur.copy(sql, params) as rows:
                # libpq hands COPY's output over a row at a time: a file ends with a row.
                for block in rows:
                    if out is None:
                        fd, name = tempfile.mkstemp(suffix=".tsv", dir=self.folder)
                        out, path, size = os.fdopen(fd, "wb", buffering=2**20), Path(name), 0
                    size += out.write(block)
                    if size >= self.chunk_bytes and block[-1:] == b"\n":
                        out.close()
                        out = None
                        if not self._put(path):
                            return
                        path = None
                if out is not None:
                    out.close()
                    if not self._put(path):
                        return
                    path = None
            self._put(None)
        except BaseException as exc:
            self._put(exc)
        finally:
            if out is not None:
                out.close()
            if path is not None:  # not handed over
                path.unlink(missing_ok=True)

    def _put(self, item: Path | BaseException | None) -> bool:
        """Hand an item over unless the consumer gave up (then False)."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def chunks(self) -> Iterator[Path]:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        """Stop reading, and remove the files nobody will read."""
        self._stop.set()
        self._thread.join()
        while not self._queue.empty():
            item = self._queue.get()
            if isinstance(item, Path):
                item.unlink(missing_ok=True)


def _copy_repeats(
    con: psycopg.Connection[tuple[object, ...]], cur: duckdb.DuckDBPyConnection
) -> bool:
    """webhook_repeats only ever grows (counts added, buckets added): copied whole when its row
    count or sum differs from the replica's."""
    totals = "SELECT count(*), coalesce(sum(repeats), 0) FROM webhook_repeats"
    there = con.execute(totals).fetchone()
    here = cur.execute(totals).fetchall()[0]
    if there is None or (int(str(there[0])), int(str(there[1]))) == (int(here[0]), int(here[1])):
        return False
    rows = con.execute("SELECT bucket, kind, repeats FROM webhook_repeats").fetchall()
    cur.execute("DELETE FROM webhook_repeats")
    cur.execute(
        "INSERT INTO webhook_repeats SELECT unnest($b::TIMESTAMPTZ[]), unnest($k::VARCHAR[]),"
        " unnest($r::BIGINT[])",
        {
            "b": [row[0] for row in rows],
            "k": [row[1] for row in rows],
            "r": [row[2] for row in rows],
        },
    )
    return True


def _copy_receivers(
    con: psycopg.Connection[tuple[object, ...]], cur: duckdb.DuckDBPyConnection
) -> bool:
    """The receivers' heartbeats, a row each: copied whole when they changed."""
    names = ", ".join(_RECEIVERS)
    there = sorted(con.execute(f"SELECT {names} FROM receivers").fetchall(), key=str)
    here = sorted(cur.execute(f"SELECT {names} FROM cluster_receivers").fetchall(), key=str)
    if there == here:
        return False
    cur.execute("DELETE FROM cluster_receivers")
    if there:
        columns = list(zip(*there, strict=True))
        cur.execute(
            f"INSERT INTO cluster_receivers ({names}) SELECT unnest($a::VARCHAR[]),"
            " unnest($b::TIMESTAMPTZ[]), unnest($c::TIMESTAMPTZ[]), unnest($d::TIMESTAMPTZ[]),"
            " unnest($e::BIGINT[]), unnest($f::BIGINT[])",
            {key: list(values) for key, values in zip("abcdef", columns, strict=True)},
        )
    return True


class SyncJob:
    """Keeps the server's database a replica of CALLSTATUS_POSTGRES_URL: a step every
    SYNC_EVERY_S in its own thread, over one kept connection (opened again after a failure)."""

    def __init__(self, database: Database, url: str, interval_s: float = SYNC_EVERY_S) -> None:
        self.database = database
        self.url = url
        self._con: psycopg.Connection[tuple[object, ...]] | None = None
        self.last: SyncResult | None = None
        self.last_error: str | None = None
        self._logged_at = 0.0
        self._progress_at = time.monotonic()
        self._lock = threading.Lock()  # one step at a time: the loop's and sync_now's
        self._replaced_logged = False
        self._migrated = False
        self.loop = PeriodicJob("replica", self.step, interval_s)

    @property
    def folder(self) -> Path:
        """Where steps put their chunks: beside the replica, emptied at start (a process killed
        during a step leaves its chunk there)."""
        return self.database.absolute_path.with_name(self.database.absolute_path.name + ".sync")

    def start(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.loop.start()

    def step(self) -> None:
        """The loop's step: a failure is logged (by `_failed`) and retried at the next."""
        if self.database.replaced() and not self._replaced_logged:
            # DuckDB goes on writing to the file it opened, now nowhere: say how to rebuild.
            log.error(
                "replica: %s was deleted or replaced while this dashboard runs: restart it to"
                " rebuild the replica from PostgreSQL",
                self.database.path,
            )
            self._replaced_logged = True
        with contextlib.suppress(psycopg.Error, ReplicaMismatch):
            self.sync_now()

    def sync_now(self) -> SyncResult:
        """One step now, after the one running if any (reconciliation's records are read back
        right after they are stored); raises when PostgreSQL cannot be read."""
        with self._lock:
            result = self._sync_locked()
        if result.webhooks > 10_000 or result.took_s > 1.0:
            log.info(
                "replica: %d webhooks copied from PostgreSQL in %.2f s",
                result.webhooks,
                result.took_s,
            )
        return result

    def _sync_locked(self) -> SyncResult:
        try:
            if self._con is None or self._con.closed:
                if not self._migrated:
                    # A dashboard started before any receiver finds the store unmigrated.
                    applied = pg.migrate(self.url)
                    if applied:
                        log.info("PostgreSQL store migrated: %s", ", ".join(applied))
                    self._migrated = True
                self._con = pg.connect(self.url, autocommit=True)
            self.folder.mkdir(parents=True, exist_ok=True)
            result = sync_once(
                self._con, self.database.cursor(), progress=self._progress, folder=self.folder
            )
        except (psycopg.Error, ReplicaMismatch) as exc:
            self._failed(exc)
            raise
        if self.last_error is not None:
            log.info("replica: PostgreSQL reachable again")
        self.last_error = None
        self.last = result
        self._flush_deletions()
        return result

    def _flush_deletions(self) -> None:
        """Deletions left waiting for PostgreSQL (callstatus.cluster.deletions), tried again."""
        path = deletions.pending_path(self.database.absolute_path)
        if not path.exists():
            return
        try:
            counts = deletions.flush_pending(self.url, path)
        except psycopg.Error as exc:
            log.warning("replica: deletions still waiting for PostgreSQL in %s: %s", path, exc)
            return
        log.info("replica: deletions that waited are done in PostgreSQL: %s", counts)

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """No step runs meanwhile; one runs first (raising PostgresUnreachable when PostgreSQL
        cannot be read), so the replica holds what PostgreSQL had."""
        with self._lock:
            try:
                self._sync_locked()
            except (psycopg.Error, ReplicaMismatch) as exc:
                raise deletions.PostgresUnreachable(
                    f"clustered mode removes rows from PostgreSQL too, and it cannot be read "
                    f"now ({type(exc).__name__}: {' '.join(str(exc).split())}): nothing was "
                    "removed; try again once PostgreSQL is reachable"
                ) from exc
            yield

    def mirrored(self) -> AbstractContextManager[deletions.Mirrored]:
        """Around an erasure or a retention run on the replica: the sync held, then what it
        removed deleted in PostgreSQL too (callstatus.cluster.deletions)."""
        return deletions.mirrored(
            self.database.cursor(), self.url, self.database.absolute_path, hold=self.held
        )

    def _progress(self, table: str, rows: int) -> None:
        # A rebuild from millions of rows takes a while: say how far it is now and then.
        now = time.monotonic()
        if now - self._progress_at > PROGRESS_EVERY_S:
            self._progress_at = now
            log.info("replica: %s: %d rows copied so far", table, rows)

    def _failed(self, exc: Exception) -> None:
        message = f"{type(exc).__name__}: {exc}".strip()
        if self._con is not None:
            self._con.close()
            self._con = None
        now = time.monotonic()
        if message != self.last_error or now - self._logged_at > LOG_EVERY_S:
            log.warning("replica: the sync failed, will retry: %s", message)
            self._logged_at = now
        self.last_error = message

    def stop(self) -> None:
        """Stop the loop after a final step, then close the connection."""
        self.loop.stop()
        shutil.rmtree(self.folder, ignore_errors=True)
        if self._con is not None:
            self._con.close()
            self._con = None
