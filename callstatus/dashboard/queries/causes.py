"""Hangup causes: legs per Plivo cause and per hangup source, over time, and the legs behind one.

A legs are the calls, B legs the dialled legs; both name their cause columns alike, so each
query reads either through the same SQL (`leg` is 'a' or 'b').
"""

from __future__ import annotations

from callstatus.dashboard.filters import Filters
from callstatus.dashboard.queries import facts
from callstatus.dashboard.queries.base import BUCKET, BUCKET_END, ROW_LIMIT, Result, run, with_
from callstatus.dashboard.queries.relations import Relations
from callstatus.dashboard.queries.scopes import (
    LEG_DESTINATIONS,
    listed_legs,
    scoped_calls,
    scoped_legs,
    sliced,
)

# leg -> the CTE it is read from. Only these two fixed names are ever put into SQL text.
LEG_RELATIONS = {"a": "scoped_calls", "b": "scoped_legs"}
CAUSE_LABEL = (
    "coalesce(CAST(hangup_cause_code AS VARCHAR) || ' ' || hangup_cause_name, "
    "hangup_cause_name, hangup_cause, '(none yet)')"
)


def _leg(rel: Relations, leg: str, f: Filters, a_leg: bool = False) -> tuple[str, str]:
    """The CTE and its name for a leg; `a_leg`: B legs carry their A leg's columns."""
    if leg not in LEG_RELATIONS:
        raise ValueError(f"leg must be 'a' or 'b', not {leg!r}")
    cte = scoped_calls(rel) if leg == "a" else scoped_legs(rel, f, a_leg=a_leg)
    return cte, LEG_RELATIONS[leg]


def _facts(
    rel: Relations, f: Filters, leg: str, bucketed: bool
) -> tuple[str, str, dict[str, object]] | None:
    """The hourly aggregates' CTE, its name and its parameters when they answer, else None.
    Their rows count `n` legs each."""
    h = facts.hours(rel, f, zone=bucketed, bucket=bucketed, legs=leg == "b")
    if h is None:
        return None
    if leg == "a":
        return facts.call_facts(), "call_facts", h
    return facts.leg_facts(), "leg_facts", h


def by_cause(rel: Relations, f: Filters, leg: str, with_answered: bool = True) -> Result:
    """Legs per Plivo cause code/name beside the telephony cause name, split by outcome."""
    cte, name = _leg(rel, leg, f)
    counted, params = "count(*)", {**f.params(), "with_answered": with_answered}
    if (found := _facts(rel, f, leg, bucketed=False)) is not None:
        cte, name, h = found
        counted, params = facts.count(), {**params, **h}
    sql = (
        with_(cte)
        + f"""
    , grouped AS (
        SELECT {CAUSE_LABEL} AS cause, hangup_cause_code AS code,
               hangup_cause_name AS plivo_name, hangup_cause AS telephony_cause, outcome,
               {counted} AS legs
        FROM {name} WHERE ($with_answered OR outcome <> 'answered') GROUP BY ALL)
    SELECT *, sum(legs) OVER (PARTITION BY cause) AS cause_legs
    FROM grouped ORDER BY cause_legs DESC, cause, legs DESC
    """
    )
    return run(sql, params)


def by_source(rel: Relations, f: Filters, leg: str, with_answered: bool = True) -> Result:
    """Legs per hangup source, split by outcome."""
    cte, name = _leg(rel, leg, f)
    counted, params = "count(*)", {**f.params(), "with_answered": with_answered}
    if (found := _facts(rel, f, leg, bucketed=False)) is not None:
        cte, name, h = found
        counted, params = facts.count(), {**params, **h}
    sql = (
        with_(cte)
        + f"""
    SELECT coalesce(hangup_source, '(none)') AS source, outcome, {counted} AS legs
    FROM {name} WHERE ($with_answered OR outcome <> 'answered')
    GROUP BY ALL ORDER BY source, outcome
    """
    )
    return run(sql, params)


def over_time(
    rel: Relations, f: Filters, leg: str, with_answered: bool = True, top: int = 8
) -> Result:
    """Legs per bucket and cause; causes beyond the `top` most frequent become 'other'."""
    cte, name = _leg(rel, leg, f)
    counted, params = "count(*)", {**f.params(), "with_answered": with_answered, "top": top}
    if (found := _facts(rel, f, leg, bucketed=True)) is not None:
        cte, name, h = found
        counted, params = facts.count(), {**params, **h}
    sql = (
        with_(cte)
        + f"""
    , labelled AS (SELECT {BUCKET} AS bucket, {CAUSE_LABEL} AS cause, {counted} AS legs
                   FROM {name} WHERE ($with_answered OR outcome <> 'answered') GROUP BY ALL)
    , ranked AS (SELECT cause, row_number() OVER (ORDER BY sum(legs) DESC, cause) AS rank
                 FROM labelled GROUP BY cause)
    SELECT bucket, {BUCKET_END},
           CASE WHEN r.rank <= $top THEN l.cause ELSE 'other' END AS cause,
           CAST(sum(legs) AS BIGINT) AS legs
    FROM labelled l JOIN ranked r USING (cause) GROUP BY ALL ORDER BY bucket, cause
    """
    )
    return run(sql, params)


def legs_with_cause(
    rel: Relations, f: Filters, leg: str, cause: str, limit: int = ROW_LIMIT
) -> Result:
    """The calls (A) or B legs behind one cause label, newest first. The hourly aggregates
    narrow the range to the hours holding the newest `limit` of them (facts.newest)."""
    where = f"{CAUSE_LABEL} = $cause"
    if leg == "b":
        where += f" AND {facts.LEG_DESTINATIONS}"
    table = "calls_hourly" if leg == "a" else "legs_hourly"
    if leg in LEG_RELATIONS:
        f = facts.newest(rel, f, table, where, limit, {"cause": cause})
    cte, name = _leg(rel, leg, f, a_leg=True)
    if leg == "b":
        # With nothing to match on the A leg, only the newest B legs with this cause are joined.
        where = f"{LEG_DESTINATIONS} AND {CAUSE_LABEL} = $cause"
        cte = ",".join(listed_legs(rel, f, where, only_newest=not sliced(f)))
    b_cols = "b_leg_uuid, b_leg_to, position, " if leg == "b" else ""
    sql = (
        with_(cte)
        + f"""
    SELECT timezone($tz, t) AS at, {"a_leg_uuid" if leg == "b" else "call_uuid"} AS call_uuid,
           {b_cols}direction, {"a_from" if leg == "b" else "from_number"} AS from_number,
           {"a_to" if leg == "b" else "to_number"} AS to_number, outcome,
           hangup_cause_code, hangup_cause_name, hangup_cause, hangup_source, duration_s
    FROM {name} WHERE {CAUSE_LABEL} = $cause ORDER BY t DESC LIMIT $limit
    """
    )
    return run(sql, {**f.params(), "cause": cause, "limit": limit})
