"""Layout helpers every page uses: a chart or table with its CSV and its SQL beside it."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import pandas as pd
import streamlit as st

from callstatus.dashboard.charts import Figure
from callstatus.dashboard.comparison import NOTE
from callstatus.dashboard.queries.base import Result


def chart(result: Result, figure: Figure, name: str) -> None:
    """A chart, then the exact rows behind it as CSV and the SQL that produced them (and, when
    compared with a previous range without data, a line saying so)."""
    st.altair_chart(figure, width="stretch")
    note = result.params.get(NOTE)
    if note:
        st.caption(str(note))
    provenance(result, name)


# A missing value (no answered leg to time, no dial to rate) in a table, instead of "None".
MISSING = "—"


# Rows of a listing (legs behind a cause, pairings): the newest few by default, since every
# row is sent to the browser; more on request. The CSV holds the rows shown.
LISTED_ROWS = (100, 1000)


def rows_choice(key: str, what: str) -> int:
    """How many rows of a listing to show, chosen beside it."""
    rows = st.segmented_control(
        "Rows",
        LISTED_ROWS,
        format_func=lambda n: f"newest {n:,}",
        default=LISTED_ROWS[0],
        key=key,
        required=True,
        help=f"{what}, newest first; the CSV holds the rows shown",
    )
    return int(rows or LISTED_ROWS[0])


def table(result: Result, name: str, **kwargs: Any) -> Any:
    """A table of a query's rows, with CSV and SQL; returns st.dataframe's value."""
    kwargs.setdefault("placeholder", MISSING)
    frame, config = one_decimal_percent(result.frame, kwargs.pop("column_config", None))
    labels: dict[str, Any] = {column: readable(str(column)) for column in frame.columns}
    for column, c in (config or {}).items():
        unlabelled = isinstance(c, dict) and not c.get("label") and column in labels
        labels[column] = {**c, "label": labels[column]} if unlabelled else c
    kwargs["column_config"] = labels
    value = st.dataframe(frame, hide_index=True, width="stretch", **kwargs)
    provenance(result, name)
    return value


# Words of column names written as a reader writes them ("call_uuid" -> "call UUID").
WORDS = {"uuid": "UUID", "sip": "SIP", "acd": "ACD", "pdd": "PDD", "cdr": "CDR", "id": "ID"}


def readable(column: str) -> str:
    """A query's column name as a table's header: words apart, A and B legs and acronyms in
    capitals, a trailing unit in brackets ("b_leg_duration_s" -> "B leg duration (s)"). The
    CSV keeps the names the SQL page and the views use."""
    words = column.split("_")
    shown = [WORDS.get(word, word) for word in words]
    for i, word in enumerate(words[:-1]):
        if word in ("a", "b") and words[i + 1] in ("leg", "legs"):
            shown[i] = word.upper()
    if len(words) > 1 and words[-1] in ("s", "ms"):
        shown[-1] = f"({words[-1]})"
    return " ".join(shown)


def one_decimal_percent(
    frame: pd.DataFrame, config: dict[str, Any] | None
) -> tuple[pd.DataFrame, dict[str, Any] | None]:
    """Columns configured as `format="percent"` shown with one decimal, as the tiles show rates:
    Streamlit's percent drops trailing zeros (98.1% beside 99.13%, 0%). The shown copy holds
    percent points; the CSV keeps the fractions."""
    if not config:
        return frame, config
    rates = [
        column
        for column, c in config.items()
        if isinstance(c, dict)
        and (c.get("type_config") or {}).get("format") == "percent"
        and column in frame.columns
    ]
    if not rates:
        return frame, config
    shown = frame.copy()
    shown[rates] = shown[rates] * 100
    config = dict(config)
    for column in rates:
        c = dict(config[column])
        c["type_config"] = {**c["type_config"], "format": "%.1f%%"}
        config[column] = c
    return shown, config


def provenance(result: Result, name: str) -> None:
    """The CSV of the rows shown, and a switch showing the SQL and its bound parameters."""
    row = st.container(horizontal=True, vertical_alignment="top", gap="small")
    row.download_button(
        "CSV",
        result.frame.to_csv(index=False),
        file_name=f"callstatus-{name}.csv",
        mime="text/csv",
        key=f"csv-{name}",
        icon=":material/download:",
        on_click="ignore",
        help=f"The {len(result.frame)} rows behind this, as CSV",
    )
    with row:
        on_request(
            "Show SQL",
            f"sql-{name}",
            partial(_sql, result),
            help="The query behind this and its parameters",
        )


@st.fragment
def on_request(label: str, key: str, draw: Callable[[], None], help: str | None = None) -> None:
    """A switch that draws `draw` only once turned on. A collapsed expander draws its content
    on every load anyway, and the browser's syntax highlighting of a code block took a quarter
    of a page's drawing (docs/benchmarks.md); turning the switch on reruns this fragment alone,
    not the page."""
    if st.toggle(label, key=key, help=help):
        draw()


def _sql(result: Result) -> None:
    st.code(result.sql, language="sql")
    st.caption("Bound parameters")
    st.json({key: str(value) for key, value in result.params.items()}, expanded=False)
