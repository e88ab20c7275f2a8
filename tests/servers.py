"""Real `callstatus serve` processes for tests that need one (kill -9, simulate, browser)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

# Debian's Chromium, started as the machine allows (never a browser download).
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServerProcess:
    process: subprocess.Popen[bytes]
    url: str
    db: Path
    log: Path

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout=timeout)


def start_server(
    db: Path,
    env: Mapping[str, str] | None = None,
    port: int | None = None,
    timeout: float = 30,
    *,
    healthy: bool = True,
) -> ServerProcess:
    """A dev-mode `callstatus serve` on `db`, returned once /healthz says ok (with `healthy`
    False: once it answers at all; a server replaying a spool says degraded until it is done).

    Without `port`, a free one is picked; another process (a parallel test worker) can take it
    before the server binds, so a server that exits on "address already in use" is started
    again on a fresh port (up to three times)."""
    for attempt in range(3):
        try:
            return _start_server(db, env, port or free_port(), timeout, healthy)
        except PortTaken:
            if port is not None or attempt == 2:
                raise
    raise AssertionError("unreachable")


class PortTaken(RuntimeError):
    """The server could not bind its port: something else took it first."""


def _start_server(
    db: Path, env: Mapping[str, str] | None, port: int, timeout: float, healthy: bool
) -> ServerProcess:
    log = db.with_suffix(f".{port}.log")
    full_env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PLIVO_AUTH_TOKEN", "PUBLIC_BASE_URL", "DASHBOARD_PASSWORD", "DIAL_NUMBERS")
    }
    full_env.update(env or {})
    with log.open("ab") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "callstatus.cli", "serve", "--port", str(port), "--db", str(db)],
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=db.parent,
        )
    server = ServerProcess(process, f"http://127.0.0.1:{port}", db, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            text = log.read_text()
            error = PortTaken if "address already in use" in text else RuntimeError
            raise error(f"server exited with {process.returncode}:\n{text}")
        try:
            status = httpx.get(f"{server.url}/healthz", timeout=1).status_code
            if status == 200 or not healthy:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    server.stop(signal.SIGKILL)
    raise RuntimeError(f"server did not become healthy:\n{log.read_text()}")


@contextmanager
def running_server(db: Path, env: Mapping[str, str] | None = None) -> Iterator[ServerProcess]:
    server = start_server(db, env)
    try:
        yield server
    finally:
        if server.process.poll() is None:
            server.stop(signal.SIGKILL)
