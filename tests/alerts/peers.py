"""Real local peers for the alert channels: an HTTP server taking Slack and webhook POSTs (it
checks the HMAC signature as a receiver would), an SMTP server (aiosmtpd), and a throwaway
certificate authority for STARTTLS."""

from __future__ import annotations

import hashlib
import hmac
import json
import ssl
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

from tests.factories import wait_until
from tests.servers import free_port


@dataclass
class Received:
    """One POST as the peer read it."""

    path: str
    headers: dict[str, str]
    body: bytes
    status: int  # what the peer answered

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class HttpPeer:
    """An HTTP server on 127.0.0.1: every POST is kept; with `secret`, a POST whose
    X-Callstatus-Signature is not the HMAC-SHA256 of its body gets 401; `fail` answers the
    next so many POSTs with `fail_status`."""

    secret: str | None = None
    fail: int = 0
    fail_status: int = 500
    requests: list[Received] = field(default_factory=list)
    port: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def accepted(self) -> list[Received]:
        with self._lock:
            return [r for r in self.requests if r.status == 200]

    def answer(self, path: str, headers: dict[str, str], body: bytes) -> int:
        with self._lock:
            if self.fail > 0:
                self.fail -= 1
                status = self.fail_status
            elif self.secret is not None and not valid_signature(self.secret, headers, body):
                status = 401
            else:
                status = 200
            self.requests.append(Received(path, headers, body, status))
            return status


def valid_signature(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """The receiver's side of X-Callstatus-Signature, written from its definition."""
    given = {k.lower(): v for k, v in headers.items()}.get("x-callstatus-signature", "")
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(given, expected)


@contextmanager
def http_peer(
    secret: str | None = None, fail: int = 0, fail_status: int = 500
) -> Iterator[HttpPeer]:
    peer = HttpPeer(secret=secret, fail=fail, fail_status=fail_status)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            status = peer.answer(self.path, dict(self.headers.items()), body)
            reply = b"ok" if status == 200 else b"invalid_payload"
            self.send_response(status)
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    peer.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield peer
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@dataclass
class Mail:
    sender: str
    recipients: list[str]
    message: EmailMessage
    tls: bool  # it arrived after STARTTLS
    login: str | None  # the user that authenticated, if any


@dataclass
class SmtpPeer:
    host: str
    port: int
    mails: list[Mail] = field(default_factory=list)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Mail]:
        wait_until(lambda: len(self.mails) >= count, timeout)
        return self.mails


class _Handler:
    def __init__(self, peer: SmtpPeer) -> None:
        self.peer = peer

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        # On the wire lines end in CRLF; the email package reads them as a file on disk.
        raw = (envelope.original_content or b"").replace(b"\r\n", b"\n")
        message = message_from_bytes(raw, policy=policy.default)
        assert isinstance(message, EmailMessage)
        auth = session.auth_data
        login = auth.login.decode() if isinstance(auth, LoginPassword) else None
        self.peer.mails.append(
            Mail(
                str(envelope.mail_from),
                [str(r) for r in envelope.rcpt_tos],
                message,
                tls=session.ssl is not None,
                login=login,
            )
        )
        return "250 OK"


@contextmanager
def smtp_peer(
    tls: ssl.SSLContext | None = None, users: dict[str, str] | None = None
) -> Iterator[SmtpPeer]:
    """aiosmtpd on 127.0.0.1; with `tls`, STARTTLS offered and required; with `users`, AUTH
    (LOGIN, PLAIN) checked against them (only over TLS: aiosmtpd's default)."""
    peer = SmtpPeer("127.0.0.1", free_port())

    def authenticate(
        server: SMTPServer, session: Session, envelope: Envelope, mechanism: str, auth: Any
    ) -> AuthResult:
        ok = (
            isinstance(auth, LoginPassword)
            and users is not None
            and users.get(auth.login.decode()) == auth.password.decode()
        )
        return AuthResult(success=ok, handled=False, auth_data=auth if ok else None)

    options: dict[str, Any] = {}
    if tls is not None:
        options.update(tls_context=tls, require_starttls=True)
    if users is not None:
        options.update(authenticator=authenticate, auth_required=True)
    controller = Controller(_Handler(peer), hostname=peer.host, port=peer.port, **options)
    controller.start()
    try:
        yield peer
    finally:
        controller.stop()


@dataclass(frozen=True)
class Authority:
    """A CA made for one test and a certificate for 127.0.0.1 signed by it."""

    ca: Path
    certificate: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.certificate, self.key)
        return context


def make_authority(folder: Path) -> Authority:
    """With the openssl command: a CA, and a server certificate for 127.0.0.1 and localhost."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=folder)

    openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
        "-days", "2", "-subj", "/CN=callstatus test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=127.0.0.1",
    )  # fmt: skip
    (folder / "server.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
    )
    openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "server.ext",
    )  # fmt: skip
    return Authority(folder / "ca.pem", folder / "server.pem", folder / "server.key")
