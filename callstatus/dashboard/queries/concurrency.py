"""Concurrent calls: how many legs were up at once, exactly, from their [start, end) intervals.

A legs (`calls`) are up from `started_at` to `ended_at`; B legs (`dial_legs`) while they ring or
talk: from their Dial's start (the A leg's AnswerTime, as on the Timing page) to their hangup.
A leg without an end yet counts until the range's end, at most MAX_OPEN after its start (a
hangup that never came must not count for ever); a B leg without one until its A leg ended.

No sampling: every start is a +1 and every end a -1 at its instant, bucket boundaries (in the
chosen zone) are 0 steps, and a running sum over them in time order gives the level, constant
until the next step. Per bucket, the peak is the highest level held for any time in it, and the
mean the level weighted by how long it was held. A leg ending at the instant another starts is
never counted with it: intervals are half-open, and steps at one instant are summed first.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, time
from zoneinfo import ZoneInfo

import pandas as pd

from callstatus.core import rollups
from callstatus.dashboard.filters import Filters, ceil_minute
from callstatus.dashboard.queries import facts
from callstatus.dashboard.queries.base import BUCKET, BUCKET_END, Result, run, with_
from callstatus.dashboard.queries.relations import Relations
from callstatus.dashboard.queries.scopes import DIAL_SLICE, LEG_DESTINATIONS, sliced

A_LEGS = rollups.A_SERIES
B_LEGS = rollups.B_SERIES
MAX_OPEN = rollups.MAX_OPEN
# Calls last hours at most: a leg up in the range started at most a day before it.
LOOKBACK = "INTERVAL 1 DAY"


def _intervals(rel: Relations, series: str) -> str:
    """CTEs ending in `clipped`: (s, e) of each leg of `series` up in [$start, $end), clipped
    to it. The slices (direction, our numbers, countries, B destinations) apply to the A leg.
    One series a query: the sweep sorts every start and end, so it reads no more than shown."""
    near = f"""
near AS (
    SELECT * FROM {rel.calls} c
    WHERE c.started_at >= $start - {LOOKBACK} AND c.started_at < $end AND {DIAL_SLICE}
)"""
    if series == A_LEGS:
        legs = f"""
legs AS (
    SELECT c.started_at AS s, coalesce(c.ended_at, least(c.started_at + {MAX_OPEN}, $end)) AS e
    FROM near c
    WHERE len(CAST($destinations AS VARCHAR[])) = 0 OR EXISTS (
        SELECT 1 FROM {rel.dial_legs} x WHERE x.a_leg_uuid = c.call_uuid
        AND list_contains(CAST($destinations AS VARCHAR[]), x.b_leg_to))
)"""
    elif series == B_LEGS:
        legs = f"""
legs AS (
    SELECT coalesce(c.answered_at, c.started_at) AS s,
           coalesce(l.ended_at, c.ended_at,
                    least(coalesce(c.answered_at, c.started_at) + {MAX_OPEN}, $end)) AS e
    FROM {rel.dial_legs} l JOIN near c ON c.call_uuid = l.a_leg_uuid
    WHERE {LEG_DESTINATIONS}
)"""
    else:
        raise ValueError(f"no such series: {series!r}")
    return f"""{near}, {legs}, clipped AS (
    SELECT greatest(s, $start) AS s, least(e, $end) AS e FROM legs
    WHERE greatest(s, $start) < least(e, $end)
)"""


# The levels: each step's instant `t`, the level from it to the next step, and how long (us).
SEGMENTS = """
, bounds AS (
    SELECT timezone($tz, b) AS ts FROM (
        SELECT unnest(generate_series(
            time_bucket(CAST($bucket AS INTERVAL), timezone($tz, $start::TIMESTAMPTZ)),
            timezone($tz, $end::TIMESTAMPTZ), CAST($bucket AS INTERVAL))) AS b)
    UNION ALL SELECT $start::TIMESTAMPTZ UNION ALL SELECT $end::TIMESTAMPTZ
), steps AS (
    SELECT ts, sum(d) AS d FROM (
        SELECT s AS ts, 1 AS d FROM clipped
        UNION ALL SELECT e, -1 FROM clipped
        UNION ALL SELECT ts, 0 FROM bounds WHERE ts >= $start AND ts <= $end)
    GROUP BY ts
), levels AS (
    SELECT ts AS t, sum(d) OVER (ORDER BY ts ROWS UNBOUNDED PRECEDING) AS level,
           lead(ts) OVER (ORDER BY ts) AS next_at
    FROM steps
), segments AS (
    SELECT t, level, epoch_us(next_at) - epoch_us(t) AS us
    FROM levels WHERE next_at IS NOT NULL AND t >= $start AND t < $end
)"""


def _piece(rel: Relations, series: str, start: str, end: str) -> str:
    """The segments (t, level, us) of the sweep over [start, end) (two parameters' names)."""
    sql = with_(_intervals(rel, series)) + SEGMENTS + " SELECT t, level, us FROM segments"
    return sql.replace("$start", start).replace("$end", end)


# The whole hours [h0, h1) from concurrency_hourly (migration 0015): the level at h0 is the sum
# of every earlier hour's steps, each hour's from the ones before it; an hour's peak is its
# start level plus its `top`, its level-time its start level for the hour plus its `area`.
HOURLY = """
grid AS (
    SELECT g.hour, coalesce(c.net, 0) AS net, coalesce(c.top, 0) AS top,
           coalesce(c.top_at, g.hour) AS top_at, coalesce(c.area, 0) AS area
    FROM (SELECT unnest(generate_series($h0::TIMESTAMPTZ, $h1::TIMESTAMPTZ - INTERVAL 1 HOUR,
                                        INTERVAL 1 HOUR)) AS hour) g
    LEFT JOIN concurrency_hourly c ON c.hour = g.hour AND c.series = $series
), leveled AS (
    SELECT hour, top, top_at, area,
           (SELECT coalesce(sum(net), 0) FROM concurrency_hourly
            WHERE series = $series AND hour < $h0)
           + coalesce(sum(net) OVER (ORDER BY hour ROWS BETWEEN UNBOUNDED PRECEDING
                                     AND 1 PRECEDING), 0) AS base
    FROM grid
), pieces AS (
    SELECT hour AS t, base + top AS peak, top_at AS peak_at,
           base * 3600e6 + area AS level_us, 3600e6 AS us
    FROM leveled
    UNION ALL
    SELECT t, level, t, level * us, us FROM ({head})
    UNION ALL
    SELECT t, level, t, level * us, us FROM ({tail})
)"""


def over_time(rel: Relations, f: Filters, series: str = A_LEGS) -> Result:
    """Per bucket, for `series` (A legs or B legs): the peak, when it was first reached
    (`peak_at`, in the chosen zone) and the time-weighted mean number of legs up at once.

    Without slices, the whole hours of the range come from concurrency_hourly and only its cut
    ends are swept: the same levels, so the same figures."""
    h = None if sliced(f) else facts.hours(rel, f)
    if h is not None:
        hourly = HOURLY.format(
            head=_piece(rel, series, "$start", "$h0"), tail=_piece(rel, series, "$h1", "$end")
        )
        sql = f"""WITH {hourly}
    SELECT {BUCKET} AS bucket, {BUCKET_END}, $series AS series,
           CAST(max(peak) AS BIGINT) AS peak,
           timezone($tz, arg_min(peak_at, (-peak, peak_at))) AS peak_at,
           sum(level_us) / sum(us) AS mean
    FROM pieces GROUP BY ALL ORDER BY bucket
    """
        return run(sql, {**f.params(), **h, "series": series})
    sql = (
        with_(_intervals(rel, series))
        + SEGMENTS
        + f"""
    SELECT {BUCKET} AS bucket, {BUCKET_END}, $series AS series,
           CAST(max(level) AS BIGINT) AS peak, timezone($tz, arg_min(t, (-level, t))) AS peak_at,
           sum(level * us) / sum(us) AS mean
    FROM segments GROUP BY ALL ORDER BY bucket
    """
    )
    return run(sql, {**f.params(), "series": series})


def peak(rel: Relations, f: Filters, series: str = A_LEGS) -> Result:
    """One row: the most legs of `series` up at once in the range (`peak`), and from when
    (`at`, the first instant it was reached, in the chosen zone)."""
    sql = (
        with_(_intervals(rel, series))
        + SEGMENTS
        + """
    SELECT coalesce(CAST(max(level) AS BIGINT), 0) AS peak,
           timezone($tz, arg_min(t, (-level, t))) AS at
    FROM segments
    """
    )
    return run(sql, f.params())


def peak_of(frame: pd.DataFrame) -> tuple[int, pd.Timestamp | None]:
    """The range's peak and its first instant, from `over_time`'s rows (no second sweep)."""
    if frame.empty:
        return 0, None
    top = int(frame["peak"].max())
    return top, frame.loc[frame["peak"] == top, "peak_at"].min()


def today(f: Filters, now: datetime) -> Filters:
    """The filters narrowed to today in their zone, midnight to now (for the day's peak)."""
    zone = ZoneInfo(f.tz)
    midnight = datetime.combine(now.astimezone(zone).date(), time.min, zone)
    return replace(f, start=midnight, end=ceil_minute(now), bucket="1 hour")
