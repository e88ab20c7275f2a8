"""The receiver's port under attack, against a real `callstatus serve` process: idle and slow
connections, oversized heads, malformed requests, password guessing. Each attack ends in a clear
refusal or a bounded cost, /healthz keeps answering within a second throughout, and the
webhooks sent meanwhile are stored."""

from __future__ import annotations

import base64
import json
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import urlencode

import duckdb
import httpx
import pytest

from callstatus.app.password import LoginLimiter
from callstatus.receiver.protocol import MAX_HEAD_BYTES
from tests.factories import signed_headers, signed_request
from tests.servers import ServerProcess, start_server

TOKEN = "main-account-token"
PASSWORD = "correct-horse-battery-staple"
REQUEST_TIMEOUT = 3.0
KEEPALIVE = 2
CAP = 500
# The request deadline is enforced by a sweep every second (REQUEST_TIMEOUT / 4 at most).
SWEEP_SLACK = 1.0


@dataclass
class Target:
    server: ServerProcess
    port: int
    stored: list[str] = field(default_factory=list)  # CallUUIDs acknowledged with a 200


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4000 <= hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    env = {
        "PLIVO_AUTH_TOKEN": TOKEN,
        "DASHBOARD_PASSWORD": PASSWORD,
        "CALLSTATUS_REQUEST_TIMEOUT": str(REQUEST_TIMEOUT),
        "CALLSTATUS_KEEPALIVE_TIMEOUT": str(KEEPALIVE),
        "CALLSTATUS_MAX_CONNECTIONS": str(CAP),
        "CALLSTATUS_SNAPSHOT_INTERVAL": "3600",
    }
    server = start_server(tmp_path_factory.mktemp("hardening") / "hardening.duckdb", env)
    try:
        yield Target(server, int(server.url.rsplit(":", 1)[1]))
    finally:
        if server.process.poll() is None:
            server.stop(signal.SIGKILL)


# -- raw HTTP over sockets -------------------------------------------------------------------


@dataclass
class Reply:
    status: int | None
    headers: dict[str, str]
    body: bytes

    def json(self) -> object:
        return json.loads(self.body)


def _parse(raw: bytes) -> Reply:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        return Reply(None, {}, raw)
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.decode().strip().lower()] = value.decode("latin-1").strip()
    return Reply(int(parts[1]), headers, body)


def _connect(port: int, source: str = "127.0.0.1", timeout: float = 5.0) -> socket.socket:
    return socket.create_connection(
        ("127.0.0.1", port), timeout=timeout, source_address=(source, 0)
    )


def request(port: int, data: bytes, source: str = "127.0.0.1", timeout: float = 5.0) -> Reply:
    """Send raw bytes (the request should say Connection: close), read until the server
    closes; a reset while sending or reading leaves whatever was read."""
    raw = b""
    with _connect(port, source, timeout) as sock:
        try:
            sock.sendall(data)
            while chunk := sock.recv(65536):
                raw += chunk
        except (ConnectionError, TimeoutError):
            pass
    return _parse(raw)


def get(
    port: int,
    path: str,
    headers: Mapping[str, str] | None = None,
    source: str = "127.0.0.1",
    method: str = "GET",
) -> Reply:
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return request(port, ("\r\n".join(lines) + "\r\n\r\n").encode(), source)


def basic(password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"ops:{password}".encode()).decode()}


def assert_error(reply: Reply, status: int, code: str) -> None:
    assert reply.status == status, reply
    assert reply.headers.get("content-type", "").split(";")[0] == "application/json", reply
    body = reply.json()
    assert isinstance(body, dict) and set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message"}, body
    assert body["error"]["code"] == code, body
    assert body["error"]["message"], body


def send_webhook(target: Target, call_uuid: str) -> None:
    """A signed webhook, as Plivo sends it; it must be acknowledged within 2 s."""
    started = time.monotonic()
    with httpx.Client(base_url=target.server.url, timeout=5) as client:
        response = signed_request(
            client,
            "POST",
            "/plivo/hangup",
            [("CallUUID", call_uuid), ("CallStatus", "completed")],
            token=TOKEN,
            base=target.server.url,
        )
    assert response.status_code == 200, response.text
    assert time.monotonic() - started < 2.0
    target.stored.append(call_uuid)


# -- /healthz watched while an attack is on ---------------------------------------------------


class HealthProbe(threading.Thread):
    """GET /healthz on a new connection every 50 ms; how long each took, which failed."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            started = time.monotonic()
            try:
                reply = get(self.port, "/healthz")
                if reply.status != 200 or reply.json() != {"status": "ok"}:
                    self.failures.append(repr(reply))
            except (OSError, ValueError) as exc:
                self.failures.append(repr(exc))
            self.latencies.append(time.monotonic() - started)
            self.done.wait(0.05)

    def assert_answered_within(self, seconds: float, at_least: int) -> None:
        # A short attack on a busy host may end before the probe's thread ran that often.
        deadline = time.monotonic() + 5.0
        while len(self.latencies) < at_least and self.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not self.failures, self.failures[:5]
        assert len(self.latencies) >= at_least, self.latencies
        assert max(self.latencies) < seconds, sorted(self.latencies)[-5:]


@contextmanager
def probing(port: int) -> Iterator[HealthProbe]:
    probe = HealthProbe(port)
    probe.start()
    try:
        yield probe
    finally:
        probe.done.set()
        probe.join(timeout=10)


def closed_by_server(sock: socket.socket) -> bool:
    """True once the server closed (or reset) the connection; replies are read and dropped."""
    sock.setblocking(False)
    try:
        while True:
            if not sock.recv(65536, socket.MSG_DONTWAIT):
                return True
    except BlockingIOError:
        return False
    except ConnectionError:
        return True


# -- connections -----------------------------------------------------------------------------


def test_idle_sockets_beyond_the_cap_starve_neither_healthz_nor_webhooks(target: Target) -> None:
    opened: list[tuple[socket.socket, float]] = []
    try:
        with probing(target.port) as probe:
            time.sleep(0.2)
            for _ in range(3000):
                opened.append((_connect(target.port), time.monotonic()))
            # The server accepts what waits in its backlog, closing the oldest beyond the cap:
            # give it as long as more than twice the cap are still too young for the request
            # timeout to have closed them (a loaded machine, e.g. three test workers on two
            # cores, is slower to work through the backlog).
            settle_by = opened[-(2 * CAP + 50)][1] + REQUEST_TIMEOUT - 0.6
            still_open = [sock for sock, _ in opened if not closed_by_server(sock)]
            while len(still_open) > CAP and time.monotonic() < settle_by:
                time.sleep(0.1)
                still_open = [sock for sock in still_open if not closed_by_server(sock)]
            counted_at = time.monotonic()
            # Sockets too young for the request timeout: only the cap can have closed them.
            young = [t for _, t in opened if counted_at - t < REQUEST_TIMEOUT - 0.2]
            assert len(young) > 2 * CAP, "opening the sockets took too long to tell"
            assert len(still_open) <= CAP, len(still_open)
            send_webhook(target, "during-idle-flood")
            deadline = time.monotonic() + REQUEST_TIMEOUT + SWEEP_SLACK + 2
            while still_open and time.monotonic() < deadline:
                time.sleep(0.1)
                still_open = [sock for sock in still_open if not closed_by_server(sock)]
            assert not still_open, f"{len(still_open)} idle sockets outlived the request timeout"
        probe.assert_answered_within(1.0, at_least=10)
    finally:
        for sock, _ in opened:
            sock.close()
    log = target.server.log.read_text()
    assert "connection limit reached (CALLSTATUS_MAX_CONNECTIONS=500)" in log, log[-2000:]


def test_slow_and_half_sent_requests_are_closed_after_the_request_timeout(
    target: Target,
) -> None:
    host = f"Host: 127.0.0.1:{target.port}\r\n".encode()
    starts = {
        # slowloris: a head that never ends, one byte at a time
        "slowloris": b"POST /plivo/hangup HTTP/1.1\r\n" + host,
        "half head": b"GET /healthz HTTP/1.1\r\n" + host + b"X-Half: ab",
        "half body": b"POST /plivo/hangup HTTP/1.1\r\n"
        + host
        + b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 200\r\n\r\n"
        + b"CallUUID=half-sent-body&A=",
        "silent": b"",
    }
    conns: list[tuple[str, socket.socket, float]] = []
    closed_after: dict[int, float] = {}
    replies: dict[int, bytes] = {}
    try:
        with probing(target.port) as probe:
            for kind, data in starts.items():
                for _ in range(20):
                    sock = _connect(target.port)
                    sock.sendall(data)
                    conns.append((kind, sock, time.monotonic()))
            send_webhook(target, "during-slowloris")
            deadline = time.monotonic() + REQUEST_TIMEOUT + SWEEP_SLACK + 2
            while len(closed_after) < len(conns) and time.monotonic() < deadline:
                for i, (kind, sock, opened) in enumerate(conns):
                    if i in closed_after:
                        continue
                    sock.setblocking(False)
                    try:
                        data = sock.recv(65536, socket.MSG_DONTWAIT)
                    except BlockingIOError:
                        if kind == "slowloris":
                            try:
                                sock.send(b"X")  # the header name grows, never ends
                            except ConnectionError:
                                closed_after[i] = time.monotonic() - opened
                        continue
                    except ConnectionError:
                        data = b""
                    replies[i] = replies.get(i, b"") + data
                    if not data:
                        closed_after[i] = time.monotonic() - opened
                time.sleep(0.25)
        probe.assert_answered_within(1.0, at_least=10)
    finally:
        for _, sock, _ in conns:
            sock.close()
    assert len(closed_after) == len(conns), "some slow connections were never closed"
    for i, (kind, _, _) in enumerate(conns):
        assert REQUEST_TIMEOUT - 0.3 <= closed_after[i] <= REQUEST_TIMEOUT + SWEEP_SLACK + 0.5, (
            kind,
            closed_after[i],
        )
        if kind in ("slowloris", "half head") and replies.get(i):
            assert_error(_parse(replies[i]), 408, "request_timeout")
    # A head still being sent is told why (the slowloris may miss it while it sends).
    assert any(replies.get(i) for i, (kind, _, _) in enumerate(conns) if kind == "half head")


def test_an_idle_keep_alive_connection_is_closed(target: Target) -> None:
    with _connect(target.port) as sock:
        sock.sendall(f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{target.port}\r\n\r\n".encode())
        answered = time.monotonic()
        reply = b""
        while b'{"status":"ok"}' not in reply:
            reply += sock.recv(65536)
        assert _parse(reply).status == 200
        sock.settimeout(KEEPALIVE + 3)
        assert sock.recv(65536) == b""
        idle = time.monotonic() - answered
    assert KEEPALIVE - 0.5 <= idle <= KEEPALIVE + 1, idle


def test_a_dashboard_websocket_outlives_the_request_timeout(target: Target) -> None:
    handshake = (
        "GET /_stcore/stream HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{target.port}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Protocol: streamlit\r\n"
        f"Authorization: {basic(PASSWORD)['Authorization']}\r\n\r\n"
    )
    with _connect(target.port) as sock:
        sock.sendall(handshake.encode())
        assert sock.recv(65536).startswith(b"HTTP/1.1 101"), "no websocket"
        time.sleep(REQUEST_TIMEOUT + SWEEP_SLACK + 0.5)
        # Upgraded: the connection is the websocket's now, not a request to time out.
        assert not closed_by_server(sock)


# -- heads and signatures --------------------------------------------------------------------


def test_oversized_heads_are_refused_quickly(target: Target) -> None:
    host = f"Host: 127.0.0.1:{target.port}\r\n".encode()
    tail = b"Content-Length: 3\r\nConnection: close\r\n\r\nA=1"
    oversized = {
        "100 KB header": b"POST /plivo/hangup HTTP/1.1\r\n"
        + host
        + b"X-Big: "
        + b"a" * 100_000
        + b"\r\n"
        + tail,
        "5,000 headers": b"POST /plivo/hangup HTTP/1.1\r\n"
        + host
        + b"".join(b"X-H%d: v\r\n" % i for i in range(5000))
        + tail,
        "100 KB URL": b"GET /plivo/hangup?CallUUID="
        + b"u" * 100_000
        + b" HTTP/1.1\r\n"
        + host
        + b"Connection: close\r\n\r\n",
        "16 MB signature": b"GET /plivo/hangup?CallUUID=sig HTTP/1.1\r\n"
        + host
        + b"X-Plivo-Signature-V3-Nonce: 12345\r\nX-Plivo-Signature-V3: "
        + b"A," * 8_000_000
        + b"\r\nConnection: close\r\n\r\n",
    }
    with probing(target.port) as probe:
        for name, data in oversized.items():
            started = time.monotonic()
            reply = request(target.port, data)
            took = time.monotonic() - started
            assert took < 1.0, (name, took)
            # Refused with a 431, or closed before the client could read it (a reset).
            if reply.status is not None:
                assert_error(reply, 431, "headers_too_large")
        # Just under the limit: a head the parser takes, a signature header that is not one.
        for name, signature in {
            "2 KB signature": "A" * 2000,
            "40 signatures": ",".join(["A" * 44] * 40),
        }.items():
            started = time.monotonic()
            reply = get(
                target.port,
                "/plivo/hangup?CallUUID=sig",
                {"X-Plivo-Signature-V3": signature, "X-Plivo-Signature-V3-Nonce": "12345"},
            )
            assert time.monotonic() - started < 0.5, name
            assert_error(reply, 403, "bad_signature")
        send_webhook(target, "after-oversized-heads")
        probe.assert_answered_within(1.0, at_least=3)
    assert len(b"X-Big: " + b"a" * 100_000) > MAX_HEAD_BYTES


def test_malformed_requests_and_unknown_paths_get_the_json_error_shape(target: Target) -> None:
    host = f"Host: 127.0.0.1:{target.port}\r\n".encode()
    malformed = [
        b"GET / HTTP/1.1\r\n" + host + b"Header without colon\r\n\r\n",
        b"GET /plivo/hangup HTTP/9.9\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(64)),  # a TLS hello
        b"POST /plivo/hangup HTTP/1.1\r\n"
        + host
        + b"Transfer-Encoding: chunked\r\nContent-Type: application/x-www-form-urlencoded\r\n\r\n"
        + b"zz\r\nA=1\r\n0\r\n\r\n",
        b"POST /plivo/hangup HTTP/1.1\r\n" + host + b"Content-Length: abc\r\n\r\nA=1",
    ]
    for data in malformed:
        reply = request(target.port, data)
        if reply.status is None:  # a chunked body's error may come after a 4xx JSON reply
            continue
        assert_error(reply, 400, "bad_request")
    for path, status, code in [
        ("/plivo/nope", 404, "not_found"),
        ("/plivo/hangup/", 404, "not_found"),
        ("/healthzz", 404, "not_found"),
        ("/healthz/extra", 404, "not_found"),
    ]:
        assert_error(get(target.port, path), status, code)
    assert_error(get(target.port, "/healthz", method="POST"), 405, "method_not_allowed")
    assert_error(get(target.port, "/metrics"), 401, "unauthorized")
    log = target.server.log.read_text()
    assert "Invalid HTTP request received." not in log  # counted, not one line each


def test_healthz_with_a_slash_answers_in_place_whatever_the_host(target: Target) -> None:
    for host in ("evil.example", "127.0.0.1@evil.example", "evil.example/x?"):
        lines = f"GET /healthz/ HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        reply = request(target.port, lines.encode())
        assert reply.status == 200, reply
        assert "location" not in reply.headers
        assert reply.json() == {"status": "ok"}


def test_healthz_tells_the_public_only_ok_and_the_operator_everything(target: Target) -> None:
    public = get(target.port, "/healthz")
    assert public.status == 200
    assert public.json() == {"status": "ok"}
    wrong = get(target.port, "/healthz", basic("not-the-password"), source="127.0.0.4")
    assert wrong.json() == {"status": "ok"}
    full = get(target.port, "/healthz", basic(PASSWORD))
    details = full.json()
    assert isinstance(details, dict)
    assert {"status", "database", "spool_depth", "last_event_at", "signature_checks"} <= set(
        details
    )
    assert details["status"] == "ok" and details["signature_checks"] == "on"
    folder = str(target.server.db.parent)
    assert folder.encode() not in public.body and folder.encode() not in wrong.body


def test_failed_logins_are_rate_limited_per_address(target: Target) -> None:
    attacker, other = "127.0.0.2", "127.0.0.3"
    started = time.monotonic()
    for i in range(10):
        assert_error(
            get(target.port, "/metrics", basic(f"guess{i}"), attacker), 401, "unauthorized"
        )
    locked = get(target.port, "/metrics", basic("guess10"), attacker)
    assert_error(locked, 429, "too_many_failed_logins")
    assert 1 <= int(locked.headers["retry-after"]) <= 60
    # Locked out: the right password is not even checked, on the dashboard or /healthz ...
    assert_error(get(target.port, "/", basic(PASSWORD), attacker), 429, "too_many_failed_logins")
    assert_error(
        get(target.port, "/healthz", basic(PASSWORD), attacker), 429, "too_many_failed_logins"
    )
    # ... while monitors still see the public status, and other addresses log in.
    assert get(target.port, "/healthz", source=attacker).json() == {"status": "ok"}
    assert get(target.port, "/metrics", basic(PASSWORD), other).status == 200
    assert time.monotonic() - started < 10


def test_login_limiter_memory_is_bounded() -> None:
    now = [0.0]
    limiter = LoginLimiter(max_failures=3, window_s=60, max_tracked=100, clock=lambda: now[0])
    for i in range(10_000):
        limiter.fail(f"10.0.{i // 256}.{i % 256}")
    assert len(limiter.failures) == 100
    for _ in range(3):
        limiter.fail("192.0.2.1")
    assert limiter.retry_after("192.0.2.1") == 60
    now[0] = 59.5
    assert limiter.retry_after("192.0.2.1") == 1
    now[0] = 60.0
    assert limiter.retry_after("192.0.2.1") == 0


def test_raising_the_open_file_limit() -> None:
    script = (
        "import resource, logging\n"
        "from callstatus.receiver.protocol import raise_fd_limit\n"
        "logging.basicConfig(level=logging.INFO)\n"
        "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))\n"
        "print(raise_fd_limit(100), resource.getrlimit(resource.RLIMIT_NOFILE)[0] == hard)\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))\n"
        "print(raise_fd_limit(2000))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=True
    )
    assert done.stdout.split() == ["100", "True", "768"], done.stdout
    assert "serving at most 768 connections instead of CALLSTATUS_MAX_CONNECTIONS=2000" in (
        done.stderr
    )


# -- a GET's body ----------------------------------------------------------------------------


def test_a_get_body_is_neither_stored_nor_signed(target: Target) -> None:
    query = urlencode({"CallUUID": "get-with-body", "CallStatus": "ringing"})
    path = f"/plivo/hangup?{query}"
    headers = signed_headers("GET", target.server.url + path, {}, TOKEN)
    body = b"CallUUID=smuggled&Injected=1"
    with httpx.Client(base_url=target.server.url, timeout=5) as client:
        response = client.request(
            "GET",
            path,
            content=body,
            headers={**headers, "Content-Type": "application/x-www-form-urlencoded"},
        )
    assert response.status_code == 200, response.text
    target.stored.append("get-with-body")


# -- last: everything acknowledged is in the database ---------------------------------------


def test_every_acknowledged_webhook_is_stored(target: Target) -> None:
    assert target.stored, "run with the tests above"
    assert target.server.stop(signal.SIGTERM) == 0
    con = duckdb.connect(str(target.server.db), read_only=True)
    try:
        stored = {
            row[0]: json.loads(row[1])
            for row in con.execute("SELECT call_uuid, params FROM webhook_events").fetchall()
        }
    finally:
        con.close()
    assert set(target.stored) <= set(stored), set(target.stored) - set(stored)
    assert "half-sent-body" not in stored and "smuggled" not in stored and "sig" not in stored
    assert stored["get-with-body"] == {"CallUUID": "get-with-body", "CallStatus": "ringing"}
    log = target.server.log.read_text()
    for marker in ("Traceback", "Exception in ASGI application", "Internal Server Error"):
        assert marker not in log, log[-3000:]
