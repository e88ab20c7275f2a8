"""`callstatus alerts check [FILE]`: validate a rules file and print each rule's current value.

The values are measured as the running job measures them: through the dashboard's queries over
a server handle (callstatus/core/server.py), installed here for the time of the check over the
database opened read-only, or over the server's snapshot while a server holds the database.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO
from zoneinfo import ZoneInfo

import duckdb
from streamlit import logger as streamlit_logger

from callstatus.alerts import rules
from callstatus.alerts.model import AlertsConfig, Evaluation, Rule
from callstatus.core import server
from callstatus.core.db import Database, held_by_another_process
from callstatus.core.errors import UsageError, one_line
from callstatus.core.server import ReceiverStatus, ServerHandle
from callstatus.core.settings import Settings
from callstatus.core.snapshot import age_s
from callstatus.receiver.spool import Spool


def run_check(
    path: Path | None, settings: Settings, out: TextIO | None = None, now: datetime | None = None
) -> int:
    """Validate the file (RulesError, exit status 2, on a mistake), then print each rule's
    value now; 1 when a rule could not be measured, else 0."""
    stream = out or sys.stdout
    path = path or settings.alerts_path
    if path is None:
        raise UsageError(
            "no rules file: pass FILE, set CALLSTATUS_ALERTS, or put alerts.toml in this folder"
        )
    config = rules.load(path)
    rules.require_settings(config, settings)
    config = rules.as_stored(config, settings)
    print(f"{path}: {_summary(config)}: valid", file=stream)
    moment = now or datetime.now(UTC)
    # Imported here: Streamlit's caches log a warning at import that no Streamlit server runs,
    # which is true and only noise in a command's output.
    streamlit_logger.set_log_level(logging.ERROR)
    from callstatus.alerts.metrics import measure
    from callstatus.alerts.reports import next_due
    from callstatus.dashboard import connection

    for report in config.reports:
        zone = ZoneInfo(report.every.zone)
        due = next_due(report.every, moment).astimezone(zone)
        print(
            f"report {report.name!r}: every {report.every.text}, covering the last "
            f"{rules.show_duration(report.range)}, to {', '.join(report.channels)}; "
            f"next at {due:%Y-%m-%d %H:%M} {report.every.zone}",
            file=stream,
        )
    if not config.rules:
        return 0
    with _reading(settings, stream) as status:
        if status is None:
            return 0
        try:
            rel = connection.relations()
        except duckdb.Error as exc:
            raise UsageError(
                f"cannot read {settings.db}: {one_line(exc)}; is it a callstatus database?"
            ) from None
        failed = 0
        for rule in config.rules:
            try:
                evaluation = measure(rule, rel, moment, status)
            except Exception as exc:
                failed += 1
                print(f"{_head(rule)}: could not be measured: {one_line(exc)}", file=stream)
                continue
            print(f"{_head(rule)}: {describe(rule, evaluation)}", file=stream)
    return 1 if failed else 0


def _summary(config: AlertsConfig) -> str:
    counts = (
        (len(config.channels), "channel"),
        (len(config.rules), "rule"),
        (len(config.reports), "report"),
    )
    return ", ".join(f"{n} {word}{'' if n == 1 else 's'}" for n, word in counts)


def _head(rule: Rule) -> str:
    where = f" (line {rule.line})" if rule.line is not None else ""
    return f"rule {rule.name!r}{where}"


def describe(rule: Rule, evaluation: Evaluation) -> str:
    """One rule's value now, its condition, and the verdict, in words."""
    metric = rules.METRICS[rule.metric]
    window = rules.window_label(rule)
    measured = f"{rule.metric} over {window}" if window else rule.metric
    volume = "" if evaluation.volume is None else f" ({evaluation.volume} {metric.volume})"
    condition = rules.describe_condition(rule)
    if evaluation.threshold is not None and rule.drop is not None:
        condition += f" (< {format_value(rule.metric, evaluation.threshold)})"
    if evaluation.value is None:
        if evaluation.volume is not None and evaluation.volume < rule.min_volume:
            why = f"fewer than min_volume {rule.min_volume}"
        elif rule.drop is not None and evaluation.threshold is None:
            why = "no baseline: nothing in the same window on the days before"
        else:
            why = "no data"
        return f"{measured} = none{volume}; {condition}: no verdict ({why})"
    value = format_value(rule.metric, evaluation.value)
    if not evaluation.condition:
        verdict = "ok"
    elif rule.for_:
        verdict = f"crossed (fires once it holds for {rules.show_duration(rule.for_)})"
    else:
        verdict = "crossed (fires)"
    return f"{measured} = {value}{volume}; {condition}: {verdict}"


def format_value(metric: str, value: float) -> str:
    """0.4194 (41.9%) for fractions, 3.2 for the rest."""
    if rules.METRICS[metric].unit == "fraction":
        return f"{value:.4g} ({value:.1%})"
    return f"{value:.4g}"


@contextmanager
def _reading(settings: Settings, out: TextIO) -> Iterator[ReceiverStatus | None]:
    """The receiver's status while the dashboard's queries read the data; None (said why) when
    there is nothing to read."""
    installed = server.installed()
    if installed is not None:  # inside a serving process: its own database
        yield installed.status()
        return
    database = _open(settings, out)
    if database is None:
        yield None
        return
    # Spooled webhooks are files: they are counted without the server (which, if running,
    # may be replaying some of them right now).
    status = ReceiverStatus(Spool(settings.spool_dir).depth(), 0, None, None)
    server.install(ServerHandle(settings, database, None, lambda: status))
    try:
        yield status
    finally:
        server.install(None)
        database.close()


def _open(settings: Settings, out: TextIO) -> Database | None:
    """The database read-only, else the snapshot of the server that holds it."""
    if not settings.db.exists():
        print(f"no database at {settings.db}: values not measured", file=out)
        return None
    try:
        database = Database(settings.db, read_only=True)
    except duckdb.Error as exc:
        if not held_by_another_process(exc):
            raise UsageError(f"cannot open {settings.db}: {one_line(exc)}") from None
    else:
        print(f"values from {settings.db}", file=out)
        return database
    age = age_s(settings.snapshot_path)
    if age is None:
        print(
            f"{settings.db} is held by a running server that has not written its snapshot "
            f"{settings.snapshot_path} yet: values not measured (the Alerts page shows them)",
            file=out,
        )
        return None
    print(
        f"values from the snapshot {settings.snapshot_path}, written {age:.0f} s ago "
        "(a server holds the database)",
        file=out,
    )
    return Database(settings.snapshot_path, read_only=True)
