"""`callstatus export`: every table and view to Parquet or CSV files, by whole UTC days."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import duckdb

from callstatus.analyst.commands import (
    COPY_OPTIONS,
    NOT_EXPORTED,
    PARTITIONED,
    TIME_COLUMNS,
    AnalystError,
    opened,
    say,
)
from callstatus.core.errors import UsageError, one_line
from callstatus.core.settings import Settings


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
            raise UsageError(f"--until {until} is before --since {since}: swap them")
        # The last day there is (9999-12-31) has no midnight after it: no upper bound then.
        after = end + timedelta(days=1) if end and end < date.max else None
        return cls(
            datetime.combine(start, time(), UTC) if start else None,
            datetime.combine(after, time(), UTC) if after else None,
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
        raise UsageError(
            f"{flag} wants a day as YYYY-MM-DD (UTC), such as 2026-11-02; got {value!r}"
        ) from None


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
        say(f"exporting {kind} {name} ...")
        rows, target = export_relation(con, name, fmt, out, window)
        files = _files(target)
        total_rows += rows
        total_files += files
        say(f"  {rows:,} rows in {files} file{'s' if files != 1 else ''}: {target}")
    say(f"exported {total_rows:,} rows in {total_files} files to {out}")
    return total_rows


def _prepare_out(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AnalystError(
            f"cannot write to {out}: {exc.strerror or exc}; pick a folder you can write to "
            "with --out"
        ) from None
    if not os.access(out, os.W_OK):
        raise AnalystError(
            f"cannot write to {out}: no permission; pick a folder you can write to with --out"
        )


@dataclass(frozen=True)
class ExportOptions:
    """What `callstatus export` was asked for."""

    out: Path
    format: str = "parquet"  # parquet or csv
    since: str | None = None  # first day, YYYY-MM-DD (UTC)
    until: str | None = None  # last day, YYYY-MM-DD (UTC)


def run_export(options: ExportOptions, settings: Settings) -> int:
    out = options.out
    window = Window.parse(options.since, options.until)
    try:
        with opened(settings) as con:
            _prepare_out(out)
            export_all(con, options.format, out, window)
    except duckdb.Error as exc:
        raise AnalystError(f"export failed: {one_line(exc)}") from None
    except OSError as exc:
        raise AnalystError(
            f"cannot write to {out}: {exc.strerror or exc}; check the folder and the free space"
        ) from None
    return 0
