"""Calls: find one call and read its whole story, webhook by webhook."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
import streamlit as st

from callstatus.dashboard import charts, connection, controls, widgets
from callstatus.dashboard.queries import calls as queries
from callstatus.dashboard.queries.relations import Relations
from callstatus.dashboard.text import plain


def render() -> None:
    f = controls.current()
    rel = connection.relations()
    st.title("Calls")
    text = st.text_input(
        "Search",
        key="q",
        bind="query-params",
        placeholder="call UUID (or its start), B-leg UUID, or a phone number",
    )
    found = queries.search_calls(rel, text, f.tz, masker=controls.masker())
    st.caption(
        f"{len(found.frame)} most recent matching calls (all time); select one to "
        "see it below, else the newest is shown."
    )
    picked = widgets.table(
        found, "search", on_select="rerun", selection_mode="single-row", key="found", height=250
    )
    rows = picked.selection.rows if picked else []
    if found.frame.empty:
        st.info("No call matches.")
        return
    # Without a selection, the newest match: a pasted UUID shows its call at once.
    _call(rel, str(found.frame["call_uuid"].iloc[rows[0] if rows else 0]), f.tz)


def _shown(value: object) -> str:
    """A value from a webhook as Markdown text; a missing one as a dash."""
    if value is None or pd.isna(value):
        return "—"
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # an INTEGER column with NULLs reaches pandas as floats
    return plain(value)


def _call(rel: Relations, call_uuid: str, tz: str) -> None:
    summary = queries.call_summary(rel, call_uuid, tz)
    st.header(f"Call {plain(call_uuid)}")
    if summary.frame.empty:
        st.warning("No call-leg webhooks for this UUID (only Dial events, perhaps).")
    else:
        row = summary.frame.iloc[0]
        cols = st.columns(3)
        cols[0].metric("Outcome", _shown(row["outcome"]), border=True)
        cols[1].metric("Direction", _shown(row["direction"]), border=True)
        cols[2].metric(
            "Duration",
            "—" if row.isna()["duration_s"] else f"{int(row['duration_s'])} s",
            border=True,
        )
        st.markdown(
            f"**Hangup cause:** {_shown(row['hangup_cause_code'])} "
            f"{_shown(row['hangup_cause_name'])} · {_shown(row['hangup_cause'])} · "
            f"source {_shown(row['hangup_source'])}"
        )
        widgets.table(summary, "call")

    st.subheader("B legs")
    widgets.table(queries.call_b_legs(rel, call_uuid, tz), "call-b-legs")

    st.subheader("Timeline of webhooks")
    timeline = queries.call_timeline(rel, call_uuid, tz)
    frame = timeline.frame
    widgets.chart(timeline, charts.call_timeline(frame, tz), "timeline")
    if frame.empty:
        return
    entries, webhooks = int(frame["entries"].iloc[0]), int(frame["webhooks"].iloc[0])
    if webhooks > entries:
        st.caption(
            f"{webhooks:,} webhooks as {entries:,} entries: repeated deliveries of the "
            "same webhook (same kind and parameters) are shown once, with their count."
        )
    for event in frame.itertuples():
        _entry(event)
    if entries > len(frame):
        st.info(
            f"Showing the first {len(frame):,} of {entries:,} entries. Every webhook of this "
            f"call is on the SQL page (Operations → SQL), e.g.:",
            icon=":material/database:",
        )
        st.code(_all_webhooks_sql(call_uuid), language="sql")


@st.fragment
def _entry(event: Any) -> None:
    """One timeline entry: its parameters drawn only while it is open (opening it reruns this
    fragment alone). Drawn closed, every entry's JSON tree still cost the browser about 0.1 s
    of a Calls page (docs/benchmarks.md)."""
    label = f"{event.received:%H:%M:%S.%f}"[:-3] + f" · {plain(event.kind)}"
    if event.deliveries > 1:
        label += f" · delivered {event.deliveries:,} times"
    elif event.duplicate:
        label += " · duplicate"
    entry = st.expander(label, key=f"entry-{event.event_id}", on_change="rerun")
    if not entry.open:
        return
    with entry:
        st.json(json.loads(event.params))
        about = (
            f"{plain(event.http_method)}, signature {plain(event.signature)}, "
            f"event {plain(event.event_id)}"
        )
        if event.deliveries > 1:
            about = (
                f"{event.deliveries:,} deliveries, the last at "
                f"{event.last_received:%Y-%m-%d %H:%M:%S}. The first: {about}"
            )
        st.caption(about)


def _all_webhooks_sql(call_uuid: str) -> str:
    """A query for the SQL page listing every stored webhook of the call, the UUID quoted."""
    literal = "'" + call_uuid.replace("'", "''") + "'"
    return (
        "SELECT received_at, kind, duplicate, params\nFROM webhook_events\n"
        f"WHERE call_uuid = {literal} OR dial_a_leg_uuid = {literal}\n"
        "   OR dial_b_leg_uuid IN\n"
        f"      (SELECT b_leg_uuid FROM dial_legs WHERE a_leg_uuid = {literal})\n"
        "ORDER BY received_at"
    )


controls.live(render)
