"""Destinations: where calls go, by country and by our numbers, and a row per B destination."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import pandas as pd
import streamlit as st

from callstatus.core.destinations import country_name
from callstatus.dashboard import analytics_charts, connection, controls, definitions, widgets
from callstatus.dashboard.queries import destinations
from callstatus.dashboard.queries.base import Result

RATE = st.column_config.NumberColumn
COUNTRY_HELP = (
    "A call's country is its far end's: the number called (outbound) or the caller (inbound), "
    "from the number with the phonenumbers library (masked numbers: their country code). A B "
    "leg's is its destination's; SIP endpoints without a number are 'SIP'."
)
# Query-string keys of the shared controls a link to the Calls page carries along.
SHARED_KEYS = ("range", "days", "bucket", "dir", "num", "tz")


def render() -> None:
    f = controls.current()
    rel = connection.relations()
    st.title("Destinations")
    st.caption(controls.describe(f))

    # One part under the other, each the page's full width: beside each other, the tables'
    # last columns were cut off mid-number and the chart squeezed.
    st.subheader("Calls by country", help=COUNTRY_HELP)
    # Inbound calls are answered by our own XML: their outcomes say little per country.
    shown = "inbound" if f.direction == "inbound" else "outbound"
    st.caption(f"How {shown} calls ended, by the country of the {_far_end(shown)}.")
    outcomes = destinations.outcomes_by_country(rel, f, shown)
    widgets.chart(
        outcomes,
        analytics_charts.outcomes_by_country(outcomes.frame),
        "outcomes-by-country",
    )
    table = destinations.by_country(rel, f)
    widgets.table(
        table,
        "by-country",
        column_config={
            "call_answer_rate": RATE(
                "call answer rate", format="percent", help=definitions.CALL_ANSWER_RATE
            ),
            "acd_s": RATE("ACD (s)", format="%.0f", help=definitions.ACD),
            "no_answer": RATE("no answer"),
            "failed": RATE("failed", help="Failed, unreachable or rejected"),
        },
    )

    st.subheader("B legs by country", help=COUNTRY_HELP)
    widgets.table(
        destinations.legs_by_country(rel, f),
        "b-legs-by-country",
        column_config={
            "b_legs": RATE("B legs"),
            "lost_race": RATE("lost races"),
            "b_leg_answer_rate": RATE(
                "B-leg answer rate", format="percent", help=definitions.B_LEG_ANSWER_RATE
            ),
        },
    )

    st.subheader(
        "By our numbers", help="The number Plivo called (inbound), our caller ID (outbound)."
    )
    widgets.table(
        destinations.by_our_number(rel, f),
        "by-our-number",
        column_config={
            "our_number": st.column_config.TextColumn("our number"),
            "call_answer_rate": RATE(
                "call answer rate", format="percent", help=definitions.CALL_ANSWER_RATE
            ),
            "dial_answer_rate": RATE(
                "dial answer rate", format="percent", help=definitions.DIAL_ANSWER_RATE
            ),
            "acd_s": RATE("ACD (s)", format="%.0f", help=definitions.ACD),
        },
    )

    st.subheader("Destinations and agents")
    st.caption(
        "One row per B destination (number or SIP URI) dialled in the range; click a column's "
        "header to sort, and a row's 'calls ↗' to list its calls in a new tab (the table takes "
        "its first click to select a cell: click again). Answer (s): the median time to answer "
        "from the Dial's start (the A leg's AnswerTime, see Timing and load); talk time of its "
        "answered legs."
        + (
            " The Country filter picks calls by their far end: the destinations they dialled "
            "may be elsewhere."
            if f.countries
            else ""
        )
    )
    _destinations_table(destinations.per_destination(rel, f))


def _far_end(direction: str) -> str:
    return "caller" if direction == "inbound" else "number called"


def calls_link(destination: str) -> str:
    """The Calls page listing the calls that dialled one B destination (its search, which
    looks in B legs' numbers too; the list ignores the sidebar's filters), with the
    destination picked in the sidebar and the shared controls as they are."""
    pairs: list[tuple[str, str]] = []
    for key in SHARED_KEYS:
        value = st.query_params.get_all(key)
        pairs.extend((key, v) for v in value)
    pairs += [("dest", destination), ("q", destination)]
    return "calls?" + urlencode(pairs)


# Pixel widths of the table's columns: it fits the page at 1440 px, and each column keeps its
# place whatever the data (a browser test clicks the headers).
DESTINATION_WIDTHS = {
    "destination": 180,
    "calls": 52,
    "country": 130,
    "line_type": 110,
    "dialled": 64,
    "answered": 70,
    "lost_races": 70,
    "answer_rate": 80,
    "median_answer_s": 76,
    "talk_s": 64,
    "mean_talk_s": 76,
}
UNKNOWN_LABEL = "unknown"
# phonenumbers' line types as a person reads them (the CSV keeps the stored values).
LINE_TYPE_LABELS = {"fixed_line_or_mobile": "fixed or mobile", "sip": "SIP"}


def _destination_columns() -> dict[str, Any]:
    columns: dict[str, Any] = {
        "destination": st.column_config.TextColumn("destination"),
        "calls": st.column_config.LinkColumn(
            "calls", display_text="calls ↗", help="The Calls page, filtered to this destination"
        ),
        "country": st.column_config.TextColumn(
            "country", help="From the number; SIP: a SIP endpoint without a number in its URI"
        ),
        "line_type": st.column_config.TextColumn("line type"),
        "dialled": RATE("dialled", help="B legs dialled to this destination"),
        "answered": RATE("answered"),
        "lost_races": RATE("lost races", help="B legs that lost the race (code 9000)"),
        "answer_rate": RATE("answer rate", format="percent", help=definitions.B_LEG_ANSWER_RATE),
        "median_answer_s": RATE(
            "answer (s)",
            format="%.1f",
            help="Median time to answer of its answered legs, from the Dial's start (the A "
            "leg's AnswerTime); — when none answered",
        ),
        "talk_s": RATE("talk (s)", format="%d", help="Talk time of its answered legs, in all"),
        "mean_talk_s": RATE("mean talk (s)", format="%.0f", help="Mean talk time per answer"),
    }
    for name, column in columns.items():
        column["width"] = DESTINATION_WIDTHS[name]
    return columns


def destination_labels(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows as the table shows them: a country's name beside its code, and a label where
    the country or line type is not known (a SIP endpoint without a number: 'SIP')."""
    shown = frame.copy()
    sip = shown["line_type"] == "sip"
    shown["country"] = [
        f"{c} · {country_name(str(c))}" if not pd.isna(c) else ("SIP" if s else UNKNOWN_LABEL)
        for c, s in zip(shown["country"], sip, strict=True)
    ]
    shown["line_type"] = [
        UNKNOWN_LABEL if pd.isna(t) else LINE_TYPE_LABELS.get(str(t), str(t).replace("_", " "))
        for t in shown["line_type"]
    ]
    return shown


def _destinations_table(rows: Result) -> None:
    """The rows with a link to each destination's calls and readable labels; the CSV keeps
    the query's own rows."""
    frame = destination_labels(rows.frame)
    frame.insert(1, "calls", [calls_link(str(d)) for d in frame["destination"]])
    frame, columns = widgets.one_decimal_percent(frame, _destination_columns())
    st.dataframe(
        frame,
        hide_index=True,
        width="stretch",
        column_config=columns,
        placeholder=widgets.MISSING,
    )
    widgets.provenance(rows, "destinations")


controls.live(render)
