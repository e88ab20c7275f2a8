"""Alerts: the loaded rules and their state, transitions, report times and undelivered messages.

These read the tables the alert job keeps (migration 0010: alert_rules, alert_state,
alert_transitions, report_schedule, alert_deliveries), never the calls. They are read fresh on
every run, not through the short cache of `base.run`: they are a few rows, and a test message
sent from the page must show in its deliveries at once. Times come back in the dashboard's zone.
"""

from __future__ import annotations

from typing import Any

from callstatus.dashboard import connection
from callstatus.dashboard.filters import Filters
from callstatus.dashboard.queries.base import ROW_LIMIT, Result

TABLES = (
    "alert_rules",
    "alert_state",
    "alert_transitions",
    "report_schedule",
    "alert_deliveries",
    "alert_channels",
)
# Worst first: what needs attention leads the table.
STATE_ORDER = (
    "CASE s.state WHEN 'firing' THEN 0 WHEN 'pending' THEN 1 WHEN 'no data' THEN 2 "
    "WHEN 'ok' THEN 3 ELSE 4 END"
)


def fresh(sql: str, params: dict[str, Any] | None = None) -> Result:
    """Run SQL with bound parameters, uncached, keeping it for "show SQL"."""
    bound = dict(params or {})
    frame = connection.cursor().execute(sql, bound).df()
    return Result(frame, sql.strip(), bound)


def present() -> bool:
    """Whether the database has the alert tables (a file from before migration 0010 has not)."""
    sql = """
    SELECT count(*) AS tables FROM information_schema.tables
    WHERE table_catalog = current_database() AND table_schema = current_schema()
      AND list_contains(CAST($names AS VARCHAR[]), table_name)
    """
    frame = fresh(sql, {"names": list(TABLES)}).frame
    return int(frame.iloc[0]["tables"]) == len(TABLES)


def summary(f: Filters) -> Result:
    """One row: rules loaded and when, when they were last evaluated, rules per state, reports
    scheduled, and deliveries failed (given up), retrying (pending after a failed attempt) and
    queued (never tried)."""
    sql = """
    SELECT (SELECT count(*) FROM alert_rules) AS rules,
           (SELECT timezone($tz, max(loaded_at)) FROM alert_rules) AS loaded_at,
           (SELECT timezone($tz, max(evaluated_at)) FROM alert_state) AS evaluated_at,
           (SELECT count(*) FROM alert_state s JOIN alert_rules r USING (rule)
            WHERE s.state = 'firing') AS firing,
           (SELECT count(*) FROM alert_state s JOIN alert_rules r USING (rule)
            WHERE s.state = 'pending') AS pending,
           (SELECT count(*) FROM alert_state s JOIN alert_rules r USING (rule)
            WHERE s.state = 'no data') AS no_data,
           (SELECT count(*) FROM alert_state s JOIN alert_rules r USING (rule)
            WHERE s.state = 'ok') AS ok,
           (SELECT count(*) FROM report_schedule) AS reports,
           (SELECT count(*) FROM alert_deliveries WHERE status = 'failed') AS failed,
           (SELECT count(*) FROM alert_deliveries
            WHERE status = 'pending' AND attempts > 0) AS retrying,
           (SELECT count(*) FROM alert_deliveries
            WHERE status = 'pending' AND attempts = 0) AS queued
    """
    return fresh(sql, {"tz": f.tz})


def rules(f: Filters) -> Result:
    """Every loaded rule, worst state first, then in the file's order: its state (NULL before
    its first evaluation) and since when, the value against the threshold, the window in
    seconds, the volume, its last transition, and its channels as one text."""
    sql = f"""
    WITH last_change AS (
        SELECT rule, "at", from_state, to_state FROM alert_transitions
        QUALIFY row_number() OVER (PARTITION BY rule ORDER BY "at" DESC) = 1
    )
    SELECT r.rule, s.state, s.value, r.condition, s.threshold, r.metric, r.window_s, s.volume,
           timezone($tz, s.since) AS since,
           timezone($tz, t."at") AS last_change_at,
           t.from_state || ' → ' || t.to_state AS last_change,
           array_to_string(r.channels, ', ') AS channels, r.line
    FROM alert_rules r
    LEFT JOIN alert_state s USING (rule)
    LEFT JOIN last_change t USING (rule)
    ORDER BY {STATE_ORDER}, r.line NULLS LAST, r.rule
    """
    return fresh(sql, {"tz": f.tz})


def transitions(f: Filters, limit: int = ROW_LIMIT) -> Result:
    """The changes of state in the range, newest first (at most `limit`)."""
    sql = """
    SELECT timezone($tz, "at") AS "at", rule, from_state, to_state, value, threshold, notified
    FROM alert_transitions WHERE "at" >= $start AND "at" < $end
    ORDER BY "at" DESC, rule LIMIT $limit
    """
    return fresh(sql, {"tz": f.tz, "start": f.start, "end": f.end, "limit": limit})


def reports(f: Filters) -> Result:
    """Every scheduled report, soonest first: its schedule, next run, the due time of the last
    one queued and how that went ('queued', or 'failed: <why>')."""
    sql = """
    SELECT report, schedule, timezone($tz, next_due_at) AS next_due_at,
           timezone($tz, last_sent_at) AS last_sent_at, last_status
    FROM report_schedule ORDER BY next_due_at, report
    """
    return fresh(sql, {"tz": f.tz})


def undelivered(f: Filters, limit: int = ROW_LIMIT) -> Result:
    """Messages no channel has taken: given up ('failed') or still 'pending' (waiting for a
    retry once an attempt failed, or not tried yet), newest first, with the last error."""
    sql = """
    SELECT timezone($tz, created_at) AS created_at, channel, kind, title, status, attempts,
           timezone($tz, next_attempt_at) AS next_attempt_at, last_error
    FROM alert_deliveries WHERE status <> 'sent'
    ORDER BY created_at DESC, id DESC LIMIT $limit
    """
    return fresh(sql, {"tz": f.tz, "limit": limit})


def channels() -> list[str]:
    """The channels of the loaded rules file (alert_channels), else, in a file from before that
    table, those the rules name and those messages were queued for; sorted."""
    sql = """
    SELECT DISTINCT channel FROM (
        SELECT channel FROM alert_channels
        UNION ALL
        SELECT unnest(channels) AS channel FROM alert_rules
            WHERE NOT EXISTS (SELECT 1 FROM alert_channels)
    ) ORDER BY channel
    """
    return [str(name) for name in fresh(sql).frame["channel"]]
