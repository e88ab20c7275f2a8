"""Opening DuckDB databases and applying the numbered SQL migrations."""

from __future__ import annotations

import os
import threading
from importlib import resources
from pathlib import Path

import duckdb

# Offline machines cannot download extensions; parquet, json and icu are built in.
BASE_CONFIG: dict[str, str | bool] = {
    "autoinstall_known_extensions": False,
}


def connect(
    path: Path | str, *, read_only: bool = False, memory_limit: str | None = None
) -> duckdb.DuckDBPyConnection:
    """Open a database file (created with its parent folder when writable)."""
    path = Path(path)
    if not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)
    config: dict[str, str | bool | int | float | list[str]] = dict(BASE_CONFIG)
    if memory_limit:
        config["memory_limit"] = memory_limit
    con = duckdb.connect(str(path), read_only=read_only, config=config)
    con.execute("SET TimeZone = 'UTC'")
    return con


def held_by_another_process(exc: duckdb.Error) -> bool:
    """Whether opening a database failed because another process (a running server, usually)
    holds its file: DuckDB lets one process open a file, not even read-only beside a writer."""
    return isinstance(exc, duckdb.IOException) and "lock" in str(exc).lower()


def migrations() -> list[tuple[str, str]]:
    """(name, SQL) of every migration shipped with the package, in order."""
    folder = resources.files("callstatus.core") / "migrations"
    files = sorted(
        (entry for entry in folder.iterdir() if entry.name.endswith(".sql")),
        key=lambda entry: entry.name,
    )
    return [(entry.name.removesuffix(".sql"), entry.read_text(encoding="utf-8")) for entry in files]


def migrate(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Apply the migrations this database has not seen yet; return their names."""
    con.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " name VARCHAR PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
    )
    done = {row[0] for row in con.execute("SELECT name FROM schema_migrations").fetchall()}
    applied = []
    for name, sql in migrations():
        if name in done:
            continue
        con.execute("BEGIN")
        try:
            con.execute(sql)
            con.execute("INSERT INTO schema_migrations (name) VALUES (?)", [name])
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise
        applied.append(name)
    return applied


def file_identity(path: Path) -> tuple[int, int, int, int] | None:
    """(st_dev, st_ino) of a file and of its folder, or None when either is gone: two stat
    calls, a few microseconds."""
    try:
        file, folder = os.stat(path), os.stat(path.parent)
    except OSError:
        return None
    return (file.st_dev, file.st_ino, folder.st_dev, folder.st_ino)


class Database:
    """One DuckDB instance shared by the threads of this process, a cursor per thread."""

    def __init__(
        self, path: Path | str, *, read_only: bool = False, memory_limit: str | None = None
    ) -> None:
        self.path = Path(path)
        self.read_only = read_only
        self.con = connect(self.path, read_only=read_only, memory_limit=memory_limit)
        # The file as opened: DuckDB keeps writing to it even once it is removed or replaced.
        self.absolute_path = self.path.absolute()
        self.identity = file_identity(self.absolute_path)
        if not read_only:
            migrate(self.con)
        self._local = threading.local()

    def replaced(self) -> bool:
        """True when the file this instance writes to is no longer at its path, or its folder
        was removed or replaced: whatever is committed from then on is lost at close."""
        return self.identity is not None and file_identity(self.absolute_path) != self.identity

    @property
    def wal_path(self) -> Path:
        return self.absolute_path.with_name(self.absolute_path.name + ".wal")

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """This thread's cursor (DuckDB connections are not shareable across threads)."""
        cur: duckdb.DuckDBPyConnection | None = getattr(self._local, "cursor", None)
        if cur is None:
            cur = self.con.cursor()
            cur.execute("SET TimeZone = 'UTC'")
            self._local.cursor = cur
        return cur

    def close(self) -> None:
        self.con.close()
