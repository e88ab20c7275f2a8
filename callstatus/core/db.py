"""Opening DuckDB databases and applying the numbered SQL migrations."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator
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


class Gate:
    """A readers-writer gate: any number of readers, or one swap of the database under them.

    A reader holds it from a query's start to the end of its fetch (`hold`, `release`); a thread
    may hold it more than once. A swap (`closed_to_readers`) waits for the readers in flight,
    keeps new ones waiting until it is done, and gives up after its timeout."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._swapping = False
        self._local = threading.local()

    def hold(self) -> None:
        depth: int = getattr(self._local, "depth", 0)
        with self._cond:
            # A thread already reading goes on (else it would wait for a swap waiting for it).
            if depth == 0:
                while self._swapping:
                    self._cond.wait()
            self._readers += 1
        self._local.depth = depth + 1

    def release(self) -> None:
        self._local.depth = getattr(self._local, "depth", 1) - 1
        with self._cond:
            self._readers -= 1
            if self._readers == 0:
                self._cond.notify_all()

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        self.hold()
        try:
            yield
        finally:
            self.release()

    @contextlib.contextmanager
    def closed_to_readers(self, timeout_s: float) -> Iterator[bool]:
        """Yield True once no reader is in flight (new ones wait until the block ends), or False
        when some still are after `timeout_s` (readers then go on at once)."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            self._swapping = True
            while self._readers > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            clear = self._readers == 0
            if not clear:
                self._swapping = False
                self._cond.notify_all()
        try:
            yield clear
        finally:
            if clear:
                with self._cond:
                    self._swapping = False
                    self._cond.notify_all()


class SwapRefused(RuntimeError):
    """The database file could not be replaced by its copy: the old one is still in use."""


class Database:
    """One DuckDB instance shared by the threads of this process, a cursor per thread.

    The instance can be replaced by one on a compacted copy of its file (`swap`, run by
    callstatus/privacy/compaction.py while the server runs): each swap is a new `generation`,
    and every cursor handed out before it is renewed at its thread's next `cursor()`. Readers
    that take cursors from `con` themselves (the dashboard) hold `gate` from a query's start to
    the end of its fetch, so that a swap never closes a cursor under them. While a compaction
    holds the writers (`pause_cursors`), `cursor()` waits in every other thread: whatever writes
    through it is paused until the swap is done, then writes to the new file."""

    def __init__(
        self, path: Path | str, *, read_only: bool = False, memory_limit: str | None = None
    ) -> None:
        self.path = Path(path)
        self.read_only = read_only
        self.memory_limit = memory_limit
        self.con = connect(self.path, read_only=read_only, memory_limit=memory_limit)
        # The file as opened: DuckDB keeps writing to it even once it is removed or replaced.
        self.absolute_path = self.path.absolute()
        self.identity = file_identity(self.absolute_path)
        if not read_only:
            migrate(self.con)
        self._local = threading.local()
        self.generation = 0
        self.gate = Gate()
        # The thread a compaction runs in while it holds every other cursor() (None: nobody).
        self._paused_for: int | None = None
        self._resumed = threading.Event()
        self._resumed.set()

    def replaced(self) -> bool:
        """True when the file this instance writes to is no longer at its path, or its folder
        was removed or replaced: whatever is committed from then on is lost at close."""
        return self.identity is not None and file_identity(self.absolute_path) != self.identity

    @property
    def wal_path(self) -> Path:
        return self.absolute_path.with_name(self.absolute_path.name + ".wal")

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """This thread's cursor (DuckDB connections are not shareable across threads); while a
        compaction holds the writers, other threads wait here until its swap is done."""
        paused_for = self._paused_for
        if paused_for is not None and paused_for != threading.get_ident():
            self._resumed.wait()
        cur: duckdb.DuckDBPyConnection | None = getattr(self._local, "cursor", None)
        if cur is None or getattr(self._local, "generation", -1) != self.generation:
            cur = self.con.cursor()
            cur.execute("SET TimeZone = 'UTC'")
            self._local.cursor = cur
            self._local.generation = self.generation
        return cur

    @contextlib.contextmanager
    def pause_cursors(self) -> Iterator[None]:
        """Hold `cursor()` in every thread but this one until the block ends."""
        self._resumed.clear()
        self._paused_for = threading.get_ident()
        try:
            yield
        finally:
            self._paused_for = None
            self._resumed.set()

    def swap(
        self,
        copy: Path,
        unchanged: Callable[[], bool],
        is_new: Callable[[duckdb.DuckDBPyConnection], bool],
        *,
        readers_timeout_s: float = 30.0,
        close_timeout_s: float = 10.0,
    ) -> None:
        """Replace the file by `copy` (complete and fsynced) and reopen on it, as a new
        generation. Closed to readers meanwhile: the old instance is closed before the rename,
        so its WAL, removed by name at close, is its own. Raise SwapRefused (the old file then
        stays, reopened) when readers stay in flight past `readers_timeout_s`, when the old
        instance cannot be closed, or when `unchanged()` says the old file was written since
        the copy began; `is_new(con)` must tell the copy from the old file."""
        with self.gate.closed_to_readers(readers_timeout_s) as clear:
            if not clear:
                raise SwapRefused(f"readers still in flight after {readers_timeout_s:.0f} s")
            old_identity = self.identity
            replaced = False
            try:
                self._close_old(close_timeout_s)
                if not unchanged():
                    raise SwapRefused("the database was written after the copy began")
                os.replace(copy, self.absolute_path)
                replaced = True
                fsync_dir(self.absolute_path.parent)
            finally:
                # A new generation either way: the old instance's cursors are closed. Not
                # replaced, this is the old file again (or, when it could not be closed, a new
                # connection to the instance still open on it).
                self.con = connect(self.path, memory_limit=self.memory_limit)
                self.generation += 1
                self.identity = file_identity(self.absolute_path)
            if replaced and not is_new(self.con):
                # Writing on would go to the old file, gone from its path: the writer must see
                # it as replaced (and refuse webhooks until a restart) rather than lose them.
                self.identity = old_identity
                raise SwapRefused(
                    "the reopened database is not the copy (DuckDB kept the old instance "
                    "open): restart callstatus serve"
                )
            migrate(self.con)

    def _close_old(self, timeout_s: float) -> None:
        """Close the instance and every cursor taken from it; a cursor still busy with a query
        (one taken before the readers' gate closed) is waited for, up to `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self.con.close()
                return
            except duckdb.Error as exc:
                if time.monotonic() >= deadline:
                    raise SwapRefused(f"the database could not be closed: {exc}") from exc
                time.sleep(0.05)

    def close(self) -> None:
        self.con.close()


def fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
