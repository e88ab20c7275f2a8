"""Hangup causes: why legs ended, by Plivo code and by source, for A and B legs apart."""

from __future__ import annotations

import streamlit as st

from callstatus.dashboard import charts, comparison, connection, controls, widgets
from callstatus.dashboard.filters import Filters
from callstatus.dashboard.queries import causes
from callstatus.dashboard.queries.base import Result
from callstatus.dashboard.queries.relations import Relations

# The control's label (also the link's `leg=` value) -> the leg.
LEGS = {"A legs": "a", "B legs": "b"}


def render() -> None:
    f = controls.current()
    st.title("Hangup causes")
    st.caption(controls.describe(f))
    rel = connection.relations()
    # One leg at a time: tabs would compute and send both legs' figures on every load.
    shown = st.segmented_control(
        "Legs",
        list(LEGS),
        default="A legs",
        key="leg",
        bind="query-params",
        required=True,
        help="A legs: the calls. B legs: the numbers a call's Dial rang.",
    )
    _leg_section(rel, f, LEGS[shown or "A legs"])


def _leg_section(rel: Relations, f: Filters, leg: str) -> None:
    # Answered legs dwarf every other cause; managers come here for the rest.
    everything = st.toggle(
        "Include answered legs",
        key=f"answered-{leg}",
        help="Answered legs end with a normal hangup (4000) mostly.",
    )
    found = causes.by_cause(rel, f, leg, everything)
    left, right = st.columns([3, 2])
    with left:
        st.subheader("By Plivo cause")
        widgets.chart(found, charts.causes_bar(found.frame), f"causes-{leg}")
    with right:
        st.subheader("By hangup source")
        sources = causes.by_source(rel, f, leg, everything)
        widgets.chart(sources, charts.sources_bar(sources.frame), f"sources-{leg}")
    st.subheader("Over time")

    def per_bucket(r: Relations, g: Filters) -> Result:
        return causes.over_time(r, g, leg, everything)

    over_time = (
        comparison.overlay(per_bucket, rel, f) if controls.comparing() else per_bucket(rel, f)
    )
    widgets.chart(over_time, charts.causes_over_time(over_time.frame, f.tz), f"causes-time-{leg}")

    st.subheader("Plivo's names beside the telephony cause names")
    widgets.table(
        found,
        f"cause-table-{leg}",
        column_order=["code", "plivo_name", "telephony_cause", "outcome", "legs"],
        column_config={"code": st.column_config.NumberColumn("code", format="%d")},
    )
    st.subheader("The calls behind a cause")
    names = list(dict.fromkeys(found.frame["cause"]))
    cause = st.selectbox(
        "Cause",
        names,
        key=f"cause-{leg}",
        index=0 if names else None,
        placeholder="no causes in this range",
    )
    if cause:
        rows = widgets.rows_choice(f"rows-{leg}", "The legs with this cause")
        listed = causes.legs_with_cause(rel, f, leg, cause, limit=rows)
        widgets.table(listed, f"cause-calls-{leg}")


controls.live(render)
