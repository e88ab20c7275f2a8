"""The Plivo webhook endpoints (raw ASGI), and the JSON 404 for other /plivo/ paths.

Each endpoint is built with the `Intake` of the server (its settings, writer and rejection
budget) when the app is built; the paths, kinds and replies come from callstatus.core.plivo.
PHLO reports (/plivo/phlo) are read and trusted by their own rules (callstatus.receiver.phlo)
and stored by the same writer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import cast

from starlette.types import Receive, Scope, Send

from callstatus.core import plivo
from callstatus.core.numbers import mask_url
from callstatus.core.records import EventRecord, Params, make_record
from callstatus.core.settings import Settings
from callstatus.receiver import metrics, phlo, signatures
from callstatus.receiver.errors import JSON, RequestRefused, error_body
from callstatus.receiver.intake import Intake, WebhookWriter
from callstatus.receiver.parsing import check_content_type, merge_params, parse_fields, read_body
from callstatus.receiver.rejected import refusal
from callstatus.receiver.writer import WriteFailed
from callstatus.receiver.xml import answer_xml, empty_xml

log = logging.getLogger("callstatus.receiver")

XML = b"application/xml"

# What a webhook path replies after storing: (body, content type or None).
ReplyBuilder = Callable[[Settings, str], tuple[bytes, bytes | None]]

_EMPTY_XML = empty_xml().encode()

REPLIES: dict[plivo.Reply, ReplyBuilder] = {
    plivo.Reply.ANSWER_XML: lambda settings, base_url: (
        answer_xml(settings, base_url).encode(),
        XML,
    ),
    plivo.Reply.EMPTY_XML: lambda settings, base_url: (_EMPTY_XML, XML),
    plivo.Reply.EMPTY: lambda settings, base_url: (b"", None),
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

    def base_url(self, settings: Settings) -> str:
        if settings.public_base_url:
            return settings.public_base_url
        host = self.headers.get("host")
        if not host:
            server = self.scope.get("server") or ("localhost", None)
            host = server[0] if server[1] is None else f"{server[0]}:{server[1]}"
        return f"{self.scope.get('scheme', 'http')}://{host}"

    def signed_url(self, settings: Settings) -> str:
        """The URL as Plivo called it: the public base, our path, the query exactly as sent."""
        query = self.query_string.decode("latin-1")
        return self.base_url(settings) + self.path + (f"?{query}" if query else "")


class WebhookEndpoint:
    """A raw ASGI endpoint for one webhook path. Starlette's Request, Response and routing
    cost about as much per webhook as storing it, so the hot path speaks ASGI directly."""

    def __init__(self, webhook: plivo.Webhook, intake: Intake) -> None:
        self.kind = webhook.kind
        self.reply = REPLIES[webhook.reply]
        self.intake = intake

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = WebhookRequest(scope)
        try:
            writer = self.intake.writer
            if writer is None:
                raise RequestRefused(503, "starting", "the receiver is starting; try again shortly")
            if request.method not in ("GET", "POST"):
                raise RequestRefused(405, "method_not_allowed", "use GET or POST")
            body, content_type = await self._receive(writer, request, receive)
        except RequestRefused as refused:
            metrics.REJECTIONS.labels(refused.code).inc()
            # A webhook the writer could not store is already counted there as "failed".
            if refused.code != "storage_unavailable":
                result = "rejected" if refused.status == 403 else "invalid"
                metrics.WEBHOOKS.labels(self.kind, result).inc()
            await send_error(send, refused.status, refused.code, refused.message)
            return
        headers = [(b"content-length", b"%d" % len(body))]
        if content_type:
            headers.append((b"content-type", content_type))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _receive(
        self, writer: WebhookWriter, request: WebhookRequest, receive: Receive
    ) -> tuple[bytes, bytes | None]:
        settings = self.intake.settings
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
        if settings.auth_tokens:
            url = request.signed_url(settings)
            try:
                signatures.verify(request.method, url, form, request.headers, settings.auth_tokens)
            except signatures.SignatureError as exc:
                self._reject(writer, request, exc.reason, url, params, received_at)
                raise RequestRefused(403, exc.reason, str(exc)) from None
            signature = "valid"
        # After the signature check (it needs the numbers as sent), before anything is written.
        params = self.intake.mask(self.kind, params)
        record = make_record(self.kind, request.method, params, signature, received_at)
        await self._store(writer, record)
        return self.reply(settings, request.base_url(settings))

    async def _store(self, writer: WebhookWriter, record: EventRecord) -> None:
        """Return once the record is committed (or spooled); 503 when neither could take it."""
        try:
            await writer.store(record)
        except WriteFailed as exc:
            raise RequestRefused(
                503, "storage_unavailable", f"could not store the webhook: {exc}"
            ) from exc

    def _reject(
        self,
        writer: WebhookWriter,
        request: WebhookRequest,
        reason: str,
        url: str,
        params: Params,
        received_at: datetime,
    ) -> None:
        if not self.intake.rejections.take():
            metrics.REJECTIONS_NOT_STORED.inc()
            return
        # A refused request's numbers are masked like a stored webhook's, its URL's query too.
        params = self.intake.mask(self.kind, params)
        url = mask_url(self.intake.masker, url)
        writer.store_rejected(
            refusal(reason, request.method, request.path, url, request.headers, params, received_at)
        )
        log.warning(
            "refused %s %s: %s (checked against %s)", request.method, request.path, reason, url
        )


class PhloEndpoint(WebhookEndpoint):
    """/plivo/phlo: a PHLO's report as JSON, a form or a query string, trusted when it carries
    PHLO_SECRET or a valid V3 signature (whether or not PLIVO_AUTH_TOKEN is set, nothing else
    passes), stored without the secret."""

    async def _receive(
        self, writer: WebhookWriter, request: WebhookRequest, receive: Receive
    ) -> tuple[bytes, bytes | None]:
        settings = self.intake.settings
        received_at = datetime.now(UTC)
        query, offered = phlo.split_secret(parse_fields(request.query_string, "query string"))
        offered += phlo.header_secrets(request.headers)
        body: phlo.Values = {}
        form: dict[str, list[str]] = {}
        if request.method == "POST":  # a GET's body is neither read nor signed (see above)
            raw = await read_body(receive, request.headers)
            body, form = phlo.read_body(request.headers, raw)
        params = cast(Params, phlo.merge(query, body))
        url = request.signed_url(settings)
        tokens = settings.auth_tokens

        def verify() -> None:
            signatures.verify(request.method, url, form, request.headers, tokens)

        try:
            signature = phlo.authenticate(
                settings.phlo_secret,
                offered,
                phlo.is_signed(request.headers),
                verify if tokens else None,
            )
        except phlo.Unauthenticated as exc:
            # The URL kept and logged is the one checked, less the secret it may carry.
            kept = phlo.without_secret(url)
            self._reject(writer, request, exc.reason, kept, params, received_at)
            raise RequestRefused(403, exc.reason, exc.message) from None
        params = self.intake.mask(self.kind, params)
        record = make_record(self.kind, request.method, params, signature, received_at)
        await self._store(writer, record)
        return self.reply(settings, request.base_url(settings))


async def send_error(send: Send, status: int, code: str, message: str) -> None:
    body = error_body(code, message)
    headers = [(b"content-length", b"%d" % len(body)), (b"content-type", JSON.encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def webhook_endpoints(intake: Intake) -> dict[str, WebhookEndpoint]:
    """Every webhook path's endpoint, for dispatch by exact path."""
    return {
        webhook.path: (PhloEndpoint if webhook.kind == plivo.PHLO_KIND else WebhookEndpoint)(
            webhook, intake
        )
        for webhook in plivo.WEBHOOKS
    }


async def unknown_webhook(scope: Scope, receive: Receive, send: Send) -> None:
    """Any other path under /plivo/: a JSON 404, counted (a webhook URL mistyped in Plivo's
    console loses every event sent to it). Never a redirect: one would be built from Host."""
    metrics.REJECTIONS.labels("not_found").inc()
    path = scope["path"]
    await send_error(send, 404, "not_found", f"no webhook at {path}; see the README for the paths")
