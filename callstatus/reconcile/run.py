"""One reconcile run (Plivo's records of the calls that ended in a window, stored where new),
its record in `reconcile_runs`, and the background job that runs one every interval."""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb

from callstatus.core.db import Database
from callstatus.core.errors import exception_line
from callstatus.core.jobs import PeriodicJob
from callstatus.core.numbers import NumberMasker
from callstatus.core.settings import Settings
from callstatus.reconcile.client import CallApi, CallApiError
from callstatus.reconcile.store import (
    Effect,
    StoreEvents,
    effect,
    insert,
    select_new,
    stored_uuids,
)

log = logging.getLogger("callstatus.reconcile")

# A window re-reads this much before the end of the last run's: Plivo may list a record a
# little after its call ended, and re-reading stores nothing twice.
OVERLAP = timedelta(hours=1)
# Records stored in one commit at most (a chunk's records otherwise): commits cost milliseconds.
FLUSH_RECORDS = 2000
# The window of a run with no earlier one (the first background run, a bare command).
DEFAULT_SPAN = timedelta(days=1)

# progress(chunks done, chunks in the window, records read so far)
Progress = Callable[[int, int, int], None]


class Cancelled(Exception):
    """The server is stopping: the run ends where it is (what it stored stays stored)."""


@dataclass(frozen=True)
class Window:
    """Records of calls that ended in [start, end), both in UTC."""

    start: datetime
    end: datetime

    def chunks(self, chunk: timedelta) -> int:
        return max(1, math.ceil((self.end - self.start) / chunk))


def window_for(
    now: datetime,
    grace_s: float,
    *,
    since: datetime | None = None,
    days: float | None = None,
    until: datetime | None = None,
) -> Window:
    """The command's window: --since or --days back from its end (default one day); the end
    --until, else now minus the grace period (calls that just ended may still send webhooks)."""
    end = _utc(until) if until is not None else now - timedelta(seconds=grace_s)
    if since is not None:
        start = _utc(since)
    else:
        start = end - (timedelta(days=days) if days is not None else DEFAULT_SPAN)
    if start >= end:
        raise ValueError(
            f"the window is empty: it starts at {start:%Y-%m-%d %H:%M} UTC and ends at "
            f"{end:%Y-%m-%d %H:%M} UTC"
        )
    return Window(start, end)


@dataclass
class Summary:
    """A run as `reconcile_runs` keeps it."""

    run_id: str
    trigger: str
    started_at: datetime
    window_start: datetime
    window_end: datetime
    finished_at: datetime | None = None
    records_read: int = 0
    records_new: int = 0
    calls_had: int = 0
    calls_completed: int = 0
    calls_added: int = 0
    legs_added: int = 0
    status: str = "running"
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, datetime):
                out[key] = value.isoformat()
        return out

    def one_line(self) -> str:
        """The summary for a log line."""
        return (
            f"{self.records_read} records read, {self.records_new} new: {self.calls_had} calls "
            f"had, {self.calls_completed} completed, {self.calls_added} added, "
            f"{self.legs_added} B legs added ({self.window_start:%Y-%m-%d %H:%M} to "
            f"{self.window_end:%Y-%m-%d %H:%M} UTC)"
        )

    def describe(self) -> str:
        """The summary a person reads after `callstatus reconcile`."""
        window = (
            f"calls that ended {self.window_start:%Y-%m-%d %H:%M} to "
            f"{self.window_end:%Y-%m-%d %H:%M} UTC"
        )
        if self.status == "error":
            return f"reconcile failed after {self.records_read} records ({window}): {self.error}"
        if not self.records_new:
            return (
                f"{self.records_read} call records read ({window}): nothing new, every one "
                "was already stored."
            )
        return (
            f"{self.records_read} call records read ({window}), {self.records_new} new.\n"
            f"  calls we had (webhooks complete):         {self.calls_had}\n"
            f"  calls completed (hangup webhook missing): {self.calls_completed}\n"
            f"  calls added (no webhook at all):          {self.calls_added}\n"
            f"  B legs added (no Dial callback at all):   {self.legs_added}"
        )


def reconcile(
    cur: duckdb.DuckDBPyConnection,
    api: CallApi,
    window: Window,
    settings: Settings,
    *,
    trigger: str,
    progress: Progress | None = None,
    stopping: threading.Event | None = None,
    store: StoreEvents | None = None,
) -> Summary:
    """Read every record of the window and store the new ones (through `store` when given);
    the run is recorded in reconcile_runs as it starts and as it ends. A failure (the Call
    API's, the database's, the server stopping) ends the run with status 'error' and its
    reason: what it stored stays."""
    summary = Summary(
        str(uuid.uuid4()),
        trigger,
        _now(),
        window.start,
        window.end,
    )
    _record(cur, summary)
    total = window.chunks(api.chunk)
    known = stored_uuids(cur, window.start - timedelta(days=1))
    new: list[Mapping[str, Any]] = []
    pending: list[Mapping[str, Any]] = []
    masker = NumberMasker.from_settings(settings)

    def flush() -> None:
        insert(cur, pending, settings.plivo_timezone, _now(), masker, store)
        # Only what classifying them needs: a history import reads millions of fields.
        new.extend(
            {"call_uuid": r["call_uuid"], "parent_call_uuid": r.get("parent_call_uuid")}
            for r in pending
        )
        pending.clear()

    done, chunk_end = 0, None
    try:
        for page in api.pages(window.start, window.end):
            if stopping is not None and stopping.is_set():
                raise Cancelled("the server is stopping")
            if chunk_end is not None and page.chunk_end != chunk_end:
                done += 1
                flush()  # a chunk's records in one commit
            chunk_end = page.chunk_end
            summary.records_read += len(page.records)
            pending.extend(select_new(page.records, known))
            if len(pending) >= FLUSH_RECORDS:
                flush()
            if progress is not None:
                progress(done, total, summary.records_read)
        flush()
        if progress is not None:
            progress(total, total, summary.records_read)
        summary.records_new = len(new)
        _apply(summary, effect(cur, new))
        summary.status = "ok"
    except (CallApiError, Cancelled, duckdb.Error) as exc:
        # What was read is stored: the next run need not read it again.
        with contextlib.suppress(duckdb.Error):
            flush()
        summary.records_new = len(new)
        summary.status = "error"
        summary.error = str(exc)
    except BaseException as exc:
        # Anything else (clustered mode's store losing PostgreSQL, a bug): the run is recorded
        # as failed, not left 'running', and the exception goes on to the caller.
        summary.records_new = len(new)
        summary.status = "error"
        summary.error = exception_line(exc)
        raise
    finally:
        summary.finished_at = _now()
        _record(cur, summary)
    return summary


def _apply(summary: Summary, found: Effect) -> None:
    summary.calls_had = found.calls_had
    summary.calls_completed = found.calls_completed
    summary.calls_added = found.calls_added
    summary.legs_added = found.legs_added


COLUMNS = (
    "run_id", "started_at", "finished_at", "trigger", "window_start", "window_end",
    "records_read", "records_new", "calls_had", "calls_completed", "calls_added", "legs_added",
    "status", "error",
)  # fmt: skip


def _record(cur: duckdb.DuckDBPyConnection, summary: Summary) -> None:
    """Write the run's row, replacing the earlier one (deleted and inserted: no UPDATE, see
    callstatus.core.rollups)."""
    values = {name: getattr(summary, name) for name in COLUMNS}
    cur.execute("BEGIN")
    try:
        cur.execute("DELETE FROM reconcile_runs WHERE run_id = $run_id", {"run_id": summary.run_id})
        cur.execute(
            f"INSERT INTO reconcile_runs ({', '.join(COLUMNS)})"
            f" VALUES ({', '.join('$' + name for name in COLUMNS)})",
            values,
        )
        cur.execute("COMMIT")
    except BaseException:
        cur.execute("ROLLBACK")
        raise


def last_ok_end(cur: duckdb.DuckDBPyConnection) -> datetime | None:
    """The end of the newest window a run read in full."""
    (row,) = cur.execute(
        "SELECT max(window_end) FROM reconcile_runs WHERE status = 'ok'"
    ).fetchall()
    found: datetime | None = row[0]
    return found


def close_interrupted(cur: duckdb.DuckDBPyConnection) -> None:
    """Runs left 'running' by a process that stopped during them, recorded as failed. Run at
    start, before any reader is open (an UPDATE then holds no checkpoint back)."""
    cur.execute(
        "UPDATE reconcile_runs SET status = 'error', finished_at = coalesce(finished_at, now()),"
        " error = 'interrupted: the server stopped during the run' WHERE status = 'running'"
    )


class ReconcileJob:
    """Reconciles every CALLSTATUS_RECONCILE_INTERVAL seconds over the window since the last
    run's end minus OVERLAP, up to CALLSTATUS_RECONCILE_GRACE seconds ago; and runs the
    `callstatus reconcile` command for it while the server holds the database. One run at a
    time."""

    def __init__(
        self,
        database: Database,
        settings: Settings,
        store: StoreEvents | None = None,
    ) -> None:
        self.database = database
        self.settings = settings
        self.store = store  # clustered mode: records go to PostgreSQL (see `reconcile`)
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self.loop = PeriodicJob(
            "reconcile", self.run_due, settings.reconcile_interval_s, run_at_stop=False
        )

    def start(self) -> None:
        close_interrupted(self.database.cursor())
        if self.settings.reconcile_interval_s > 0:
            self.loop.start()

    def run_due(self) -> Summary | None:
        """The background run: from where the last one ended (minus OVERLAP) to now minus the
        grace period; the last day when there was none."""
        cur = self.database.cursor()
        end = _now() - timedelta(seconds=self.settings.reconcile_grace_s)
        last = last_ok_end(cur)
        start = last - OVERLAP if last is not None else end - DEFAULT_SPAN
        if start >= end:
            return None
        summary = self.run(Window(start, end), trigger="job")
        if summary.status == "error":
            # PeriodicJob logs it and tries again at the next interval.
            raise RuntimeError(summary.describe())
        if summary.records_new:
            log.info("reconcile: %s", summary.one_line())
        return summary

    def run(self, window: Window, *, trigger: str, progress: Progress | None = None) -> Summary:
        with self._lock:
            api = CallApi.from_settings(self.settings, sleep=self._sleep)
            try:
                return reconcile(
                    self.database.cursor(),
                    api,
                    window,
                    self.settings,
                    trigger=trigger,
                    progress=progress,
                    stopping=self.stopping,
                    store=self.store,
                )
            finally:
                api.close()

    def _sleep(self, seconds: float) -> None:
        # Backoff waits end at once when the server stops.
        if self.stopping.wait(seconds):
            raise Cancelled("the server is stopping")

    def stop(self) -> None:
        self.stopping.set()
        self.loop.stop()


def _now() -> datetime:
    return datetime.now(UTC)


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
