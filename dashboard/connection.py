"""Where the dashboard's DuckDB cursors come from, and the in-memory copy of the views.

The `calls`, `dials` and `dial_legs` views aggregate every webhook each time they are read
(about 0.3 s per view for 50k calls); a page reads them a dozen times. So the dashboard copies
their rows into an in-memory catalog when the data changed (checked at most every
REFRESH_EVERY_S) and its cursors look there first (`search_path`). The SQL the pages show is
unchanged and runs as is on the real views. Everything else (webhook_events,
rejected_webhooks) is read live.
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import duckdb
import streamlit as st

from callstatus.db import BASE_CONFIG
from callstatus.settings import get_settings
from receiver import runtime

CACHE = "dashboard_cache"
MIRRORED = ("calls", "dials", "dial_legs")
REFRESH_EVERY_S = 10.0
_PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class NoDatabase(RuntimeError):
    """No server in this process and no database file to open."""


class Source:
    """One DuckDB instance as the dashboard reads it: a cursor per thread, mirrored views."""

    def __init__(
        self, con: duckdb.DuckDBPyConnection, name: str, catalog: str | None = None
    ) -> None:
        self.con = con
        self.name = name
        self._lock = threading.Lock()
        self._local = threading.local()
        self._checked = 0.0
        self.version = "unread"
        setup = con.cursor()
        row = setup.execute("SELECT current_database()").fetchone()
        self.catalog = catalog or str(row[0] if row else "main")
        # An odd file name makes an odd catalog name: then read the views directly.
        self.mirrors = bool(_PLAIN.match(self.catalog))
        if self.mirrors:
            setup.execute(f"ATTACH IF NOT EXISTS ':memory:' AS {CACHE}")

    def cursor(self) -> duckdb.DuckDBPyConnection:
        cur: duckdb.DuckDBPyConnection | None = getattr(self._local, "cursor", None)
        if cur is None:
            cur = self._new_cursor(first=CACHE if self.mirrors else None)
            self._local.cursor = cur
        return cur

    def _new_cursor(self, first: str | None) -> duckdb.DuckDBPyConnection:
        cur = self.con.cursor()
        cur.execute("SET TimeZone = 'UTC'")
        path = f"{first},{self.catalog}" if first else self.catalog
        if _PLAIN.match(self.catalog):
            cur.execute(f"SET search_path = '{path}'")
        return cur

    def refresh(self) -> str:
        """Copy the views again if webhooks arrived since the last copy; return the version."""
        with self._lock:
            if time.monotonic() - self._checked < REFRESH_EVERY_S:
                return self.version
            cur = self._new_cursor(first=None)
            count, last = cur.execute(
                "SELECT count(*), max(received_at) FROM webhook_events"
            ).fetchone()  # type: ignore[misc]
            version = f"{count}:{last}"
            if self.mirrors and version != self.version:
                for name in MIRRORED:  # fixed names, never user input
                    cur.execute(
                        f"CREATE OR REPLACE TABLE {CACHE}.{name} AS "
                        f"SELECT * FROM {self.catalog}.main.{name}"
                    )
            self.version = version
            self._checked = time.monotonic()
            return version


def current() -> Source:
    """The server's database when serving; otherwise the configured file, read-only."""
    rt = runtime.current()
    if rt is not None:
        return _live(id(rt.database), rt.database.con)
    path = Path(get_settings().db).resolve()
    if not path.exists():
        raise NoDatabase(f"no database at {path}")
    return _read_only(str(path))


def source() -> str:
    """A key naming the data and its version, so cached results never mix two states."""
    src = current()
    return f"{src.name}@{src.refresh()}"


def cursor() -> duckdb.DuckDBPyConnection:
    return current().cursor()


@st.cache_resource(show_spinner=False)
def _live(database_id: int, _con: duckdb.DuckDBPyConnection) -> Source:
    return Source(_con, f"live:{database_id}")


# Without a server in this process (AppTest, `streamlit run`) nobody may be writing the file:
# an in-memory instance attaches it read-only, and holds the mirrored views beside it.
@st.cache_resource(show_spinner=False)
def _read_only(path: str) -> Source:
    con = duckdb.connect(":memory:", config=dict(BASE_CONFIG))
    con.execute("ATTACH ? AS callstatus (READ_ONLY)", [path])
    return Source(con, f"file:{path}", catalog="callstatus")
