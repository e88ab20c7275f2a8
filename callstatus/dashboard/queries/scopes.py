"""The slices every page shares: calls, Dials and B legs in the range, as CTEs.

A call belongs to the range when it started in it; Dials and B legs are timed by when their
webhooks arrived (ARCHITECTURE, Metrics). The direction and "our number" slices come from the
A leg: the number Plivo called (inbound) or the caller ID we used (outbound).
"""

from __future__ import annotations

from callstatus.dashboard.filters import Filters
from callstatus.dashboard.queries.relations import Relations

# B destination choices, on B legs `l`.
LEG_DESTINATIONS = """
    (len(CAST($destinations AS VARCHAR[])) = 0
     OR list_contains(CAST($destinations AS VARCHAR[]), l.b_leg_to))"""
# The country slice on calls `c`: the country of the far end (the called number of an
# outbound call, the caller of an inbound one), from the stored destinations (migration 0013).
COUNTRY_SLICE = """
    (len(CAST($countries AS VARCHAR[])) = 0 OR list_contains(CAST($countries AS VARCHAR[]),
         CASE WHEN c.direction = 'outbound' THEN c.to_country ELSE c.from_country END))"""
# The direction, number and country slices on calls `c`.
DIAL_SLICE = f"""
    ($direction IS NULL OR c.direction = $direction)
    AND (len(CAST($numbers AS VARCHAR[])) = 0 OR list_contains(CAST($numbers AS VARCHAR[]),
         CASE WHEN c.direction = 'outbound' THEN c.from_number ELSE c.to_number END))
    AND {COUNTRY_SLICE}
"""


def sliced(f: Filters | None) -> bool:
    """Whether the direction, number or country slice is set (None: any may be)."""
    return f is None or f.direction is not None or bool(f.numbers) or bool(f.countries)


def scoped_calls(rel: Relations) -> str:
    """The scoped_calls CTE: calls that started in the range, within the slices."""
    return f"""
scoped_calls AS (
    SELECT c.*, c.started_at AS t FROM {rel.calls} c
    WHERE c.started_at >= $start AND c.started_at < $end AND {_call_slice(rel)}
)"""


def _call_slice(rel: Relations) -> str:
    return f"""
    ($direction IS NULL OR c.direction = $direction)
    AND (len(CAST($numbers AS VARCHAR[])) = 0 OR list_contains(CAST($numbers AS VARCHAR[]),
         CASE WHEN c.direction = 'outbound' THEN c.from_number ELSE c.to_number END))
    AND {COUNTRY_SLICE}
    AND (len(CAST($destinations AS VARCHAR[])) = 0 OR EXISTS (
         SELECT 1 FROM {rel.dial_legs} x WHERE x.a_leg_uuid = c.call_uuid
         AND list_contains(CAST($destinations AS VARCHAR[]), x.b_leg_to)))
"""


def _near_calls(rel: Relations) -> str:
    """Calls that started within a day of the range: Dials and B legs join their A leg among
    these only (the rollups' one-day assumption, docs/data.md), so the join scales with the
    range instead of hashing every call's UUID."""
    return f"""(SELECT call_uuid, outcome, started_at, direction, from_number, to_number,
                 to_country, from_country
          FROM {rel.calls} WHERE started_at >= $start - INTERVAL 1 DAY
          AND started_at < $end + INTERVAL 1 DAY)"""


def _dial_destinations(rel: Relations) -> str:
    return f"""
    (len(CAST($destinations AS VARCHAR[])) = 0 OR EXISTS (
         SELECT 1 FROM {rel.dial_legs} x WHERE x.a_leg_uuid = d.a_leg_uuid
         AND list_contains(CAST($destinations AS VARCHAR[]), x.b_leg_to)))"""


def scoped_dials(rel: Relations, f: Filters | None = None) -> str:
    """The scoped_dials CTE: Dials whose webhooks arrived in the range, within the slices.
    They join their A leg only for the direction and number slices."""
    if not sliced(f):
        return f"""
scoped_dials AS (
    SELECT d.*, d.received_at AS t FROM {rel.dials} d
    WHERE d.received_at >= $start AND d.received_at < $end AND {_dial_destinations(rel)}
)"""
    return f"""
scoped_dials AS (
    SELECT d.*, d.received_at AS t FROM {rel.dials} d LEFT JOIN {_near_calls(rel)} c
        ON c.call_uuid = d.a_leg_uuid
    WHERE d.received_at >= $start AND d.received_at < $end AND {DIAL_SLICE}
    AND {_dial_destinations(rel)}
)"""


def scoped_legs(
    rel: Relations,
    f: Filters | None = None,
    a_leg: bool = True,
    legs: str | None = None,
    *,
    inline: bool = False,
) -> str:
    """The scoped_legs CTE: B legs timed in the range, within the slices; with `a_leg` their A
    leg's outcome, start, direction and numbers too (a_outcome, a_started_at, direction, a_from,
    a_to). A leg that has neither answered nor ended is timed by its A leg's start. `legs`
    names the relation of B legs to read on the views (a CTE of some of their rows).

    On the rollups each leg's time and A-leg columns are stored: a plain range filter, whatever
    `legs` and `a_leg` are (the A-leg columns cost nothing to read there), and zone maps on
    leg_at (rows are inserted in its order) skip the row groups outside the range.
    With `inline`, DuckDB reads the B legs again where the query names it twice instead of
    materializing them (2.5 million rows at 10 million webhooks cost more to keep than to read)."""
    head = "scoped_legs AS NOT MATERIALIZED (" if inline else "scoped_legs AS ("
    if rel.stored:
        return f"""
{head}
    SELECT l.* EXCLUDE (leg_at, a_direction), l.leg_at AS t, l.a_direction AS direction
    FROM {rel.dial_legs} l
    WHERE l.leg_at >= $start AND l.leg_at < $end
      AND ($direction IS NULL OR l.a_direction = $direction)
      AND (len(CAST($numbers AS VARCHAR[])) = 0 OR list_contains(CAST($numbers AS VARCHAR[]),
           CASE WHEN l.a_direction = 'outbound' THEN l.a_from ELSE l.a_to END))
      AND (len(CAST($countries AS VARCHAR[])) = 0 OR
           CASE WHEN l.a_direction = 'outbound' THEN l.a_to ELSE l.a_from END IN (
               SELECT number FROM number_destinations
               WHERE list_contains(CAST($countries AS VARCHAR[]), country)))
      AND (len(CAST($destinations AS VARCHAR[])) = 0
           OR list_contains(CAST($destinations AS VARCHAR[]), l.b_leg_to))
)"""
    near = _near_calls(rel)
    if not a_leg and not sliced(f):
        return f"""
{head}
    SELECT l.*, coalesce(l.answered_at, l.ended_at) AS t FROM {rel.dial_legs} l
    WHERE coalesce(l.answered_at, l.ended_at) >= $start
      AND coalesce(l.answered_at, l.ended_at) < $end AND {LEG_DESTINATIONS}
    UNION ALL
    SELECT l.*, c.started_at AS t FROM {rel.dial_legs} l JOIN {near} c
        ON c.call_uuid = l.a_leg_uuid
    WHERE l.answered_at IS NULL AND l.ended_at IS NULL
      AND c.started_at >= $start AND c.started_at < $end AND {LEG_DESTINATIONS}
)"""
    return f"""
{head}
    SELECT l.*, coalesce(l.answered_at, l.ended_at, c.started_at) AS t,
           c.outcome AS a_outcome, c.started_at AS a_started_at, c.direction,
           c.from_number AS a_from, c.to_number AS a_to
    FROM {legs or rel.dial_legs} l LEFT JOIN {near} c ON c.call_uuid = l.a_leg_uuid
    WHERE ((l.answered_at IS NULL AND l.ended_at IS NULL)
           OR (coalesce(l.answered_at, l.ended_at) >= $start
               AND coalesce(l.answered_at, l.ended_at) < $end))
      AND coalesce(l.answered_at, l.ended_at, c.started_at) >= $start
      AND coalesce(l.answered_at, l.ended_at, c.started_at) < $end
      AND {DIAL_SLICE}
      AND {LEG_DESTINATIONS}
)"""


def listed_legs(rel: Relations, f: Filters, where: str, only_newest: bool) -> tuple[str, ...]:
    """The CTEs giving scoped_legs (with A-leg columns) for a newest-first listing of B legs
    matching `where` (a fixed condition on B legs `l`).

    On the views with `only_newest` (nothing is matched on the A leg), the newest $limit B legs
    matching `where` that answered or ended in the range, plus every one that did neither (timed
    by its A leg's start), are the only candidates: only they are joined to their A leg."""
    if rel.stored or not only_newest:
        return (scoped_legs(rel, f, a_leg=True),)
    newest = f"""
recent AS (
    SELECT l.*, coalesce(l.answered_at, l.ended_at) AS t0 FROM {rel.dial_legs} l
    WHERE coalesce(l.answered_at, l.ended_at) >= $start
      AND coalesce(l.answered_at, l.ended_at) < $end AND {where}
    ORDER BY t0 DESC LIMIT $limit
), candidates AS (
    SELECT * EXCLUDE (t0) FROM recent
    UNION ALL
    SELECT l.* FROM {rel.dial_legs} l
    WHERE l.answered_at IS NULL AND l.ended_at IS NULL AND {where}
)"""
    return (newest, scoped_legs(rel, f, a_leg=True, legs="candidates"))
