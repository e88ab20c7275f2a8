"""One sandboxed query in a process of its own: `python -m callstatus.analyst.sandbox_worker`.

`sandbox` starts this module with pipes on stdin and stdout and kills it when the time
limit passes, whatever DuckDB is doing; a long function call cannot hold the server up, and
memory a query takes dies with this process. The worker is bounded on its own as well: DuckDB's
memory limit and threads, an address-space limit (RLIMIT_AS) above what it uses once the
snapshot is open, a CPU-time limit as a backstop, no core dumps, spilling only into a temporary
folder the parent removes.

Protocol (bytes on the pipes):
- worker → parent: `R` once it is ready (imports done), so a worker can be started ahead of time;
- parent → worker: one JSON line, the request (see `Request`); stdin then stays open, and its
  end means the parent is gone: the worker exits at once;
- worker → parent: one JSON line, the reply; when `ok`, followed by exactly `bytes` bytes of an
  Arrow IPC stream (at most the request's byte limit). Then the worker exits.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import threading
import time
from pathlib import Path
from typing import Any, BinaryIO, TypedDict

import duckdb
import pyarrow as pa
import pyarrow.ipc as pa_ipc

READY = b"R"
MAX_REQUEST_BYTES = 4 * 1024 * 1024
MAX_DETAIL_CHARS = 4000
# Rows per Arrow batch: small, so that wide rows (100 KB strings) make small batches; the row
# limit is 10,000 anyway. (2048 rows of 300 KB took the worker past its address space.)
BATCH_ROWS = 256

SANDBOX: dict[str, str | bool | int | float | list[str]] = {
    "enable_external_access": False,  # no read_csv('/etc/passwd'), COPY, ATTACH of files
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    # DuckDB's Python client otherwise resolves unknown table names to Python variables of the
    # calling frames: a query could read objects of the process.
    "python_enable_replacements": False,
}


class Request(TypedDict):
    snapshot: str
    sql: str
    row_limit: int
    byte_limit: int
    time_limit_s: float
    memory_limit: str  # DuckDB's
    threads: int
    address_space_bytes: int  # RLIMIT_AS allowance above the worker's size once connected
    temp_dir: str
    max_temp_size: str


def open_sandboxed(
    snapshot: Path,
    *,
    memory_limit: str,
    threads: int | None = None,
    temp_dir: str | None = None,
    max_temp_size: str | None = None,
) -> duckdb.DuckDBPyConnection:
    """A read-only connection to the snapshot that can read nothing else and change nothing
    (duckdb.Error when the file cannot be opened)."""
    config: dict[str, str | bool | int | float | list[str]] = {
        "memory_limit": memory_limit,
        **SANDBOX,
    }
    if threads:
        config["threads"] = threads
    if temp_dir:
        config["temp_directory"] = temp_dir
    if max_temp_size:
        config["max_temp_directory_size"] = max_temp_size
    con = duckdb.connect(str(snapshot), read_only=True, config=config)
    # TimeZone belongs to the ICU extension, unknown at connect time: set it, then lock.
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET enable_progress_bar = false")
    con.execute("SET lock_configuration = true")
    return con


def _vm_size() -> int | None:
    """This process's address space in bytes (Linux), None where /proc is missing."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _set_limit(kind: int, soft: int, hard: int | None = None) -> None:
    try:
        _, current_hard = resource.getrlimit(kind)
        hard = soft if hard is None else hard
        if current_hard != resource.RLIM_INFINITY:
            soft, hard = min(soft, current_hard), min(hard, current_hard)
        resource.setrlimit(kind, (soft, hard))
    except (ValueError, OSError):
        pass  # a limit this system will not take: DuckDB's own limits still hold


def bound_process(address_space_bytes: int, cpu_s: float) -> None:
    """Address space at most `address_space_bytes` above the current size, CPU time a backstop
    to the parent's kill, no core dumps."""
    _set_limit(resource.RLIMIT_CORE, 0)
    size = _vm_size()
    if size is not None and address_space_bytes > 0:
        _set_limit(resource.RLIMIT_AS, size + address_space_bytes)
    soft = max(1, int(cpu_s) + 1)
    _set_limit(resource.RLIMIT_CPU, soft, soft + 5)


def _error(kind: str, exc: BaseException | str) -> dict[str, Any]:
    return {"ok": False, "kind": kind, "detail": str(exc)[:MAX_DETAIL_CHARS]}


def _memory_error(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, MemoryError | duckdb.OutOfMemoryException) or any(
        marker in text for marker in ("out of memory", "not enough memory", "bad allocation")
    )


def _fits(batch: pa.RecordBatch, room: int) -> int:
    """The most leading rows of `batch` whose IPC message takes at most `room` bytes."""
    low, high = 0, batch.num_rows
    while low < high:
        middle = (low + high + 1) // 2
        if pa_ipc.get_record_batch_size(batch.slice(0, middle)) <= room:
            low = middle
        else:
            high = middle - 1
    return low


def collect(
    reader: pa.RecordBatchReader, row_limit: int, byte_limit: int
) -> tuple[pa.Buffer, int, str | None]:
    """(Arrow IPC stream, rows, None | 'rows' | 'bytes'): the rows in order until either limit."""
    sink = pa.BufferOutputStream()
    rows = 0
    cut: str | None = None
    with pa_ipc.new_stream(sink, reader.schema) as writer:
        for batch in reader:
            if rows + batch.num_rows > row_limit:
                batch = batch.slice(0, row_limit - rows)
                cut = "rows"
            room = byte_limit - sink.tell()
            if pa_ipc.get_record_batch_size(batch) > room:
                batch = batch.slice(0, _fits(batch, room))
                cut = "bytes"
            if batch.num_rows:
                writer.write_batch(batch)
                rows += batch.num_rows
            if cut:
                break
    return sink.getvalue(), rows, cut


def execute(request: Request) -> tuple[dict[str, Any], pa.Buffer | None]:
    """Run the request's query: (reply, Arrow IPC stream or None)."""
    started = time.perf_counter()
    try:
        con = open_sandboxed(
            Path(request["snapshot"]),
            memory_limit=request["memory_limit"],
            threads=request["threads"],
            temp_dir=request["temp_dir"],
            max_temp_size=request["max_temp_size"],
        )
    except duckdb.Error as exc:
        return _error("open", exc), None
    bound_process(request["address_space_bytes"], request["time_limit_s"] * request["threads"] + 5)
    # The parent kills this process a little after the time limit; interrupting first gives
    # ordinary queries a clean stop.
    timer = threading.Timer(request["time_limit_s"], con.interrupt)
    timer.daemon = True
    timer.start()
    try:
        relation = con.sql(request["sql"])
        if relation is None:
            return _error("no_rows", "no result"), None
        # LIMIT on top lets DuckDB stop early; one extra row tells that rows were cut.
        reader = relation.limit(request["row_limit"] + 1).to_arrow_reader(BATCH_ROWS)
        payload, rows, cut = collect(reader, request["row_limit"], request["byte_limit"])
    except duckdb.InterruptException as exc:
        return _error("time", exc), None
    except duckdb.PermissionException as exc:
        return _error("permission", exc), None
    except Exception as exc:
        if _memory_error(exc):
            return _error("memory", exc), None
        if isinstance(exc, duckdb.Error):
            return _error("sql", exc), None
        raise
    finally:
        timer.cancel()
    reply = {
        "ok": True,
        "rows": rows,
        "bytes": payload.size,
        "truncated": cut,
        "elapsed_s": time.perf_counter() - started,
    }
    return reply, payload


def _exit_when_parent_goes(stdin: BinaryIO) -> None:
    while stdin.read(65536):
        pass
    os._exit(3)


def serve_one(stdin: BinaryIO, out: BinaryIO) -> int:
    out.write(READY)
    out.flush()
    line = stdin.readline(MAX_REQUEST_BYTES)
    if not line.endswith(b"\n"):
        return 0  # the parent went away, or retired this worker unused
    threading.Thread(target=_exit_when_parent_goes, args=(stdin,), daemon=True).start()
    try:
        request: Request = json.loads(line)
        reply, payload = execute(request)
    except Exception as exc:
        reply, payload = _error("internal", f"{type(exc).__name__}: {exc}"), None
    out.write(json.dumps(reply).encode() + b"\n")
    if payload is not None:
        out.write(memoryview(payload))
    out.flush()
    return 0


def main() -> int:
    # The protocol owns the original stdout; anything else printed goes to stderr.
    out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)
    try:
        code = serve_one(sys.stdin.buffer, out)
    except OSError:
        code = 0  # the parent closed the pipes: it no longer wants the answer
    # Skip interpreter teardown (DuckDB, Arrow): the parent waits for this exit.
    os._exit(code)


if __name__ == "__main__":
    main()
