"""Timing and load: post-dial delay, ring time, B legs' time to answer, and concurrent calls."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import streamlit as st

from callstatus.dashboard import analytics_charts, comparison, connection, controls, tiles, widgets
from callstatus.dashboard.filters import Filters
from callstatus.dashboard.queries import concurrency, timing
from callstatus.dashboard.queries.base import Result
from callstatus.dashboard.queries.relations import Relations
from callstatus.dashboard.text import plain

HELP = {
    timing.PDD: (
        "Post-dial delay (outbound API calls) = from the call's StartTime to its first ring "
        "callback, or to its answer when no ring came first. Calls that neither rang nor were "
        "answered (busy, unreachable, failed at once) have none. Needs the call's ring_url."
    ),
    timing.RING: (
        "Ring time (outbound API calls) = from the first ring callback (the StartTime when none "
        "came) to the answer, or to the hangup when nobody answered; calls that rang or were "
        "answered only."
    ),
    timing.B_ANSWER: (
        "B legs: from the Dial's start to the leg's answer. Plivo sends no dial-start event: the "
        "Dial starts once the A leg is answered, so its start is the A leg's AnswerTime, and the "
        "greeting spoken before the Dial is part of this time."
    ),
    timing.B_GIVE_UP: (
        "B legs never answered (busy, no answer, rejected, canceled, failed): from the Dial's "
        "start (the A leg's AnswerTime) to the leg's hangup. Lost races are left out."
    ),
}
# The tiles' names, short enough for a quarter of the page ("B leg: time to answer (median)" was
# cut off).
TILE_NAMES = {
    timing.PDD: "Post-dial delay",
    timing.RING: "Ring time",
    timing.B_ANSWER: "B-leg answer",
}
RESOLUTION_HELP = (
    "Medians and 90th percentiles without a direction, number or country filter are read from "
    f"hourly histograms ({timing.RESOLUTION}): within one such bin of the exact value; the "
    "counts are exact. With one of those filters they are exact."
)
CONCURRENCY_HELP = (
    "Concurrent calls = legs whose [start, end) covers an instant, computed exactly from start "
    "and end times (no sampling): the peak is the most legs up at once in a bucket, the mean "
    "the number up on average over the bucket. A legs run from StartTime to EndTime; B legs "
    "ring or talk from the Dial's start (the A leg's AnswerTime) to their hangup. A leg with no "
    "end yet counts until the end of the range, at most 6 hours."
)


def render() -> None:
    f = controls.current()
    rel = connection.relations()
    st.title("Timing and load")
    st.caption(controls.describe(f))
    _tiles(rel, f)

    st.subheader(
        "Post-dial delay and ring time", help="\n\n".join([*HELP.values(), RESOLUTION_HELP])
    )
    measure = st.segmented_control(
        "Measure", list(timing.MEASURES), default=timing.PDD, key="timing_measure", required=True
    )
    chosen = measure or timing.PDD
    st.caption(HELP[chosen])
    series = _over_time(timing.over_time, rel, f)
    widgets.chart(
        series, analytics_charts.timing_over_time(series.frame, chosen, f.tz), "timing-over-time"
    )

    st.subheader("Concurrent calls", help=CONCURRENCY_HELP)
    legs = st.segmented_control(
        "Legs",
        [concurrency.A_LEGS, concurrency.B_LEGS],
        default=concurrency.A_LEGS,
        key="concurrency_series",
        format_func=lambda s: "A legs (calls)" if s == concurrency.A_LEGS else "B legs",
        required=True,
    )
    chosen_legs = legs or concurrency.A_LEGS
    load = _over_time(lambda r, g: concurrency.over_time(r, g, chosen_legs), rel, f)
    widgets.chart(
        load, analytics_charts.concurrency_over_time(load.frame, chosen_legs, f.tz), "concurrency"
    )

    st.subheader("Per destination")
    st.caption(
        "Outbound calls by the country called; B legs by the number or SIP URI dialled. "
        "Seconds; the destinations with the most timed legs first."
    )
    widgets.table(
        timing.per_destination(rel, f),
        "timing-per-destination",
        column_config={
            "median_s": st.column_config.NumberColumn("median (s)", format="%.1f"),
            "p90_s": st.column_config.NumberColumn("p90 (s)", format="%.1f"),
        },
    )


def _over_time(query: Callable[[Relations, Filters], Result], rel: Relations, f: Filters) -> Result:
    return comparison.overlay(query, rel, f) if controls.comparing() else query(rel, f)


def _tiles(rel: Relations, f: Filters) -> None:
    summary = timing.summary(rel, f).frame.set_index("measure")
    # The A legs' sweep the chart below draws too (a cached result, not a second sweep).
    peak, when = concurrency.peak_of(concurrency.over_time(rel, f).frame)
    cols = st.columns(4)
    for column, measure in zip(cols[:3], (timing.PDD, timing.RING, timing.B_ANSWER), strict=True):
        median = summary.loc[measure, "median_s"] if measure in summary.index else None
        p90 = summary.loc[measure, "p90_s"] if measure in summary.index else None
        column.metric(
            f"{TILE_NAMES[measure]} (median)",
            tiles.fmt_seconds(median),
            help=f"{HELP[measure]}\n\n90th percentile: {tiles.fmt_seconds(p90)}.",
            border=True,
        )
    reached = (
        "" if when is None or pd.isna(when) else f"\n\nFirst reached at {when} ({plain(f.tz)})."
    )
    cols[3].metric(
        "Peak concurrent calls",
        tiles.fmt_count(peak),
        help=CONCURRENCY_HELP + reached,
        border=True,
    )


controls.live(render)
