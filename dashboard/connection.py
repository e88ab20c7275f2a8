"""Where the dashboard's DuckDB cursor comes from: the running server, or the file read-only."""

from __future__ import annotations

from pathlib import Path

import duckdb
import streamlit as st

from callstatus.db import Database
from callstatus.settings import get_settings
from receiver import runtime


class NoDatabase(RuntimeError):
    """No server in this process and no database file to open."""


def source() -> str:
    """A key naming the data source, so cached results never mix two databases."""
    rt = runtime.current()
    if rt is not None:
        return f"live:{rt.database.path.resolve()}"
    return f"file:{Path(get_settings().db).resolve()}"


def cursor() -> duckdb.DuckDBPyConnection:
    """This thread's cursor on the server's database (one DuckDB instance per process)."""
    rt = runtime.current()
    if rt is not None:
        return rt.database.cursor()
    path = Path(get_settings().db).resolve()
    if not path.exists():
        raise NoDatabase(f"no database at {path}")
    return _read_only(str(path)).cursor()


# Without a server in this process (AppTest, `streamlit run`) nobody else may be writing the
# file, so one read-only instance per path serves every session.
@st.cache_resource(show_spinner=False)
def _read_only(path: str) -> Database:
    return Database(path, read_only=True)
