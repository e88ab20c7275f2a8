"""Running the dashboard's SQL: bound parameters, a short cache, and the SQL kept for display.

Values are always bound (`$name`), never formatted into the SQL text. Each query returns a
`Result` carrying the rows and the exact SQL and parameters behind them, so the page can offer
them as "show SQL" and CSV. Results are cached briefly: a live page refreshes every few seconds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import streamlit as st

from callstatus.dashboard import connection

CACHE_TTL_S = 10
ROW_LIMIT = 1000

BUCKET = "time_bucket(CAST($bucket AS INTERVAL), timezone($tz, t))"
# Bars span their whole bucket, so charts get its end too.
BUCKET_END = "bucket + CAST($bucket AS INTERVAL) AS bucket_end"
# A row's 5-minute bucket in UTC, to count before bucketing in the chosen zone.
T5 = "time_bucket(INTERVAL 5 MINUTE, t)"

_PARAM = re.compile(r"\$(\w+)")


@dataclass(frozen=True)
class Result:
    """Rows plus the SQL and bound parameters that produced them."""

    frame: pd.DataFrame
    sql: str
    params: dict[str, Any] = field(default_factory=dict)


def run(sql: str, params: dict[str, Any] | None = None) -> Result:
    """Run SQL with the parameters it names (DuckDB refuses unused ones)."""
    source = connection.source()
    used = set(_PARAM.findall(sql))
    bound = {k: v for k, v in (params or {}).items() if k in used}
    frame = _fetch(sql, tuple(sorted(bound.items(), key=lambda kv: kv[0])), source)
    return Result(frame, sql.strip(), bound)


# `source` names the data and its version: cached results never mix two states of the file.
@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False, max_entries=512)
def _fetch(sql: str, params: tuple[tuple[str, Any], ...], source: str) -> pd.DataFrame:
    bound = {k: list(v) if isinstance(v, tuple) else v for k, v in params}
    frame: pd.DataFrame = connection.cursor().execute(sql, bound).df()
    return frame


def with_(*ctes: str) -> str:
    """A WITH clause of the given CTEs."""
    return "WITH " + ",".join(ctes)
