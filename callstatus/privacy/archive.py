"""The retention archive: what a run removes, as Parquet files partitioned by day of receipt.

Layout: `<archive_dir>/<table>/day=YYYY-MM-DD/part-<run_id>.parquet` (Hive style, as
`callstatus export` writes `webhook_events`), one file per table, day and run. The files are
written and fsynced inside the transaction that then deletes the same rows, so they hold exactly
what is removed. A crash before that commit leaves files of a run still recorded as 'running':
`discard_run` removes them before the next run writes its own, so nothing is stored twice.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from datetime import date
from pathlib import Path

import duckdb

# Archived relations and the column their day comes from (fixed names: formatted into SQL).
DAY_COLUMN = {"webhook_events": "received_at", "rejected_webhooks": "received_at"}
PARQUET = "(FORMAT parquet, COMPRESSION zstd)"


def part_name(run_id: int) -> str:
    return f"part-{run_id}.parquet"


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_days(
    cur: duckdb.DuckDBPyConnection,
    archive_dir: Path,
    table: str,
    select: str,
    params: dict[str, object],
    run_id: int,
) -> int:
    """Write the rows of `select` (a SELECT over the relation `table`, with its bound params),
    one file per UTC day of its day column; return how many rows. Run inside the caller's
    transaction, before it deletes the same rows."""
    day_column = DAY_COLUMN[table]
    days = [
        row[0]
        for row in cur.execute(
            f"SELECT DISTINCT {day_column}::DATE FROM ({select}) ORDER BY 1", params
        ).fetchall()
    ]
    written = 0
    for day in days:
        folder = archive_dir / table / f"day={day.isoformat()}"
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / part_name(run_id)
        cur.execute(
            f"COPY (SELECT * FROM ({select}) WHERE {day_column}::DATE = $day"
            f" ORDER BY {day_column}) TO $target {PARQUET}",
            {**params, "day": day, "target": str(target)},
        )
        _fsync(target)
        _fsync(folder)
        (row,) = cur.execute("SELECT count(*) FROM read_parquet(?)", [str(target)]).fetchall()
        written += int(row[0])
    if days:
        _fsync(archive_dir / table)
    return written


def run_files(archive_dir: Path, run_id: int) -> list[Path]:
    """Every file a run wrote."""
    if not archive_dir.is_dir():
        return []
    return sorted(archive_dir.glob(f"*/day=*/{part_name(run_id)}"))


def discard_run(archive_dir: Path, run_id: int) -> int:
    """Remove the files of a run that never committed (its rows are still in the database)."""
    files = run_files(archive_dir, run_id)
    for path in files:
        path.unlink(missing_ok=True)
    return len(files)


def all_files(archive_dir: Path, tables: Iterable[str] = DAY_COLUMN) -> list[Path]:
    if not archive_dir.is_dir():
        return []
    return sorted(
        path for table in tables for path in (archive_dir / table).glob("day=*/*.parquet")
    )


def day_of(path: Path) -> date:
    return date.fromisoformat(path.parent.name.removeprefix("day="))


def rewrite_without(
    cur: duckdb.DuckDBPyConnection, path: Path, where: str, params: dict[str, object]
) -> int:
    """Rewrite one archive file without the rows matching `where` (SQL over its columns, with
    bound params); return how many rows were dropped. The new file replaces the old one by an
    atomic rename; a file left empty is removed."""
    where = f"coalesce(({where}), false)"  # a NULL is no match, and the row is kept
    (row,) = cur.execute(
        f"SELECT count(*) FILTER (WHERE {where}), count(*) FROM read_parquet($path)",
        {**params, "path": str(path)},
    ).fetchall()
    dropped, total = int(row[0]), int(row[1])
    if not dropped:
        return 0
    if dropped == total:
        path.unlink()
        return dropped
    partial = path.with_name(f".{path.name}.partial")
    cur.execute(
        f"COPY (SELECT * FROM read_parquet($path) WHERE NOT ({where})) TO $target {PARQUET}",
        {**params, "path": str(path), "target": str(partial)},
    )
    _fsync(partial)
    os.replace(partial, path)
    _fsync(path.parent)
    return dropped


def count_matching_file(
    cur: duckdb.DuckDBPyConnection, path: Path, where: str, params: dict[str, object]
) -> int:
    """Rows of one archive file matching `where` (SQL over its columns, with bound params)."""
    where = f"coalesce(({where}), false)"
    (row,) = cur.execute(
        f"SELECT count(*) FILTER (WHERE {where}) FROM read_parquet($path)",
        {**params, "path": str(path)},
    ).fetchall()
    return int(row[0])
