"""The alert tables (migration 0010): loaded rules, each rule's state, transitions, report times.

Rows that change are deleted and inserted again, never updated: see callstatus/core/rollups.py
on why updates hold DuckDB's checkpoints back while any reader is open. The caller owns the
transaction, so that a state change and the message it queues commit together.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import duckdb

from callstatus.alerts.evaluate import RuleStatus, Transition
from callstatus.alerts.model import AlertsConfig, RuleState
from callstatus.alerts.rules import METRICS, describe_condition


@dataclass(frozen=True)
class ReportTimes:
    """A report's row in report_schedule."""

    report: str
    schedule: str  # the `every` text it was computed for
    next_due_at: datetime
    last_sent_at: datetime | None
    last_status: str | None


def replace_rules(cur: duckdb.DuckDBPyConnection, config: AlertsConfig, at: datetime) -> None:
    """Store the rules as loaded now; forget the state and due times of rules and reports the
    file no longer has (their history in alert_transitions stays)."""
    names = [rule.name for rule in config.rules]
    cur.execute("DELETE FROM alert_channels")
    for channel in config.channels.values():
        cur.execute(
            "INSERT INTO alert_channels (channel, type, loaded_at) VALUES ($name, $type, $at)",
            {"name": channel.name, "type": channel.type, "at": at},
        )
    cur.execute("DELETE FROM alert_rules")
    for rule in config.rules:
        window = rule.window.total_seconds() if METRICS[rule.metric].windowed else None
        cur.execute(
            "INSERT INTO alert_rules (rule, metric, condition, window_s, channels, line, "
            "loaded_at) VALUES ($rule, $metric, $condition, $window_s, $channels, $line, $at)",
            {
                "rule": rule.name,
                "metric": rule.metric,
                "condition": describe_condition(rule),
                "window_s": window,
                "channels": list(rule.channels),
                "line": rule.line,
                "at": at,
            },
        )
    cur.execute(
        "DELETE FROM alert_state WHERE NOT list_contains(CAST($names AS VARCHAR[]), rule)",
        {"names": names},
    )
    cur.execute(
        "DELETE FROM report_schedule WHERE NOT list_contains(CAST($names AS VARCHAR[]), report)",
        {"names": [report.name for report in config.reports]},
    )


def load_statuses(cur: duckdb.DuckDBPyConnection) -> dict[str, RuleStatus]:
    rows = cur.execute(
        "SELECT rule, state, since, pending_since, value, threshold, volume, evaluated_at "
        "FROM alert_state"
    ).fetchall()
    return {
        row[0]: RuleStatus(
            rule=row[0],
            state=cast(RuleState, row[1]),
            since=_utc(row[2]),
            pending_since=_utc_or_none(row[3]),
            value=row[4],
            threshold=row[5],
            volume=row[6],
            evaluated_at=_utc(row[7]),
        )
        for row in rows
    }


def save_statuses(cur: duckdb.DuckDBPyConnection, statuses: list[RuleStatus]) -> None:
    cur.execute(
        "DELETE FROM alert_state WHERE list_contains(CAST($names AS VARCHAR[]), rule)",
        {"names": [status.rule for status in statuses]},
    )
    if statuses:
        cur.executemany(
            "INSERT INTO alert_state (rule, state, since, pending_since, value, threshold, "
            "volume, evaluated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                [
                    s.rule,
                    s.state,
                    s.since,
                    s.pending_since,
                    s.value,
                    s.threshold,
                    s.volume,
                    s.evaluated_at,
                ]
                for s in statuses
            ],
        )


def add_transition(cur: duckdb.DuckDBPyConnection, t: Transition, notified: bool) -> None:
    cur.execute(
        'INSERT INTO alert_transitions ("at", rule, from_state, to_state, value, threshold, '
        "notified) VALUES (?, ?, ?, ?, ?, ?, ?)",
        [t.at, t.rule, t.from_state, t.to_state, t.value, t.threshold, notified],
    )


def load_report_times(cur: duckdb.DuckDBPyConnection) -> dict[str, ReportTimes]:
    rows = cur.execute(
        "SELECT report, schedule, next_due_at, last_sent_at, last_status FROM report_schedule"
    ).fetchall()
    return {
        row[0]: ReportTimes(row[0], row[1], _utc(row[2]), _utc_or_none(row[3]), row[4])
        for row in rows
    }


def save_report_times(cur: duckdb.DuckDBPyConnection, times: ReportTimes) -> None:
    cur.execute("DELETE FROM report_schedule WHERE report = ?", [times.report])
    cur.execute(
        "INSERT INTO report_schedule (report, schedule, next_due_at, last_sent_at, last_status) "
        "VALUES (?, ?, ?, ?, ?)",
        [times.report, times.schedule, times.next_due_at, times.last_sent_at, times.last_status],
    )


def _utc(value: Any) -> datetime:
    moment = cast(datetime, value)
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def _utc_or_none(value: Any) -> datetime | None:
    return None if value is None else _utc(value)
