"""Scheduled reports: when each is due, and its message (KPIs, answer rates and causes as PNG).

The figures are the Overview's KPI tiles against the previous range, read and written by the
dashboard's own code (queries/overview.py, tiles.py); the PNGs are the charts the Overview and
Hangup causes pages draw (charts.py), rendered by vl-convert.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pandas as pd
import vl_convert

from callstatus.alerts.messages import page_url
from callstatus.alerts.model import Message, Report, Schedule
from callstatus.core.settings import Settings
from callstatus.dashboard import charts, tiles
from callstatus.dashboard.filters import Filters, auto_bucket
from callstatus.dashboard.queries import causes, overview, sidebar
from callstatus.dashboard.queries.relations import Relations

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)
# Charts as an email shows them: 600 px wide, drawn at twice that for sharp screens.
CHART_WIDTH = 600
CHART_SCALE = 2
TOP_CAUSES = 5
# The Overview's name for its lead rate (screens/overview.py), a key of charts.RATE_COLORS.
LEAD_RATES = {"dial": "dial answer rate", "call": "call answer rate"}
LEGS = {"a": "calls", "b": "B legs"}


def next_due(schedule: Schedule, after: datetime) -> datetime:
    """The first time strictly after `after` the schedule names, in UTC.

    Intervals count from the Unix epoch ("30m": every :00 and :30 UTC), so a restart keeps
    the same times. Calendar schedules read the wall clock of their zone: a day whose clock
    skips the time (spring forward) sends when the wall clock would have shown it under the
    old offset, an hour late; a time the clock shows twice (fall back) sends at the first."""
    moment = _utc(after)
    if schedule.interval is not None:
        step = schedule.interval // _MICRO
        elapsed = (moment - EPOCH) // _MICRO
        return EPOCH + (elapsed // step + 1) * step * _MICRO
    zone = ZoneInfo(schedule.zone)
    hour, minute = schedule.at
    if schedule.unit == "hour":
        # Every hour when the zone's clock shows `minute`: step through whole UTC minutes (zone
        # offsets are whole minutes), at most an hour and a quarter of them.
        candidate = moment.replace(second=0, microsecond=0) + timedelta(minutes=1)
        while candidate.astimezone(zone).minute != minute:
            candidate += timedelta(minutes=1)
        return candidate
    local_day = moment.astimezone(zone).date()
    for offset in range(9):
        day = local_day + timedelta(days=offset)
        if schedule.unit == "week" and day.weekday() != schedule.weekday:
            continue
        # fold=0: an ambiguous time is its first occurrence, a skipped one uses the old offset.
        candidate = datetime.combine(day, time(hour, minute), tzinfo=zone).astimezone(UTC)
        if candidate > moment:
            return candidate
    raise ValueError(f"schedule {schedule.text!r} names no time")  # unit None, interval None


def report_zone(report: Report, settings: Settings) -> str:
    """The zone a report's times and charts are in: its schedule's, or PLIVO_TIMEZONE for an
    interval schedule."""
    return report.every.zone if report.every.unit is not None else settings.plivo_timezone


def report_filters(report: Report, settings: Settings, now: datetime) -> Filters:
    """The range a report covers: `range` up to `now`, on the minute."""
    end = _utc(now).replace(second=0, microsecond=0)
    return Filters(
        start=end - report.range,
        end=end,
        bucket=auto_bucket(report.range),
        tz=report_zone(report, settings),
    )


def build(report: Report, rel: Relations, settings: Settings, now: datetime) -> Message:
    """The report's message: figures against the previous range, top hangup causes, charts."""
    f = report_filters(report, settings, now)
    current = overview.kpis(rel, f).frame.iloc[0]
    before = overview.kpis(rel, f.previous()).frame.iloc[0]
    lead = tiles.lead_metric(None, current)
    span = sidebar.data_span(rel)
    # As the Overview does: no change against a range the data does not cover, or too small.
    comparable = (
        span is not None
        and _utc(span[0]) <= f.previous().start
        and int(before["calls"]) >= tiles.MIN_CALLS_TO_COMPARE
    )
    figures = kpi_fields(current, before, lead, comparable)
    found = {leg: causes.by_cause(rel, f, leg, with_answered=False).frame for leg in LEGS}
    top = {leg: top_causes(frame) for leg, frame in found.items()}

    zone = ZoneInfo(f.tz)
    fmt = "%Y-%m-%d %H:%M"
    period = f"{f.start.astimezone(zone):{fmt}} to {f.end.astimezone(zone):{fmt}} ({f.tz})"
    title = f"{report.name}: {period}"
    lead_tile = tiles.TILES[lead]
    lines = [
        title,
        f"{tiles.fmt_count(current['calls'])} calls, "
        f"{lead_tile.label.lower()} {lead_tile.fmt(current[lead_tile.column])}.",
        "Changes are against the previous range of the same length."
        if comparable
        else "No changes shown: the data does not cover the previous range, or it holds "
        f"fewer than {tiles.MIN_CALLS_TO_COMPARE} calls.",
        "",
        *(f"{label}: {value}" for label, value in figures),
    ]
    fields = list(figures)
    for leg, listed in top.items():
        heading = f"Top hangup causes, unanswered {LEGS[leg]}"
        lines += ["", f"{heading}:", *(f"  {cause}: {legs:,}" for cause, legs in listed)]
        if not listed:
            lines.append("  none")
        fields.append((heading, "\n".join(f"{c}: {n:,}" for c, n in listed) or "none"))
    link = (
        page_url(settings.links_base_url, "overview", report.range, tz=f.tz)
        if settings.links_base_url
        else None
    )
    if link:
        lines += ["", f"Dashboard: {link}"]
    return Message(
        kind="report",
        title=title,
        text="\n".join(lines),
        fields=tuple(fields),
        link=link,
        images=tuple((name, png(figure)) for name, figure in report_figures(rel, f, lead, found)),
    )


def kpi_fields(
    current: pd.Series, before: pd.Series, lead: str, comparable: bool
) -> list[tuple[str, str]]:
    """The Overview's tiles in its order, each "value (change)"."""
    fields = []
    for key in tiles.order(lead):
        tile = tiles.TILES[key]
        value = tile.fmt(current[tile.column])
        change = (
            tiles.delta(tile, current[tile.column], before[tile.column]) if comparable else None
        )
        fields.append((tile.label, f"{value} ({change})" if change else value))
    return fields


def top_causes(frame: pd.DataFrame, top: int = TOP_CAUSES) -> list[tuple[str, int]]:
    """The most frequent causes of a by_cause frame, with their legs."""
    if frame.empty:
        return []
    totals = frame.groupby("cause")["legs"].sum().sort_values(ascending=False, kind="stable")
    return [(str(cause), int(legs)) for cause, legs in totals.head(top).items()]


def report_figures(
    rel: Relations, f: Filters, lead: str, found: dict[str, pd.DataFrame]
) -> list[tuple[str, charts.Figure]]:
    """The charts a report carries, as the pages draw them, each titled as its section is."""
    rates = overview.rates_over_time(rel, f).frame
    figures: list[tuple[str, charts.Figure]] = [
        (
            "answer-rates.png",
            charts.rates_with_volume(rates, LEAD_RATES[lead], f.tz, f.wall_clock()).properties(
                title="Answer rates over time, with call volume"
            ),
        )
    ]
    for leg, frame in found.items():
        if frame.empty and leg == "b":
            continue  # no Dials in the range: the A legs' chart already says "no data"
        title = f"Hangup causes of unanswered {LEGS[leg]}"
        figures.append(
            (f"hangup-causes-{leg}.png", charts.causes_bar(frame).properties(title=title))
        )
    return figures


def png(figure: charts.Figure) -> bytes:
    """A chart as PNG, CHART_WIDTH wide (the dashboard stretches it to the page instead)."""
    spec = figure.configure_view(continuousWidth=CHART_WIDTH).to_dict()
    data: bytes = vl_convert.vegalite_to_png(spec, scale=CHART_SCALE)
    return data


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
