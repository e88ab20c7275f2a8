"""Overview: the KPI tiles, answer rates over time, how calls ended, and the answer heat map."""

from __future__ import annotations

from callstatus.dashboard.filters import Filters
from callstatus.dashboard.queries import facts
from callstatus.dashboard.queries.base import BUCKET, BUCKET_END, T5, Result, run, with_
from callstatus.dashboard.queries.facts import count
from callstatus.dashboard.queries.relations import Relations
from callstatus.dashboard.queries.scopes import scoped_calls, scoped_dials, scoped_legs, sliced

KPI_BODY = """
, c AS (
    SELECT count(*) AS calls,
           count(*) FILTER (WHERE direction = 'inbound') AS inbound_calls,
           count(*) FILTER (WHERE direction = 'outbound') AS outbound_calls,
           count(*) FILTER (WHERE outcome <> 'in-progress') AS ended_calls,
           count(*) FILTER (WHERE outcome <> 'in-progress' AND answered) AS answered_calls,
           avg(duration_s) FILTER (WHERE answered) AS acd_s,
           count(*) FILTER (WHERE outcome = 'busy') AS busy_calls,
           count(*) FILTER (WHERE outcome = 'no-answer') AS no_answer_calls,
           count(*) FILTER (WHERE outcome = 'failed') AS failed_calls,
           -- Known only from Plivo's call records: none of their webhooks arrived.
           count(*) FILTER (WHERE source = 'cdr') AS records_only_calls
    FROM scoped_calls
), d AS (
    SELECT count(*) AS dials, count(*) FILTER (WHERE dial_status = 'completed') AS dials_completed
    FROM scoped_dials
), l AS (
    SELECT count(*) AS b_legs, count(*) FILTER (WHERE answered) AS b_answered,
           count(*) FILTER (WHERE outcome = 'lost-race') AS b_lost_race
    FROM scoped_legs
)
SELECT c.*, d.*, l.*,
       answered_calls / nullif(ended_calls, 0) AS call_answer_rate,
       dials_completed / nullif(dials, 0) AS dial_answer_rate,
       b_answered / nullif(b_legs, 0) AS b_leg_answer_rate,
       b_lost_race / nullif(b_legs, 0) AS b_lost_race_share,
       busy_calls / nullif(ended_calls, 0) AS busy_share,
       no_answer_calls / nullif(ended_calls, 0) AS no_answer_share,
       failed_calls / nullif(ended_calls, 0) AS failed_share,
       records_only_calls / nullif(calls, 0) AS records_only_share
FROM c, d, l
"""


# KPI_BODY on the hourly aggregates (queries/facts.py).
KPI_FACTS = f"""
, c AS (
    SELECT {count()} AS calls,
           {count("direction = 'inbound'")} AS inbound_calls,
           {count("direction = 'outbound'")} AS outbound_calls,
           {count("outcome <> 'in-progress'")} AS ended_calls,
           {count("outcome <> 'in-progress' AND answered")} AS answered_calls,
           {facts.mean_duration("answered")} AS acd_s,
           {count("outcome = 'busy'")} AS busy_calls,
           {count("outcome = 'no-answer'")} AS no_answer_calls,
           {count("outcome = 'failed'")} AS failed_calls,
           {count("source = 'cdr'")} AS records_only_calls
    FROM call_facts
), d AS (
    SELECT {count()} AS dials, {count("completed")} AS dials_completed FROM dial_facts
), l AS (
    SELECT {count()} AS b_legs, {count("answered")} AS b_answered,
           {count("outcome = 'lost-race'")} AS b_lost_race
    FROM leg_facts
)
SELECT c.*, d.*, l.*,
       answered_calls / nullif(ended_calls, 0) AS call_answer_rate,
       dials_completed / nullif(dials, 0) AS dial_answer_rate,
       b_answered / nullif(b_legs, 0) AS b_leg_answer_rate,
       b_lost_race / nullif(b_legs, 0) AS b_lost_race_share,
       busy_calls / nullif(ended_calls, 0) AS busy_share,
       no_answer_calls / nullif(ended_calls, 0) AS no_answer_share,
       failed_calls / nullif(ended_calls, 0) AS failed_share,
       records_only_calls / nullif(calls, 0) AS records_only_share
FROM c, d, l
"""


def _scopes(rel: Relations, f: Filters) -> str:
    return with_(scoped_calls(rel), scoped_dials(rel, f), scoped_legs(rel, f, a_leg=False))


def _facts(f: Filters) -> str:
    return with_(facts.call_facts(), facts.dial_facts(sliced(f)), facts.leg_facts())


def kpis(rel: Relations, f: Filters) -> Result:
    """One row: every KPI tile's figure for the range (ARCHITECTURE, Metrics)."""
    h = facts.hours(rel, f, zone=False, bucket=False)
    if h is not None:
        return run(_facts(f) + KPI_FACTS, {**f.params(), **h})
    return run(_scopes(rel, f) + KPI_BODY, f.params())


def rates_over_time(rel: Relations, f: Filters) -> Result:
    """Per bucket: calls, and the call, dial and B-leg answer rates.

    Each relation is first counted per 5 minutes UTC (`t5`): a 5-minute bucket always falls in
    one bucket of the chosen zone (webhook_counts, docs/data.md), and converting a few thousand
    buckets to local time instead of every row saves most of the query's time. On the hourly
    aggregates each relation's hours are bucketed as they are."""
    h = facts.hours(rel, f)
    if h is not None:
        sql = (
            _facts(f)
            + f"""
    , c AS (SELECT {BUCKET} AS bucket, {count()} AS calls,
                   {count("outcome <> 'in-progress' AND answered")}
                   / nullif({count("outcome <> 'in-progress'")}, 0) AS call_answer_rate
            FROM call_facts GROUP BY bucket)
    , d AS (SELECT {BUCKET} AS bucket, {count("completed")} / {count()} AS dial_answer_rate
            FROM dial_facts GROUP BY bucket)
    , l AS (SELECT {BUCKET} AS bucket, {count("answered")} / {count()} AS b_leg_answer_rate
            FROM leg_facts GROUP BY bucket)
    SELECT bucket, {BUCKET_END}, coalesce(c.calls, 0) AS calls, call_answer_rate,
           dial_answer_rate, b_leg_answer_rate
    FROM c FULL JOIN d USING (bucket) FULL JOIN l USING (bucket)
    ORDER BY bucket
    """
        )
        return run(sql, {**f.params(), **h})
    sql = (
        _scopes(rel, f)
        + f"""
    , c5 AS (SELECT {T5} AS t, count(*) AS calls,
                    count(*) FILTER (WHERE outcome <> 'in-progress' AND answered) AS answered,
                    count(*) FILTER (WHERE outcome <> 'in-progress') AS ended
             FROM scoped_calls GROUP BY 1)
    , c AS (SELECT {BUCKET} AS bucket, CAST(sum(calls) AS BIGINT) AS calls,
                   sum(answered) / nullif(sum(ended), 0) AS call_answer_rate
            FROM c5 GROUP BY bucket)
    , d5 AS (SELECT {T5} AS t, count(*) AS dials,
                    count(*) FILTER (WHERE dial_status = 'completed') AS completed
             FROM scoped_dials GROUP BY 1)
    , d AS (SELECT {BUCKET} AS bucket, sum(completed) / sum(dials) AS dial_answer_rate
            FROM d5 GROUP BY bucket)
    , l5 AS (SELECT {T5} AS t, count(*) AS legs, count(*) FILTER (WHERE answered) AS answered
             FROM scoped_legs GROUP BY 1)
    , l AS (SELECT {BUCKET} AS bucket, sum(answered) / sum(legs) AS b_leg_answer_rate
            FROM l5 GROUP BY bucket)
    SELECT bucket, {BUCKET_END}, coalesce(c.calls, 0) AS calls, call_answer_rate, dial_answer_rate,
           b_leg_answer_rate
    FROM c FULL JOIN d USING (bucket) FULL JOIN l USING (bucket)
    ORDER BY bucket
    """
    )
    return run(sql, f.params())


def outcomes_over_time(rel: Relations, f: Filters) -> Result:
    h = facts.hours(rel, f)
    if h is not None:
        sql = (
            with_(facts.call_facts())
            + f"""
    SELECT {BUCKET} AS bucket, {BUCKET_END}, outcome, {count()} AS calls
    FROM call_facts GROUP BY ALL ORDER BY bucket, outcome
    """
        )
        return run(sql, {**f.params(), **h})
    sql = (
        with_(scoped_calls(rel))
        + f"""
    SELECT {BUCKET} AS bucket, {BUCKET_END}, outcome, count(*) AS calls
    FROM scoped_calls GROUP BY ALL ORDER BY bucket, outcome
    """
    )
    return run(sql, f.params())


def answer_heatmap(rel: Relations, f: Filters, metric: str) -> Result:
    """Answer rate by weekday and hour (in the chosen zone); metric is 'dial' or 'call'."""
    h = facts.hours(rel, f, bucket=False)
    if h is not None:
        if metric == "dial":
            cte = facts.dial_facts(sliced(f))
            body = "SELECT t, completed AS ok, true AS counted, n FROM dial_facts"
        else:
            cte = facts.call_facts()
            body = (
                "SELECT t, answered AS ok, outcome <> 'in-progress' AS counted, n FROM call_facts"
            )
        sql = (
            with_(cte)
            + f"""
    , facts AS ({body})
    SELECT isodow(timezone($tz, t)) AS weekday_no,
           strftime(timezone($tz, t), '%a') AS weekday,
           hour(timezone($tz, t)) AS hour,
           {count("counted")} AS total,
           {count("counted AND ok")} AS answered,
           {count("counted AND ok")} / nullif({count("counted")}, 0) AS answer_rate
    FROM facts GROUP BY ALL ORDER BY weekday_no, hour
    """
        )
        return run(sql, {**f.params(), **h})
    if metric == "dial":
        body = """SELECT t, dial_status = 'completed' AS ok, true AS counted FROM scoped_dials"""
        cte = scoped_dials(rel, f)
    else:
        body = """SELECT t, answered AS ok, outcome <> 'in-progress' AS counted
                  FROM scoped_calls"""
        cte = scoped_calls(rel)
    sql = (
        with_(cte)
        + f"""
    , facts AS ({body})
    SELECT isodow(timezone($tz, t)) AS weekday_no,
           strftime(timezone($tz, t), '%a') AS weekday,
           hour(timezone($tz, t)) AS hour,
           count(*) FILTER (WHERE counted) AS total,
           count(*) FILTER (WHERE counted AND ok) AS answered,
           count(*) FILTER (WHERE counted AND ok) / nullif(count(*) FILTER (WHERE counted), 0)
               AS answer_rate
    FROM facts GROUP BY ALL ORDER BY weekday_no, hour
    """
    )
    return run(sql, f.params())
