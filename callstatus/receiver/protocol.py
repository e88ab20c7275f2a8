"""The HTTP protocol on the receiver's port: uvicorn's httptools protocol with limits.

uvicorn closes a keep-alive connection left idle after a response, but not one that never
finishes a request (slowloris, half-sent heads and bodies), and httptools buffers a request
head of any size. This subclass adds, at the cost of a counter per read and a few attribute
writes per request:

- a request deadline: a connection that has not delivered a complete request (head and body)
  within `request_timeout` seconds of its first byte (or of connecting) is closed, with a 408
  when it was still sending its head; one timer per server sweeps the open connections;
- a head size limit: more than MAX_HEAD_BYTES of request line and headers gets a 431;
- a connection cap: at `max_connections` open HTTP connections, a new one closes the oldest
  connection that is waiting on its client (idle, or still sending its request) to make room,
  and is itself closed at once when every open connection has a request being answered;
- httptools' own 400s (malformed requests) in the receiver's JSON error shape (`error_body`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import resource
from dataclasses import dataclass
from typing import Any, ClassVar

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from callstatus.receiver.errors import error_body

log = logging.getLogger("callstatus.connections")

# Request line and headers together. Plivo's heads are under 4 KiB, a GET webhook's query
# string included; nginx's default allows 4 x 8 KiB.
MAX_HEAD_BYTES = 32 * 1024
# Descriptors kept for everything but client connections: the database, its WAL, the
# snapshot, the spool, dashboard websockets, logs.
FD_RESERVE = 256
# How often the limit log line may repeat while the limit keeps being hit.
LOG_EVERY_S = 10.0
# How many open connections a new one looks at, oldest first, for one to close.
EVICTION_SCAN = 64


class HeadTooLarge(Exception):
    """Raised from a parser callback: the request head is over MAX_HEAD_BYTES."""


@dataclass(frozen=True)
class Limits:
    request_timeout: float
    max_connections: int


def error_bytes(
    status: int, code: str, message: str, default_headers: list[tuple[bytes, bytes]]
) -> bytes:
    """A whole HTTP/1.1 response in the JSON error shape, closing the connection."""
    body = error_body(code, message)
    content = [STATUS_LINE[status]]
    for name, value in default_headers:
        content.extend([name, b": ", value, b"\r\n"])
    content.extend(
        [
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n\r\n",
            body,
        ]
    )
    return b"".join(content)


class ConnectionGuard:
    """What the connections of one server share: the open ones, oldest first, the sweeper
    that enforces the request deadline, and the counts behind the rate-limited log line."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.open: dict[GuardedHttpToolsProtocol, None] = {}
        self.sweeper: asyncio.TimerHandle | None = None
        self.sweep_every = min(1.0, max(0.1, limits.request_timeout / 4))
        self.evicted = 0
        self.refused = 0
        self.timed_out = 0
        self.oversized = 0
        self.malformed = 0
        self.last_log = -math.inf

    def admit(self, conn: GuardedHttpToolsProtocol, loop: asyncio.AbstractEventLoop) -> bool:
        """Register a new connection; False when it must be closed at once."""
        if self.sweeper is None:
            self.sweeper = loop.call_later(self.sweep_every, self._sweep, loop)
        if len(self.open) >= self.limits.max_connections and not self._make_room():
            self.refused += 1
            self._log_limits(loop.time())
            return False
        self.open[conn] = None
        return True

    def _make_room(self) -> bool:
        """Close the oldest connection that waits on its client; False when none does."""
        for _ in range(min(EVICTION_SCAN, len(self.open))):
            oldest = next(iter(self.open))
            if oldest.waiting_on_client():
                del self.open[oldest]
                oldest.transport.close()
                self.evicted += 1
                return True
            # Busy (a request being answered): look at it again last.
            del self.open[oldest]
            self.open[oldest] = None
        return False

    def discard(self, conn: GuardedHttpToolsProtocol) -> None:
        self.open.pop(conn, None)

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        started_before = now - self.limits.request_timeout
        for conn in [c for c in self.open if c.since is not None and c.since < started_before]:
            self.timed_out += 1
            self.discard(conn)
            conn.request_timed_out()
        self._log_limits(now)
        self.sweeper = loop.call_later(self.sweep_every, self._sweep, loop)

    def _log_limits(self, now: float) -> None:
        if now - self.last_log < LOG_EVERY_S:
            return
        if self.evicted or self.refused:
            log.warning(
                "connection limit reached (CALLSTATUS_MAX_CONNECTIONS=%d): closed %d idle or "
                "unfinished connections to make room and refused %d new ones",
                self.limits.max_connections,
                self.evicted,
                self.refused,
            )
        if self.timed_out:
            log.warning(
                "closed %d connections that sent no complete request within %g s "
                "(CALLSTATUS_REQUEST_TIMEOUT)",
                self.timed_out,
                self.limits.request_timeout,
            )
        if self.oversized:
            log.warning(
                "refused %d requests whose head was over %d bytes", self.oversized, MAX_HEAD_BYTES
            )
        if self.malformed:
            log.warning("refused %d malformed HTTP requests", self.malformed)
        if self.evicted or self.refused or self.timed_out or self.oversized or self.malformed:
            self.last_log = now
            self.evicted = self.refused = self.timed_out = self.oversized = self.malformed = 0


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    guard: ClassVar[ConnectionGuard]

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        # When the request being received started (its first byte, or the connection);
        # None while none is being received (being answered, or idle between requests).
        self.since: float | None = None
        # Bytes read while the request head was incomplete; None while a body is read.
        self.head_bytes: int | None = 0
        self.admitted = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if not self.guard.admit(self, self.loop):
            self.transport = transport
            transport.close()
            return
        self.admitted = True
        super().connection_made(transport)
        self.since = self.loop.time()

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard.discard(self)
        self.since = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # uvicorn's, but counting head bytes, and with malformed requests counted in the
        # rate-limited log line instead of one warning each.
        if not self.admitted:
            return
        self._unset_keepalive_if_required()
        if self.head_bytes is not None:
            self.head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.send_400_response("Invalid HTTP request received.")
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self.guard.malformed += 1
            return
        if self.head_bytes is not None and self.head_bytes > MAX_HEAD_BYTES:
            self.guard.oversized += 1
            self._refuse(431, "headers_too_large", f"request head over {MAX_HEAD_BYTES} bytes")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self.since is None:
            self.since = self.loop.time()

    def on_headers_complete(self) -> None:
        # A whole head can arrive in one read (up to 256 KiB): measure it when it might be
        # over. Raising here makes httptools fail the request (send_400_response below).
        if (self.head_bytes or 0) > MAX_HEAD_BYTES and self._head_size() > MAX_HEAD_BYTES:
            raise HeadTooLarge
        self.head_bytes = None
        super().on_headers_complete()

    def _head_size(self) -> int:
        return len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)

    def on_message_complete(self) -> None:
        self.since = None
        self.head_bytes = 0
        super().on_message_complete()

    def handle_websocket_upgrade(self) -> None:
        # The websocket protocol takes the transport over; it is no longer ours to time out.
        self.guard.discard(self)
        self.since = None
        super().handle_websocket_upgrade()

    def send_400_response(self, msg: str) -> None:
        if (self.head_bytes or 0) > MAX_HEAD_BYTES:
            self.guard.oversized += 1
            self._refuse(431, "headers_too_large", f"request head over {MAX_HEAD_BYTES} bytes")
            return
        self.guard.malformed += 1
        self._refuse(400, "bad_request", "malformed HTTP request")

    def waiting_on_client(self) -> bool:
        """Idle, or still sending its request: closing it loses no answer."""
        cycle = self.cycle
        return (
            self.since is not None
            or cycle is None
            or (cycle.response_complete and not self.pipeline)
        )

    def request_timed_out(self) -> None:
        if self.head_bytes:
            self._refuse(408, "request_timeout", "the request was not complete in time")
        else:
            self.transport.close()

    def _refuse(self, status: int, code: str, message: str) -> None:
        """Answer in the JSON error shape and close, unless an answer is being written."""
        transport = self.transport
        if transport.is_closing():
            return
        cycle = self.cycle
        if cycle is None or cycle.response_complete:
            transport.write(error_bytes(status, code, message, self.server_state.default_headers))
        transport.close()


def protocol_class(limits: Limits) -> type[GuardedHttpToolsProtocol]:
    """A protocol class for one server, with its own guard."""

    class CallstatusHttpProtocol(GuardedHttpToolsProtocol):
        guard = ConnectionGuard(limits)

    return CallstatusHttpProtocol


def raise_fd_limit(max_connections: int) -> int:
    """Raise the soft descriptor limit (to the hard one); the connection cap that fits."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = max_connections + FD_RESERVE
    target = hard if hard != resource.RLIM_INFINITY else max(soft, wanted)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-file limit from %d to %d: %s", soft, target, exc)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        fitting = max(10, soft - FD_RESERVE)
        log.warning(
            "the open-file limit is %d: serving at most %d connections instead of "
            "CALLSTATUS_MAX_CONNECTIONS=%d (raise `ulimit -n`)",
            soft,
            fitting,
            max_connections,
        )
        return fitting
    return max_connections
