"""The dashboard's password: HTTP Basic (any user name) for the dashboard, /metrics, /api/ and
/healthz's details, with a limit on failed logins per client address; the API also takes
Bearer tokens (CALLSTATUS_API_TOKENS), counted in the same limit."""

from __future__ import annotations

import base64
import hmac
import ipaddress
import math
import time
from collections.abc import Callable, Iterable
from enum import Enum

from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from callstatus.receiver.errors import error_response

# Paths anyone may call: Plivo's webhooks, and /healthz (its details are checked in place).
OPEN_PREFIXES = ("/plivo/", "/healthz")

# After this many wrong passwords from one address within WINDOW_S, every login attempt from
# it gets a 429 until the window ends, the right password included.
MAX_FAILURES = 10
WINDOW_S = 60.0
# Addresses tracked at once (about 200 bytes each); past it the oldest entry is dropped.
MAX_TRACKED = 10_000
# What an API token may do: read. POST /api/reconcile makes the server call Plivo's API, and
# POST /api/erase removes calls: the password or the server's local token only.
TOKEN_METHODS = frozenset({"GET", "HEAD"})
DASHBOARD_REFUSAL = "the dashboard needs DASHBOARD_PASSWORD"


class Verdict(Enum):
    OK = "ok"
    MISSING = "missing"  # no credentials offered
    WRONG = "wrong"
    LOCKED = "locked"  # too many failures: not even checked
    READ_ONLY = "read_only"  # an API token, on a method that changes something


def client_key(scope: Scope) -> str:
    """Who a failure counts against: the client address (uvicorn puts the proxy's
    X-Forwarded-For there when the proxy is trusted), IPv6 by /64 network."""
    client = scope.get("client")
    host = str(client[0]) if client else "unknown"
    if ":" in host:
        try:
            address = ipaddress.IPv6Address(host)
        except ValueError:
            return host
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return host


class LoginLimiter:
    """Failed logins per address in fixed windows of WINDOW_S, bounded in memory."""

    def __init__(
        self,
        max_failures: int = MAX_FAILURES,
        window_s: float = WINDOW_S,
        max_tracked: int = MAX_TRACKED,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self.max_tracked = max_tracked
        self.clock = clock
        # address -> [window start, failures]; insertion order is window-start order.
        self.failures: dict[str, list[float]] = {}

    def retry_after(self, key: str) -> int:
        """Seconds until `key` may try again; 0 when it may now."""
        entry = self.failures.get(key)
        if entry is None or entry[1] < self.max_failures:
            return 0
        left = entry[0] + self.window_s - self.clock()
        if left <= 0:
            del self.failures[key]
            return 0
        return max(1, math.ceil(left))

    def fail(self, key: str) -> None:
        now = self.clock()
        entry = self.failures.get(key)
        if entry is not None and now - entry[0] < self.window_s:
            entry[1] += 1
            return
        if entry is not None:
            del self.failures[key]  # re-inserted last: a new window
        while len(self.failures) >= self.max_tracked:
            del self.failures[next(iter(self.failures))]
        self.failures[key] = [now, 1]


class BasicAuth:
    """The one credentials check, shared by the middleware and /healthz's details: the
    password (HTTP Basic), the local token and, on the API only, the API tokens (Bearer)."""

    def __init__(
        self,
        password: str | None,
        limiter: LoginLimiter | None = None,
        *,
        local_token: str | None = None,
        api_tokens: Iterable[str] = (),
    ) -> None:
        self.password = password.encode() if password else None
        self.limiter = limiter or LoginLimiter()
        # `Authorization: Bearer <token>` from the server's file (callstatus.app.runtime), for
        # commands run on this machine by the user who started the server.
        self.local_token = local_token.encode() if local_token else None
        self.api_tokens = tuple(token.encode() for token in api_tokens if token)

    def with_api_tokens(self, tokens: Iterable[str]) -> BasicAuth:
        """The same check, failures counted in the same limiter, that also accepts these
        Bearer tokens: for the API only, never the dashboard."""
        password = self.password.decode() if self.password else None
        local = self.local_token.decode() if self.local_token else None
        return BasicAuth(password, self.limiter, local_token=local, api_tokens=tokens)

    def challenges(self) -> list[str]:
        """The WWW-Authenticate values a refusal offers: Basic when there is a password (a
        browser then asks for it), Bearer when API tokens are accepted."""
        offered = []
        if self.password is not None:
            offered.append('Basic realm="callstatus", charset="UTF-8"')
        if self.api_tokens:
            offered.append('Bearer realm="callstatus"')
        return offered

    def check(self, scope: Scope) -> tuple[Verdict, int]:
        """The verdict on a request's credentials, and the Retry-After seconds when LOCKED."""
        header = b""
        for name, value in scope.get("headers", ()):
            if name.lower() == b"authorization":
                header = value
                break
        if not header:
            return Verdict.MISSING, 0  # not a login attempt: the browser is asked for one
        key = client_key(scope)
        retry_after = self.limiter.retry_after(key)
        if retry_after:
            return Verdict.LOCKED, retry_after
        if self._matches(header):
            return Verdict.OK, 0
        if self._is_api_token(header):
            if scope.get("method", "GET") in TOKEN_METHODS:
                return Verdict.OK, 0
            return Verdict.READ_ONLY, 0  # the right token: not a failed login
        self.limiter.fail(key)
        return Verdict.WRONG, 0

    def _matches(self, header: bytes) -> bool:
        scheme, _, encoded = header.partition(b" ")
        if scheme.lower() == b"bearer" and self.local_token is not None:
            return hmac.compare_digest(encoded.strip(), self.local_token)
        if scheme.lower() != b"basic" or self.password is None:
            return False
        try:
            _, _, given = base64.b64decode(encoded.strip(), validate=True).partition(b":")
        except ValueError:
            return False
        return hmac.compare_digest(given, self.password)

    def _is_api_token(self, header: bytes) -> bool:
        scheme, _, given = header.partition(b" ")
        if scheme.lower() != b"bearer":
            return False
        given = given.strip()
        # Every token compared, in constant time each: the time taken says nothing of which
        # token came close.
        found = False
        for token in self.api_tokens:
            found |= hmac.compare_digest(given, token)
        return found


def too_many_failures(retry_after: int) -> Response:
    """429 for an address locked out after too many wrong passwords."""
    response = error_response(
        429,
        "too_many_failed_logins",
        f"too many wrong passwords from this address; try again in {retry_after} s",
    )
    response.headers["retry-after"] = str(retry_after)
    return response


class PasswordMiddleware:
    """The password (and for the API its tokens) in front of everything but the open paths;
    failed logins limited per client address."""

    def __init__(self, app: ASGIApp, auth: BasicAuth, refusal: str = DASHBOARD_REFUSAL) -> None:
        self.app = app
        self.auth = auth
        self.refusal = refusal

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
        if verdict is Verdict.READ_ONLY:
            message = f"API tokens only read ({', '.join(sorted(TOKEN_METHODS))}); use the password"
            await error_response(403, "read_only_token", message)(scope, receive, send)
            return
        response = error_response(401, "unauthorized", self.refusal)
        for challenge in self.auth.challenges():
            response.headers.append("www-authenticate", challenge)
        await response(scope, receive, send)
