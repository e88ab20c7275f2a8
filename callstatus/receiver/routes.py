"""HTTP routes: the seven Plivo webhook paths, /healthz, not-found and /metrics."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from callstatus.app import runtime
from callstatus.core.records import make_record
from callstatus.receiver import metrics, signatures
from callstatus.receiver.auth import BasicAuth, Verdict
from callstatus.receiver.errors import RequestRefused, error_response, too_many_failures
from callstatus.receiver.parsing import (
    MAX_BODY,
    check_content_type,
    merge_params,
    parse_fields,
    read_body,
)
from callstatus.receiver.rejected import RejectedRecord
from callstatus.receiver.writer import WriteFailed
from callstatus.receiver.xml import answer_xml, empty_xml

log = logging.getLogger("callstatus.receiver")

# Headers kept with a refused request: enough to tell a proxy or URL mismatch from a forgery.
KEPT_HEADERS = (
    "host",
    "user-agent",
    "content-type",
    "content-length",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-plivo-signature-v3",
    "x-plivo-signature-ma-v3",
    "x-plivo-signature-v3-nonce",
)

XML = b"application/xml"

# What a webhook path replies after storing: (body, content type or None).
Reply = Callable[[runtime.Runtime, str], tuple[bytes, bytes | None]]


def _xml_answer(rt: runtime.Runtime, base_url: str) -> tuple[bytes, bytes | None]:
    return answer_xml(rt.settings, base_url).encode(), XML


_EMPTY_XML = empty_xml().encode()


def _xml_empty(rt: runtime.Runtime, base_url: str) -> tuple[bytes, bytes | None]:
    return _EMPTY_XML, XML


def _empty(rt: runtime.Runtime, base_url: str) -> tuple[bytes, bytes | None]:
    return b"", None


# path -> (kind stored, reply)
WEBHOOKS: dict[str, tuple[str, Reply]] = {
    "/plivo/answer": ("answer", _xml_answer),
    "/plivo/fallback": ("fallback", _xml_answer),
    "/plivo/dial/action": ("dial_action", _xml_empty),
    "/plivo/dial/callback": ("dial_callback", _empty),
    "/plivo/hangup": ("hangup", _empty),
    "/plivo/ring": ("ring", _empty),
    "/plivo/machine-detection": ("machine_detection", _empty),
}


class WebhookRequest:
    """What a webhook needs of an ASGI request: method, path, query, headers (lower-case
    names, the first of repeated ones). Starlette's Request builds far more per request."""

    __slots__ = ("headers", "method", "path", "scope")

    def __init__(self, scope: Scope) -> None:
        self.scope = scope
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        headers: dict[str, str] = {}
        for name, value in scope["headers"]:
            headers.setdefault(name.decode("latin-1").lower(), value.decode("latin-1"))
        self.headers = headers

    @property
    def query_string(self) -> bytes:
        query: bytes = self.scope.get("query_string", b"")
        return query

    def base_url(self, rt: runtime.Runtime) -> str:
        if rt.settings.public_base_url:
            return rt.settings.public_base_url
        host = self.headers.get("host")
        if not host:
            server = self.scope.get("server") or ("localhost", None)
            host = server[0] if server[1] is None else f"{server[0]}:{server[1]}"
        return f"{self.scope.get('scheme', 'http')}://{host}"

    def signed_url(self, rt: runtime.Runtime) -> str:
        """The URL as Plivo called it: the public base, our path, the query exactly as sent."""
        query = self.query_string.decode("latin-1")
        return self.base_url(rt) + self.path + (f"?{query}" if query else "")


def _require_runtime() -> runtime.Runtime:
    rt = runtime.current()
    if rt is None:
        raise RequestRefused(503, "starting", "the receiver is starting; try again shortly")
    return rt


class WebhookEndpoint:
    """A raw ASGI endpoint for one webhook path. Starlette's Request, Response and routing
    cost about as much per webhook as storing it, so the hot path speaks ASGI directly."""

    def __init__(self, kind: str, reply: Reply) -> None:
        self.kind = kind
        self.reply = reply

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = WebhookRequest(scope)
        try:
            rt = _require_runtime()
            if request.method not in ("GET", "POST"):
                raise RequestRefused(405, "method_not_allowed", "use GET or POST")
            body, content_type = await _receive(rt, request, receive, self.kind, self.reply)
        except RequestRefused as refused:
            metrics.REJECTIONS.labels(refused.code).inc()
            # A webhook the writer could not store is already counted there as "failed".
            if refused.code != "storage_unavailable":
                result = "rejected" if refused.status == 403 else "invalid"
                metrics.WEBHOOKS.labels(self.kind, result).inc()
            await error_response(refused.status, refused.code, refused.message)(
                scope, receive, send
            )
            return
        headers = [(b"content-length", b"%d" % len(body))]
        if content_type:
            headers.append((b"content-type", content_type))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


async def _receive(
    rt: runtime.Runtime, request: WebhookRequest, receive: Receive, kind: str, reply: Reply
) -> tuple[bytes, bytes | None]:
    received_at = datetime.now(UTC)
    if request.method == "GET":
        # Plivo's GET webhooks carry everything in the query string. A GET's body is not
        # read, stored or signed (uvicorn discards it), so it cannot smuggle values in.
        form: dict[str, list[str]] = {}
    else:
        body = await read_body(receive, request.headers)
        check_content_type(request.headers, body)
        form = parse_fields(body, "body")
    query = parse_fields(request.query_string, "query string")
    params = merge_params(query, form)
    signature = "unchecked"
    if rt.settings.auth_tokens:
        url = request.signed_url(rt)
        try:
            signatures.verify(request.method, url, form, request.headers, rt.settings.auth_tokens)
        except signatures.SignatureError as exc:
            _reject(rt, request, exc.reason, url, params, received_at)
            raise RequestRefused(403, exc.reason, str(exc)) from None
        signature = "valid"
    record = make_record(kind, request.method, params, signature, received_at)
    try:
        await rt.writer.store(record)
    except WriteFailed as exc:
        raise RequestRefused(
            503, "storage_unavailable", f"could not store the webhook: {exc}"
        ) from exc
    return reply(rt, request.base_url(rt))


def _reject(
    rt: runtime.Runtime,
    request: WebhookRequest,
    reason: str,
    url: str,
    params: dict[str, str | list[str]],
    received_at: datetime,
) -> None:
    if not rt.rejections.take():
        metrics.REJECTIONS_NOT_STORED.inc()
        return
    headers = {name: request.headers[name] for name in KEPT_HEADERS if name in request.headers}
    headers_json = json.dumps(headers, ensure_ascii=False)
    params_json = json.dumps(params, ensure_ascii=False)
    truncated = _utf8_len(headers_json) + _utf8_len(params_json) + _utf8_len(url) > MAX_BODY
    if truncated:
        # Shares of the 64 KiB row; quoting a JSON text again at most doubles it.
        url = _clip(url, MAX_BODY // 8)
        headers_json = _clip_json(headers_json, MAX_BODY // 8)
        params_json = _clip_json(params_json, MAX_BODY // 4)
    rt.writer.store_rejected(
        RejectedRecord(
            rejected_id=str(uuid.uuid4()),
            received_at=received_at,
            reason=reason,
            path=request.path,
            http_method=request.method,
            checked_url=url,
            headers_json=headers_json,
            params_json=params_json,
            truncated=truncated,
        )
    )
    log.warning("refused %s %s: %s (checked against %s)", request.method, request.path, reason, url)


def _utf8_len(text: str) -> int:
    return len(text.encode("utf-8"))


def _clip(text: str, limit: int) -> str:
    """At most `limit` UTF-8 bytes of `text`, cut on a character boundary."""
    data = text.encode("utf-8")
    return text if len(data) <= limit else data[:limit].decode("utf-8", "ignore")


def _clip_json(text: str, limit: int) -> str:
    if _utf8_len(text) <= limit:
        return text
    return json.dumps({"_truncated": _clip(text, limit)}, ensure_ascii=False)


def health_details(rt: runtime.Runtime) -> dict[str, Any]:
    """/healthz's whole answer: for the operator (behind the password, when there is one)."""
    spool_depth = rt.spool.depth()
    database = "ok" if rt.writer.last_error is None else rt.writer.last_error
    last = rt.writer.last_event_at
    return {
        "status": "ok" if database == "ok" and spool_depth == 0 else "degraded",
        "database": database,
        "writer_queue_depth": rt.writer.queue_depth(),
        "last_event_at": last.isoformat() if last else None,
        "spool_depth": spool_depth,
        "snapshot_age_s": rt.snapshot_age_s(),
        "signature_checks": "off (development mode)" if rt.settings.development_mode else "on",
    }


async def healthz(scope: Scope, receive: Receive, send: Send, auth: BasicAuth | None) -> None:
    """200 {"status": "ok"} or 503 {"status": "degraded"} for anyone (load balancers,
    monitors); the details too with the dashboard's password, or when there is none."""
    rt = runtime.current()
    if rt is None:
        await JSONResponse({"status": "starting"}, status_code=503)(scope, receive, send)
        return
    body = health_details(rt)
    status = 200 if body["status"] == "ok" else 503
    if auth is not None:
        verdict, retry_after = auth.check(scope)
        if verdict is Verdict.LOCKED:
            await too_many_failures(retry_after)(scope, receive, send)
            return
        if verdict is not Verdict.OK:
            # Paths, database errors and queue depths are for the operator only.
            body = {"status": body["status"]}
    await JSONResponse(body, status_code=status)(scope, receive, send)


async def metrics_endpoint(request: Request) -> Response:
    rt = runtime.current()
    if rt is not None:
        metrics.QUEUE_DEPTH.set(rt.writer.queue_depth())
        metrics.SPOOL_DEPTH.set(rt.spool.depth())
    return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)


HEALTHZ_PATHS = ("/healthz", "/healthz/")


def webhook_endpoints() -> dict[str, WebhookEndpoint]:
    """Every webhook path's endpoint, for dispatch by exact path."""
    return {path: WebhookEndpoint(kind, reply) for path, (kind, reply) in WEBHOOKS.items()}


class ReceiverApp:
    """The open paths that are not a webhook: /healthz (and /healthz/, answered in place:
    a redirect would be built from the Host header), a JSON 404 for other /plivo/ and
    /healthz... paths. Every answer in the JSON error shape, no redirects."""

    def __init__(self, auth: BasicAuth | None) -> None:
        self.auth = auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        if path in HEALTHZ_PATHS:
            if scope["method"] not in ("GET", "HEAD"):
                response = error_response(405, "method_not_allowed", "use GET")
                response.headers["allow"] = "GET, HEAD"
                await response(scope, receive, send)
                return
            await healthz(scope, receive, send, self.auth)
            return
        if path.startswith("/plivo/"):
            # Counted: a webhook URL mistyped in Plivo's console loses every event sent to it.
            metrics.REJECTIONS.labels("not_found").inc()
            message = f"no webhook at {path}; see the README for the paths"
        else:
            message = f"nothing at {path}"
        await error_response(404, "not_found", message)(scope, receive, send)


def dashboard_routes() -> list[BaseRoute]:
    """Routes served behind the dashboard's password: /metrics."""
    return [Route("/metrics", metrics_endpoint, methods=["GET"])]
