"""Timing: post-dial delay and ring time of outbound calls, time to answer or give up of B legs.

Definitions (docs/data.md, "Timing"; ARCHITECTURE "Metrics"):
- post-dial delay (outbound API calls) = from the call's StartTime to its first ring callback,
  or to its answer when no ring callback came first; calls that neither rang nor were answered
  (busy, unreachable, failed at once) have none;
- ring time (outbound API calls) = from the first ring callback (StartTime when none came) to
  the answer, or to the hangup when nobody answered; only calls that rang or were answered;
- B legs: from the Dial's start to the leg's answer (time to answer), or to its hangup when it
  never answered (time to give up; lost races and legs in progress left out). Plivo sends no
  dial-start event: the Dial starts once the A leg is answered, so its start is taken as the A
  leg's AnswerTime (its start while that is unknown), and the greeting spoken before the Dial
  is part of these times.

Seconds come from epoch_us differences (cheaper than TIMESTAMPTZ arithmetic over millions of
rows); a negative difference (times to the second against arrival times) counts as 0.
"""

from __future__ import annotations

from callstatus.core import rollups
from callstatus.dashboard.filters import Filters
from callstatus.dashboard.queries import facts
from callstatus.dashboard.queries.base import BUCKET, Result, run, with_
from callstatus.dashboard.queries.relations import Relations
from callstatus.dashboard.queries.scopes import scoped_calls, scoped_legs, sliced

PDD = rollups.PDD
RING = rollups.RING
B_ANSWER = rollups.B_ANSWER
B_GIVE_UP = rollups.B_GIVE_UP
MEASURES = (PDD, RING, B_ANSWER, B_GIVE_UP)
# The histograms' resolution (timings_hourly, migration 0015): percentiles read from them are
# within one bin of the exact ones.
RESOLUTION = "100 ms under 10 s, 1 s under 10 minutes, 1 minute above"


def _seconds(end: str, start: str) -> str:
    return f"greatest((epoch_us({end}) - epoch_us({start})) / 1e6, 0)"


def _measures(rel: Relations, f: Filters) -> str:
    """CTEs ending in `measured`: one row per (leg, measure) with its time t, its destination
    (the called country for outbound calls, the B number for B legs) and its seconds."""
    first = "least(rang_at, answered_at)"
    return (
        with_(scoped_calls(rel), scoped_legs(rel, f, a_leg=False))
        + f"""
    , outbound AS (
        SELECT t, coalesce(to_country, '(unknown)') AS destination, rang_at, answered_at,
               ended_at, started_at
        FROM scoped_calls
        WHERE direction = 'outbound' AND (rang_at IS NOT NULL OR answered_at IS NOT NULL))
    , dialled AS (
        SELECT l.t, coalesce(l.b_leg_to, '(unknown)') AS destination, l.answered,
               l.outcome, l.answered_at, l.ended_at,
               coalesce(c.answered_at, c.started_at) AS dial_at
        FROM scoped_legs l LEFT JOIN (
            SELECT call_uuid, answered_at, started_at FROM {rel.calls}
            WHERE started_at >= $start - INTERVAL 1 DAY AND started_at < $end + INTERVAL 1 DAY
        ) c ON c.call_uuid = l.a_leg_uuid)
    , measured AS (
        SELECT t, destination, '{PDD}' AS measure, {_seconds(first, "started_at")} AS seconds
        FROM outbound
        UNION ALL
        SELECT t, destination, '{RING}',
               {_seconds("coalesce(answered_at, ended_at)", "coalesce(rang_at, started_at)")}
        FROM outbound
        UNION ALL
        SELECT t, destination, '{B_ANSWER}', {_seconds("answered_at", "dial_at")}
        FROM dialled WHERE answered
        UNION ALL
        SELECT t, destination, '{B_GIVE_UP}', {_seconds("ended_at", "dial_at")}
        FROM dialled WHERE NOT answered AND outcome NOT IN ('lost-race', 'in-progress'))
    """
    )


STATS = """count(seconds) AS legs, quantile_cont(seconds, 0.5) AS median_s,
           quantile_cont(seconds, 0.9) AS p90_s"""


def figures(rel: Relations, f: Filters) -> Result:
    """Every timing figure of the range in one pass over the legs (GROUPING SETS): per bucket
    and measure (`level` 'bucket'), per destination and measure ('destination'), per measure
    ('range'). The functions below take their rows from it: one query, cached, per page.

    Without a direction, number, country or B-destination slice, from the hourly histograms
    (timings_hourly): the counts are exact, the percentiles within one bin (RESOLUTION)."""
    h = None if sliced(f) else facts.hours(rel, f)
    if h is not None:
        levels = """(
            SELECT 'bucket' AS level, bucket, NULL AS destination, measure, bin_ms, sum(n) AS n
            FROM binned GROUP BY ALL
            UNION ALL
            SELECT 'destination', NULL, destination, measure, bin_ms, sum(n)
            FROM binned GROUP BY ALL
            UNION ALL
            SELECT 'range', NULL, NULL, measure, bin_ms, sum(n) FROM binned GROUP BY ALL)"""
        stats = facts.percentiles(
            levels, "level, bucket, destination, measure", {"median_s": 0.5, "p90_s": 0.9}
        )
        measures = ", ".join(f"'{m}'" for m in MEASURES)
        sql = (
            with_(facts.timing_facts())
            + f"""
    , binned AS (SELECT {BUCKET} AS bucket, destination, measure, bin_ms, n
                 FROM timing_facts WHERE measure IN ({measures}))
    SELECT level, bucket, bucket + CAST($bucket AS INTERVAL) AS bucket_end, destination, measure,
           legs, median_s, p90_s
    FROM ({stats})
    """
        )
        return run(sql, {**f.params(), **h})
    sql = (
        _measures(rel, f)
        + f"""
    SELECT CASE WHEN grouping(bucket) = 0 THEN 'bucket'
                WHEN grouping(destination) = 0 THEN 'destination' ELSE 'range' END AS level,
           bucket, bucket + CAST($bucket AS INTERVAL) AS bucket_end, destination, measure,
           {STATS}
    FROM (SELECT {BUCKET} AS bucket, destination, measure, seconds
          FROM measured WHERE seconds IS NOT NULL)
    GROUP BY GROUPING SETS ((bucket, measure), (destination, measure), (measure))
    """
    )
    return run(sql, f.params())


def _part(result: Result, level: str, columns: list[str], order: list[str]) -> Result:
    rows = result.frame[result.frame["level"] == level]
    frame = rows[[*columns, "legs", "median_s", "p90_s"]].sort_values(
        order, ascending=[c != "legs" for c in order]
    )
    return Result(frame.reset_index(drop=True), result.sql, result.params)


def over_time(rel: Relations, f: Filters) -> Result:
    """Per bucket and measure: how many legs were timed, the median and the 90th percentile."""
    return _part(
        figures(rel, f), "bucket", ["bucket", "bucket_end", "measure"], ["bucket", "measure"]
    )


def summary(rel: Relations, f: Filters) -> Result:
    """One row per measure over the whole range."""
    return _part(figures(rel, f), "range", ["measure"], ["measure"])


def per_destination(rel: Relations, f: Filters, limit: int = 200) -> Result:
    """Per destination (country for outbound calls, B number for B legs) and measure, the
    destinations with the most timed legs first."""
    part = _part(
        figures(rel, f),
        "destination",
        ["destination", "measure"],
        ["legs", "destination", "measure"],
    )
    return Result(part.frame.head(limit), part.sql, part.params)
