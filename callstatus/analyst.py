"""`callstatus sql` and `callstatus export`: analysts' read-only access to the call data.

While a server holds the database file no other process may open it, not even read-only; then
both commands read the snapshot the server keeps next to it (see callstatus.snapshot).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import duckdb

from callstatus.db import connect
from callstatus.events import STORAGE_RELATIONS
from callstatus.settings import Settings
from callstatus.snapshot import age_s

# Bookkeeping, and what webhook_events reads (exports hold webhook_events itself).
NOT_EXPORTED = frozenset({"schema_migrations"}) | STORAGE_RELATIONS
# The column an export's --since/--until filters on: the first of these a relation has.
TIME_COLUMNS = ("received_at", "started_at", "ended_at", "answered_at", "bucket_at", "bucket")
PARTITIONED = {"webhook_events": "received_at"}


class AnalystError(Exception):
    """A problem the user can fix, reported as one line without a traceback."""


@dataclass(frozen=True)
class Source:
    path: Path
    snapshot_age_s: float | None  # None when reading the database itself


def is_lock_error(exc: duckdb.Error) -> bool:
    return "lock" in str(exc).lower()


def open_source(settings: Settings) -> tuple[duckdb.DuckDBPyConnection, Source]:
    """The database read-only, or the snapshot when a server holds the database."""
    db = settings.db
    if not db.exists():
        raise AnalystError(
            f"no database at {db}: pass --db PATH or set CALLSTATUS_DB "
            "(`callstatus seed --db PATH` makes practice data)"
        )
    try:
        return connect(db, read_only=True), Source(db, None)
    except duckdb.IOException as exc:
        if not is_lock_error(exc):
            raise AnalystError(f"cannot open {db}: {exc}") from None
    snapshot = settings.snapshot_path
    age = age_s(snapshot)
    if age is None:
        raise AnalystError(
            f"a server holds {db} and has not written its snapshot {snapshot} yet; it writes "
            "one shortly after start (CALLSTATUS_SNAPSHOT_INTERVAL): try again in a minute"
        )
    try:
        con = connect(snapshot, read_only=True)
    except duckdb.Error as exc:
        raise AnalystError(f"cannot open the snapshot {snapshot}: {exc}") from None
    return con, Source(snapshot, age)


@contextmanager
def opened(settings: Settings) -> Iterator[duckdb.DuckDBPyConnection]:
    con, source = open_source(settings)
    if source.snapshot_age_s is not None:
        _say(
            f"reading the snapshot written {source.snapshot_age_s:.0f} s ago; "
            "the server holds the live database"
        )
    try:
        yield con
    finally:
        con.close()


def _say(message: str) -> None:
    print(f"callstatus: {message}", file=sys.stderr, flush=True)


def _fail(message: str) -> int:
    _say(message)
    return 1


# -- callstatus sql ---------------------------------------------------------------------------


def run_sql(args: argparse.Namespace, settings: Settings) -> int:
    fmt: str = args.format
    out: Path | None = args.out
    if fmt == "parquet" and out is None:
        return _fail("--format parquet writes a file: add --out FILE")
    if fmt == "table" and out is not None:
        return _fail("--out needs --format csv, json or parquet")
    try:
        with opened(settings) as con:
            relation = con.sql(args.query)
            if relation is None:  # a statement without a result (SET, say)
                return 0
            _emit(con, relation, fmt, out)
    except AnalystError as exc:
        return _fail(str(exc))
    except duckdb.Error as exc:
        return _fail(f"SQL error: {exc}")
    return 0


def _emit(
    con: duckdb.DuckDBPyConnection, relation: duckdb.DuckDBPyRelation, fmt: str, out: Path | None
) -> None:
    if fmt == "table":
        print(relation)
        return
    if out is not None:
        rows = _write(con, relation, fmt, out)
        _say(f"wrote {rows:,} rows to {out}")
        return
    # DuckDB writes files, not Python streams: go through a temporary file for stdout.
    with tempfile.TemporaryDirectory(prefix="callstatus-sql-") as folder:
        path = Path(folder) / f"result.{fmt}"
        _write(con, relation, fmt, path)
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
    con: duckdb.DuckDBPyConnection, relation: duckdb.DuckDBPyRelation, fmt: str, path: Path
) -> int:
    # A read-only database takes no temporary view, and COPY cannot wrap an arbitrary statement
    # (DESCRIBE, PRAGMA, a trailing semicolon): stream the result as Arrow into a second cursor.
    writer = con.cursor()
    try:
        writer.execute("SET TimeZone = 'UTC'")
        writer.register("__callstatus_result", relation.to_arrow_reader())
        row = writer.execute(
            f"COPY (SELECT * FROM __callstatus_result) TO ? {COPY_OPTIONS[fmt]}", [str(path)]
        ).fetchone()
    finally:
        writer.close()
    return int(row[0]) if row else 0


# -- callstatus export ------------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """Whole UTC days, both ends included; None is open-ended."""

    since: datetime | None
    until: datetime | None  # exclusive: midnight after the last day

    @classmethod
    def parse(cls, since: str | None, until: str | None) -> Window:
        start = _day(since, "--since")
        end = _day(until, "--until")
        if start and end and end < start:
            raise AnalystError(f"--until {until} is before --since {since}")
        return cls(
            datetime.combine(start, time(), UTC) if start else None,
            datetime.combine(end + timedelta(days=1), time(), UTC) if end else None,
        )

    def where(self, column: str | None) -> tuple[str, list[object]]:
        clauses: list[str] = []
        params: list[object] = []
        if column and self.since:
            clauses.append(f'"{column}" >= ?')
            params.append(self.since)
        if column and self.until:
            clauses.append(f'"{column}" < ?')
            params.append(self.until)
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def _day(value: str | None, flag: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise AnalystError(f"{flag} wants a day as YYYY-MM-DD, got {value!r}") from None


def relations(con: duckdb.DuckDBPyConnection) -> list[tuple[str, str]]:
    """(name, 'table' | 'view') of every relation in the main schema, tables first."""
    rows = con.execute(
        "SELECT table_name, CASE table_type WHEN 'VIEW' THEN 'view' ELSE 'table' END "
        "FROM information_schema.tables "
        "WHERE table_catalog = current_database() AND table_schema = 'main' "
        "ORDER BY table_type, table_name"
    ).fetchall()
    return [(str(name), str(kind)) for name, kind in rows if name not in NOT_EXPORTED]


def time_column(con: duckdb.DuckDBPyConnection, name: str) -> str | None:
    columns = {
        str(row[0])
        for row in con.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_catalog = current_database() AND table_schema = 'main' "
            "AND table_name = ?",
            [name],
        ).fetchall()
    }
    return next((column for column in TIME_COLUMNS if column in columns), None)


def export_relation(
    con: duckdb.DuckDBPyConnection, name: str, fmt: str, out: Path, window: Window
) -> tuple[int, Path]:
    """Write one table or view under `out`; return (rows, file or folder written)."""
    column = time_column(con, name)
    where, params = window.where(column)
    quoted = '"' + name.replace('"', '""') + '"'  # names come from the catalog, not from users
    if fmt == "parquet" and name in PARTITIONED:
        # Hive style day=YYYY-MM-DD folders: DuckDB, pandas/pyarrow and polars read them back
        # with the day as a column, and skip days a filter excludes.
        target = out / name
        day = PARTITIONED[name]
        sql = (
            f'COPY (SELECT *, CAST("{day}" AS DATE) AS day FROM {quoted}{where}) TO ? '
            "(FORMAT parquet, PARTITION_BY (day), OVERWRITE true)"
        )
    else:
        target = out / f"{name}.{fmt}"
        sql = f"COPY (SELECT * FROM {quoted}{where}) TO ? {COPY_OPTIONS[fmt]}"
    row = con.execute(sql, [*params, str(target)]).fetchone()
    return (int(row[0]) if row else 0), target


def _files(target: Path) -> int:
    if target.is_dir():
        return sum(1 for path in target.rglob("*") if path.is_file())
    return 1 if target.exists() else 0


def export_all(con: duckdb.DuckDBPyConnection, fmt: str, out: Path, window: Window) -> int:
    """Export every table and view, reporting progress; return the number of rows written."""
    con.execute("SET preserve_insertion_order = false")  # less memory; row order is moot here
    out.mkdir(parents=True, exist_ok=True)
    total_rows = total_files = 0
    for name, kind in relations(con):
        _say(f"exporting {kind} {name} ...")
        rows, target = export_relation(con, name, fmt, out, window)
        files = _files(target)
        total_rows += rows
        total_files += files
        _say(f"  {rows:,} rows in {files} file{'s' if files != 1 else ''}: {target}")
    _say(f"exported {total_rows:,} rows in {total_files} files to {out}")
    return total_rows


def run_export(args: argparse.Namespace, settings: Settings) -> int:
    out: Path = args.out
    try:
        window = Window.parse(args.since, args.until)
        with opened(settings) as con:
            export_all(con, args.format, out, window)
    except AnalystError as exc:
        return _fail(str(exc))
    except duckdb.Error as exc:
        return _fail(f"export failed: {exc}")
    except OSError as exc:
        return _fail(f"cannot write to {out}: {exc}")
    return 0
