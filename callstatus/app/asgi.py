"""The one ASGI app: the webhook endpoints, the API (/healthz, /metrics, /api/) and Streamlit's
dashboard on one port, built around one Runtime."""

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

from callstatus.app.api import build_api
from callstatus.app.password import BasicAuth, PasswordMiddleware
from callstatus.app.runtime import Runtime
from callstatus.core.settings import Settings
from callstatus.receiver.routes import send_error, unknown_webhook, webhook_endpoints

log = logging.getLogger("callstatus")

DASHBOARD_SCRIPT = Path(__file__).resolve().parent.parent / "dashboard" / "app.py"
WEBHOOK_PREFIX = "/plivo/"
API_PREFIXES = ("/healthz", "/metrics", "/api")


def build_app(settings: Settings, address: tuple[str, int] | None = None) -> CallstatusApp:
    """The app and its Runtime; the database opens when the app's lifespan starts. `address`
    is where `serve` listens (commands on this machine find the server through it)."""
    rt = Runtime(settings, address)

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
        rt.start()
        log.info("callstatus storing webhooks in %s", settings.db)
        try:
            yield None
        finally:
            rt.stop()
            log.info("callstatus stopped: queue drained, database checkpointed and closed")

    # One check (and one failed-login count) for the dashboard, the API and /healthz's details.
    auth = (
        BasicAuth(settings.dashboard_password, local_token=rt.local_token)
        if settings.dashboard_password
        else None
    )
    middleware = [Middleware(PasswordMiddleware, auth=auth)] if auth is not None else []
    dashboard = st.App(str(DASHBOARD_SCRIPT), middleware=middleware, lifespan=lifespan)
    return CallstatusApp(rt, dashboard, build_api(rt, auth), webhook_endpoints(rt.intake))


class CallstatusApp:
    """One ASGI app on one port: a webhook goes straight to its endpoint, other /plivo/ paths to
    a JSON 404, /healthz, /metrics and /api/ to the API, everything else (and the lifespan,
    which starts the runtime) to Streamlit.

    Streamlit's middleware (sessions, path security, password) and any router have nothing to
    do for a webhook and cost about as much as storing it, so webhooks are looked up by exact
    path before anything else.
    """

    def __init__(
        self, runtime: Runtime, dashboard: ASGIApp, api: ASGIApp, webhooks: Mapping[str, ASGIApp]
    ) -> None:
        self.runtime = runtime
        self.dashboard = dashboard
        self.api = api
        self.webhooks = webhooks

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = scope["path"]
            endpoint = self.webhooks.get(path)
            if endpoint is None:
                if path.startswith(WEBHOOK_PREFIX):
                    endpoint = unknown_webhook
                elif path.startswith(API_PREFIXES):
                    endpoint = self.api
            if endpoint is not None:
                try:
                    await endpoint(scope, receive, send)
                except Exception:
                    # A bug, not bad input: logged with its traceback, answered in the JSON
                    # shape (uvicorn's own 500 is text/plain).
                    log.exception("%s %s failed", scope["method"], path)
                    # RuntimeError: the reply had already started; uvicorn closes the connection.
                    with contextlib.suppress(RuntimeError):
                        await send_error(
                            send, 500, "internal_error", "the server failed; see its log"
                        )
                return
        await self.dashboard(scope, receive, send)
