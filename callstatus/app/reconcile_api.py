"""POST /api/reconcile: a reconcile run in the server, for `callstatus reconcile` while the
server holds the database. The answer streams JSON lines: progress, then the run's summary."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import FastAPI, Query
from starlette.responses import Response, StreamingResponse

from callstatus.app.runtime import Runtime
from callstatus.receiver.errors import error_response
from callstatus.reconcile.run import Window, window_for

NDJSON = "application/x-ndjson"
# Progress lines at most this often (a page of 20 records takes a few milliseconds).
PROGRESS_EVERY_S = 0.25
NOT_CONFIGURED = (
    "reconciliation is not configured on this server: set PLIVO_AUTH_ID (and PLIVO_API_TOKEN "
    "when the webhook token differs) in its environment and restart it"
)

SINCE = "first end time of the window (ISO 8601; UTC when it has no offset)"
UNTIL = "end of the window (default: now minus CALLSTATUS_RECONCILE_GRACE)"
DAYS = "days before the end (default 1)"


def add_reconcile_route(api: FastAPI, rt: Runtime) -> None:
    @api.post(
        "/api/reconcile",
        tags=["Reconciliation"],
        response_class=StreamingResponse,
        responses={200: {"content": {NDJSON: {}}}},
    )
    async def reconcile_now(
        since: Annotated[
            datetime | None, Query(description="first end time (UTC if no offset)")
        ] = None,
        until: Annotated[datetime | None, Query(description="end of the window (UTC)")] = None,
        days: Annotated[float | None, Query(gt=0, le=90, description="days before the end")] = None,
    ) -> Response:
        """Read Plivo's call records of the calls that ended in the window and store the new
        ones (default: the last day, up to CALLSTATUS_RECONCILE_GRACE seconds ago). Answers
        JSON lines: `{"progress": {"chunks_done", "chunks_total", "records_read"}}`, then
        `{"summary": {...}}` (a reconcile_runs row; its status says whether it failed)."""
        job = rt.reconcile
        if job is None:
            return error_response(409, "reconcile_not_configured", NOT_CONFIGURED)
        if since is not None and days is not None:
            return error_response(400, "invalid_window", "give since or days, not both")
        try:
            window = window_for(
                datetime.now(UTC),
                rt.settings.reconcile_grace_s,
                since=since,
                days=days,
                until=until,
            )
        except ValueError as exc:
            return error_response(400, "invalid_window", str(exc))
        return StreamingResponse(_run(rt, window), media_type=NDJSON)


async def _run(rt: Runtime, window: Window) -> AsyncIterator[str]:
    """Runs in a thread (a run blocks on HTTP and DuckDB); lines reach the client as they come.
    A client that goes away does not stop the run."""
    job = rt.reconcile
    assert job is not None
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
    shown = [0.0, -1]

    def put(item: dict[str, Any] | None) -> None:
        loop.call_soon_threadsafe(lines.put_nowait, item)

    def progress(done: int, total: int, read: int) -> None:
        now = time.monotonic()
        if done != shown[1] or now - shown[0] >= PROGRESS_EVERY_S:
            shown[:] = [now, done]
            put({"progress": {"chunks_done": done, "chunks_total": total, "records_read": read}})

    def work() -> None:
        try:
            summary = job.run(window, trigger="command", progress=progress)
            put({"summary": summary.as_json()})
        except Exception as exc:  # the run's own failures are in its summary: this is a bug
            put({"error": f"{type(exc).__name__}: {exc}"})
        finally:
            put(None)

    threading.Thread(target=work, name="callstatus-reconcile-command", daemon=True).start()
    while (item := await lines.get()) is not None:
        yield json.dumps(item) + "\n"
