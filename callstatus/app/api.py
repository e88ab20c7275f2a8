"""The process's HTTP API beside the webhooks: /healthz, /metrics and /api/ (FastAPI).

The OpenAPI document is at /api/openapi.json and the interactive docs at /api/docs (their
scripts load from a CDN in the reader's browser); the document describes the webhook paths too
(callstatus.app.openapi), though raw ASGI endpoints serve them. Everything here answers in the
one JSON error shape, never with a redirect (one would be built from the Host header). /metrics
and /api/ sit behind the dashboard's password and take the API tokens too (callstatus.app.
password); /healthz tells anyone its status and the operator (with either, or when there is
none) its details. The read API, /api/v1/, is callstatus.app.api_v1.
"""

from __future__ import annotations

import copy
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute

from callstatus.app import api_v1, api_v1_analytics
from callstatus.app.erase_api import add_erase_route
from callstatus.app.openapi import ERROR_REF, add_security, add_webhooks, use_error_shape
from callstatus.app.password import BasicAuth, PasswordMiddleware, Verdict, too_many_failures
from callstatus.app.reconcile_api import add_reconcile_route
from callstatus.app.runtime import Runtime
from callstatus.receiver import metrics
from callstatus.receiver.errors import RequestRefused, error_response
from callstatus.receiver.intake import WebhookWriter

TITLE = "callstatus"
VERSION = "0.1.0"
DESCRIPTION = (
    "Stores every Plivo voice webhook in DuckDB and shows a dashboard. When DASHBOARD_PASSWORD "
    "or CALLSTATUS_API_TOKENS is set, /metrics and /api/ need DASHBOARD_PASSWORD (HTTP Basic, "
    "any user name) or, to read, `Authorization: Bearer <one of CALLSTATUS_API_TOKENS>`."
)
API_REFUSAL = "the API needs DASHBOARD_PASSWORD (HTTP Basic) or a token from CALLSTATUS_API_TOKENS"
_CODES = {404: "not_found", 405: "method_not_allowed"}
_METHOD_ORDER = ("GET", "HEAD", "POST")


def _method_order(method: str) -> tuple[int, str]:
    return (_METHOD_ORDER.index(method) if method in _METHOD_ORDER else len(_METHOD_ORDER), method)


def health_details(rt: Runtime, writer: WebhookWriter | None) -> dict[str, Any]:
    """/healthz's whole answer: for the operator (behind the password, when there is one).
    In clustered mode `database` is PostgreSQL's write path, and `postgres` and `receiver`
    say more; a dashboard (no writer) reports on its database and jobs."""
    status = rt.status()
    database = "ok" if status.last_error is None else status.last_error
    last = writer.last_event_at if writer is not None else None
    body: dict[str, Any] = {
        "status": "ok" if database == "ok" and status.spool_depth == 0 else "degraded",
        "role": rt.role,
        "database": database,
        "writer_queue_depth": status.writer_queue,
        "last_event_at": last.isoformat() if last else None,
        "spool_depth": status.spool_depth,
        "snapshot_age_s": status.snapshot_age_s,
        "signature_checks": "off (development mode)" if rt.settings.development_mode else "on",
    }
    if rt.pg_writer is not None:
        body["postgres"] = "ok" if rt.pg_writer.postgres_ok else rt.pg_writer.last_error
        body["receiver"] = rt.pg_writer.receiver
    if rt.replica is not None:
        # A dashboard serves its replica while PostgreSQL is away (status stays ok: a load
        # balancer should keep it), but says the replica is not being brought up to date.
        replica = rt.replica
        if replica.last_error is not None:
            body["replica"] = replica.last_error
        else:
            body["replica"] = "ok" if replica.last is not None else "not synced yet"
    return body


_HEALTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": '`{"status": "ok"}`; with the password (or none set) the details too: '
        "role, database, writer_queue_depth, last_event_at, spool_depth, snapshot_age_s, "
        "signature_checks; in clustered mode (CALLSTATUS_POSTGRES_URL) a receiver adds "
        "postgres (ok, or why it takes no writes) and receiver (host:port), and a dashboard "
        "replica (ok, or why its replica is not being synced from PostgreSQL)."
    },
    503: {
        "description": '`{"status": "degraded"}` (the database, or PostgreSQL in clustered mode, '
        "refuses writes or webhooks wait in the spool; details as for 200) or "
        '`{"status": "starting"}`.'
    },
    429: {
        "description": "Too many wrong passwords from this address.",
        "content": {"application/json": {"schema": ERROR_REF}},
    },
}


def api_auth(rt: Runtime, auth: BasicAuth | None) -> BasicAuth | None:
    """The API's check: the dashboard's (`auth`, None without a password) plus the API tokens,
    failures counted in the same limiter. The tokens never open the dashboard: they sit in
    Grafana's and bots' configurations, and the dashboard's SQL page reads everything stored."""
    tokens = rt.settings.api_tokens
    if not tokens:
        return auth
    if auth is None:
        # The local token too: `callstatus reconcile` reaches the server through /api/.
        return BasicAuth(None, local_token=rt.local_token, api_tokens=tokens)
    return auth.with_api_tokens(tokens)


def build_api(rt: Runtime, auth: BasicAuth | None) -> FastAPI:
    auth = api_auth(rt, auth)
    api = FastAPI(
        title=TITLE,
        version=VERSION,
        description=DESCRIPTION,
        openapi_url="/api/openapi.json",
        docs_url="/api/docs",
        redoc_url=None,
        redirect_slashes=False,
    )

    async def healthz(request: Request) -> Response:
        """200 {"status": "ok"} or 503 {"status": "degraded"} for anyone (load balancers,
        monitors); the details too with the dashboard's password, or when there is none."""
        writer = rt.intake.writer
        if writer is None if rt.receives else not rt.running:
            return JSONResponse({"status": "starting"}, status_code=503)
        body = health_details(rt, writer)
        status = 200 if body["status"] == "ok" else 503
        if auth is not None:
            verdict, retry_after = auth.check(request.scope)
            if verdict is Verdict.LOCKED:
                return too_many_failures(retry_after)
            if verdict is not Verdict.OK:
                # Paths, database errors and queue depths are for the operator only.
                body = {"status": body["status"]}
        return JSONResponse(body, status_code=status)

    # /healthz/ answered in place, not redirected.
    api.add_api_route(
        "/healthz", healthz, methods=["GET", "HEAD"], tags=["Health"], responses=_HEALTH_RESPONSES
    )
    api.add_api_route("/healthz/", healthz, methods=["GET", "HEAD"], include_in_schema=False)

    @api.get("/metrics", tags=["Health"], response_class=Response)
    def prometheus_metrics() -> Response:
        """Prometheus metrics of the receiver and the writer."""
        writer = rt.intake.writer
        if writer is not None:
            metrics.QUEUE_DEPTH.set(writer.queue_depth())
        metrics.SPOOL_DEPTH.set(rt.spool_depth())
        return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)

    add_reconcile_route(api, rt)
    add_erase_route(api, rt)
    api.include_router(api_v1.router)
    api.include_router(api_v1_analytics.router)

    def openapi() -> dict[str, Any]:
        if api.openapi_schema is None:
            schema = get_openapi(
                title=TITLE,
                version=VERSION,
                description=DESCRIPTION,
                routes=[_without_head(route) for route in api.routes],
            )
            api.openapi_schema = add_security(use_error_shape(add_webhooks(schema)))
        return api.openapi_schema

    api.openapi = openapi  # type: ignore[method-assign]
    api.add_exception_handler(HTTPException, _http_error)
    api.add_exception_handler(RequestValidationError, _invalid_request)
    api.add_exception_handler(RequestRefused, _refused)
    api.add_exception_handler(Exception, _internal_error)
    if auth is not None:
        api.add_middleware(PasswordMiddleware, auth=auth, refusal=API_REFUSAL)
    return api


def _without_head(route: BaseRoute) -> BaseRoute:
    """The route as documented: HEAD answers like GET without a body, so only GET is listed
    (FastAPI would give both one operation id)."""
    if not isinstance(route, APIRoute) or "HEAD" not in (route.methods or ()):
        return route
    documented = copy.copy(route)
    documented.methods = (route.methods or set()) - {"HEAD"}
    return documented


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    status = exc.status_code
    if status == 404:
        message = f"nothing at {request.scope['path']}"
    elif status == 405:
        # Starlette lists a route's methods in set order.
        allowed = sorted((exc.headers or {}).get("Allow", "").split(", "), key=_method_order)
        exc.headers = {"Allow": ", ".join(allowed)}
        message = f"use {exc.headers['Allow']}"
    else:
        message = str(exc.detail)
    response = error_response(status, _CODES.get(status, "http_error"), message)
    response.headers.update(exc.headers or {})
    return response


async def _invalid_request(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    # Each failure as "where: why"; the exception's own text names our source files.
    problems = [
        f"{'.'.join(str(part) for part in error.get('loc', ())[1:]) or 'request'}: "
        f"{error.get('msg', 'invalid')}"
        for error in exc.errors()
    ]
    return error_response(400, "invalid_request", "; ".join(problems) or "invalid request")


async def _refused(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestRefused)
    return error_response(exc.status, exc.code, exc.message)


async def _internal_error(request: Request, exc: Exception) -> Response:
    return error_response(500, "internal_error", "the server failed; see its log")
