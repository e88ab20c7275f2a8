"""Pure chart builders: a query's DataFrame in, an Altair chart out (no Streamlit here)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import altair as alt
import pandas as pd

# One colour per outcome, the same in every chart: green is good, amber is "try again",
# red is broken, grey is nobody's fault, purple a machine, light blue a race lost to a colleague.
OUTCOME_COLORS: dict[str, str] = {
    "answered": "#2ca02c",
    "lost-race": "#9ecae9",
    "machine": "#8e6bbf",
    "busy": "#f2a93b",
    "no-answer": "#f6d06f",
    "canceled": "#a5a5a5",
    "rejected": "#e4572e",
    "unreachable": "#a83b3b",
    "failed": "#d62728",
    "in-progress": "#4c78a8",
    "(A leg not seen)": "#dddddd",
}
OUTCOMES = list(OUTCOME_COLORS)
RATE_COLORS = {
    "dial answer rate": "#1f77b4",
    "call answer rate": "#2ca02c",
    "B-leg answer rate": "#ff7f0e",
}
# What a builder returns: one chart, or charts layered or stacked.
Figure = alt.Chart | alt.LayerChart | alt.VConcatChart
KIND_COLORS = {
    "answer": "#4c78a8",
    "fallback": "#e45756",
    "dial_action": "#72b7b2",
    "dial_callback": "#54a24b",
    "hangup": "#b279a2",
    "ring": "#eeca3b",
    "machine_detection": "#9d755d",
}


def outcome_scale(present: pd.Series | None = None) -> alt.Scale:
    """The fixed outcome colours, limited to the outcomes present so legends stay short."""
    seen = set(present.dropna()) if present is not None else set(OUTCOMES)
    domain = [o for o in OUTCOMES if o in seen] + sorted(seen - set(OUTCOMES))
    return alt.Scale(domain=domain, range=[OUTCOME_COLORS.get(o, "#bbbbbb") for o in domain])


def _outcome_color(
    frame: pd.DataFrame, field: str = "outcome", title: str = "outcome"
) -> alt.Color:
    return alt.Color(f"{field}:N", scale=outcome_scale(frame[field]), sort=OUTCOMES, title=title)


def rows_height(rows: int, step: int = 28, chrome: int = 90) -> int:
    """Height for a chart with one band per row. Streamlit fits axes and legends inside the
    given height, so room for them (`chrome`) comes on top of the bands."""
    return chrome + step * max(rows, 1)


def _time_x(title: str) -> alt.X:
    return alt.X("bucket:T", title=title, axis=alt.Axis(labelOverlap=True, labelAngle=0))


def empty(message: str = "No data in this range") -> alt.Chart:
    """A blank chart that says why it is blank, instead of an empty frame."""
    chart: alt.Chart = (
        alt.Chart(pd.DataFrame({"text": [message]}))
        .mark_text(size=14, color="#888")
        .encode(text=alt.Text("text:N"))
        .properties(height=80)
    )
    return chart


# How much of a bucket the range covers, in the volume bars' tooltip.
WHOLE_BUCKET = "all of it"
PART_OF_BUCKET = "part (the range starts or ends inside it)"


def partial_buckets(frame: pd.DataFrame, span: tuple[datetime, datetime]) -> pd.Series:
    """Which rows' buckets the range [start, end) covers only in part (its first bucket when it
    starts mid-bucket, its last while it is still filling). `span` and the buckets are both
    naive wall-clock times of the chosen zone (Filters.wall_clock)."""
    start, end = (pd.Timestamp(moment) for moment in span)
    return (frame["bucket"] < start) | (frame["bucket_end"] > end)


def _covered(frame: pd.DataFrame, span: tuple[datetime, datetime]) -> pd.DataFrame:
    """The rows with `covered`: how much of their bucket the range covers."""
    partial = partial_buckets(frame, span)
    return frame.assign(covered=partial.map({True: PART_OF_BUCKET, False: WHOLE_BUCKET}))


def _paler_when_partial(bars: alt.Chart) -> alt.Chart:
    """Bars of rows `_covered` as partial drawn paler."""
    paler: alt.Chart = bars.encode(
        opacity=alt.condition(
            f"datum.covered == '{PART_OF_BUCKET}'", alt.value(0.4), alt.value(1.0)
        )
    )
    return paler


COVERED_TIP = alt.Tooltip("covered:N", title="range covers")


def rates_with_volume(
    frame: pd.DataFrame, lead: str, tz: str, span: tuple[datetime, datetime] | None = None
) -> Figure:
    """Answer rates as lines over call volume as bars, sharing the time axis. With the range's
    `span`, the bars of buckets it covers only in part are paler: they hold fewer calls."""
    if frame.empty:
        return empty()
    order = [lead, *[r for r in RATE_COLORS if r != lead]]
    # Compared (comparison.overlay): the previous range's rows carry period = 'previous range'.
    # Without the previous range's rows (no data then) no dashed line, and no legend for one.
    compared = "period" in frame and bool((frame["period"] == "previous range").any())
    ids = ["bucket", "calls", *(["period"] if compared else [])]
    long = frame.rename(
        columns={
            "dial_answer_rate": "dial answer rate",
            "call_answer_rate": "call answer rate",
            "b_leg_answer_rate": "B-leg answer rate",
        }
    ).melt(id_vars=ids, value_vars=order, var_name="rate", value_name="value")
    x = _time_x(f"time ({tz})")
    lines = (
        alt.Chart(long)
        .mark_line(point=alt.OverlayMarkDef(size=20))
        .encode(
            x=x,
            y=alt.Y(
                "value:Q",
                title="answer rate",
                axis=alt.Axis(format="%"),
                scale=alt.Scale(domain=[0, 1]),
            ),
            color=alt.Color(
                "rate:N",
                sort=order,
                title=None,
                scale=alt.Scale(domain=list(RATE_COLORS), range=list(RATE_COLORS.values())),
                legend=alt.Legend(orient="top"),
            ),
            strokeWidth=alt.condition(f"datum.rate == '{lead}'", alt.value(3), alt.value(1.5)),
            tooltip=[
                alt.Tooltip("bucket:T", title="from"),
                alt.Tooltip("rate:N"),
                alt.Tooltip("value:Q", format=".1%"),
                # A rate of a handful of calls (the start of today) says little: shown beside it.
                alt.Tooltip("calls:Q", title="calls in the bucket"),
                *(["period:N"] if compared else []),
            ],
        )
        .properties(height=230)
    )
    if compared:
        lines = lines.encode(strokeDash=_period_dash(), detail=alt.Detail("period:N"))
    frame = _periods(frame)[0]
    tooltip = [alt.Tooltip("bucket:T", title="from"), alt.Tooltip("calls:Q")]
    if span is not None:
        frame = _covered(frame, span)
        tooltip.append(COVERED_TIP)
    bars = (
        alt.Chart(frame)
        .mark_bar(color="#9aa5b1", stroke="white", strokeWidth=0.5, orient="vertical")
        .encode(x=x, x2=alt.X2("bucket_end:T"), y=alt.Y("calls:Q", title="calls"), tooltip=tooltip)
        .properties(height=90)
    )
    if span is not None:
        bars = _paler_when_partial(bars)
    stacked: alt.VConcatChart = alt.vconcat(lines, bars, spacing=6).resolve_scale(x="shared")
    return stacked


# A dash in a legend draws no colour of its own: the labels say which line is which.
PERIOD_LABEL = "datum.label == 'previous range' ? 'previous range (dashed)' : datum.label"


def _period_dash() -> alt.StrokeDash:
    """Solid for the range, dashed for the previous range overlaid on it."""
    return alt.StrokeDash(
        "period:N",
        title=None,
        scale=alt.Scale(domain=["this range", "previous range"], range=[[1, 0], [5, 4]]),
        legend=alt.Legend(orient="top", labelExpr=PERIOD_LABEL),
    )


def _tip(field: Any) -> Any:
    """A tooltip channel for a "name:type" string: Altair turns a bare string into one through
    its schema (about 2 ms of Python each, on every page load); other channels pass as they are."""
    return alt.Tooltip(field) if isinstance(field, str) else field


def _stacked_over_time(
    frame: pd.DataFrame, x_title: str, value: str, color: alt.Color, tooltip: list[Any]
) -> alt.Chart:
    """Bars spanning their time bucket (`bucket` to `bucket_end`), stacked by `color`."""
    chart: alt.Chart = (
        alt.Chart(frame)
        .mark_bar(stroke="white", strokeWidth=0.5, orient="vertical")
        .encode(
            x=_time_x(x_title),
            x2=alt.X2("bucket_end:T"),
            y=alt.Y(f"{value}:Q", title=value),
            color=color,
            tooltip=[alt.Tooltip("bucket:T", title="from"), *map(_tip, tooltip)],
        )
    )
    return chart


def _periods(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The range's rows and the previous range's (comparison.overlay), apart."""
    if "period" not in frame:
        return frame, frame[:0]
    previous = frame["period"] == "previous range"
    return frame[~previous], frame[previous]


def _filled_totals(previous: pd.DataFrame, value: str, current: Any) -> pd.DataFrame:
    """The previous range's total per bucket, 0 in its buckets without rows (a step line would
    otherwise hold the last total across them), from its first bucket with data to the last
    bucket shown. Buckets are local wall-clock times: a regular grid even across DST."""
    totals = previous.groupby("bucket")[value].sum()
    step = (previous["bucket_end"] - previous["bucket"]).min() if "bucket_end" in previous else None
    if step is None or pd.isna(step) or step <= pd.Timedelta(0):
        return totals.reset_index().assign(period="previous range")
    last = totals.index.max()
    if isinstance(current, pd.DataFrame) and not current.empty:
        last = max(last, current["bucket"].max())
    grid = pd.date_range(totals.index.min(), last, freq=step, name="bucket")
    filled = totals.reindex(grid.union(totals.index), fill_value=0)
    return filled.reset_index().assign(period="previous range")


def _with_previous_total(
    bars: alt.Chart, previous: pd.DataFrame, value: str
) -> alt.Chart | alt.LayerChart:
    """Stacked bars of the range with the previous range's total per bucket over them, as a
    dashed line the legend names (none when the previous range has no rows)."""
    if previous.empty:
        return bars
    totals = _filled_totals(previous, value, bars.data)
    line = (
        alt.Chart(totals)
        .mark_line(color="#444444", interpolate="step-after")
        .encode(
            x=alt.X("bucket:T"),
            y=alt.Y(f"{value}:Q"),
            strokeDash=alt.StrokeDash(
                "period:N",
                title=None,
                scale=alt.Scale(domain=["previous range"], range=[[5, 4]]),
                legend=alt.Legend(
                    orient="top", labelExpr="'previous range (dashed), in all'", labelLimit=0
                ),
            ),
            tooltip=[
                alt.Tooltip("bucket:T", title="from"),
                alt.Tooltip(f"{value}:Q"),
                alt.Tooltip("period:N"),
            ],
        )
    )
    return alt.LayerChart(layer=[bars, line])


def outcomes_stacked(
    frame: pd.DataFrame,
    tz: str,
    value: str = "calls",
    span: tuple[datetime, datetime] | None = None,
) -> Figure:
    """Stacked outcome bars per bucket; when compared (a `period` column), the previous
    range's total per bucket as a dashed line over them. With the range's `span`, the bars of
    buckets it covers only in part are paler, as in rates_with_volume."""
    current, previous = _periods(frame)
    if current.empty and previous.empty:
        return empty()
    tooltip: list[Any] = ["outcome:N", f"{value}:Q"]
    if span is not None and not current.empty:
        current = _covered(current, span)
        tooltip.append(COVERED_TIP)
    bars = (
        _stacked_over_time(current, f"time ({tz})", value, _outcome_color(current), tooltip)
        .encode(order=alt.Order("outcome_rank:Q"))
        .transform_calculate(outcome_rank=f"indexof({OUTCOMES!r}, datum.outcome)")
        .properties(height=280)
    )
    if span is not None and not current.empty:
        bars = _paler_when_partial(bars)
    return _with_previous_total(bars, previous, value)


MIN_CELL = 10


def heatmap(frame: pd.DataFrame, title: str) -> alt.Chart:
    """Hour of day × weekday, coloured by answer rate (red poor, green good)."""
    if frame.empty:
        return empty()
    days = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
    chart: alt.Chart = (
        alt.Chart(frame)
        .mark_rect(stroke="white", strokeWidth=1)
        .encode(
            x=alt.X("hour:O", title="hour of day", axis=alt.Axis(labelAngle=0)),
            y=alt.Y("weekday:N", sort=days, title=None),
            # A handful of night-time calls makes 0% or 100% by chance: grey those cells.
            color=alt.condition(
                f"datum.total >= {MIN_CELL}",
                alt.Color(
                    "answer_rate:Q",
                    title=title,
                    scale=alt.Scale(scheme="redyellowgreen", domain=[0, 1]),
                    legend=alt.Legend(format="%"),
                ),
                alt.value("#eeeeee"),
            ),
            tooltip=[
                alt.Tooltip("weekday:N"),
                alt.Tooltip("hour:O"),
                alt.Tooltip("answer_rate:Q", format=".1%"),
                alt.Tooltip("answered:Q"),
                alt.Tooltip("total:Q"),
            ],
        )
        .properties(height=230)
    )
    return chart


def _outcome_bars(
    frame: pd.DataFrame, category: str, label_limit: int, tooltip: list[Any], rows: int
) -> alt.Chart:
    """Legs per `category`, most first, each bar split by the legs' outcomes."""
    chart: alt.Chart = (
        alt.Chart(frame)
        .mark_bar()
        .encode(
            y=alt.Y(f"{category}:N", sort="-x", title=None, axis=alt.Axis(labelLimit=label_limit)),
            x=alt.X("sum(legs):Q", title="legs"),
            color=_outcome_color(frame),
            order=alt.Order("outcome_rank:Q"),
            tooltip=[_tip(field) for field in tooltip],
        )
        .transform_calculate(outcome_rank=f"indexof({OUTCOMES!r}, datum.outcome)")
        .properties(height=rows_height(rows))
    )
    return chart


def causes_bar(frame: pd.DataFrame, top: int = 15) -> alt.Chart:
    """Legs per cause, most frequent first, each bar split by the legs' outcomes."""
    if frame.empty:
        return empty()
    keep = frame.groupby("cause")["legs"].sum().nlargest(top).index
    data = frame[frame["cause"].isin(keep)]
    tooltip = ["cause:N", "telephony_cause:N", "outcome:N", "legs:Q"]
    return _outcome_bars(data, "cause", 260, tooltip, len(keep))


def sources_bar(frame: pd.DataFrame) -> alt.Chart:
    if frame.empty:
        return empty()
    tooltip = ["source:N", "outcome:N", "legs:Q"]
    return _outcome_bars(frame, "source", 200, tooltip, frame["source"].nunique())


def causes_over_time(frame: pd.DataFrame, tz: str) -> Figure:
    """Legs per bucket stacked by cause; compared, the previous range's total dashed."""
    current, previous = _periods(frame)
    if current.empty and previous.empty:
        return empty()
    color = alt.Color(
        "cause:N",
        title="cause",
        scale=alt.Scale(scheme="tableau10"),
        legend=alt.Legend(orient="right", labelLimit=240),
    )
    # Tall enough for every cause in the legend beside it (up to the top causes and "other").
    causes = current["cause"].nunique() if not current.empty else 0
    bars = _stacked_over_time(
        current, f"time ({tz})", "legs", color, ["cause:N", "legs:Q"]
    ).properties(height=max(260, 26 * causes + 50))
    return _with_previous_total(bars, previous, "legs")


def webhooks_per_kind(frame: pd.DataFrame, tz: str) -> Figure:
    """Webhooks per bucket stacked by kind; compared, the previous range's total dashed."""
    current, previous = _periods(frame)
    if current.empty and previous.empty:
        return empty()
    color = alt.Color(
        "kind:N", scale=alt.Scale(domain=list(KIND_COLORS), range=list(KIND_COLORS.values()))
    )
    bars = _stacked_over_time(
        current, f"received ({tz})", "webhooks", color, ["kind:N", "webhooks:Q", "duplicates:Q"]
    ).properties(height=260)
    return _with_previous_total(bars, previous, "webhooks")


DELIVERED_ONCE = "delivered once"
RETRIED = "delivered again (a retry)"


def call_timeline(frame: pd.DataFrame, tz: str) -> alt.Chart:
    """One dot per webhook on a time line, a row per kind."""
    if frame.empty:
        return empty("No webhooks for this call")
    chart: alt.Chart = (
        alt.Chart(frame)
        .mark_point(filled=True, size=90)
        .encode(
            x=alt.X(
                "received:T",
                title=f"received ({tz})",
                axis=alt.Axis(format="%H:%M:%S", labelAngle=0),
            ),
            y=alt.Y("kind:N", title=None, sort=list(KIND_COLORS)),
            color=alt.Color(
                "kind:N",
                legend=None,
                scale=alt.Scale(domain=list(KIND_COLORS), range=list(KIND_COLORS.values())),
            ),
            # Said in words: a legend of "duplicate: false" meant nothing to a reader.
            shape=alt.Shape(
                "delivery:N",
                title=None,
                scale=alt.Scale(domain=[DELIVERED_ONCE, RETRIED], range=["circle", "diamond"]),
                legend=alt.Legend(orient="top", labelLimit=260),
            ),
            tooltip=[
                alt.Tooltip("received:T"),
                alt.Tooltip("kind:N"),
                alt.Tooltip("event:N"),
                alt.Tooltip("dial_action:N"),
                alt.Tooltip("call_status:N"),
                alt.Tooltip("dial_status:N"),
                alt.Tooltip("delivery:N"),
            ],
        )
        .transform_calculate(delivery=f"datum.duplicate ? '{RETRIED}' : '{DELIVERED_ONCE}'")
        .properties(height=rows_height(frame["kind"].nunique(), step=34, chrome=70))
    )
    return chart


def missed_share_per_day(frame: pd.DataFrame, tz: str) -> Figure:
    """Per day (`day`: local midnight), the share of calls known only from Plivo's call
    records, one bar a day; the counts behind it on hover. Compared (a `period` column), the
    previous range's share of the same day as a dashed tick over the bar."""
    frame, previous = _periods(frame)
    if frame.empty:
        return empty()
    # `day` is a local time without zone: Vega reads it as the browser's local time and
    # yearmonthdate() keeps its date whatever zone the browser is in.
    chart: alt.Chart = (
        alt.Chart(frame)
        .mark_bar(color="#e4572e")
        .encode(
            x=alt.X(
                "yearmonthdate(day):O",
                title=f"day ({tz})",
                axis=alt.Axis(format="%a %d %b", labelOverlap=True, labelAngle=0),
            ),
            y=alt.Y(
                "missed_share:Q",
                title="missed share",
                axis=alt.Axis(format="%", tickCount=4),
                scale=alt.Scale(domainMin=0),
            ),
            tooltip=[
                alt.Tooltip("yearmonthdate(day):T", title="day", format="%a %d %b %Y"),
                alt.Tooltip("missed_share:Q", title="missed share", format=".1%"),
                alt.Tooltip("added:Q", title="added from records"),
                alt.Tooltip("calls:Q", title="calls"),
            ],
        )
        .properties(height=170)
    )
    if previous.empty:
        return chart
    ticks = (
        alt.Chart(previous)
        .mark_tick(color="#444444", thickness=2, strokeDash=[5, 4])
        .encode(
            x=alt.X("yearmonthdate(day):O"),
            y=alt.Y("missed_share:Q"),
            strokeDash=alt.StrokeDash(
                "period:N",
                title=None,
                scale=alt.Scale(domain=["previous range"], range=[[5, 4]]),
                legend=alt.Legend(orient="top", labelExpr=PERIOD_LABEL),
            ),
            tooltip=[
                alt.Tooltip("yearmonthdate(compared_bucket):T", title="day", format="%a %d %b"),
                alt.Tooltip("missed_share:Q", title="missed share", format=".1%"),
                alt.Tooltip("period:N"),
            ],
        )
    )
    return alt.LayerChart(layer=[chart, ticks])
