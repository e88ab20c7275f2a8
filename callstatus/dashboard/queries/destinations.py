"""Where calls go: outcomes by country, by our numbers, and a row per B destination.

A call's country is its far end's (docs/data.md, "Destinations"): the called number of an
outbound call, the caller of an inbound one. A B leg's is its B destination's (`b_leg_to`).
Answer rates as in ARCHITECTURE "Metrics": the call answer rate over calls that ended, the
dial answer rate over Dials, the B-leg answer rate over B legs with lost races kept in.
"""

from __future__ import annotations

from callstatus.core import rollups
from callstatus.dashboard.filters import Filters
from callstatus.dashboard.queries import facts
from callstatus.dashboard.queries.base import Result, run, with_
from callstatus.dashboard.queries.facts import count
from callstatus.dashboard.queries.relations import Relations
from callstatus.dashboard.queries.scopes import scoped_calls, scoped_dials, scoped_legs, sliced

UNKNOWN = "(unknown)"
FAR_COUNTRY = "CASE WHEN direction = 'outbound' THEN to_country ELSE from_country END"
OUR_NUMBER = "CASE WHEN direction = 'outbound' THEN from_number ELSE to_number END"
# A SIP endpoint with no number in its URI has no country: it is one of our own phones.
B_COUNTRY = (
    f"coalesce(b_leg_to_country, CASE WHEN b_leg_to_line_type = 'sip' THEN 'SIP' END, '{UNKNOWN}')"
)
CALL_FIGURES = """
    count(*) AS calls,
    count(*) FILTER (WHERE outcome <> 'in-progress') AS ended,
    count(*) FILTER (WHERE outcome <> 'in-progress' AND answered) AS answered,
    count(*) FILTER (WHERE outcome <> 'in-progress' AND answered)
        / nullif(count(*) FILTER (WHERE outcome <> 'in-progress'), 0) AS call_answer_rate,
    count(*) FILTER (WHERE outcome = 'busy') AS busy,
    count(*) FILTER (WHERE outcome = 'no-answer') AS no_answer,
    count(*) FILTER (WHERE outcome IN ('failed', 'unreachable', 'rejected')) AS failed,
    avg(duration_s) FILTER (WHERE answered) AS acd_s"""
# CALL_FIGURES on the hourly aggregates' rows (queries/facts.py).
CALL_FACTS = f"""
    {count()} AS calls,
    {count("outcome <> 'in-progress'")} AS ended,
    {count("outcome <> 'in-progress' AND answered")} AS answered,
    {count("outcome <> 'in-progress' AND answered")}
        / nullif({count("outcome <> 'in-progress'")}, 0) AS call_answer_rate,
    {count("outcome = 'busy'")} AS busy,
    {count("outcome = 'no-answer'")} AS no_answer,
    {count("outcome IN ('failed', 'unreachable', 'rejected')")} AS failed,
    {facts.mean_duration("answered")} AS acd_s"""


def countries(rel: Relations) -> list[str]:
    """The far-end countries of stored calls, most calls first (the sidebar's choices)."""
    if rel.aggregates:
        frame = run(
            """
        SELECT country, sum(calls) AS calls FROM calls_hourly
        WHERE country IS NOT NULL GROUP BY country ORDER BY calls DESC, country LIMIT 300
        """
        ).frame
        return [str(c) for c in frame["country"]]
    frame = run(
        f"""
        SELECT {FAR_COUNTRY} AS country, count(*) AS calls FROM {rel.calls}
        WHERE country IS NOT NULL GROUP BY country ORDER BY calls DESC, country LIMIT 300
        """
    ).frame
    return [str(c) for c in frame["country"]]


def by_country(rel: Relations, f: Filters) -> Result:
    """Per direction and far-end country: calls, how they ended, the call answer rate, ACD."""
    h = facts.hours(rel, f, zone=False, bucket=False)
    if h is not None:
        sql = (
            with_(facts.call_facts())
            + f"""
    SELECT direction, coalesce(country, '{UNKNOWN}') AS country, {CALL_FACTS}
    FROM call_facts GROUP BY ALL ORDER BY calls DESC, country LIMIT 200
    """
        )
        return run(sql, {**f.params(), **h})
    sql = (
        with_(scoped_calls(rel))
        + f"""
    SELECT direction, coalesce({FAR_COUNTRY}, '{UNKNOWN}') AS country, {CALL_FIGURES}
    FROM scoped_calls GROUP BY ALL ORDER BY calls DESC, country LIMIT 200
    """
    )
    return run(sql, f.params())


def outcomes_by_country(
    rel: Relations, f: Filters, direction: str | None = None, top: int = 12
) -> Result:
    """Calls per far-end country and outcome, the `top` countries by calls; only calls of
    `direction` when given."""
    h = facts.hours(rel, f, zone=False, bucket=False)
    cte, country, counted, params = scoped_calls(rel), FAR_COUNTRY, "count(*)", f.params()
    if h is not None:
        cte, country, counted, params = facts.call_facts(), "country", count(), {**params, **h}
    sql = (
        with_(cte)
        + f"""
    , counted AS (
        SELECT coalesce({country}, '{UNKNOWN}') AS country, outcome, {counted} AS calls
        FROM {"scoped_calls" if h is None else "call_facts"}
        WHERE $only IS NULL OR direction = $only GROUP BY ALL)
    , ranked AS (
        SELECT country FROM counted GROUP BY country ORDER BY sum(calls) DESC, country
        LIMIT $top)
    SELECT c.* FROM counted c SEMI JOIN ranked r USING (country)
    ORDER BY country, outcome
    """
    )
    return run(sql, {**params, "top": top, "only": direction})


def legs_by_country(rel: Relations, f: Filters) -> Result:
    """Per B destination country ('SIP' for SIP endpoints): B legs, answered, lost races and
    the B-leg answer rate."""
    h = facts.hours(rel, f, zone=False, bucket=False, legs=True)
    if h is not None:
        sql = (
            with_(facts.leg_facts())
            + f"""
    SELECT {B_COUNTRY} AS country, {count()} AS b_legs, {count("answered")} AS answered,
           {count("outcome = 'lost-race'")} AS lost_race,
           {count("answered")} / {count()} AS b_leg_answer_rate
    FROM leg_facts GROUP BY ALL ORDER BY b_legs DESC, country
    """
        )
        return run(sql, {**f.params(), **h})
    sql = (
        with_(scoped_legs(rel, f, a_leg=False))
        + f"""
    SELECT {B_COUNTRY} AS country, count(*) AS b_legs,
           count(*) FILTER (WHERE answered) AS answered,
           count(*) FILTER (WHERE outcome = 'lost-race') AS lost_race,
           count(*) FILTER (WHERE answered) / count(*) AS b_leg_answer_rate
    FROM scoped_legs GROUP BY ALL ORDER BY b_legs DESC, country
    """
    )
    return run(sql, f.params())


def by_our_number(rel: Relations, f: Filters) -> Result:
    """Per our number (called inbound, caller ID outbound): calls and their answer rate, and
    the Dials of its calls with the dial answer rate."""
    h = facts.hours(rel, f, zone=False, bucket=False)
    if h is not None:
        sql = (
            with_(facts.call_facts(), facts.dial_facts(sliced(f)))
            + f"""
    , c AS (SELECT our_number, {CALL_FACTS} FROM call_facts GROUP BY ALL)
    , d AS (SELECT our_number, {count()} AS dials, {count("completed")} AS dials_completed
            FROM dial_facts WHERE a_known GROUP BY ALL)
    SELECT coalesce(our_number, '{UNKNOWN}') AS our_number, calls, answered, call_answer_rate,
           coalesce(dials, 0) AS dials, dials_completed / nullif(dials, 0) AS dial_answer_rate,
           acd_s
    FROM c LEFT JOIN d USING (our_number) ORDER BY calls DESC, our_number LIMIT 200
    """
        )
        return run(sql, {**f.params(), **h})
    sql = (
        with_(scoped_calls(rel), scoped_dials(rel, f))
        + f"""
    , c AS (SELECT {OUR_NUMBER} AS our_number, {CALL_FIGURES} FROM scoped_calls GROUP BY ALL)
    , a AS (SELECT call_uuid, direction, from_number, to_number FROM {rel.calls}
            WHERE started_at >= $start - INTERVAL 1 DAY AND started_at < $end + INTERVAL 1 DAY)
    , d AS (SELECT {OUR_NUMBER} AS our_number, count(*) AS dials,
                   count(*) FILTER (WHERE dial_status = 'completed') AS dials_completed
            FROM scoped_dials sd JOIN a ON a.call_uuid = sd.a_leg_uuid GROUP BY ALL)
    SELECT coalesce(our_number, '{UNKNOWN}') AS our_number, calls, answered, call_answer_rate,
           coalesce(dials, 0) AS dials, dials_completed / nullif(dials, 0) AS dial_answer_rate,
           acd_s
    FROM c LEFT JOIN d USING (our_number) ORDER BY calls DESC, our_number LIMIT 200
    """
    )
    return run(sql, f.params())


def per_destination(rel: Relations, f: Filters, limit: int = 500) -> Result:
    """One row per B destination: legs dialled, answered, lost races, the B-leg answer rate,
    the median time to answer (from the Dial's start: the A leg's AnswerTime, as on the Timing
    page) and the talk time of its answered legs (total and mean). On the hourly aggregates
    (views without direction, number or country slices) the median comes from the Timing
    page's histograms: within 100 ms under 10 s, 1 s under 10 minutes."""
    h = None if sliced(f) else facts.hours(rel, f, zone=False, bucket=False, legs=True)
    if h is not None:
        histogram = f"""(SELECT destination, bin_ms, n FROM timing_facts
            WHERE measure = '{rollups.B_ANSWER}' AND (len(CAST($destinations AS VARCHAR[])) = 0
                OR list_contains(CAST($destinations AS VARCHAR[]), destination)))"""
        sql = (
            with_(facts.leg_facts(), facts.timing_facts())
            + f"""
    , legs AS (
        SELECT coalesce(b_leg_to, '{UNKNOWN}') AS destination,
               any_value(b_leg_to_country) AS country, any_value(b_leg_to_line_type) AS line_type,
               {count()} AS dialled, {count("answered")} AS answered,
               {count("outcome = 'lost-race'")} AS lost_races,
               {count("answered")} / {count()} AS answer_rate,
               coalesce(sum(duration_sum) FILTER (WHERE answered), 0) AS talk_s,
               {facts.mean_duration("answered")} AS mean_talk_s
        FROM leg_facts GROUP BY 1)
    , medians AS ({facts.percentiles(histogram, "destination", {"median_answer_s": 0.5})})
    SELECT l.destination, country, line_type, dialled, answered, lost_races, answer_rate,
           m.median_answer_s, talk_s, mean_talk_s
    FROM legs l LEFT JOIN medians m USING (destination)
    ORDER BY dialled DESC, destination LIMIT $limit
    """
        )
        return run(sql, {**f.params(), **h, "limit": limit})
    sql = (
        with_(scoped_legs(rel, f, a_leg=False))
        + f"""
    , dial AS (
        SELECT call_uuid, coalesce(answered_at, started_at) AS dial_at FROM {rel.calls}
        WHERE started_at >= $start - INTERVAL 1 DAY AND started_at < $end + INTERVAL 1 DAY)
    SELECT coalesce(l.b_leg_to, '{UNKNOWN}') AS destination,
           any_value(l.b_leg_to_country) AS country, any_value(l.b_leg_to_line_type) AS line_type,
           count(*) AS dialled, count(*) FILTER (WHERE l.answered) AS answered,
           count(*) FILTER (WHERE l.outcome = 'lost-race') AS lost_races,
           count(*) FILTER (WHERE l.answered) / count(*) AS answer_rate,
           quantile_cont(greatest((epoch_us(l.answered_at) - epoch_us(d.dial_at)) / 1e6, 0), 0.5)
               FILTER (WHERE l.answered) AS median_answer_s,
           coalesce(sum(l.duration_s) FILTER (WHERE l.answered), 0) AS talk_s,
           avg(l.duration_s) FILTER (WHERE l.answered) AS mean_talk_s
    FROM scoped_legs l LEFT JOIN dial d ON d.call_uuid = l.a_leg_uuid
    GROUP BY ALL ORDER BY dialled DESC, destination LIMIT $limit
    """
    )
    return run(sql, {**f.params(), "limit": limit})
