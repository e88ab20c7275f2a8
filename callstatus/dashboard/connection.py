"""Where the dashboard's DuckDB cursors come from, and whether they read the rollups or the views.

The `calls`, `dials` and `dial_legs` views aggregate every webhook each time they are read (over
10 s at 2 million calls). Their rollup tables (`callstatus.core.rollups`) hold the same rows, kept
fresh by the server; pages read them whenever they are current (`relations()`, passed to every
query) and the views otherwise (a file seeded before the rollups existed, or a refresh job that
stopped succeeding). Everything else (webhook_events, rejected_webhooks) is read live.

The server's database may be swapped for a compacted copy while pages read it
(callstatus/privacy/compaction.py): each query holds the database's gate from its start to the
end of its fetch (`ReadCursor`), so a swap waits for it and it never reads a closed cursor; a
cursor of an older generation is replaced by one of the new instance.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import streamlit as st

from callstatus.core import rollups
from callstatus.core.db import BASE_CONFIG, Database
from callstatus.core.storage import events_count_and_last
from callstatus.dashboard import context
from callstatus.dashboard.queries.relations import ROLLUPS, VIEWS, Relations

CHECK_EVERY_S = 2.0  # as often as the server refreshes the rollups
_PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class NoDatabase(RuntimeError):
    """No server in this process and no database file to open."""


class Source:
    """One DuckDB instance as the dashboard reads it: a cursor per thread, and which relations."""

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        name: str,
        catalog: str | None = None,
        job: rollups.RollupJob | None = None,
        database: Database | None = None,
    ) -> None:
        self.con = con
        self.name = name
        self.job = job
        # The server's database: its instance may be replaced (a new generation) by a swap.
        self.database = database
        self._lock = threading.Lock()
        self._local = threading.local()
        self._checked = 0.0
        self.version = "unread"
        self.use_rollups = False
        with self.reading():
            row = self._con().cursor().execute("SELECT current_database()").fetchone()
        self.catalog = catalog or str(row[0] if row else "main")

    def _con(self) -> duckdb.DuckDBPyConnection:
        return self.database.con if self.database is not None else self.con

    def _generation(self) -> int:
        return self.database.generation if self.database is not None else 0

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        """Hold the database's gate (a swap waits until the block ends)."""
        if self.database is None:
            yield
            return
        with self.database.gate.reading():
            yield

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """This thread's cursor on the current instance: use it inside `reading()`."""
        cur: duckdb.DuckDBPyConnection | None = getattr(self._local, "cursor", None)
        generation = self._generation()
        if cur is None or getattr(self._local, "generation", -1) != generation:
            cur = self._con().cursor()
            cur.execute("SET TimeZone = 'UTC'")
            # An odd file name makes an odd catalog name; the default catalog is then right.
            if _PLAIN.match(self.catalog):
                cur.execute(f"SET search_path = '{self.catalog}'")
            self._local.cursor = cur
            self._local.generation = generation
        return cur

    def refresh(self) -> str:
        """Check (at most every CHECK_EVERY_S) what changed; return a key naming the data."""
        with self._lock:
            if time.monotonic() - self._checked < CHECK_EVERY_S:
                return self.version
            with self.reading():
                cur = self.cursor()
                self.use_rollups = rollups.is_current(cur) or (
                    self.job is not None and self.job.keeping_up()
                )
                row = cur.execute(events_count_and_last()).fetchone()
                count, last = row if row else (0, None)
                mark = rollups.watermark(cur) if self.use_rollups else None
            relations = f"rollups@{mark}" if self.use_rollups else "views"
            self.version = f"{count}:{last}:{relations}"
            self._checked = time.monotonic()
            return self.version


def current() -> Source:
    """The server's database when serving; otherwise the configured file, read-only."""
    handle = context.server()
    if handle is not None:
        return _live(id(handle.database), handle.database, handle.rollups)
    path = Path(context.settings().db).resolve()
    if not path.exists():
        raise NoDatabase(f"no database at {path}")
    return _read_only(str(path))


def source() -> str:
    """A key naming the data and its version, so cached results never mix two states."""
    src = current()
    return f"{src.name}@{src.refresh()}"


def relations() -> Relations:
    """What queries should read now: the rollup tables while they are current, else the views
    (checked at most every CHECK_EVERY_S)."""
    src = current()
    src.refresh()
    return ROLLUPS if src.use_rollups else VIEWS


class ReadCursor:
    """A query on the dashboard's cursor that a swap of the database cannot cut in two: the
    gate is held from `execute` to the end of the fetch (`df`, `fetchall`, `fetchone`)."""

    def __init__(self, source: Source) -> None:
        self._source = source
        self._cur: duckdb.DuckDBPyConnection | None = None
        self._hold: contextlib.ExitStack | None = None

    def execute(self, sql: str, parameters: object = None) -> ReadCursor:
        if self._hold is None:
            hold = contextlib.ExitStack()
            hold.enter_context(self._source.reading())
            self._hold = hold
        try:
            self._cur = self._source.cursor()
            self._cur.execute(sql, parameters)
        except BaseException:
            self._done()
            raise
        return self

    def _done(self) -> None:
        hold, self._hold = self._hold, None
        if hold is not None:
            hold.close()

    def _fetched(self) -> duckdb.DuckDBPyConnection:
        if self._cur is None:
            raise RuntimeError("fetch before execute")
        return self._cur

    def df(self) -> pd.DataFrame:
        try:
            return self._fetched().df()
        finally:
            self._done()

    def fetchdf(self) -> pd.DataFrame:
        return self.df()

    def fetchall(self) -> list[Any]:
        try:
            return self._fetched().fetchall()
        finally:
            self._done()

    def fetchone(self) -> tuple[Any, ...] | None:
        try:
            return self._fetched().fetchone()
        finally:
            self._done()


def cursor() -> ReadCursor:
    """A cursor for one query: `cursor().execute(sql, params).df()` (or fetchall, fetchone)."""
    return ReadCursor(current())


@st.cache_resource(show_spinner=False)
def _live(database_id: int, _database: Database, _job: rollups.RollupJob | None) -> Source:
    return Source(_database.con, f"live:{database_id}", job=_job, database=_database)


# Without a server in this process (AppTest, `streamlit run`) nobody may be writing the file:
# an in-memory instance attaches it read-only.
@st.cache_resource(show_spinner=False)
def _read_only(path: str) -> Source:
    con = duckdb.connect(":memory:", config=dict(BASE_CONFIG))
    con.execute("ATTACH ? AS callstatus (READ_ONLY)", [path])
    return Source(con, f"file:{path}", catalog="callstatus")
