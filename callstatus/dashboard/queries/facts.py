"""The hourly aggregates as the pages read them: whole hours from the tables, the range's ends
from the rollups grouped the same way.

The aggregates (migration 0015, `callstatus.core.rollups.AGGREGATES`) hold per UTC hour what the
rollups hold per call, Dial and B leg, grouped by every dimension a page shows or filters by. A
range [start, end) is read as the whole hours [h0, h1) inside it from the tables, and its cut
hours [start, h0) and [h1, end) computed from the rollups by the aggregates' own SELECTs: the
rows are the same whichever way they were computed, so the figures equal the rollups' exactly
(a test keeps them equal). Each row's `t` is its hour: a query buckets it in the chosen zone
only where every UTC hour of the range falls in one local bucket, i.e. the zone's offset is a
whole number of hours, constant through each UTC hour (`hours`). Otherwise, for 5-minute
buckets, for B-destination filters (not a dimension of the calls' tables) and on the views, the
queries read the rollups as before.

Counts are summed (`n`); a mean is a summed total over a summed count.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from callstatus.core import rollups
from callstatus.dashboard.filters import Filters
from callstatus.dashboard.queries.base import run
from callstatus.dashboard.queries.relations import Relations

HOUR = timedelta(hours=1)
# Buckets made of whole local hours.
HOURLY_BUCKETS = ("1 hour", "1 day", "7 days")
_SELECTS = {a.table: a.select for a in rollups.AGGREGATES}
# The sidebar's slices on an aggregate's columns (direction, our_number, country).
SLICES = """
    ($direction IS NULL OR direction = $direction)
    AND (len(CAST($numbers AS VARCHAR[])) = 0
         OR list_contains(CAST($numbers AS VARCHAR[]), our_number))
    AND (len(CAST($countries AS VARCHAR[])) = 0
         OR list_contains(CAST($countries AS VARCHAR[]), country))"""
# B destinations on legs_hourly's rows.
LEG_DESTINATIONS = """
    (len(CAST($destinations AS VARCHAR[])) = 0
     OR list_contains(CAST($destinations AS VARCHAR[]), b_leg_to))"""


def _floor_hour(moment: datetime) -> datetime:
    moment = moment.astimezone(UTC)
    return moment.replace(minute=0, second=0, microsecond=0)


@lru_cache(maxsize=256)
def _aligned(tz: str, h0: datetime, h1: datetime) -> bool:
    """True when every UTC hour in [h0, h1) lies in one local hour of `tz`: the offset is a
    whole number of hours at its start and just before its end, and the same at both."""
    if tz == "UTC":
        return True
    zone = ZoneInfo(tz)
    hour = h0
    while hour < h1:
        first = hour.astimezone(zone).utcoffset()
        last = (hour + HOUR - timedelta(microseconds=1)).astimezone(zone).utcoffset()
        if first is None or first != last or first.total_seconds() % 3600:
            return False
        hour += HOUR
    return True


def hours(
    rel: Relations, f: Filters, *, zone: bool = True, bucket: bool = True, legs: bool = False
) -> dict[str, object] | None:
    """The parameters h0 and h1 (the whole UTC hours of the range) when the aggregates answer
    these filters, else None (read the rollups). `zone`: the query groups by local time
    (buckets, weekday, hour), so the zone must keep UTC hours whole; `bucket`: it groups by
    $bucket, which must then be whole hours. `legs`: B legs only, whose B destination is a
    dimension (a call's or a Dial's is not)."""
    if not rel.aggregates or (f.destinations and not legs):
        return None
    h1 = _floor_hour(f.end)
    h0 = _floor_hour(f.start)
    if h0 < f.start:
        h0 += HOUR
    if h0 >= h1:
        return None
    if bucket and f.bucket not in HOURLY_BUCKETS:
        return None
    if zone and not _aligned(f.tz, h0, h1):
        return None
    return {"h0": h0, "h1": h1}


def _facts(name: str, table: str, counted: str, where: str) -> str:
    """The CTE `name`: table's rows of [h0, h1) and its SELECT over the range's cut ends, as
    rows with `t` (the hour), filtered by `where` (on the aggregate's columns)."""
    select = _SELECTS[table]
    head = select.replace("$lo", "$start").replace("$hi", "$h0")
    tail = select.replace("$lo", "$h1").replace("$hi", "$end")
    return f"""
{name} AS (
    SELECT * EXCLUDE (hour, {counted}), hour AS t, {counted} AS n FROM (
        SELECT * FROM {table} WHERE hour >= $h0 AND hour < $h1
        UNION ALL BY NAME ({head})
        UNION ALL BY NAME ({tail}))
    WHERE {where}
)"""


def call_facts() -> str:
    """call_facts: calls started in the range within the slices, grouped (calls_hourly)."""
    return _facts("call_facts", "calls_hourly", "calls", SLICES)


def dial_facts(sliced: bool) -> str:
    """dial_facts: Dials in the range; with `sliced`, those whose A leg is in the slices."""
    return _facts("dial_facts", "dials_hourly", "dials", SLICES if sliced else "true")


def leg_facts() -> str:
    """leg_facts: B legs timed in the range within the slices and B destinations."""
    return _facts("leg_facts", "legs_hourly", "legs", f"{SLICES} AND {LEG_DESTINATIONS}")


def timing_facts() -> str:
    """timing_facts: the timing histograms' rows of the range (no slices: unsliced views only)."""
    return _facts("timing_facts", "timings_hourly", "legs", "true")


def count(condition: str | None = None) -> str:
    """count(*) of the facts' rows, or of those meeting `condition` (SQL), as a BIGINT."""
    if condition is None:
        return "CAST(coalesce(sum(n), 0) AS BIGINT)"
    return f"CAST(coalesce(sum(n) FILTER (WHERE {condition}), 0) AS BIGINT)"


def mean_duration(condition: str) -> str:
    """avg(duration_s) FILTER (WHERE condition) from the summed durations."""
    return (
        f"sum(duration_sum) FILTER (WHERE {condition})"
        f" / nullif(sum(duration_n) FILTER (WHERE {condition}), 0)"
    )


# Percentiles from histogram rows (level..., bin_ms, n): each value is placed evenly in its bin
# (bin_ms plus (k + 0.5)/n of the bin's width for the k-th of its n values), and quantile_cont's
# interpolation between the two values around p * (count - 1) applied to those: every placed
# value is within its bin, so the result is within one bin's width of the exact percentile.
def percentiles(histogram: str, keys: str, shares: dict[str, float]) -> str:
    """SQL over `histogram` (a relation with the `keys` columns, bin_ms and n): per keys, the
    count (legs) and for each name in `shares` the percentile in seconds."""
    width = rollups.HISTOGRAM_WIDTH_MS.format(ms="bin_ms")
    picks, finals = [], []
    for name, share in shares.items():
        index = f"floor({share} * (total - 1))"
        for side, at in (("lo", index), ("hi", f"{index} + 1")):
            picks.append(
                f"max(CASE WHEN {at} >= before AND {at} < before + n THEN"
                f" bin_ms + width_ms * ({at} - before + 0.5) / n END) AS {name}_{side}"
            )
        frac = f"({share} * (legs - 1) - floor({share} * (legs - 1)))"
        finals.append(
            f"({name}_lo + {frac} * (coalesce({name}_hi, {name}_lo) - {name}_lo)) / 1000 AS {name}"
        )
    return f"""
    SELECT {keys}, legs, {", ".join(finals)} FROM (
        SELECT {keys}, CAST(any_value(total) AS BIGINT) AS legs, {", ".join(picks)}
        FROM (
            SELECT {keys}, bin_ms, n, {width} AS width_ms,
                   sum(n) OVER (PARTITION BY {keys} ORDER BY bin_ms
                                ROWS UNBOUNDED PRECEDING) - n AS before,
                   sum(n) OVER (PARTITION BY {keys}) AS total
            FROM {histogram})
        GROUP BY {keys})"""


def newest(
    rel: Relations, f: Filters, table: str, where: str, limit: int, params: dict[str, Any]
) -> Filters:
    """The filters narrowed, for a newest-first listing of at most `limit` rows, to the whole
    hours from the newest back to the first that holds `limit` rows of `table` (calls_hourly or
    legs_hourly) meeting `where` (on its columns, aliased `l`; `params` binds it): the listing's
    rows all lie in them, and the rollups' zone maps skip the rest of the range. Unchanged when
    the aggregates cannot say (fewer rows, or a filter they cannot answer)."""
    h = hours(rel, f, zone=False, bucket=False, legs=table == "legs_hourly")
    if h is None:
        return f
    counted = "calls" if table == "calls_hourly" else "legs"
    sql = f"""
    SELECT max(hour) FILTER (WHERE cum >= $limit) AS since FROM (
        SELECT hour, sum(n) OVER (ORDER BY hour DESC ROWS UNBOUNDED PRECEDING) AS cum FROM (
            SELECT hour, sum({counted}) AS n FROM {table} l
            WHERE hour >= $h0 AND hour < $h1 AND {SLICES} AND {where} GROUP BY hour))"""
    since = run(sql, {**f.params(), **params, **h, "limit": limit}).frame["since"].iloc[0]
    if since is None or since != since:  # None or NaT
        return f
    return replace(f, start=max(f.start, since.to_pydatetime()))
