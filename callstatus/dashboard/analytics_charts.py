"""Pure chart builders of the Timing and Destinations pages: timing percentiles and concurrent
legs over time (the previous range dashed when compared), outcomes per country."""

from __future__ import annotations

import altair as alt
import pandas as pd

from callstatus.dashboard.charts import (
    OUTCOMES,
    PERIOD_LABEL,
    Figure,
    empty,
    outcome_scale,
    rows_height,
)

PERIOD_DASH = alt.StrokeDash(
    "period:N",
    title=None,
    scale=alt.Scale(domain=["this range", "previous range"], range=[[1, 0], [5, 4]]),
    legend=alt.Legend(orient="top", labelExpr=PERIOD_LABEL),
)
STATISTIC_COLORS = {"median": "#1f77b4", "p90": "#ff7f0e", "peak": "#d62728", "mean": "#4c78a8"}


def _x(tz: str) -> alt.X:
    return alt.X("bucket:T", title=f"time ({tz})", axis=alt.Axis(labelOverlap=True, labelAngle=0))


def _lines(long: pd.DataFrame, tz: str, y_title: str, y_format: str) -> alt.Chart:
    """Lines per `statistic` (colour) and `period` (dash) over `bucket`."""
    present = [s for s in STATISTIC_COLORS if s in set(long["statistic"])]
    # Dashed only when the previous range has rows: without data it gets no line, no legend.
    compared = "period" in long and bool((long["period"] == "previous range").any())
    encoding: dict[str, object] = {
        "x": _x(tz),
        "y": alt.Y("value:Q", title=y_title),
        "color": alt.Color(
            "statistic:N",
            title=None,
            scale=alt.Scale(domain=present, range=[STATISTIC_COLORS[s] for s in present]),
            legend=alt.Legend(orient="top"),
        ),
        "tooltip": [
            alt.Tooltip("bucket:T", title="from"),
            "statistic:N",
            alt.Tooltip("value:Q", format=y_format),
            *(["period:N", alt.Tooltip("compared_bucket:T", title="bucket")] if compared else []),
        ],
    }
    if compared:
        encoding["strokeDash"] = PERIOD_DASH
        encoding["detail"] = "period:N"
    chart: alt.Chart = (
        alt.Chart(long)
        .mark_line(point=alt.OverlayMarkDef(size=18))
        .encode(**encoding)
        .properties(height=240)
    )
    return chart


def _long(frame: pd.DataFrame, values: list[str]) -> pd.DataFrame:
    keep = [c for c in ("bucket", "period", "compared_bucket") if c in frame]
    return frame.melt(id_vars=keep, value_vars=values, var_name="statistic", value_name="value")


def timing_over_time(frame: pd.DataFrame, measure: str, tz: str) -> Figure:
    """Median and 90th percentile of one timing measure per bucket, in seconds."""
    rows = frame[frame["measure"] == measure] if not frame.empty else frame
    if rows.empty:
        return empty(f"No {measure} in this range")
    data = _long(rows.rename(columns={"median_s": "median", "p90_s": "p90"}), ["median", "p90"])
    return _lines(data, tz, "seconds", ".1f")


def concurrency_over_time(frame: pd.DataFrame, series: str, tz: str) -> Figure:
    """Peak and time-weighted mean of legs up at once per bucket, for one series."""
    rows = frame[frame["series"] == series] if not frame.empty else frame
    if rows.empty:
        return empty()
    return _lines(_long(rows, ["peak", "mean"]), tz, f"{series} at once", ".2f")


def outcomes_by_country(frame: pd.DataFrame) -> alt.Chart:
    """Calls per far-end country, each bar split by outcome, most calls first."""
    if frame.empty:
        return empty()
    chart: alt.Chart = (
        alt.Chart(frame)
        .mark_bar()
        .encode(
            y=alt.Y("country:N", sort="-x", title=None),
            x=alt.X("sum(calls):Q", title="calls"),
            color=alt.Color(
                "outcome:N", scale=outcome_scale(frame["outcome"]), sort=OUTCOMES, title="outcome"
            ),
            order=alt.Order("outcome_rank:Q"),
            tooltip=["country:N", "outcome:N", "calls:Q"],
        )
        .transform_calculate(outcome_rank=f"indexof({OUTCOMES!r}, datum.outcome)")
        .properties(height=rows_height(frame["country"].nunique()))
    )
    return chart
