"""Read-only SQL for a shared dashboard: one query on the snapshot, sandboxed, bounded.

Layers, each enough on its own for the common case: only SELECT-like statements pass the check;
the query runs in a worker process of its own (`sandbox_worker`), which opens the snapshot
read-only with external access (files, network), extension loading and Python-variable scans
off and the configuration locked so that a query cannot turn them back on. The worker is killed
when the time limit passes, whatever it is doing; its memory, threads and address space are
bounded, so a runaway query dies there and not in the server; results stop at a row limit and a
byte limit (Arrow IPC), and this process never reads more than that from the worker.

A worker is started ahead of time after a query (one spare, retired when idle), so a query pays
for opening the snapshot, not for starting Python.

Why one module of about 600 lines: the statement check, the worker's life (spawn, slot, pipe
protocol, kill) and the refusal messages are one guarantee (nothing a query does escapes its
limits), and reading them side by side is how that guarantee is reviewed; the worker's own half
is `sandbox_worker.py`.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import json
import os
import selectors
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.ipc as pa_ipc
import pyarrow.parquet as pq

from callstatus.analyst import sandbox_worker as sql_worker
from callstatus.analyst.sandbox_worker import SANDBOX
from callstatus.core.storage import STORAGE_RELATIONS

__all__ = [
    "EXAMPLES",
    "SANDBOX",
    "QueryResult",
    "Refused",
    "check_statement",
    "connect_sandboxed",
    "run_query",
    "schema",
    "to_csv_bytes",
    "to_parquet_bytes",
]

MiB = 1024 * 1024
GiB = 1024 * MiB

DEFAULT_TIME_LIMIT_S = 10.0
DEFAULT_ROW_LIMIT = 10_000
DEFAULT_BYTE_LIMIT = 32 * MiB  # of Arrow IPC, what this process reads from the worker at most
DEFAULT_MEMORY_LIMIT = "1GB"  # DuckDB's, inside the worker
WORKER_THREADS = 2
# Address space the worker may add once the snapshot is open: DuckDB's memory limit covers its
# buffers, not every string a function builds; past this the worker's allocations fail.
WORKER_ADDRESS_SPACE = 2 * GiB
WORKER_TEMP_SIZE = "1GB"  # spilled to a temporary folder, removed after the query
KILL_GRACE_S = 1.0  # after the time limit the worker interrupts itself; then SIGKILL
STARTUP_TIMEOUT_S = 30.0
SPARE_IDLE_S = 600.0
MAX_RUNNING = 2  # queries at once; more wait (within their time limit) for a slot
MAX_REPLY_HEADER = 64 * 1024
POLL_S = 0.05

ALLOWED = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}


class Refused(Exception):
    """A query the SQL page will not run, with a message meant for the person who typed it."""


@dataclass(frozen=True)
class QueryResult:
    table: pa.Table
    truncated: bool  # rows were left out: see truncated_reason
    elapsed_s: float
    truncated_reason: str | None = None  # None, "rows" (the row limit) or "bytes" (byte limit)
    row_limit: int = DEFAULT_ROW_LIMIT
    byte_limit: int = DEFAULT_BYTE_LIMIT

    @property
    def notice(self) -> str | None:
        """What to tell the person who ran the query about rows left out, if any were."""
        rows = self.table.num_rows
        if self.truncated_reason == "bytes":
            return (
                f"Result cut at {_megabytes(self.byte_limit)} after {rows:,} rows (the size "
                "limit): select fewer or narrower columns, or aggregate; "
                "`callstatus sql --out FILE` writes everything."
            )
        if self.truncated:
            return (
                f"Showing the first {rows:,} rows only (the row limit): aggregate, or use "
                "`callstatus export` / `callstatus sql --format parquet` for everything."
            )
        return None


def _megabytes(size: int) -> str:
    return f"{size / MiB:g} MB"


def check_statement(sql: str) -> str:
    """The one read-only statement in `sql`, or Refused saying why not."""
    if not sql.strip():
        raise Refused("Type a query first.")
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise Refused(f"SQL error: {exc}") from None
    if len(statements) != 1:
        raise Refused(
            f"Run exactly one statement at a time (found {len(statements)}); "
            "remove the extra ones or the semicolons between them."
        )
    statement = statements[0]
    if statement.type not in ALLOWED:
        kind = statement.type.name
        raise Refused(
            f"Only read-only queries (SELECT, WITH, FROM, DESCRIBE, SUMMARIZE, EXPLAIN) run here; "
            f"this statement is {kind}. The data is a read-only snapshot."
        )
    return str(statement.query)


def _no_snapshot(snapshot: Path) -> Refused:
    return Refused(f"No snapshot yet at {snapshot}: the server writes one shortly after it starts.")


def connect_sandboxed(
    snapshot: Path, memory_limit: str = DEFAULT_MEMORY_LIMIT
) -> duckdb.DuckDBPyConnection:
    """A read-only connection to the snapshot that can read nothing else and change nothing, in
    this process (the schema list; queries run in a worker)."""
    if not snapshot.exists():
        raise _no_snapshot(snapshot)
    try:
        return sql_worker.open_sandboxed(snapshot, memory_limit=memory_limit)
    except duckdb.Error as exc:
        raise Refused(f"Cannot open the snapshot {snapshot}: {exc}") from None


# -- running a query in a worker --------------------------------------------------------------


def run_query(
    snapshot: Path,
    sql: str,
    *,
    time_limit_s: float = DEFAULT_TIME_LIMIT_S,
    row_limit: int = DEFAULT_ROW_LIMIT,
    byte_limit: int = DEFAULT_BYTE_LIMIT,
    cancelled: Callable[[], bool] | None = None,
) -> QueryResult:
    """Run one read-only query on the snapshot within the limits; Refused explains any refusal.

    The query runs in a worker process, killed at the time limit (plus a short grace) and when
    this call ends any other way: `cancelled` returning true, an exception in the caller's thread.
    """
    if time_limit_s <= 0 or row_limit < 0 or byte_limit <= 0:
        raise ValueError("time_limit_s and byte_limit must be positive, row_limit not negative")
    statement = check_statement(sql)
    if not snapshot.exists():
        raise _no_snapshot(snapshot)
    waited = _acquire_slot(time_limit_s, cancelled)
    try:
        return _run_in_worker(
            snapshot,
            statement,
            time_limit_s - waited,
            time_limit_s,
            row_limit,
            byte_limit,
            cancelled,
        )
    finally:
        _slots.release()


_slots = threading.BoundedSemaphore(MAX_RUNNING)


def _acquire_slot(time_limit_s: float, cancelled: Callable[[], bool] | None) -> float:
    """Wait for one of the MAX_RUNNING slots; the seconds waited count against the time limit."""
    started = time.monotonic()
    while not _slots.acquire(timeout=POLL_S):
        waited = time.monotonic() - started
        if cancelled is not None and cancelled():
            raise Refused("Cancelled.")
        if waited >= time_limit_s / 2:
            raise Refused(f"{MAX_RUNNING} other queries are running; try again when they are done.")
    return time.monotonic() - started


def _worker_command() -> list[str]:
    return [sys.executable, "-m", "callstatus.analyst.sandbox_worker"]


# What the worker's interpreter needs from the environment; nothing else reaches the process
# that runs other people's SQL (no tokens, no passwords).
WORKER_ENVIRONMENT = (
    "PATH",
    "HOME",
    "LANG",
    "LANGUAGE",
    "TZ",
    "TMPDIR",
    "VIRTUAL_ENV",
    "PYTHONPATH",
    "PYTHONHOME",
    "LD_LIBRARY_PATH",
)


def _worker_env() -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if name in WORKER_ENVIRONMENT or name.startswith("LC_")
    }
    # Two malloc arenas keep the worker's address space, which RLIMIT_AS bounds, near its use.
    env["MALLOC_ARENA_MAX"] = "2"
    # The worker imports this package from wherever this process did.
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def _spawn() -> subprocess.Popen[bytes]:
    """A worker process, importing while the caller carries on. No fork of this process's
    state: subprocess execs a fresh interpreter, its own session (no terminal signals)."""
    return subprocess.Popen(
        _worker_command(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=_worker_env(),
        close_fds=True,
        start_new_session=True,
    )


def _dispose(proc: subprocess.Popen[bytes], grace_s: float = 0.0) -> None:
    """Make sure the worker is gone and reaped (no zombie): after `grace_s` for it to exit by
    itself, SIGKILL; its pipes closed."""
    if grace_s > 0:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace_s)
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    for pipe in (proc.stdin, proc.stdout):
        if pipe is not None:
            with contextlib.suppress(OSError):
                pipe.close()


class _Pool:
    """At most one spare worker, started after a query and retired when idle."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spare: subprocess.Popen[bytes] | None = None
        self._timer: threading.Timer | None = None
        self.enabled = True

    def take(self) -> subprocess.Popen[bytes]:
        """A worker for one query: the spare if there is one; the next spare starts at once,
        so that it is ready for the query after this one."""
        with self._lock:
            proc, self._spare = self._spare, None
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        if proc is not None and proc.poll() is not None:
            _dispose(proc)
            proc = None
        if proc is None:
            proc = _spawn()
        self.replenish()
        return proc

    def replenish(self) -> None:
        with self._lock:
            if not self.enabled or self._spare is not None:
                return
            try:
                self._spare = _spawn()
            except OSError:
                return  # the next query starts its own
            self._timer = threading.Timer(SPARE_IDLE_S, self.retire)
            self._timer.daemon = True
            self._timer.start()

    def retire(self) -> None:
        """End the spare worker, if any (idle too long, or this process exits)."""
        with self._lock:
            proc, self._spare = self._spare, None
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        if proc is not None:
            _dispose(proc)

    def spare_pid(self) -> int | None:
        with self._lock:
            return self._spare.pid if self._spare is not None else None


_pool = _Pool()
atexit.register(_pool.retire)


class _WorkerGone(Exception):
    """The worker ended before it replied."""


class _TimedOut(Exception):
    pass


class _Channel:
    """Reads the worker's stdout against a deadline, never more than asked for."""

    def __init__(self, proc: subprocess.Popen[bytes], cancelled: Callable[[], bool] | None) -> None:
        assert proc.stdout is not None
        self.fd = proc.stdout.fileno()
        self.cancelled = cancelled
        self.pending = bytearray()
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.fd, selectors.EVENT_READ)

    def close(self) -> None:
        self.selector.close()

    def _fill(self, deadline: float, most: int) -> None:
        """Wait for at least one more byte (at most `most`) before the deadline."""
        while True:
            if self.cancelled is not None and self.cancelled():
                raise Refused("Cancelled.")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _TimedOut
            if self.selector.select(min(remaining, POLL_S)):
                chunk = os.read(self.fd, max(1, most))
                if not chunk:
                    raise _WorkerGone
                self.pending += chunk
                return

    def read_line(self, deadline: float, most: int) -> bytes:
        while b"\n" not in self.pending:
            if len(self.pending) >= most:
                raise _WorkerGone  # not the protocol: treat like a crash
            self._fill(deadline, min(65536, most - len(self.pending)))
        line, _, rest = bytes(self.pending).partition(b"\n")
        self.pending = bytearray(rest)
        return line

    def read_exact(self, size: int, deadline: float) -> bytearray:
        buffer = bytearray(size)
        view = memoryview(buffer)
        done = min(size, len(self.pending))
        view[:done] = self.pending[:done]
        del self.pending[:done]
        while done < size:
            if self.cancelled is not None and self.cancelled():
                raise Refused("Cancelled.")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _TimedOut
            if not self.selector.select(min(remaining, POLL_S)):
                continue
            got = os.readv(self.fd, [view[done:]])
            if not got:
                raise _WorkerGone
            done += got
        return buffer


def _run_in_worker(
    snapshot: Path,
    statement: str,
    time_left_s: float,
    time_limit_s: float,
    row_limit: int,
    byte_limit: int,
    cancelled: Callable[[], bool] | None,
) -> QueryResult:
    temp_dir = tempfile.mkdtemp(prefix="callstatus-sql-")
    proc: subprocess.Popen[bytes] | None = None
    channel: _Channel | None = None
    finished = False
    try:
        try:
            proc = _pool.take()
        except OSError as exc:
            raise Refused(f"Cannot start a query process: {exc}") from None
        channel = _Channel(proc, cancelled)
        try:
            ready = channel.read_exact(1, time.monotonic() + STARTUP_TIMEOUT_S)
        except (_WorkerGone, _TimedOut):
            raise Refused("The query process did not start; try again.") from None
        if bytes(ready) != sql_worker.READY:
            raise Refused("The query process did not start; try again.")
        request: sql_worker.Request = {
            "snapshot": str(snapshot.resolve()),
            "sql": statement,
            "row_limit": row_limit,
            "byte_limit": byte_limit,
            "time_limit_s": max(time_left_s, 0.001),
            "memory_limit": DEFAULT_MEMORY_LIMIT,
            "threads": WORKER_THREADS,
            "address_space_bytes": WORKER_ADDRESS_SPACE,
            "temp_dir": temp_dir,
            "max_temp_size": WORKER_TEMP_SIZE,
        }
        started = time.perf_counter()
        deadline = time.monotonic() + time_left_s + KILL_GRACE_S
        assert proc.stdin is not None
        try:
            proc.stdin.write(json.dumps(request).encode() + b"\n")
            proc.stdin.flush()
        except OSError:
            raise Refused("The query process ended before the query; try again.") from None
        try:
            header = channel.read_line(deadline, MAX_REPLY_HEADER)
            reply = json.loads(header)
            if not reply.get("ok"):
                raise _refusal(reply, time_limit_s)
            size = int(reply["bytes"])
            # The worker cuts its result at byte_limit; the schema's message comes on top.
            if size > byte_limit + MiB:
                raise Refused(
                    f"The result is larger than {_megabytes(byte_limit)}: select fewer columns "
                    "or aggregate."
                )
            payload = channel.read_exact(size, deadline)
        except _TimedOut:
            raise _stopped(time_limit_s) from None
        except (_WorkerGone, ValueError, KeyError):
            raise _crashed(proc) from None
        finished = True
        table = pa_ipc.open_stream(pa.py_buffer(payload)).read_all()
        cut = reply.get("truncated")
        return QueryResult(
            table,
            truncated=cut is not None,
            elapsed_s=time.perf_counter() - started,
            truncated_reason=cut,
            row_limit=row_limit,
            byte_limit=byte_limit,
        )
    finally:
        if channel is not None:
            channel.close()
        if proc is not None:
            # A worker that replied exits by itself; any other is killed now.
            _dispose(proc, grace_s=1.0 if finished else 0.0)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _stopped(time_limit_s: float) -> Refused:
    return Refused(
        f"Stopped after {time_limit_s:g} s, the time limit: narrow the query "
        "(a WHERE on a time column, fewer joins) or aggregate more."
    )


def _out_of_memory() -> Refused:
    return Refused(
        f"The query needed more memory than a query may use here ({DEFAULT_MEMORY_LIMIT}): "
        "filter on a time column, select fewer columns, or aggregate."
    )


def _crashed(proc: subprocess.Popen[bytes]) -> Refused:
    try:
        code = proc.wait(timeout=KILL_GRACE_S)
    except subprocess.TimeoutExpired:
        code = None
    if code is not None and code < 0:
        return Refused(
            f"The query process was ended by signal {-code}, most likely for using too much "
            "memory or CPU: filter on a time column, select fewer columns, or aggregate."
        )
    return Refused("The query process ended without an answer; try again.")


def _refusal(reply: dict[str, object], time_limit_s: float) -> Refused:
    kind = reply.get("kind")
    detail = str(reply.get("detail", ""))
    if kind == "time":
        return _stopped(time_limit_s)
    if kind == "memory":
        return _out_of_memory()
    if kind == "permission":
        return Refused(
            "Reading files, URLs or other databases is disabled here; query the tables and "
            "views listed beside the editor."
        )
    if kind == "no_rows":
        return Refused("That statement returns no rows.")
    if kind == "open":
        return Refused(f"Cannot open the snapshot: {detail}")
    if kind == "sql":
        return Refused(f"SQL error: {detail}")
    return Refused(f"The query failed: {detail}")


def schema(snapshot: Path) -> dict[str, list[tuple[str, str]]]:
    """{'table name' or 'view name (view)': [(column, type), ...]} of the snapshot, for the
    list beside the editor."""
    con = connect_sandboxed(snapshot)
    try:
        rows = con.execute(
            "SELECT c.table_name, t.table_type, c.column_name, c.data_type "
            "FROM information_schema.columns c JOIN information_schema.tables t "
            "USING (table_catalog, table_schema, table_name) "
            "WHERE c.table_schema = 'main' AND c.table_name <> 'schema_migrations' "
            "ORDER BY t.table_type, c.table_name, c.ordinal_position"
        ).fetchall()
    finally:
        con.close()
    relations: dict[str, list[tuple[str, str]]] = {}
    for name, kind, column, data_type in rows:
        if name in STORAGE_RELATIONS:
            continue
        label = f"{name} (view)" if kind == "VIEW" else str(name)
        relations.setdefault(label, []).append((str(column), str(data_type)))
    return relations


def to_csv_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pa_csv.write_csv(table, sink)
    return sink.getvalue()


def to_parquet_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


EXAMPLES: dict[str, str] = {
    "Dial answer rate by hour (did an agent pick up)": """\
-- Dial answer rate = dials with dial_status 'completed' / all dials.
SELECT date_trunc('hour', received_at) AS hour,
       count(*) AS all_dials,
       count(*) FILTER (WHERE dial_status = 'completed') AS answered_dials,
       round(100.0 * answered_dials / all_dials, 1) AS answer_rate_pct
FROM dials
GROUP BY hour
ORDER BY hour DESC
LIMIT 48""",
    "Call answer rate by hour and direction": """\
-- Call answer rate = answered calls / calls that ended.
SELECT date_trunc('hour', started_at) AS hour,
       direction,
       count(*) AS calls_ended,
       count(*) FILTER (WHERE answered) AS answered_calls,
       round(100.0 * answered_calls / calls_ended, 1) AS answer_rate_pct
FROM calls
WHERE outcome <> 'in-progress'
GROUP BY ALL
ORDER BY hour DESC, direction
LIMIT 96""",
    "Top hangup causes": """\
SELECT outcome,
       hangup_cause_code,
       hangup_cause_name,
       count(*) AS ended_calls,
       round(100.0 * ended_calls / sum(ended_calls) OVER (), 1) AS pct
FROM calls
WHERE outcome <> 'in-progress'
GROUP BY ALL
ORDER BY ended_calls DESC
LIMIT 20""",
    "B numbers that never answer": """\
-- Lost-race legs are left out: another phone of the same dial picked up first.
SELECT b_leg_to,
       count(*) AS legs,
       max(ended_at) AS last_tried,
       mode(outcome) AS usual_outcome
FROM dial_legs
WHERE outcome NOT IN ('in-progress', 'lost-race')
GROUP BY b_leg_to
HAVING NOT bool_or(answered)
ORDER BY legs DESC
LIMIT 50""",
}
