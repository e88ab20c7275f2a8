"""The one ASGI app: Streamlit's dashboard with the receiver routes beside it."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import streamlit as st
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Receive, Scope, Send

from callstatus.app import runtime
from callstatus.core.settings import Settings
from callstatus.receiver.auth import BasicAuth, Verdict
from callstatus.receiver.errors import error_response, too_many_failures
from callstatus.receiver.routes import ReceiverApp, dashboard_routes, webhook_endpoints

log = logging.getLogger("callstatus")

DASHBOARD_SCRIPT = Path(__file__).resolve().parent.parent / "dashboard" / "app.py"
OPEN_PREFIXES = ("/plivo/", "/healthz")


class PasswordMiddleware:
    """HTTP Basic auth (any user name) for everything but the receiver and /healthz; failed
    logins limited per client address (receiver.auth)."""

    def __init__(self, app: ASGIApp, auth: BasicAuth) -> None:
        self.app = app
        self.auth = auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope["path"].startswith(OPEN_PREFIXES):
            await self.app(scope, receive, send)
            return
        verdict, retry_after = self.auth.check(scope)
        if verdict is Verdict.OK:
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        if verdict is Verdict.LOCKED:
            await too_many_failures(retry_after)(scope, receive, send)
            return
        response = error_response(401, "unauthorized", "the dashboard needs DASHBOARD_PASSWORD")
        response.headers["www-authenticate"] = 'Basic realm="callstatus", charset="UTF-8"'
        await response(scope, receive, send)


def build_app(settings: Settings) -> Any:
    @asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[dict[str, Any] | None]:
        if settings.development_mode:
            log.warning(
                "\n%s\nPLIVO_AUTH_TOKEN is not set: DEVELOPMENT MODE. Webhook signatures are NOT\n"
                "checked and rows are stored with signature='unchecked'. Set PLIVO_AUTH_TOKEN\n"
                "before pointing Plivo at this server.\n%s",
                "!" * 78,
                "!" * 78,
            )
        rt = runtime.Runtime(settings)
        rt.start()
        _start_background_jobs(rt)
        runtime.install(rt)
        log.info("callstatus storing webhooks in %s", settings.db)
        try:
            yield None
        finally:
            runtime.install(None)
            rt.stop()
            log.info("callstatus stopped: queue drained, database checkpointed and closed")

    middleware = []
    # One check (and one failed-login count) for the dashboard and /healthz's details.
    auth = BasicAuth(settings.dashboard_password) if settings.dashboard_password else None
    if auth is not None:
        middleware.append(Middleware(PasswordMiddleware, auth=auth))
    dashboard = st.App(
        str(DASHBOARD_SCRIPT), routes=dashboard_routes(), middleware=middleware, lifespan=lifespan
    )
    return CallstatusApp(dashboard, ReceiverApp(auth), webhook_endpoints())


class CallstatusApp:
    """One ASGI app on one port: a webhook goes straight to its endpoint, other /plivo/ paths
    and /healthz to the receiver's own small dispatcher, everything else (and the lifespan,
    which opens the database) to Streamlit.

    Streamlit's middleware (sessions, path security, password) has nothing to do for a webhook
    and costs about as much as storing it, so webhooks skip it; routing them by an exact-path
    lookup skips the router's pattern matching too.
    """

    def __init__(
        self, dashboard: ASGIApp, receiver: ASGIApp, webhooks: Mapping[str, ASGIApp]
    ) -> None:
        self.dashboard = dashboard
        self.receiver = receiver
        self.webhooks = webhooks

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            endpoint = self.webhooks.get(scope["path"])
            if endpoint is None and scope["path"].startswith(OPEN_PREFIXES):
                endpoint = self.receiver
            if endpoint is not None:
                try:
                    await endpoint(scope, receive, send)
                except Exception:
                    # A bug, not bad input: logged with its traceback, answered in the JSON
                    # shape (uvicorn's own 500 is text/plain).
                    log.exception("%s %s failed", scope["method"], scope["path"])
                    await _internal_error(scope, receive, send)
                return
        await self.dashboard(scope, receive, send)


async def _internal_error(scope: Scope, receive: Receive, send: Send) -> None:
    # RuntimeError: the reply had already started; uvicorn closes the connection.
    with contextlib.suppress(RuntimeError):
        await error_response(500, "internal_error", "the server failed; see its log")(
            scope, receive, send
        )


def _start_background_jobs(rt: runtime.Runtime) -> None:
    """Jobs that run beside the receiver (the analysts' snapshot), if installed."""
    from callstatus.core import rollups

    # First, so that its final refresh at stop lands in the final snapshot (on_stop runs in order).
    rollups.start_background(rt)
    try:
        from callstatus.core import snapshot
    except ImportError:
        return
    snapshot.start_background(rt)
