"""Bad input gets one JSON error shape and a 4xx, never a 500 or a dead server."""

from __future__ import annotations

import json
import random
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from starlette.testclient import TestClient
from streamlit.runtime import Runtime

from callstatus.app.asgi import build_app
from callstatus.receiver.parsing import MAX_BODY
from tests.factories import app_client, make_settings, rows, signed_request
from tests.servers import ServerProcess, running_server

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
TOKEN = "main-account-token"


def _chunks(total: int, size: int = 8192) -> Iterator[bytes]:
    yield b"CallUUID="
    sent = 0
    while sent < total:
        yield b"x" * size
        sent += size


Send = Callable[[TestClient], Any]

# (name, how to send it, status, code) for every refusal the receiver makes
REFUSALS: list[tuple[str, Send, int, str]] = [
    (
        "body over 64 KiB",
        lambda c: c.post("/plivo/hangup", content=b"A=" + b"x" * MAX_BODY, headers=FORM),
        413,
        "body_too_large",
    ),
    (
        "chunked body over 64 KiB",
        lambda c: c.post("/plivo/hangup", content=_chunks(MAX_BODY), headers=FORM),
        413,
        "body_too_large",
    ),
    (
        "declared length over 64 KiB",
        lambda c: c.post(
            "/plivo/ring", content=b"A=1", headers={**FORM, "Content-Length": str(10**12)}
        ),
        413,
        "body_too_large",
    ),
    (
        "invalid UTF-8 body",
        lambda c: c.post("/plivo/hangup", content=b"CallUUID=\xff\xfe", headers=FORM),
        400,
        "undecodable",
    ),
    (
        "percent-encoded invalid UTF-8 body",
        lambda c: c.post("/plivo/hangup", content=b"CallUUID=%C3%28", headers=FORM),
        400,
        "undecodable",
    ),
    (
        "percent-encoded invalid UTF-8 query",
        lambda c: c.get("/plivo/hangup?CallUUID=%FF"),
        400,
        "undecodable",
    ),
    (
        "too many body fields",
        lambda c: c.post(
            "/plivo/hangup", content="&".join(f"k{i}=v" for i in range(1001)).encode(), headers=FORM
        ),
        400,
        "undecodable",
    ),
    (
        "too many query fields",
        lambda c: c.get("/plivo/hangup?" + "&".join(f"k{i}=v" for i in range(1001))),
        400,
        "undecodable",
    ),
    (
        "JSON body",
        lambda c: c.post("/plivo/answer", json={"CallUUID": "x"}),
        415,
        "unsupported_media_type",
    ),
    (
        "multipart body",
        lambda c: c.post("/plivo/answer", data={"CallUUID": "x"}, files={"f": ("a.txt", b"hello")}),
        415,
        "unsupported_media_type",
    ),
    (
        "text body",
        lambda c: c.post(
            "/plivo/answer", content=b"CallUUID=x", headers={"Content-Type": "text/plain"}
        ),
        415,
        "unsupported_media_type",
    ),
    (
        "body without content type",
        lambda c: c.post("/plivo/answer", content=b"CallUUID=x"),
        415,
        "unsupported_media_type",
    ),
    (
        "PUT",
        lambda c: c.put("/plivo/answer", content=b"A=1", headers=FORM),
        405,
        "method_not_allowed",
    ),
    ("PATCH", lambda c: c.patch("/plivo/hangup"), 405, "method_not_allowed"),
    ("DELETE", lambda c: c.delete("/plivo/dial/callback"), 405, "method_not_allowed"),
    ("unknown webhook GET", lambda c: c.get("/plivo/xyz"), 404, "not_found"),
    (
        "unknown webhook POST",
        lambda c: c.post("/plivo/dial/xyz", data={"A": "1"}),
        404,
        "not_found",
    ),
    ("trailing slash", lambda c: c.post("/plivo/hangup/", data={"A": "1"}), 404, "not_found"),
]


def _assert_error_shape(response: Any, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].split(";")[0] == "application/json"
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["message"]


def test_one_error_shape_for_every_refusal(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        for name, send, status, code in REFUSALS:
            response = send(client)
            try:
                _assert_error_shape(response, status, code)
            except AssertionError as exc:
                raise AssertionError(f"{name}: {exc}") from exc
        assert rows("SELECT count(*) AS n FROM webhook_events")[0]["n"] == 0
    with app_client(tmp_path / "signed", PLIVO_AUTH_TOKEN=TOKEN) as client:
        _assert_error_shape(client.post("/plivo/hangup", data={"A": "1"}), 403, "missing_signature")
        bad = {"X-Plivo-Signature-V3": "x", "X-Plivo-Signature-V3-Nonce": "1"}
        _assert_error_shape(client.get("/plivo/ring", headers=bad), 403, "bad_signature")
    with app_client(tmp_path / "locked", DASHBOARD_PASSWORD="pw") as client:
        _assert_error_shape(client.get("/metrics"), 401, "unauthorized")


def test_a_failure_inside_the_receiver_is_a_500_in_the_same_shape(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(record: object) -> None:
        raise KeyError("a bug")

    with app_client(tmp_path) as client:
        rt = client.app.runtime
        assert rt is not None
        monkeypatch.setattr(rt.writer, "store", broken)
        _assert_error_shape(client.post("/plivo/hangup", data={"A": "1"}), 500, "internal_error")
        monkeypatch.undo()
        assert client.post("/plivo/hangup", data={"A": "1"}).status_code == 200


def test_not_started_is_a_503_in_the_same_shape(tmp_path: Path) -> None:
    # Without the lifespan (no writer yet), a webhook is refused rather than lost silently.
    app = build_app(make_settings(tmp_path))
    try:
        client = TestClient(app)
        _assert_error_shape(client.post("/plivo/hangup", data={"A": "1"}), 503, "starting")
    finally:
        Runtime._instance = None


# (name, request arguments, parameters stored): odd, but nothing to refuse
ODD_BUT_VALID: list[tuple[str, dict[str, Any], dict[str, str]]] = [
    (
        "exactly 64 KiB",
        {"content": b"A=" + b"x" * (MAX_BODY - 2), "headers": FORM},
        {"A": "x" * (MAX_BODY - 2)},
    ),
    (
        "charset in content type",
        {
            "content": b"A=1",
            "headers": {"Content-Type": "Application/X-WWW-Form-Urlencoded; charset=UTF-8"},
        },
        {"A": "1"},
    ),
    (
        "literal percent",
        {"content": b"A=100%25&B=%ZZ&C=50%", "headers": FORM},
        {"A": "100%", "B": "%ZZ", "C": "50%"},
    ),
    (
        "NUL and controls",
        {"content": b"A=%00&B=%01%1F", "headers": FORM},
        {"A": "\x00", "B": "\x01\x1f"},
    ),
    ("empty body", {"content": b""}, {}),
    ("blank keys and values", {"content": b"=&A=&&B", "headers": FORM}, {"": "", "A": "", "B": ""}),
    ("plus as space", {"content": b"A=a+b%2Bc", "headers": FORM}, {"A": "a b+c"}),
]


def test_odd_but_valid_bodies_are_stored(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        for i, (name, request_kwargs, stored) in enumerate(ODD_BUT_VALID):
            response = client.post(f"/plivo/hangup?case={i}", **request_kwargs)
            assert response.status_code == 200, (name, response.text)
            (row,) = rows("SELECT params FROM webhook_events WHERE params->>'case' = ?", [str(i)])
            assert json.loads(row["params"]) == {"case": str(i), **stored}, name


# -- against a real server: raw sockets, garbage, then a genuine webhook ---------------------


def _raw(port: int, data: bytes, timeout: float = 2.0) -> int | None:
    """Send raw bytes, return the HTTP status of the reply (None if the server just closed)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
            reply = b""
            while b"\r\n" not in reply:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                reply += chunk
        except (ConnectionError, TimeoutError, OSError):
            return None
    parts = reply.split(b" ", 2)
    if len(parts) >= 2 and parts[0].startswith(b"HTTP/") and parts[1].isdigit():
        return int(parts[1])
    return None


def _header_text(rng: random.Random, size: int) -> bytes:
    """Random bytes an HTTP parser accepts in a header value (visible ASCII and obs-text)."""
    return bytes(rng.choice([*range(0x21, 0x7F), *range(0x80, 0x100)]) for _ in range(size))


def _barrage(port: int, rng: random.Random) -> list[bytes]:
    host = f"Host: 127.0.0.1:{port}\r\n".encode()
    requests: list[bytes] = []
    for _ in range(40):
        requests.append(rng.randbytes(rng.randint(1, 2000)))
    for _ in range(40):
        path = rng.choice(
            [
                b"/plivo/answer",
                b"/plivo/hangup",
                b"/plivo/ring",
                b"/plivo/x",
                b"/healthz",
                b"/metrics",
                b"/plivo/%00",
                b"/plivo/../healthz",
            ]
        )
        ctype = rng.choice(
            [
                b"application/json",
                b"multipart/form-data; boundary=zz",
                b"\xff\xfe",
                b"application/x-www-form-urlencoded",
                b"application/x-www-form-urlencoded; charset=\x01",
                _header_text(rng, 30),
            ]
        )
        body = rng.choice(
            [
                rng.randbytes(rng.randint(0, 300)),
                b"CallUUID=%FF%FE",
                b"a=" + b"%" * 200,
                urlencode({"CallUUID": "é" * 50}).encode(),
            ]
        )
        method = rng.choice([b"POST", b"GET", b"PUT", b"OPTIONS", b"HEAD", b"BREW"])
        requests.append(
            method
            + b" "
            + path
            + b" HTTP/1.1\r\n"
            + host
            + b"Content-Type: "
            + ctype
            + b"\r\n"
            + b"X-Plivo-Signature-V3: "
            + _header_text(rng, 44)
            + b"\r\n"
            + b"X-Plivo-Signature-V3-Nonce: \xe9\xe9\r\n"
            + b"Content-Length: "
            + str(len(body)).encode()
            + b"\r\n"
            + b"Connection: close\r\n\r\n"
            + body
        )
    huge = b"X-Junk: " + b"a" * 200_000 + b"\r\n"
    many = b"".join(b"X-H%d: v\r\n" % i for i in range(2000))
    requests += [
        b"POST /plivo/hangup HTTP/1.1\r\n" + host + huge + b"Content-Length: 3\r\n\r\nA=1",
        b"POST /plivo/hangup HTTP/1.1\r\n" + host + many + b"Content-Length: 3\r\n\r\nA=1",
        b"POST /plivo/hangup HTTP/1.1\r\n" + host + b"Content-Length: abc\r\n\r\nA=1",
        b"POST /plivo/hangup HTTP/1.1\r\n" + host + b"Content-Length: -1\r\n\r\nA=1",
        b"POST /plivo/hangup HTTP/1.1\r\n" + host + b"Content-Length: 99999999999999999999\r\n\r\n",
        b"POST /plivo/hangup HTTP/1.1\r\n" + host + b"Content-Length: 100\r\n\r\nA=1",
        b"POST /plivo/hangup HTTP/1.1\r\n"
        + host
        + b"Transfer-Encoding: chunked\r\nContent-Type: application/x-www-form-urlencoded\r\n\r\n"
        + b"zz\r\nA=1\r\n0\r\n\r\n",
        b"POST /plivo/hangup HTTP/1.1\r\n"
        + host
        + b"Transfer-Encoding: chunked\r\nContent-Type: application/x-www-form-urlencoded\r\n\r\n"
        + b"".join(b"4000\r\n" + b"x" * 0x4000 + b"\r\n" for _ in range(6))
        + b"0\r\n\r\n",
        b"GET /plivo/answer?CallUUID=\xff\xfe HTTP/1.1\r\n" + host + b"\r\n",
        b"GET /plivo/answer?" + b"a=1&" * 3000 + b" HTTP/1.1\r\n" + host + b"\r\n",
        b"GET /plivo/answer HTTP/1.1\r\n"
        + host
        + b"X-Plivo-Signature-V3: \xff" * 3
        + b"\r\nX-Plivo-Signature-V3-Nonce: 1\r\n\r\n",
        b"GET / HTTP/1.1\r\n" + host + b"Authorization: Basic \xff\xff\r\n\r\n",
        b"\r\n\r\n\r\n",
        b"GET /plivo/answer HTTP/9.9\r\n\r\n",
    ]
    return requests


@pytest.mark.slow
def test_a_barrage_of_garbage_leaves_the_server_answering(tmp_path: Path) -> None:
    rng = random.Random(20261102)
    env = {"PLIVO_AUTH_TOKEN": TOKEN, "DASHBOARD_PASSWORD": "pw"}
    with running_server(tmp_path / "hostile.duckdb", env) as server:
        port = int(server.url.rsplit(":", 1)[1])
        deadline = time.monotonic() + 30
        statuses = []
        for data in _barrage(port, rng):
            statuses.append(_raw(port, data))
            assert time.monotonic() < deadline, "the barrage took too long"
        with httpx.Client(base_url=server.url, timeout=5) as client:
            response = signed_request(
                client,
                "POST",
                "/plivo/hangup",
                [("CallUUID", "after-barrage")],
                token=TOKEN,
                base=server.url,
            )
            assert response.status_code == 200, response.text
            # The details are the operator's: behind the dashboard's password.
            assert client.get("/healthz").json() == {"status": "ok"}
            health = client.get("/healthz", auth=("ops", "pw")).json()
        assert health["status"] == "ok"
        assert health["last_event_at"] is not None
        _assert_clean_log(server)
    answered = [status for status in statuses if status is not None]
    assert answered, "the server answered none of the requests"
    assert all(status < 500 for status in answered), sorted(set(answered))


def _assert_clean_log(server: ServerProcess) -> None:
    log = server.log.read_text(errors="replace")
    for marker in ("Traceback", "Exception in ASGI application", "Internal Server Error"):
        assert marker not in log, log[-3000:]
