"""Period comparison: an over-time query for the range and for the range before it, overlaid.

The previous range is the same length of local time just before, moved back by a whole number of
buckets, and its buckets are moved forward by exactly that much (in local wall-clock time) onto
the current ones. Buckets are local times in the chosen zone (queries.base.BUCKET), so across a
DST change day buckets still meet at local midnight: last week's Sunday of 25 hours lies on this
week's Sunday, never an hour off. Both series stay in the frame (`period`), so a chart's CSV
keeps them; `compared_bucket` is when a previous row's bucket really began.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pandas as pd

from callstatus.dashboard.filters import Filters
from callstatus.dashboard.queries.base import Result
from callstatus.dashboard.queries.relations import Relations

CURRENT = "this range"
PREVIOUS = "previous range"
_STEP = re.compile(r"^\s*(\d+)\s*(minute|hour|day)s?\s*$")
_UNITS = {"minute": timedelta(minutes=1), "hour": timedelta(hours=1), "day": timedelta(days=1)}


def bucket_step(bucket: str) -> timedelta:
    """A bucket interval as DuckDB reads it ("5 minutes", "1 hour", "7 days") as a timedelta."""
    found = _STEP.match(bucket)
    if found is None:
        raise ValueError(f"not a bucket interval: {bucket!r}")
    return int(found.group(1)) * _UNITS[found.group(2)]


def _local(moment: datetime, zone: ZoneInfo) -> datetime:
    return moment.astimezone(zone).replace(tzinfo=None)


def _utc(local: datetime, zone: ZoneInfo) -> datetime:
    return local.replace(tzinfo=zone).astimezone(UTC)


def shift(f: Filters) -> timedelta:
    """How far back the previous range lies, in local time: the range's local length rounded to
    whole buckets (at least one)."""
    zone, step = ZoneInfo(f.tz), bucket_step(f.bucket)
    span = _local(f.end, zone) - _local(f.start, zone)
    return max(round(span / step), 1) * step


def previous(f: Filters) -> Filters:
    """The range to compare with: `shift(f)` earlier in local time."""
    zone, back = ZoneInfo(f.tz), shift(f)
    start = _utc(_local(f.start, zone) - back, zone)
    end = _utc(_local(f.end, zone) - back, zone)
    return replace(f, start=start, end=end)


def overlay(query: Callable[[Relations, Filters], Result], rel: Relations, f: Filters) -> Result:
    """`query` over the range and over the previous one, the previous rows' buckets (columns
    `bucket`, `bucket_end`: local times) moved onto the current ones; `period` says which."""
    now, before = query(rel, f), query(rel, previous(f))
    back = pd.Timedelta(shift(f))
    current = now.frame.assign(period=CURRENT, compared_bucket=now.frame.get("bucket"))
    moved = before.frame.assign(period=PREVIOUS, compared_bucket=before.frame.get("bucket"))
    for column in ("bucket", "bucket_end"):
        if column in moved:
            moved[column] = moved[column] + back
    frame = pd.concat([current, moved], ignore_index=True) if len(moved) else current
    params = {
        **now.params,
        "previous_start": before.params.get("start"),
        "previous_end": before.params.get("end"),
    }
    return Result(frame, now.sql, params)
