"""Period comparison: an over-time query for the range and for the range before it, overlaid.

The previous range is the same length of local time just before, moved back by a whole number of
buckets, and its buckets are moved forward by exactly that much (in local wall-clock time) onto
the current ones. Buckets are local times in the chosen zone (queries.base.BUCKET), so across a
DST change day buckets still meet at local midnight: last week's Sunday of 25 hours lies on this
week's Sunday, never an hour off. Both series stay in the frame (`period`), so a chart's CSV
keeps them; `compared_bucket` is when a previous row's bucket really began.

A previous range before the first stored call has no data, which is not the same as zeros: its
buckets that end before that call get no row (no line at 0), and the result says so
(`note`); buckets the data covers keep their rows, zeros included.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pandas as pd

from callstatus.dashboard.filters import Filters
from callstatus.dashboard.queries import sidebar
from callstatus.dashboard.queries.base import Result
from callstatus.dashboard.queries.relations import Relations

CURRENT = "this range"
PREVIOUS = "previous range"
# The key of a compared result's params saying the previous range lacks data (absent: it has).
NOTE = "previous_range_note"
_SHOWN = "%Y-%m-%d %H:%M"
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
    `bucket`, `bucket_end`: local times) moved onto the current ones; `period` says which.
    Previous buckets before the first stored call are left out, and `params[NOTE]` says why."""
    earlier = previous(f)
    now, before = query(rel, f), query(rel, earlier)
    back = pd.Timedelta(shift(f))
    covered, note = _covered(before.frame, rel, earlier)
    current = now.frame.assign(period=CURRENT, compared_bucket=now.frame.get("bucket"))
    moved = covered.assign(period=PREVIOUS, compared_bucket=covered.get("bucket"))
    for column in ("bucket", "bucket_end"):
        if column in moved:
            moved[column] = moved[column] + back
    frame = pd.concat([current, moved], ignore_index=True) if len(moved) else current
    params: dict[str, object] = {
        **now.params,
        "previous_start": before.params.get("start"),
        "previous_end": before.params.get("end"),
    }
    if note is not None:
        params[NOTE] = note
    return Result(frame, now.sql, params)


def _covered(
    frame: pd.DataFrame, rel: Relations, earlier: Filters
) -> tuple[pd.DataFrame, str | None]:
    """The previous range's rows the stored data covers (buckets ending after the first stored
    call began), and a note when that is not all of the range."""
    span = sidebar.data_span(rel)
    zone = ZoneInfo(earlier.tz)
    shown = f"{_local(earlier.start, zone):{_SHOWN}} to {_local(earlier.end, zone):{_SHOWN}}"
    if span is None or span[0] >= earlier.end:
        return frame[:0], (
            f"No data for the previous range ({shown}): nothing was stored before "
            + (f"{_local(span[0], zone):{_SHOWN}}." if span is not None else "now.")
            + " Only this range is drawn."
        )
    if span[0] <= earlier.start:
        return frame, None
    first = pd.Timestamp(_local(span[0], zone))
    if "bucket" in frame:
        ends = (
            frame["bucket_end"]
            if "bucket_end" in frame
            else frame["bucket"] + pd.Timedelta(bucket_step(earlier.bucket))
        )
        frame = frame[ends > first]
    return frame, (
        f"The previous range ({shown}) has data only from {first:{_SHOWN}}, the first stored "
        "call: its line starts there."
    )
