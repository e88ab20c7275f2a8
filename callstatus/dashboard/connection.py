"""Where the dashboard's DuckDB cursors come from, and whether they read the rollups or the views.

The `calls`, `dials` and `dial_legs` views aggregate every webhook each time they are read (over
10 s at 2 million calls). Their rollup tables (`callstatus.core.rollups`) hold the same rows, kept
fresh by the server; pages read them whenever they are current (`relations()`, passed to every
query) and the views otherwise (a file seeded before the rollups existed, or a refresh job that
stopped succeeding). Everything else (webhook_events, rejected_webhooks) is read live.
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import duckdb
import streamlit as st

from callstatus.core import rollups
from callstatus.core.db import BASE_CONFIG
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
    ) -> None:
        self.con = con
        self.name = name
        self.job = job
        self._lock = threading.Lock()
        self._local = threading.local()
        self._checked = 0.0
        self.version = "unread"
        self.use_rollups = False
        row = con.cursor().execute("SELECT current_database()").fetchone()
        self.catalog = catalog or str(row[0] if row else "main")

    def cursor(self) -> duckdb.DuckDBPyConnection:
        cur: duckdb.DuckDBPyConnection | None = getattr(self._local, "cursor", None)
        if cur is None:
            cur = self.con.cursor()
            cur.execute("SET TimeZone = 'UTC'")
            # An odd file name makes an odd catalog name; the default catalog is then right.
            if _PLAIN.match(self.catalog):
                cur.execute(f"SET search_path = '{self.catalog}'")
            self._local.cursor = cur
        return cur

    def refresh(self) -> str:
        """Check (at most every CHECK_EVERY_S) what changed; return a key naming the data."""
        with self._lock:
            if time.monotonic() - self._checked < CHECK_EVERY_S:
                return self.version
            cur = self.cursor()
            self.use_rollups = rollups.is_current(cur) or (
                self.job is not None and self.job.keeping_up()
            )
            row = cur.execute("SELECT count(*), max(received_at) FROM webhook_events").fetchone()
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
        return _live(id(handle.database), handle.database.con, handle.rollups)
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


def cursor() -> duckdb.DuckDBPyConnection:
    return current().cursor()


@st.cache_resource(show_spinner=False)
def _live(
    database_id: int, _con: duckdb.DuckDBPyConnection, _job: rollups.RollupJob | None
) -> Source:
    return Source(_con, f"live:{database_id}", job=_job)


# Without a server in this process (AppTest, `streamlit run`) nobody may be writing the file:
# an in-memory instance attaches it read-only.
@st.cache_resource(show_spinner=False)
def _read_only(path: str) -> Source:
    con = duckdb.connect(":memory:", config=dict(BASE_CONFIG))
    con.execute("ATTACH ? AS callstatus (READ_ONLY)", [path])
    return Source(con, f"file:{path}", catalog="callstatus")
