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

    st.subheader("Calls by country", help=COUNTRY_HELP)
    left, right = st.columns([2, 3])
    with left:
        # Inbound calls are answered by our own XML: their outcomes say little per country.
        shown = "inbound" if f.direction == "inbound" else "outbound"
        st.caption(f"How {shown} calls ended, by the country of the {_far_end(shown)}.")
        outcomes = destinations.outcomes_by_country(rel, f, shown)
        widgets.chart(
            outcomes,
            analytics_charts.outcomes_by_country(outcomes.frame),
            "outcomes-by-country",
        )
    with right:
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

    left, right = st.columns(2)
    with left:
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
    with right:
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
        "One row per B destination (number or SIP URI) dialled in the range; click a column to "
        "sort, and a destination to see its calls. Time to answer from the Dial's start (the A "
        "leg's AnswerTime, see Timing and load); talk time of its answered legs."
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


def _destination_columns() -> dict[str, Any]:
    return {
        "calls": st.column_config.LinkColumn(
            "calls", display_text="calls ↗", help="The Calls page, filtered to this destination"
        ),
        "country": st.column_config.TextColumn("country"),
        "line_type": st.column_config.TextColumn("line type"),
        "lost_races": RATE("lost races"),
        "answer_rate": RATE("answer rate", format="percent", help=definitions.B_LEG_ANSWER_RATE),
        "median_answer_s": RATE("time to answer, median (s)", format="%.1f"),
        "talk_s": RATE("talk time (s)", format="%d"),
        "mean_talk_s": RATE("mean talk (s)", format="%.0f"),
    }


def _destinations_table(rows: Result) -> None:
    """The rows with a link to each destination's calls and its country's name; the CSV keeps
    the query's own rows."""
    frame = rows.frame.copy()
    frame["country"] = [
        "" if pd.isna(c) else f"{c} · {country_name(str(c))}" for c in frame["country"]
    ]
    frame.insert(1, "calls", [calls_link(str(d)) for d in frame["destination"]])
    st.dataframe(frame, hide_index=True, width="stretch", column_config=_destination_columns())
    widgets.provenance(rows, "destinations")


controls.live(render)
