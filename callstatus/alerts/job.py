"""The alerts job in serve: every CALLSTATUS_ALERT_INTERVAL seconds, evaluate each rule, queue a
message when one starts firing or resolves, queue the reports that are due, then deliver.

Each state change commits in one transaction with the message it queues (the outbox runs in the
caller's transaction), and a report's next due time with the report: after a restart nothing is
forgotten and nothing is sent twice. Metrics read the dashboard's queries over the server
installed in this process (callstatus/core/server.py): the runtime installs it before `start`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

import duckdb

from callstatus.alerts import evaluate, messages, metrics, outbox, reports, state
from callstatus.alerts.evaluate import RuleStatus, Transition
from callstatus.alerts.model import AlertsConfig, Message, Report, Rule
from callstatus.core import server
from callstatus.core.db import Database
from callstatus.core.errors import one_line
from callstatus.core.jobs import PeriodicJob
from callstatus.core.server import ReceiverStatus
from callstatus.core.settings import Settings
from callstatus.dashboard import connection
from callstatus.dashboard.queries.relations import Relations

log = logging.getLogger("callstatus.alerts")

# A report's due times missed while the server was down are skipped up to the latest one; past
# this many steps (a 1-minute interval over months) the schedule restarts from now.
MAX_CATCH_UP = 100_000


@dataclass(frozen=True)
class Change:
    """A rule's new status and, when its state changed, the transition and the message queued."""

    rule: Rule
    status: RuleStatus
    transition: Transition | None
    message: Message | None


class AlertJob:
    def __init__(self, database: Database, settings: Settings, config: AlertsConfig) -> None:
        self.database = database
        self.settings = settings
        self.config = config
        self._lock = threading.Lock()  # the loop and callers of evaluate_once
        self.loop = PeriodicJob(
            "alerts", self.evaluate_once, settings.alert_interval_s, run_at_stop=False
        )

    def start(self) -> None:
        self.store_rules()
        self.loop.start()

    def stop(self) -> None:
        self.loop.stop()

    def store_rules(self, now: datetime | None = None) -> None:
        """Replace the loaded rules in alert_rules; forget rules and reports no longer in the
        file (a firing rule removed from the file sends no "resolved")."""
        cur = self.database.cursor()
        with _transaction(cur):
            state.replace_rules(cur, self.config, now or datetime.now(UTC))

    def evaluate_once(self, now: datetime | None = None) -> list[Change]:
        """Evaluate every rule, queue the messages of the changes and the reports that are due,
        then deliver what is due; the changes made."""
        moment = now or datetime.now(UTC)
        handle = server.installed()
        if handle is None or handle.database is not self.database:
            raise RuntimeError(
                "alerts read the dashboard's queries of the server installed in this process; "
                "none is installed for this database"
            )
        rel = connection.relations()
        with self._lock:
            cur = self.database.cursor()
            changes = self._rules(cur, rel, moment, handle.status())
            self._reports(cur, rel, moment)
            outbox.deliver_due(cur, self.config, self.settings, moment)
        return changes

    def _rules(
        self,
        cur: duckdb.DuckDBPyConnection,
        rel: Relations,
        now: datetime,
        status: ReceiverStatus,
    ) -> list[Change]:
        before = state.load_statuses(cur)
        changes = []
        for rule in self.config.rules:
            try:
                changes.append(self._change(rule, before.get(rule.name), rel, now, status))
            except Exception as exc:
                # Its state stays as it was; the next run tries again.
                log.error("alert rule %r could not be evaluated: %s", rule.name, one_line(exc))
        with _transaction(cur):
            state.save_statuses(cur, [change.status for change in changes])
            for change in changes:
                if change.transition is None:
                    continue
                state.add_transition(cur, change.transition, change.message is not None)
                if change.message is not None:
                    outbox.enqueue(cur, change.rule.channels, change.message, now)
        for change in changes:
            if change.transition is not None:
                t = change.transition
                log.info("alert %r: %s -> %s", t.rule, t.from_state, t.to_state)
        return changes

    def _change(
        self,
        rule: Rule,
        previous: RuleStatus | None,
        rel: Relations,
        now: datetime,
        status: ReceiverStatus,
    ) -> Change:
        evaluation = metrics.measure(rule, rel, now, status)
        new, transition = evaluate.advance(previous, rule, evaluation)
        message = None
        kind = transition.message if transition is not None else None
        if kind is not None and rule.channels:
            build = messages.firing if kind == "firing" else messages.resolved
            message = build(rule, evaluation, self.settings)
        return Change(rule, new, transition, message)

    def _reports(self, cur: duckdb.DuckDBPyConnection, rel: Relations, now: datetime) -> None:
        times = state.load_report_times(cur)
        for report in self.config.reports:
            row = times.get(report.name)
            try:
                if row is None or row.schedule != report.every.text:
                    # New, or its schedule changed: due next from now on, not at once.
                    first = state.ReportTimes(
                        report.name,
                        report.every.text,
                        reports.next_due(report.every, now),
                        row.last_sent_at if row else None,
                        row.last_status if row else None,
                    )
                    with _transaction(cur):
                        state.save_report_times(cur, first)
                elif row.next_due_at <= now:
                    self._send_report(cur, rel, report, row, now)
            except Exception as exc:
                log.error("report %r could not be scheduled: %s", report.name, one_line(exc))

    def _send_report(
        self,
        cur: duckdb.DuckDBPyConnection,
        rel: Relations,
        report: Report,
        row: state.ReportTimes,
        now: datetime,
    ) -> None:
        """Queue the report for its latest due time (earlier ones missed are skipped) and store
        the next; a report that cannot be built is not retried until its next due time."""
        due, following = latest_due(report, row.next_due_at, now)
        message: Message | None = None
        try:
            message = reports.build(report, rel, self.settings, due)
            outcome = "queued"
        except Exception as exc:
            log.error("report %r could not be built: %s", report.name, one_line(exc))
            outcome = f"failed: {one_line(exc)}"
        with _transaction(cur):
            state.save_report_times(
                cur, state.ReportTimes(report.name, report.every.text, following, due, outcome)
            )
            if message is not None:
                outbox.enqueue(cur, report.channels, message, now)


def latest_due(report: Report, due: datetime, now: datetime) -> tuple[datetime, datetime]:
    """The latest due time at or before `now`, from `due` on, and the one after it."""
    following = reports.next_due(report.every, due)
    for _ in range(MAX_CATCH_UP):
        if following > now:
            return due, following
        due, following = following, reports.next_due(report.every, following)
    return due, reports.next_due(report.every, now)


@contextmanager
def _transaction(cur: duckdb.DuckDBPyConnection) -> Iterator[None]:
    cur.execute("BEGIN")
    try:
        yield
    except BaseException:
        cur.execute("ROLLBACK")
        raise
    cur.execute("COMMIT")
