"""Calls: find one call and read its whole story, webhook by webhook."""

from __future__ import annotations

import json

import streamlit as st

from callstatus.dashboard import charts, controls, queries, widgets


def render() -> None:
    f = controls.current()
    st.title("Calls")
    text = st.text_input("Search", key="q", bind="query-params",
                         placeholder="call UUID (or its start), B-leg UUID, or a phone number")
    found = queries.search_calls(text, f.tz)
    st.caption(f"{len(found.frame)} most recent matching calls (all time); select one to "
               "see it below, else the newest is shown.")
    picked = widgets.table(found, "search", on_select="rerun", selection_mode="single-row",
                           key="found", height=250)
    rows = picked.selection.rows if picked else []
    if found.frame.empty:
        st.info("No call matches.")
        return
    # Without a selection, the newest match: a pasted UUID shows its call at once.
    _call(str(found.frame["call_uuid"].iloc[rows[0] if rows else 0]), f.tz)


def _call(call_uuid: str, tz: str) -> None:
    summary = queries.call_summary(call_uuid, tz)
    st.header(f"Call {call_uuid}")
    if summary.frame.empty:
        st.warning("No call-leg webhooks for this UUID (only Dial events, perhaps).")
    else:
        row = summary.frame.iloc[0]
        cols = st.columns(3)
        cols[0].metric("Outcome", str(row["outcome"]), border=True)
        cols[1].metric("Direction", str(row["direction"]), border=True)
        cols[2].metric("Duration", "—" if row.isna()["duration_s"]
                       else f"{int(row['duration_s'])} s", border=True)
        st.markdown(f"**Hangup cause:** {row['hangup_cause_code']} "
                    f"{row['hangup_cause_name']} · {row['hangup_cause']} · "
                    f"source {row['hangup_source']}")
        widgets.table(summary, "call")

    st.subheader("B legs")
    widgets.table(queries.call_b_legs(call_uuid, tz), "call-b-legs")

    st.subheader("Timeline of webhooks")
    timeline = queries.call_timeline(call_uuid, tz)
    widgets.chart(timeline, charts.call_timeline(timeline.frame, tz), "timeline")
    for event in timeline.frame.itertuples():
        label = f"{event.received:%H:%M:%S.%f}"[:-3] + f" · {event.kind}"
        if event.duplicate:
            label += " · duplicate"
        with st.expander(label):
            st.json(json.loads(event.params))
            st.caption(f"{event.http_method}, signature {event.signature}, "
                       f"event {event.event_id}")


render()
