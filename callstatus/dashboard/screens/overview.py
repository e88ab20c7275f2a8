"""Overview: the KPIs against the previous range, answer rates, outcomes and busy hours."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
import streamlit as st

from callstatus.dashboard import (
    charts,
    comparison,
    connection,
    controls,
    definitions,
    tiles,
    widgets,
)
from callstatus.dashboard.filters import Filters, ceil_minute
from callstatus.dashboard.queries import concurrency, overview, sidebar
from callstatus.dashboard.queries.relations import Relations
from callstatus.dashboard.text import plain

RATE_NAMES = {"dial": "dial answer rate", "call": "call answer rate"}


def render() -> None:
    f = controls.current()
    rel = connection.relations()
    st.title("Call outcomes")
    st.caption(controls.describe(f))
    now, before = overview.kpis(rel, f), overview.kpis(rel, f.previous())
    row = now.frame.iloc[0]
    lead = tiles.lead_metric(f.direction, row)
    span = sidebar.data_span(rel)
    covered = span is not None and span[0] <= f.previous().start
    tiles.render(row, before.frame.iloc[0], lead, covered)
    st.caption(
        f"Leading with the **{RATE_NAMES[lead]}**: "
        + (
            "inbound calls are answered by our own XML, so what counts is whether an agent "
            "picked up."
            if lead == "dial"
            else "for outbound calls, did the callee pick up."
        )
        + f" Lost races: {tiles.fmt_rate(row['b_lost_race_share'])} of B legs "
        "(another simultaneous leg answered first; not a failure)."
    )
    notice = records_only_notice(row)
    if notice:
        st.info(notice, icon=":material/fact_check:")
    widgets.provenance(now, "kpis")
    todays_peak(rel, f)

    st.subheader("Answer rates over time, with call volume")
    if controls.comparing():
        rates = comparison.overlay(overview.rates_over_time, rel, f)
    else:
        rates = overview.rates_over_time(rel, f)
    span = f.wall_clock(ceil_minute(datetime.now(UTC)))
    widgets.chart(
        rates,
        charts.rates_with_volume(rates.frame, RATE_NAMES[lead], f.tz, span),
        "answer-rates",
    )
    partial_note(rates.frame, span)

    left, right = st.columns([3, 2])
    with left:
        st.subheader("How calls ended")
        if controls.comparing():
            outcomes = comparison.overlay(overview.outcomes_over_time, rel, f)
        else:
            outcomes = overview.outcomes_over_time(rel, f)
        widgets.chart(
            outcomes, charts.outcomes_stacked(outcomes.frame, f.tz, span=span), "outcomes"
        )
    with right:
        st.subheader("When calls get answered")
        metric = st.segmented_control(
            "Heat map of",
            ["dial", "call"],
            default=lead,
            key="heat",
            format_func=lambda m: RATE_NAMES[m],
            required=True,
            help=definitions.DIAL_ANSWER_RATE if lead == "dial" else definitions.CALL_ANSWER_RATE,
        )
        heat = overview.answer_heatmap(rel, f, metric or lead)
        widgets.chart(heat, charts.heatmap(heat.frame, RATE_NAMES[metric or lead]), "heatmap")
        if not heat.frame.empty and bool((heat.frame["total"] < charts.MIN_CELL).any()):
            st.caption(
                f"Grey cells: fewer than {charts.MIN_CELL} "
                f"{'Dials' if (metric or lead) == 'dial' else 'calls'} in that hour, "
                "too few for a rate."
            )


def todays_peak(rel: Relations, f: Filters) -> None:
    """The most calls up at once today (midnight in the chosen zone to now), within the
    slices, and when: capacity, licences and trunk size are planned on it."""
    top = concurrency.peak(rel, concurrency.today(f, datetime.now(UTC))).frame.iloc[0]
    when = top["at"]
    reached = "" if pd.isna(when) else f"at {when:%H:%M:%S}"
    tile, note = st.columns([1, 3], vertical_alignment="center")
    tile.metric(
        "Peak concurrent calls today",
        tiles.fmt_count(top["peak"]),
        help="The most A legs up at one instant since midnight (in the chosen time zone), "
        "exact from their start and end times. Timing and load shows it per bucket.",
        border=True,
    )
    if reached:
        note.caption(f"Today's peak was first reached {reached} ({plain(f.tz)}).")


def partial_note(frame: pd.DataFrame, span: tuple[datetime, datetime]) -> None:
    """Say why some volume bars are paler: the range cuts their buckets, so they hold fewer
    calls and their rates can swing (the start of today's bucket may hold a handful)."""
    if frame.empty or "bucket" not in frame:
        return
    current = frame[frame["period"] != "previous range"] if "period" in frame else frame
    if not charts.partial_buckets(current, span).any():
        return
    start, end = (f"{moment:%Y-%m-%d %H:%M}" for moment in span)
    st.caption(
        f"Paler bars: buckets the range covers only in part (it covers {start} to {end}). "
        "They hold fewer calls, so their rates can swing."
    )


def records_only_notice(kpis: pd.Series) -> str | None:
    """One line on the calls in the range known only from Plivo's call records (none: None)."""
    count = int(kpis["records_only_calls"])
    if count == 0:
        return None
    one = count == 1
    return (
        f"{tiles.fmt_count(count)} call{'' if one else 's'} "
        f"({tiles.fmt_rate(kpis['records_only_share'])}) in this range "
        f"{'is' if one else 'are'} known only from Plivo's call records: "
        f"{'its' if one else 'their'} webhooks never arrived. See Receiver health."
    )


controls.live(render)
