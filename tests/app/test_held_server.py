"""The commands that write through a running server (reconcile, erase) find it by its server file
and turn its refusals, or its silence, into errors that say what to do: here against a real local
HTTP server standing in for `callstatus serve`."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from callstatus.app import held_server
from callstatus.core.errors import CommandError
from callstatus.core.settings import Settings
from tests.factories import make_settings

TOKEN = "local-token"


class _Serve(BaseHTTPRequestHandler):
    seen: ClassVar[list[tuple[str, str | None, bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        _Serve.seen.append((self.path, self.headers.get("Authorization"), body))
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            answer, status = {"error": {"code": "unauthorized", "message": "wrong token"}}, 401
        elif self.path.startswith("/api/busy"):
            answer, status = {"error": {"code": "busy", "message": "an erasure is running"}}, 409
        elif self.path.startswith("/api/plain"):
            self.send_response(502)
            self.end_headers()
            self.wfile.write(b"<html>bad gateway</html>")
            return
        else:
            answer, status = {"ok": True}, 200
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Serve)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    _Serve.seen.clear()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def _pointing(tmp_path: Path, url: str, token: str = TOKEN) -> Settings:
    settings = make_settings(tmp_path)
    settings.server_file.write_text(json.dumps({"url": url, "pid": 1, "token": token}))
    return settings


def test_a_request_reaches_the_server_with_its_token(tmp_path: Path, server: str) -> None:
    settings = _pointing(tmp_path, server)
    response = held_server.ask(settings, "/api/erase", json={"number": "+14155550100"})
    assert response.json() == {"ok": True}
    [(path, auth, body)] = _Serve.seen
    assert (path, auth, json.loads(body)) == (
        "/api/erase",
        f"Bearer {TOKEN}",
        {"number": "+14155550100"},
    )


def test_a_refusal_carries_the_servers_own_message(tmp_path: Path, server: str) -> None:
    with pytest.raises(CommandError, match="the server refused: an erasure is running"):
        held_server.ask(_pointing(tmp_path, server), "/api/busy")
    with pytest.raises(CommandError, match="the server refused: wrong token"):
        held_server.ask(_pointing(tmp_path, server, token="stale"), "/api/erase")
    with pytest.raises(CommandError, match="the server refused: HTTP 502"):
        held_server.ask(_pointing(tmp_path, server), "/api/plain")


def test_no_server_answering_says_what_to_do(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # free once closed: nothing listens there
    settings = _pointing(tmp_path, f"http://127.0.0.1:{port}")
    with pytest.raises(CommandError, match=r"no callstatus server answers at .* start `callstatus"):
        held_server.ask(settings, "/api/reconcile")


@pytest.mark.parametrize("content", [None, "not json", '{"url": "http://127.0.0.1:1"}'])
def test_a_missing_or_broken_server_file_is_explained(tmp_path: Path, content: str | None) -> None:
    settings = make_settings(tmp_path)
    if content is not None:
        settings.server_file.write_text(content)
    with pytest.raises(CommandError, match="does not say which server"):
        held_server.ask(settings, "/api/erase")
