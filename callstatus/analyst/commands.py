"""`callstatus sql`, and what it shares with `export` (analyst/export.py): opening the data.

While a server holds the database file no other process may open it, not even read-only; then
both commands read the snapshot the server keeps next to it (see callstatus.core.snapshot).

Both run in the analyst's own process, bounded so that a big query cannot starve a server on the
same machine: DuckDB's memory limit (spilling into a temporary folder removed at the end), and
for `sql` an optional time limit that ends the process whatever DuckDB is doing. Results are
not bounded in rows or bytes: stdout and `--out FILE` get every row.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import duckdb

from callstatus.core.db import BASE_CONFIG, held_by_another_process
from callstatus.core.errors import CommandError, UsageError, one_line
from callstatus.core.settings import Settings
from callstatus.core.snapshot import age_s
from callstatus.core.storage import STORAGE_RELATIONS

# Bookkeeping, and what webhook_events reads (exports hold webhook_events itself).
NOT_EXPORTED = frozenset({"schema_migrations"}) | STORAGE_RELATIONS
# The column an export's --since/--until filters on: the first of these a relation has.
TIME_COLUMNS = ("received_at", "started_at", "ended_at", "answered_at", "bucket_at", "bucket")
PARTITIONED = {"webhook_events": "received_at"}
# DuckDB's memory for analysts' commands: beyond it DuckDB spills to a temporary folder.
DEFAULT_MEMORY_LIMIT = "2GB"
MEMORY_SIZE = re.compile(r"\s*\d+(\.\d+)?\s*(KB|MB|GB|TB|KiB|MiB|GiB|TiB)\s*", re.IGNORECASE)
# After --time-limit the query is interrupted; if DuckDB is inside one long function call and
# does not stop within this grace, the process ends.
KILL_GRACE_S = 1.0


class AnalystError(CommandError):
    """A problem the user can fix, reported as one line without a traceback (exit status 1)."""


@dataclass(frozen=True)
class Source:
    path: Path
    snapshot_age_s: float | None  # None when reading the database itself


def _connect(path: Path, memory_limit: str, temp_dir: str | None) -> duckdb.DuckDBPyConnection:
    config: dict[str, str | bool | int | float | list[str]] = {
        **BASE_CONFIG,
        "memory_limit": memory_limit,
    }
    if temp_dir:
        config["temp_directory"] = temp_dir
    con = duckdb.connect(str(path), read_only=True, config=config)
    con.execute("SET TimeZone = 'UTC'")
    return con


def open_source(
    settings: Settings, memory_limit: str = DEFAULT_MEMORY_LIMIT, temp_dir: str | None = None
) -> tuple[duckdb.DuckDBPyConnection, Source]:
    """The database read-only, or the snapshot when a server holds the database."""
    db = settings.db
    if not db.exists():
        raise AnalystError(
            f"no database at {db}: pass --db PATH or set CALLSTATUS_DB "
            "(`callstatus seed --db PATH` makes practice data)"
        )
    try:
        return _connect(db, memory_limit, temp_dir), Source(db, None)
    except duckdb.IOException as exc:
        if not held_by_another_process(exc):
            raise AnalystError(
                f"cannot open {db}: {one_line(exc)}; is it a callstatus database?"
            ) from None
    except duckdb.Error as exc:
        raise AnalystError(
            f"cannot open {db}: {one_line(exc)}; is it a callstatus database?"
        ) from None
    snapshot = settings.snapshot_path
    age = age_s(snapshot)
    if age is None:
        raise AnalystError(
            f"{db} is held by another process (a running server?) that has not written its "
            f"snapshot {snapshot} yet; a server writes one shortly after start "
            "(CALLSTATUS_SNAPSHOT_INTERVAL): try again in a minute"
        )
    try:
        con = _connect(snapshot, memory_limit, temp_dir)
    except duckdb.Error as exc:
        raise AnalystError(
            f"cannot open the snapshot {snapshot}: {one_line(exc)}; try again in a moment"
        ) from None
    return con, Source(snapshot, age)


@contextmanager
def opened(
    settings: Settings,
    memory_limit: str = DEFAULT_MEMORY_LIMIT,
    watchdog: Watchdog | None = None,
) -> Iterator[duckdb.DuckDBPyConnection]:
    """A bounded read-only connection; DuckDB spills into a temporary folder removed after."""
    with tempfile.TemporaryDirectory(prefix="callstatus-") as temp_dir:
        if watchdog is not None:
            watchdog.remove_on_kill(Path(temp_dir))
        con, source = open_source(settings, memory_limit, temp_dir)
        if watchdog is not None:
            watchdog.watch(con)
        if source.snapshot_age_s is not None:
            say(
                f"reading the snapshot written {source.snapshot_age_s:.0f} s ago; "
                "the server holds the live database"
            )
        try:
            yield con
        finally:
            con.close()


def say(message: str) -> None:
    print(f"callstatus: {message}", file=sys.stderr, flush=True)


class Watchdog:
    """Ends a query after `seconds`: interrupts the connections it watches, and if DuckDB does
    not stop within KILL_GRACE_S (one long function call), ends this process with one line."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.fired = False
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._connections: list[duckdb.DuckDBPyConnection] = []
        self._cleanups: list[Path] = []
        if seconds > 0:
            threading.Thread(target=self._watch, name="time-limit", daemon=True).start()

    def watch(self, con: duckdb.DuckDBPyConnection) -> None:
        with self._lock:
            self._connections.append(con)

    def remove_on_kill(self, path: Path) -> None:
        with self._lock:
            self._cleanups.append(path)

    def stop(self) -> None:
        self._done.set()

    def message(self) -> str:
        return (
            f"stopped after {self.seconds:g} s (--time-limit): narrow the query (a WHERE on a "
            "time column) or raise --time-limit"
        )

    def _watch(self) -> None:
        if self._done.wait(self.seconds):
            return
        self.fired = True
        with self._lock:
            connections = list(self._connections)
        for con in connections:
            with suppress(duckdb.Error):
                con.interrupt()
        if self._done.wait(KILL_GRACE_S):
            return
        with self._lock:
            for path in self._cleanups:
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
        print(f"callstatus: error: {self.message()}", file=sys.stderr, flush=True)
        os._exit(1)


# -- callstatus sql ---------------------------------------------------------------------------


def _check_out(out: Path) -> None:
    """Refuse an --out FILE that cannot be written before running the query."""
    folder = out.parent
    if out.is_dir():
        raise AnalystError(f"cannot write to {out}: it is a folder; pass a file name to --out")
    if not folder.is_dir():
        raise AnalystError(
            f"cannot write to {out}: the folder {folder} does not exist; create it or pick "
            "another --out"
        )
    if not os.access(folder, os.W_OK):
        raise AnalystError(
            f"cannot write to {out}: no permission to write in {folder}; pick another --out"
        )


@dataclass(frozen=True)
class SqlOptions:
    """What `callstatus sql` was asked for."""

    query: str
    format: str = "table"  # table, csv, json or parquet
    out: Path | None = None  # None: stdout
    time_limit: float = 0.0  # seconds; 0 for none
    memory_limit: str | None = None  # None: DEFAULT_MEMORY_LIMIT


def run_sql(options: SqlOptions, settings: Settings) -> int:
    fmt = options.format
    out = options.out
    time_limit = options.time_limit
    memory_limit = options.memory_limit or DEFAULT_MEMORY_LIMIT
    if fmt == "parquet" and out is None:
        raise UsageError("--format parquet writes a file: add --out FILE")
    if fmt == "table" and out is not None:
        raise UsageError("--out needs --format csv, json or parquet")
    if time_limit < 0:
        raise UsageError("--time-limit wants seconds, 0 for none")
    if not MEMORY_SIZE.fullmatch(memory_limit):
        raise UsageError(f"--memory-limit wants a size such as 512MB or 4GB, got {memory_limit!r}")
    existed = out is not None and out.exists()
    if out is not None:
        _check_out(out)
    watchdog = Watchdog(time_limit)
    if out is not None and not existed:
        watchdog.remove_on_kill(out)
    try:
        with opened(settings, memory_limit, watchdog) as con:
            relation = con.sql(options.query)
            if relation is None:  # a statement without a result (SET, say)
                return 0
            _emit(con, relation, fmt, out, watchdog)
    except duckdb.Error as exc:
        if out is not None and not existed:
            out.unlink(missing_ok=True)  # no half-written file left behind
        if watchdog.fired or isinstance(exc, duckdb.InterruptException):
            raise AnalystError(watchdog.message()) from None
        raise AnalystError(f"SQL error: {one_line(exc)}") from None
    finally:
        watchdog.stop()
    return 0


def _emit(
    con: duckdb.DuckDBPyConnection,
    relation: duckdb.DuckDBPyRelation,
    fmt: str,
    out: Path | None,
    watchdog: Watchdog,
) -> None:
    if fmt == "table":
        print(relation)
        return
    if out is not None:
        rows = _write(con, relation, fmt, out, watchdog)
        say(f"wrote {rows:,} rows to {out}")
        return
    # DuckDB writes files, not Python streams: go through a temporary file for stdout.
    with tempfile.TemporaryDirectory(prefix="callstatus-sql-") as folder:
        watchdog.remove_on_kill(Path(folder))
        path = Path(folder) / f"result.{fmt}"
        _write(con, relation, fmt, path, watchdog)
        sys.stdout.flush()
        with path.open("rb") as handle:
            shutil.copyfileobj(handle, sys.stdout.buffer)
        sys.stdout.buffer.flush()


COPY_OPTIONS = {
    "csv": "(FORMAT csv, HEADER true)",
    "json": "(FORMAT json, ARRAY true)",
    "parquet": "(FORMAT parquet)",
}


def _write(
    con: duckdb.DuckDBPyConnection,
    relation: duckdb.DuckDBPyRelation,
    fmt: str,
    path: Path,
    watchdog: Watchdog | None = None,
) -> int:
    # A read-only database takes no temporary view, and COPY cannot wrap an arbitrary statement
    # (DESCRIBE, PRAGMA, a trailing semicolon): stream the result as Arrow into a second cursor.
    writer = con.cursor()
    if watchdog is not None:
        watchdog.watch(writer)
    try:
        writer.execute("SET TimeZone = 'UTC'")
        writer.register("__callstatus_result", relation.to_arrow_reader())
        row = writer.execute(
            f"COPY (SELECT * FROM __callstatus_result) TO ? {COPY_OPTIONS[fmt]}", [str(path)]
        ).fetchone()
    finally:
        writer.close()
    return int(row[0]) if row else 0
