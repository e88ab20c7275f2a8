"""Completeness: calls we had webhooks for against the calls Plivo's call records report.

A call's `source` says what we know it from ('webhooks', 'cdr' or 'both') and its `end_source`
where its hangup fields came from (migration 0008). Calls belong to the range and to a day (in
the dashboard's zone) by `started_at`, as everywhere else. The direction and number slices do
not apply: this says how complete the data is, not how one line performs.
"""

from __future__ import annotations

from callstatus.dashboard.filters import Filters
from callstatus.dashboard.queries.base import Result, run, with_
from callstatus.dashboard.queries.relations import Relations

# The figures of one group of calls, as sums of the 5-minute counts below.
FIGURES = """
    CAST(coalesce(sum(calls), 0) AS BIGINT) AS calls,
    CAST(coalesce(sum(reported), 0) AS BIGINT) AS reported,
    CAST(coalesce(sum(with_webhooks), 0) AS BIGINT) AS with_webhooks,
    CAST(coalesce(sum(completed), 0) AS BIGINT) AS completed,
    CAST(coalesce(sum(added), 0) AS BIGINT) AS added,
    sum(added) / nullif(sum(calls), 0) AS missed_share"""


def _counted(rel: Relations) -> str:
    """Calls counted per 5 minutes UTC: a 5-minute bucket always falls in one day of any zone
    (see webhook_counts in docs/data.md), so only these buckets are converted to local days."""
    return f"""
c5 AS (
    SELECT time_bucket(INTERVAL 5 MINUTE, started_at) AS t, count(*) AS calls,
           count(*) FILTER (WHERE source IN ('cdr', 'both')) AS reported,
           count(*) FILTER (WHERE source IN ('webhooks', 'both')) AS with_webhooks,
           count(*) FILTER (WHERE source = 'both' AND end_source = 'cdr') AS completed,
           count(*) FILTER (WHERE source = 'cdr') AS added
    FROM {rel.calls} WHERE started_at >= $start AND started_at < $end
    GROUP BY 1
)"""


def totals(rel: Relations, f: Filters) -> Result:
    """One row for the range: calls; reported (with a record: source 'cdr' or 'both');
    with_webhooks (source 'webhooks' or 'both'); completed (hangup from the record: source
    'both', end_source 'cdr'); added (known only from the record: source 'cdr');
    missed_share = added / calls (NULL without calls)."""
    return run(with_(_counted(rel)) + f"SELECT {FIGURES}\nFROM c5", f.params())


def per_day(rel: Relations, f: Filters) -> Result:
    """The same figures per day in the dashboard's zone (`day`: local midnight), newest first;
    days without calls have no row."""
    sql = (
        with_(_counted(rel))
        + f"""
    SELECT date_trunc('day', timezone($tz, t)) AS day, {FIGURES.strip()}
    FROM c5 GROUP BY day ORDER BY day DESC
    """
    )
    return run(sql, f.params())


def last_run() -> Result:
    """The newest reconcile run (by started_at), whatever its status, and when the newest run
    of the background job ended (`last_job_end`, for when the next one is due). No rows before
    the first run."""
    sql = """
    SELECT started_at, finished_at, trigger, window_start, window_end, records_read,
           records_new, calls_had, calls_completed, calls_added, legs_added, status, error,
           (SELECT max(coalesce(finished_at, started_at)) FROM reconcile_runs
            WHERE trigger = 'job') AS last_job_end
    FROM reconcile_runs ORDER BY started_at DESC LIMIT 1
    """
    return run(sql)
