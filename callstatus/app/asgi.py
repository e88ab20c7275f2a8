"""The one ASGI app: the webhook endpoints, the API (/healthz, /metrics, /api/) and Streamlit's
dashboard on one port, built around one Runtime. `serve --role receiver` serves the webhooks,
/healthz and /metrics only (no Streamlit); `--role dashboard` everything but the webhooks."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from starlette.middleware import Middleware
from starlette.types import ASGIApp, Receive, Scope, Send

from callstatus.app.api import build_api
from callstatus.app.password import BasicAuth, PasswordMiddleware
from callstatus.app.runtime import Role, Runtime
from callstatus.core.settings import Settings
from callstatus.receiver.routes import send_error, unknown_webhook, webhook_endpoints

log = logging.getLogger("callstatus")

DASHBOARD_SCRIPT = Path(__file__).resolve().parent.parent / "dashboard" / "app.py"
WEBHOOK_PREFIX = "/plivo/"
API_PREFIXES = ("/healthz", "/metrics", "/api")
RECEIVER_API_PREFIXES = ("/healthz", "/metrics")
NOT_A_RECEIVER = (
    "this process is a dashboard (serve --role dashboard) and takes no webhooks: point Plivo "
    "at a receiver (serve --role receiver or --role all)"
)
NOT_A_DASHBOARD = (
    "this process is a receiver (serve --role receiver): it serves /plivo/..., /healthz and "
    "/metrics only; the dashboard and /api/ are on a dashboard (serve --role dashboard)"
)


def build_app(
    settings: Settings, address: tuple[str, int] | None = None, role: Role = "all"
) -> CallstatusApp:
    """The app and its Runtime; the database opens when the app's lifespan starts. `address`
    is where `serve` listens (commands on this machine find the server through it)."""
    rt = Runtime(settings, address, role)

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
        log.info("callstatus (role %s) %s", role, _stores(rt))
        try:
            yield None
        finally:
            rt.stop()
            if role == "receiver":
                log.info("callstatus stopped: queue drained into PostgreSQL or the spool")
            else:
                log.info("callstatus stopped: queue drained, database checkpointed and closed")

    # One check (and one failed-login count) for the dashboard, the API and /healthz's details.
    auth = (
        BasicAuth(settings.dashboard_password, local_token=rt.local_token)
        if settings.dashboard_password
        else None
    )
    api = build_api(rt, auth)
    if role == "receiver":
        return CallstatusApp(
            rt, ReceiverOnly(lifespan), api, webhook_endpoints(rt.intake), RECEIVER_API_PREFIXES
        )
    # Imported only where the dashboard is served: a receiver runs without Streamlit.
    import streamlit as st

    middleware = [Middleware(PasswordMiddleware, auth=auth)] if auth is not None else []
    dashboard = st.App(str(DASHBOARD_SCRIPT), middleware=middleware, lifespan=lifespan)
    webhooks = webhook_endpoints(rt.intake) if rt.receives else {}
    return CallstatusApp(rt, dashboard, api, webhooks)


def _stores(rt: Runtime) -> str:
    settings = rt.settings
    if rt.role == "dashboard":
        return f"serving a replica of PostgreSQL's webhooks in {settings.db}"
    if rt.pg_writer is not None:
        where = f"storing webhooks in PostgreSQL as receiver {rt.pg_writer.receiver}"
        return where if rt.role == "receiver" else f"{where}, replica in {settings.db}"
    return f"storing webhooks in {settings.db}"


class ReceiverOnly:
    """What a receiver serves beside the webhooks and the API: the lifespan (which starts the
    runtime), and a JSON 404 for anything else (the dashboard is elsewhere)."""

    def __init__(self, lifespan: Any) -> None:
        self.lifespan = lifespan

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _run_lifespan(self.lifespan, receive, send)
            return
        if scope["type"] == "http":
            await send_error(send, 404, "not_found", NOT_A_DASHBOARD)


async def _run_lifespan(lifespan: Any, receive: Receive, send: Send) -> None:
    """The ASGI lifespan protocol around an async context manager factory."""
    message = await receive()
    assert message["type"] == "lifespan.startup"
    context = lifespan(None)
    try:
        await context.__aenter__()
    except Exception as exc:
        log.exception("startup failed")
        await send({"type": "lifespan.startup.failed", "message": str(exc)})
        return
    await send({"type": "lifespan.startup.complete"})
    message = await receive()
    assert message["type"] == "lifespan.shutdown"
    try:
        await context.__aexit__(None, None, None)
    except Exception as exc:
        log.exception("shutdown failed")
        await send({"type": "lifespan.shutdown.failed", "message": str(exc)})
        return
    await send({"type": "lifespan.shutdown.complete"})


async def not_a_receiver(scope: Scope, receive: Receive, send: Send) -> None:
    """A webhook path on a dashboard: 503 in the JSON shape, saying where webhooks go."""
    await send_error(send, 503, "not_a_receiver", NOT_A_RECEIVER)


class CallstatusApp:
    """One ASGI app on one port: a webhook goes straight to its endpoint, other /plivo/ paths to
    a JSON 404, /healthz, /metrics and /api/ to the API, everything else (and the lifespan,
    which starts the runtime) to Streamlit.

    Streamlit's middleware (sessions, path security, password) and any router have nothing to
    do for a webhook and cost about as much as storing it, so webhooks are looked up by exact
    path before anything else.
    """

    def __init__(
        self,
        runtime: Runtime,
        dashboard: ASGIApp,
        api: ASGIApp,
        webhooks: Mapping[str, ASGIApp],
        api_prefixes: tuple[str, ...] = API_PREFIXES,
    ) -> None:
        self.runtime = runtime
        self.dashboard = dashboard
        self.api = api
        self.webhooks = webhooks
        self.api_prefixes = api_prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = scope["path"]
            endpoint = self.webhooks.get(path)
            if endpoint is None:
                if path.startswith(WEBHOOK_PREFIX):
                    endpoint = unknown_webhook if self.runtime.receives else not_a_receiver
                elif path.startswith(self.api_prefixes):
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
