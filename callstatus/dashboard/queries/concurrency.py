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

from callstatus.dashboard.filters import Filters, ceil_minute
from callstatus.dashboard.queries.base import BUCKET, BUCKET_END, Result, run, with_
from callstatus.dashboard.queries.relations import Relations
from callstatus.dashboard.queries.scopes import DIAL_SLICE, LEG_DESTINATIONS

A_LEGS = "calls"
B_LEGS = "B legs"
MAX_OPEN = "INTERVAL 6 HOUR"
# Calls last hours at most: a leg up in the range started at most a day before it.
LOOKBACK = "INTERVAL 1 DAY"


def _intervals(rel: Relations) -> str:
    """CTEs ending in `clipped`: (series, s, e) of each leg up in [$start, $end), clipped to it.
    The slices (direction, our numbers, countries, B destinations) apply to the A leg."""
    return f"""
near AS (
    SELECT * FROM {rel.calls} c
    WHERE c.started_at >= $start - {LOOKBACK} AND c.started_at < $end AND {DIAL_SLICE}
), a_legs AS (
    SELECT '{A_LEGS}' AS series, c.started_at AS s,
           coalesce(c.ended_at, least(c.started_at + {MAX_OPEN}, $end)) AS e
    FROM near c
    WHERE len(CAST($destinations AS VARCHAR[])) = 0 OR EXISTS (
        SELECT 1 FROM {rel.dial_legs} x WHERE x.a_leg_uuid = c.call_uuid
        AND list_contains(CAST($destinations AS VARCHAR[]), x.b_leg_to))
), b_legs AS (
    SELECT '{B_LEGS}' AS series, coalesce(c.answered_at, c.started_at) AS s,
           coalesce(l.ended_at, c.ended_at,
                    least(coalesce(c.answered_at, c.started_at) + {MAX_OPEN}, $end)) AS e
    FROM {rel.dial_legs} l JOIN near c ON c.call_uuid = l.a_leg_uuid
    WHERE {LEG_DESTINATIONS}
), clipped AS (
    SELECT series, greatest(s, $start) AS s, least(e, $end) AS e
    FROM (SELECT * FROM a_legs UNION ALL SELECT * FROM b_legs)
    WHERE greatest(s, $start) < least(e, $end)
)"""


# The levels: each step's instant `t`, the level from it to the next step, and how long (us).
SEGMENTS = f"""
, bounds AS (
    SELECT timezone($tz, b) AS ts FROM (
        SELECT unnest(generate_series(
            time_bucket(CAST($bucket AS INTERVAL), timezone($tz, $start::TIMESTAMPTZ)),
            timezone($tz, $end::TIMESTAMPTZ), CAST($bucket AS INTERVAL))) AS b)
    UNION ALL SELECT $start::TIMESTAMPTZ UNION ALL SELECT $end::TIMESTAMPTZ
), steps AS (
    SELECT series, ts, sum(d) AS d FROM (
        SELECT series, s AS ts, 1 AS d FROM clipped
        UNION ALL SELECT series, e, -1 FROM clipped
        UNION ALL SELECT v.series, b.ts, 0 FROM bounds b,
            (VALUES ('{A_LEGS}'), ('{B_LEGS}')) v(series)
            WHERE b.ts >= $start AND b.ts <= $end)
    GROUP BY ALL
), levels AS (
    SELECT series, ts AS t,
           sum(d) OVER (PARTITION BY series ORDER BY ts ROWS UNBOUNDED PRECEDING) AS level,
           lead(ts) OVER (PARTITION BY series ORDER BY ts) AS next_at
    FROM steps
), segments AS (
    SELECT series, t, level, epoch_us(next_at) - epoch_us(t) AS us
    FROM levels WHERE next_at IS NOT NULL AND t >= $start AND t < $end
)"""


def over_time(rel: Relations, f: Filters) -> Result:
    """Per bucket and series (A legs, B legs): the peak and the time-weighted mean number of
    legs up at once."""
    sql = (
        with_(_intervals(rel))
        + SEGMENTS
        + f"""
    SELECT {BUCKET} AS bucket, {BUCKET_END}, series, CAST(max(level) AS BIGINT) AS peak,
           sum(level * us) / sum(us) AS mean
    FROM segments GROUP BY ALL ORDER BY bucket, series
    """
    )
    return run(sql, f.params())


def peak(rel: Relations, f: Filters, series: str = A_LEGS) -> Result:
    """One row: the most legs of `series` up at once in the range (`peak`), and from when
    (`at`, the first instant it was reached, in the chosen zone)."""
    sql = (
        with_(_intervals(rel))
        + SEGMENTS
        + """
    SELECT coalesce(CAST(max(level) AS BIGINT), 0) AS peak,
           timezone($tz, arg_min(t, (-level, t))) AS at
    FROM segments WHERE series = $series
    """
    )
    return run(sql, {**f.params(), "series": series})


def today(f: Filters, now: datetime) -> Filters:
    """The filters narrowed to today in their zone, midnight to now (for the day's peak)."""
    zone = ZoneInfo(f.tz)
    midnight = datetime.combine(now.astimezone(zone).date(), time.min, zone)
    return replace(f, start=midnight, end=ceil_minute(now), bucket="1 hour")
