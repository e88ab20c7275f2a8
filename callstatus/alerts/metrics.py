"""What a rule measures: each metric over its window through the dashboard's own query functions.

A rule's figure is the dashboard's figure for the same range and slices: the rates come from
`overview.kpis`, the hangup-cause shares from `causes.by_cause`, the missed-call share from
`completeness.totals` and the webhook figures from `health.receiver_totals`, never from SQL of
our own. Those functions read the database of the server installed in this process
(callstatus/core/server.py), as the dashboard does; `spool_depth` is the receiver's own status.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pandas as pd

from callstatus.alerts.model import Evaluation, Rule
from callstatus.alerts.rules import METRICS, Metric
from callstatus.core.server import ReceiverStatus
from callstatus.dashboard.filters import Filters
from callstatus.dashboard.queries import causes, completeness, health, overview
from callstatus.dashboard.queries.relations import Relations

# METRICS, the catalogue of names, units and applicable keys, lives with the rules file's reader
# (it must load without the dashboard); it is re-exported here.
__all__ = ["KPI_COLUMNS", "METRICS", "Metric", "Reading", "baseline", "filters", "measure", "read"]

DAY = timedelta(days=1)
# metric -> (column of overview.kpis, the column counting its volume)
KPI_COLUMNS = {
    "calls": ("calls", "calls"),
    "call_answer_rate": ("call_answer_rate", "ended_calls"),
    "dial_answer_rate": ("dial_answer_rate", "dials"),
    "b_leg_answer_rate": ("b_leg_answer_rate", "b_legs"),
    "acd_seconds": ("acd_s", "answered_calls"),
    "busy_share": ("busy_share", "ended_calls"),
    "no_answer_share": ("no_answer_share", "ended_calls"),
    "failed_share": ("failed_share", "ended_calls"),
}


@dataclass(frozen=True)
class Reading:
    """A metric's value over one range and the volume behind it (None: nothing to measure)."""

    value: float | None
    volume: int | None


def filters(rule: Rule, start: datetime, end: datetime) -> Filters:
    """The dashboard's filters for [start, end) with the rule's slices."""
    return Filters(
        start=start,
        end=end,
        direction=rule.direction,
        numbers=rule.numbers,
        destinations=rule.destinations,
    )


def read(
    rule: Rule, rel: Relations, start: datetime, end: datetime, status: ReceiverStatus | None
) -> Reading:
    """The rule's metric over [start, end); `end` is "now" for the metrics without a window."""
    f = filters(rule, start, end)
    reader = _READERS.get(rule.metric)
    if reader is not None:
        return reader(rule, rel, f, status)
    value_column, volume_column = KPI_COLUMNS[rule.metric]
    row = overview.kpis(rel, f).frame.iloc[0]
    return Reading(_number(row[value_column]), _count(row[volume_column]))


def measure(rule: Rule, rel: Relations, now: datetime, status: ReceiverStatus | None) -> Evaluation:
    """The rule's value over [now - window, now) against its bound. No verdict (value None)
    without data or with fewer than min_volume in the window; a drop rule has none either while
    its baseline days have no data."""
    current = read(rule, rel, now - rule.window, now, status)
    # A rate without a denominator is already None; `calls` may well be 0.
    value = current.value
    if current.volume is not None and current.volume < rule.min_volume:
        value = None
    threshold: float | None
    if rule.drop is not None and rule.baseline is not None:
        usual = baseline(rule, rel, now, status)
        threshold = None if usual is None else usual * (1 - rule.drop)
    else:
        threshold = rule.below if rule.below is not None else rule.above
    if value is None or threshold is None:
        return Evaluation(rule.name, None, current.volume, threshold, False, now)
    crossed = value > threshold if rule.above is not None else value < threshold
    return Evaluation(rule.name, value, current.volume, threshold, crossed, now)


def baseline(
    rule: Rule, rel: Relations, now: datetime, status: ReceiverStatus | None
) -> float | None:
    """The metric over the same window on each of the baseline's days before (24 hours apart):
    for rates and means, pooled over the days (weighted by each day's volume, so the same as one
    rate over all of their events); for `calls`, the mean count per day. None when fewer than
    min_volume (at least one) were counted over all the days."""
    assert rule.baseline is not None
    days = max(1, round(rule.baseline / DAY))
    readings = [
        read(rule, rel, now - rule.window - day * DAY, now - day * DAY, status)
        for day in range(1, days + 1)
    ]
    volume = sum(r.volume or 0 for r in readings)
    if volume < max(rule.min_volume, 1):
        return None
    if rule.metric == "calls":
        return sum(r.value or 0.0 for r in readings) / days
    weighted = [(r.value, r.volume) for r in readings if r.value is not None and r.volume]
    total = sum(v for _, v in weighted)
    return sum(x * v for x, v in weighted) / total if total else None


def _cause_share(rule: Rule, rel: Relations, f: Filters, _: ReceiverStatus | None) -> Reading:
    leg = "b" if rule.metric.startswith("b_leg_") else "a"
    frame = causes.by_cause(rel, f, leg, with_answered=True).frame
    ended = frame[frame["outcome"] != "in-progress"]
    volume = int(ended["legs"].sum())
    matching = int(ended.loc[ended["code"] == rule.cause, "legs"].sum())
    return Reading(matching / volume if volume else None, volume)


def _missed_share(rule: Rule, rel: Relations, f: Filters, _: ReceiverStatus | None) -> Reading:
    row = completeness.totals(rel, f).frame.iloc[0]
    return Reading(_number(row["missed_share"]), _count(row["calls"]))


def _since_last_webhook(
    rule: Rule, rel: Relations, f: Filters, _: ReceiverStatus | None
) -> Reading:
    # The query needs a range; only its last_event_at, over the whole table, is read here.
    short = Filters(start=f.end - timedelta(minutes=1), end=f.end)
    last = health.receiver_totals(rel, short).frame.iloc[0]["last_event_at"]
    if last is None or pd.isna(last):
        return Reading(None, None)  # never a webhook: nothing stopped
    at = pd.Timestamp(last).to_pydatetime()
    return Reading(max(0.0, (f.end - at).total_seconds() / 60), None)


def _rejected(rule: Rule, rel: Relations, f: Filters, _: ReceiverStatus | None) -> Reading:
    row = health.receiver_totals(rel, f).frame.iloc[0]
    return Reading(float(_count(row["rejected"]) or 0), None)


def _spool(rule: Rule, rel: Relations, f: Filters, status: ReceiverStatus | None) -> Reading:
    return Reading(None if status is None else float(status.spool_depth), None)


_READERS: dict[str, Callable[[Rule, Relations, Filters, ReceiverStatus | None], Reading]] = {
    "hangup_cause_share": _cause_share,
    "b_leg_hangup_cause_share": _cause_share,
    "missed_call_share": _missed_share,
    "minutes_since_last_webhook": _since_last_webhook,
    "rejected_webhooks": _rejected,
    "spool_depth": _spool,
}


def _number(value: Any) -> float | None:
    """A figure from a result row: None for SQL NULL and NaN (a rate without a denominator)."""
    if value is None or pd.isna(value):
        return None
    number = float(value)
    return None if math.isnan(number) else number


def _count(value: Any) -> int | None:
    number = _number(value)
    return None if number is None else int(number)
