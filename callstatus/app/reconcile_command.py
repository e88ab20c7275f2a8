"""`callstatus reconcile`: Plivo's call records of a window, stored where new. Through the running
server when one holds the database (POST /api/reconcile), else in this process: in clustered
mode (CALLSTATUS_POSTGRES_URL) the records then go to PostgreSQL as the server stores them, and
the local file, a replica, is synced from it first (callstatus.app.replica_sync) and after each
commit."""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import duckdb
import requests

from callstatus.app import held_server
from callstatus.app.replica_sync import replica_sync
from callstatus.core import rollups
from callstatus.core.db import Database, held_by_another_process
from callstatus.core.errors import CommandError, UsageError, exception_line
from callstatus.core.progress import Progress
from callstatus.core.settings import Settings
from callstatus.reconcile.client import CallApi, CallApiError
from callstatus.reconcile.run import Summary, Window, close_interrupted, reconcile, window_for

if TYPE_CHECKING:
    from callstatus.cluster.sync import SyncJob

LABEL = "reconcile"
NOT_CONFIGURED = (
    "reading Plivo's call records needs PLIVO_AUTH_ID and a token (PLIVO_API_TOKEN, or "
    "PLIVO_AUTH_TOKEN): set them from the API keys in Plivo's console"
)


@dataclass(frozen=True)
class ReconcileOptions:
    since: str | None = None
    days: float | None = None
    until: str | None = None


def run_reconcile(options: ReconcileOptions, settings: Settings) -> int:
    if not settings.reconcile_configured:
        raise UsageError(NOT_CONFIGURED)
    if options.days is not None and not 0 < options.days <= 90:
        raise UsageError(
            f"--days must be more than 0 and at most 90 (Plivo keeps 90), got {options.days:g}"
        )
    since, until = _moment(options.since, "--since"), _moment(options.until, "--until")
    try:
        now, grace_s = datetime.now(UTC), settings.reconcile_grace_s
        window = window_for(now, grace_s, since=since, days=options.days, until=until)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    try:
        database = Database(settings.db, memory_limit=settings.memory_limit)
    except duckdb.Error as exc:
        if not held_by_another_process(exc):
            raise
        summary = _through_server(settings, options)
    else:
        try:
            summary = _here(database, settings, window)
        finally:
            database.close()
    print(summary.describe())
    return 0 if summary.status == "ok" else 1


def _moment(text: str | None, flag: str) -> datetime | None:
    """YYYY-MM-DD (midnight UTC) or an ISO 8601 time (UTC when it has no offset)."""
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(
            f"{flag} {text!r} is not a date: use YYYY-MM-DD or YYYY-MM-DDTHH:MM (UTC)"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _here(database: Database, settings: Settings, window: Window) -> Summary:
    """No server holds the file: run in this process, then bring the rollups up to date. In
    clustered mode the records are stored in PostgreSQL and copied into the replica at once,
    as the server's job does (callstatus.cluster.replica_records)."""
    cur = database.cursor()
    close_interrupted(cur)
    with replica_sync(database, settings, STORES_IN_POSTGRES, "nothing was read") as replica:
        summary = _run(cur, settings, window, replica)
    rollups.refresh(cur)
    return summary


def _run(
    cur: duckdb.DuckDBPyConnection, settings: Settings, window: Window, replica: SyncJob | None
) -> Summary:
    try:
        api = CallApi.from_settings(settings)
    except CallApiError as exc:
        raise UsageError(str(exc)) from exc
    store = None
    if replica is not None:
        from callstatus.cluster.replica_records import RecordStore

        assert settings.postgres_url is not None
        store = RecordStore(
            settings.postgres_url,
            settings.plivo_timezone,
            f"reconcile-command@{socket.gethostname()}",
            replica.sync_now,
        )
    progress = Progress(window.chunks(api.chunk), LABEL)
    last = [0]

    def advance(done: int, total: int, read: int) -> None:
        progress.advance(done - last[0], f"{read:,} records")
        last[0] = done

    try:
        return reconcile(
            cur, api, window, settings, trigger="command", progress=advance, store=store
        )
    except Exception as exc:
        if replica is None or not _postgres_failed(exc):
            raise
        raise CommandError(
            f"PostgreSQL failed during the run ({exception_line(exc)}): the records it took before "
            "stay stored there; run the command again once PostgreSQL is reachable"
        ) from exc
    finally:
        api.close()
        progress.close()


STORES_IN_POSTGRES = "clustered mode stores Plivo's call records in PostgreSQL"


def _postgres_failed(exc: BaseException) -> bool:
    """PostgreSQL could not be reached or read (psycopg's errors), or the replica was built
    from another PostgreSQL (callstatus.cluster.sync.ReplicaMismatch)."""
    import psycopg

    from callstatus.cluster.sync import ReplicaMismatch

    return isinstance(exc, psycopg.Error | ReplicaMismatch)


def _through_server(settings: Settings, options: ReconcileOptions) -> Summary:
    """Ask the server that holds the database; show its progress as it streams."""
    params = {k: v for k, v in {"since": options.since, "until": options.until}.items() if v}
    if options.days is not None:
        params["days"] = str(options.days)
    with held_server.ask(settings, "/api/reconcile", params=params, stream=True) as response:
        return _follow(response)


def _follow(response: requests.Response) -> Summary:
    progress: Progress | None = None
    shown = 0
    try:
        for line in response.iter_lines():
            if not line:
                continue
            item: dict[str, Any] = json.loads(line)
            if "progress" in item:
                p = item["progress"]
                if progress is None:
                    progress = Progress(int(p["chunks_total"]), LABEL)
                progress.advance(int(p["chunks_done"]) - shown, f"{p['records_read']:,} records")
                shown = int(p["chunks_done"])
            elif "summary" in item:
                return _summary(item["summary"])
            elif "error" in item:
                raise CommandError(f"the server's reconcile run failed: {item['error']}")
    finally:
        if progress is not None:
            progress.close()
    raise CommandError("the server ended the answer before the run's summary: see its log")


def _summary(data: dict[str, Any]) -> Summary:
    times = ("started_at", "window_start", "window_end", "finished_at")
    values: dict[str, Any] = {
        k: (datetime.fromisoformat(v) if k in times and v else v) for k, v in data.items()
    }
    return Summary(**values)
