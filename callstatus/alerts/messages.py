"""The messages a rule sends when it starts firing and when it resolves, and a channel's test."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Literal
from urllib.parse import urlencode

from callstatus.alerts.model import Channel, Evaluation, Message, Rule
from callstatus.alerts.rules import METRICS
from callstatus.core.settings import Settings
from callstatus.dashboard.filters import PRESETS

# How a message names each metric (rules.METRICS holds their units and volumes).
LABELS = {
    "calls": "calls",
    "call_answer_rate": "call answer rate",
    "dial_answer_rate": "dial answer rate",
    "b_leg_answer_rate": "B-leg answer rate",
    "acd_seconds": "ACD",
    "busy_share": "busy share",
    "no_answer_share": "no-answer share",
    "failed_share": "failed share",
    "hangup_cause_share": "share of calls ending with cause {cause}",
    "b_leg_hangup_cause_share": "share of B legs ending with cause {cause}",
    "missed_call_share": "missed-call share",
    "minutes_since_last_webhook": "minutes since the last webhook",
    "rejected_webhooks": "rejected webhooks",
    "spool_depth": "spool depth",
}
# The dashboard page showing each metric (url_path in callstatus/dashboard/app.py); the
# missed-call share is in Receiver health's Completeness section.
PAGES = {
    "b_leg_answer_rate": "legs",
    "hangup_cause_share": "causes",
    "b_leg_hangup_cause_share": "causes",
    "missed_call_share": "health",
    "minutes_since_last_webhook": "health",
    "rejected_webhooks": "health",
    "spool_depth": "health",
}
DEFAULT_PAGE = "overview"


def firing(rule: Rule, evaluation: Evaluation, settings: Settings) -> Message:
    """The message sent once when `rule` starts firing."""
    return _rule_message("firing", rule, evaluation, settings)


def resolved(rule: Rule, evaluation: Evaluation, settings: Settings) -> Message:
    """The message sent once when a firing `rule` resolves."""
    return _rule_message("resolved", rule, evaluation, settings)


def test(channel: Channel, settings: Settings | None = None) -> Message:
    """A message that only proves the channel reaches people (the Alerts page's button); with
    settings, it links the dashboard, which proves the links in alerts work too."""
    base = settings.links_base_url if settings is not None else None
    link = f"{base}/" if base else None
    title = f"callstatus test: {channel.name}"
    lines = [
        title,
        f"A test message from callstatus to the channel {channel.name} ({channel.type}): alerts "
        "and reports sent to this channel will arrive here.",
    ]
    if link:
        lines.append(f"Dashboard: {link}")
    return Message(
        kind="test",
        title=title,
        text="\n".join(lines),
        fields=(("Channel", channel.name), ("Type", channel.type)),
        link=link,
    )


def _rule_message(
    kind: Literal["firing", "resolved"], rule: Rule, evaluation: Evaluation, settings: Settings
) -> Message:
    label = metric_label(rule)
    value = fmt_value(rule.metric, evaluation.value)
    bound = bound_text(rule, evaluation)
    window = fmt_duration(rule.window) if windowed(rule.metric) else None
    over = f" over the last {window}" if window else ""
    volume = volume_text(rule.metric, evaluation.volume)
    counted = f" ({volume})" if volume else ""
    if kind == "firing":
        title = f"Firing: {rule.name}"
        summary = f"{label} is {value}, {bound}{',' + over if over else ''}{counted}."
    elif evaluation.value is None:
        title = f"Resolved: {rule.name}"
        summary = f"{label} has no verdict now{over}: too few events, or no data."
    else:
        title = f"Resolved: {rule.name}"
        summary = f"{label} is back at {value}{over}{counted}; it fires when {bound}."
    lines = [title, summary]
    if kind == "firing" and rule.for_ > timedelta(0):
        lines.append(f"It held for {fmt_duration(rule.for_)} before firing.")
    scope = filters_text(rule)
    if scope:
        lines.append(f"Filters: {scope}.")
    link = link_for(rule, settings)
    if link:
        lines.append(f"Dashboard: {link}")
    fields = [
        ("Rule", rule.name),
        ("Metric", label),
        ("Value", value),
        ("Threshold", bound),
    ]
    if window:
        fields.append(("Window", window))
    if volume:
        fields.append(("Volume", volume))
    if scope:
        fields.append(("Filters", scope))
    fields.append(("At", fmt_time(evaluation.at)))
    return Message(
        kind=kind,
        title=title,
        text="\n".join(lines),
        fields=tuple(fields),
        link=link,
    )


def metric_label(rule: Rule) -> str:
    label = LABELS.get(rule.metric, rule.metric.replace("_", " "))
    return label.format(cause=rule.cause) if "{cause}" in label else label


def windowed(metric: str) -> bool:
    """Whether the metric is measured over the rule's window (not a figure of the moment)."""
    known = METRICS.get(metric)
    return known.windowed if known is not None else True


def fmt_value(metric: str, value: float | None) -> str:
    """A metric's value as people read it: fractions in %, seconds and minutes with units."""
    if value is None or math.isnan(value):
        return "no data"
    known = METRICS.get(metric)
    unit = known.unit if known is not None else ""
    if unit == "fraction":
        return f"{100 * value:.1f}%"
    if unit == "seconds":
        return f"{value:.0f} s"
    if unit == "minutes":
        return f"{value:.1f} min"
    return f"{value:,.0f}" if value == int(value) else f"{value:,.2f}"


def bound_text(rule: Rule, evaluation: Evaluation) -> str:
    """The condition that fires the rule, in words: "below 50.0%"."""
    if rule.drop is not None:
        base = fmt_duration(rule.baseline) if rule.baseline else "baseline"
        under = f"{100 * rule.drop:.0f}% under the same window over the last {base}"
        if evaluation.threshold is None:
            return under
        return f"below {fmt_value(rule.metric, evaluation.threshold)} ({under})"
    if rule.below is not None:
        return f"below {fmt_value(rule.metric, rule.below)}"
    if rule.above is not None:
        return f"above {fmt_value(rule.metric, rule.above)}"
    return "no threshold"


def volume_text(metric: str, volume: int | None) -> str | None:
    """ "34 Dials": what min_volume counts, in the window."""
    known = METRICS.get(metric)
    if volume is None or known is None or known.volume is None:
        return None
    return f"{volume:,} {known.volume}"


def filters_text(rule: Rule) -> str:
    parts = []
    if rule.direction:
        parts.append(rule.direction)
    if rule.numbers:
        parts.append("our numbers " + ", ".join(rule.numbers))
    if rule.destinations:
        parts.append("B destinations " + ", ".join(rule.destinations))
    return "; ".join(parts)


def link_for(rule: Rule, settings: Settings) -> str | None:
    """The dashboard page showing the rule's metric, with its filters and a range covering
    its window (the sidebar keeps its controls in the query string: dashboard/controls.py)."""
    base = settings.links_base_url
    if not base:
        return None
    page = PAGES.get(rule.metric, DEFAULT_PAGE)
    span = max(rule.window, rule.baseline or timedelta(0)) if rule.drop is not None else rule.window
    return page_url(base, page, span, rule.direction, rule.numbers, rule.destinations)


def page_url(
    base: str,
    page: str,
    span: timedelta,
    direction: str | None = None,
    numbers: tuple[str, ...] = (),
    destinations: tuple[str, ...] = (),
    tz: str | None = None,
) -> str:
    """A dashboard page's URL: the smallest preset range holding `span`, and the slices."""
    params: list[tuple[str, str]] = [("range", range_preset(span))]
    if direction:
        params.append(("dir", direction))
    params.extend(("num", n) for n in numbers)
    params.extend(("dest", d) for d in destinations)
    if tz:
        params.append(("tz", tz))
    return f"{base.rstrip('/')}/{page}?{urlencode(params)}"


def range_preset(span: timedelta) -> str:
    """The dashboard's shortest relative range at least `span` long ("All time" past them)."""
    fitting = [
        (length, name) for name, length in PRESETS.items() if length is not None and length >= span
    ]
    return min(fitting)[1] if fitting else "All time"


def fmt_duration(span: timedelta) -> str:
    """15 min, 2 hours, 1 day, 30 s: the largest unit that divides the span."""
    seconds = int(span.total_seconds())
    for unit, size in (("day", 86400), ("hour", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            count = seconds // size
            plural = "s" if count != 1 and unit != "min" else ""
            return f"{count} {unit}{plural}"
    return f"{seconds} s"


def fmt_time(moment: datetime) -> str:
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return aware.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
