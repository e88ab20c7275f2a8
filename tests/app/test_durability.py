"""Real server processes under load: kill -9 or SIGTERM loses no acknowledged webhook."""

from __future__ import annotations

import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import httpx
import pytest

from tests.factories import signed_request
from tests.servers import ServerProcess, start_server

TOKEN = "durability-token"
ENV = {"PLIVO_AUTH_TOKEN": TOKEN}
THREADS = 8
PER_THREAD = 1500  # an upper bound; the server is stopped long before


@dataclass
class Load:
    """Signed webhooks from THREADS threads until stopped; remembers what got a 200."""

    server: ServerProcess
    label: str
    acked: set[str] = field(default_factory=set)
    refused: list[tuple[str, int, str]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        for t in range(THREADS):
            thread = threading.Thread(target=self._run, args=(t,), daemon=True)
            thread.start()
            self.threads.append(thread)

    def _run(self, t: int) -> None:
        with httpx.Client(base_url=self.server.url, timeout=10) as client:
            for n in range(PER_THREAD):
                if self.stop.is_set():
                    return
                seq = f"{self.label}-{t}-{n}"
                pairs = [("CallUUID", seq), ("Seq", seq), ("Duration", str(n))]
                try:
                    response = signed_request(
                        client, "POST", "/plivo/hangup", pairs, token=TOKEN, base=self.server.url
                    )
                except httpx.HTTPError:
                    if self.server.process.poll() is not None:
                        return  # the server is gone: nothing more can be acknowledged
                    time.sleep(0.01)  # going down: don't spin while it drains
                    continue
                with self.lock:
                    if response.status_code == 200:
                        self.acked.add(seq)
                    else:
                        self.refused.append((seq, response.status_code, response.text))

    def count(self) -> int:
        with self.lock:
            return len(self.acked)

    def wait_for(self, acked: int, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while self.count() < acked:
            assert time.monotonic() < deadline, f"only {self.count()} webhooks acknowledged"
            time.sleep(0.01)

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)
            assert not thread.is_alive()


def _stored(db: Path) -> dict[str, int]:
    """Seq -> how many rows carry it, read after the server has stopped."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        result = con.execute(
            "SELECT params->>'Seq' AS seq, count(*) FROM webhook_events GROUP BY seq"
        ).fetchall()
    finally:
        con.close()
    return {str(seq): int(n) for seq, n in result}


def _assert_all_stored_once(db: Path, acked: set[str]) -> None:
    stored = _stored(db)
    missing = sorted(acked - set(stored))
    assert not missing, f"{len(missing)} acknowledged webhooks lost, e.g. {missing[:5]}"
    twice = {seq: n for seq, n in stored.items() if n > 1}
    assert not twice, f"stored more than once: {list(twice.items())[:5]}"


@pytest.mark.slow
def test_kill_9_under_load_three_times_loses_nothing_acknowledged(tmp_path: Path) -> None:
    db = tmp_path / "durable.duckdb"
    acked: set[str] = set()
    for round_ in range(3):
        server = start_server(db, ENV)
        load = Load(server, f"r{round_}")
        try:
            load.start()
            load.wait_for(60 + 30 * round_)  # kill at a different point each round
            server.process.send_signal(signal.SIGKILL)
            server.process.wait(timeout=10)
        finally:
            if server.process.poll() is None:
                server.stop(signal.SIGKILL)
            load.finish()
        assert not load.refused, load.refused[:3]
        assert server.process.returncode == -signal.SIGKILL
        acked |= load.acked
    # Rounds 2 and 3 restarted on a killed server's file; the last one is read as left.
    _assert_all_stored_once(db, acked)
    assert len(acked) >= 3 * 60


@pytest.mark.slow
def test_sigterm_under_load_drains_the_queue_and_exits_0(tmp_path: Path) -> None:
    db = tmp_path / "term.duckdb"
    server = start_server(db, ENV)
    load = Load(server, "term")
    try:
        load.start()
        load.wait_for(80)
        server.process.send_signal(signal.SIGTERM)
        status = server.process.wait(timeout=30)
    finally:
        if server.process.poll() is None:
            server.stop(signal.SIGKILL)
        load.finish()
    assert status == 0, server.log.read_text()[-3000:]
    assert not load.refused, load.refused[:3]
    log = server.log.read_text()
    assert "queue drained" in log
    assert "Traceback" not in log, log[-3000:]
    _assert_all_stored_once(db, load.acked)
