"""Two real `callstatus serve --role receiver` processes on one real PostgreSQL: signed traffic
split between them, a kill -9 of one mid-run and its restart, PostgreSQL stopped and started
under load; every acknowledged webhook ends up in PostgreSQL exactly once."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.factories import signed_request
from tests.postgres import PostgresServer
from tests.servers import free_port

TOKEN = "cluster-e2e-token"
THREADS = 3  # per receiver
PER_THREAD = 5000  # an upper bound; the load is stopped long before


@dataclass
class Receiver:
    """One `serve --role receiver` process; `restart()` keeps its port, and so its spool."""

    folder: Path
    url_pg: str
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def name(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.folder / f"receiver-{self.port}.log"

    def start(self, timeout: float = 30) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("PUBLIC_BASE_URL", "DASHBOARD_PASSWORD", "DIAL_NUMBERS")
        }
        env.update({"PLIVO_AUTH_TOKEN": TOKEN, "CALLSTATUS_POSTGRES_URL": self.url_pg})
        command = [sys.executable, "-m", "callstatus.cli", "serve", "--role", "receiver"]
        command += ["--port", str(self.port), "--db", str(self.folder / "unused.duckdb")]
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=self.folder
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()[-3000:]
            try:
                httpx.get(f"{self.url}/healthz", timeout=1)  # any answer: it listens
                return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise AssertionError(f"receiver did not start:\n{self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=60)

    def health(self) -> dict[str, object]:
        body: dict[str, object] = httpx.get(f"{self.url}/healthz", timeout=5).json()
        return body


@dataclass
class Load:
    """Signed hangups from THREADS threads to one receiver until stopped; each carries a unique
    Seq, and the Seqs that got a 200 are remembered."""

    receiver: Receiver
    label: str
    acked: set[str] = field(default_factory=set)
    refused: list[tuple[str, int, str]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Load:
        for t in range(THREADS):
            thread = threading.Thread(target=self._run, args=(t,), daemon=True)
            thread.start()
            self.threads.append(thread)
        return self

    def _run(self, t: int) -> None:
        base = self.receiver.url
        with httpx.Client(base_url=base, timeout=10) as client:
            for n in range(PER_THREAD):
                if self.stop.is_set():
                    return
                seq = f"{self.label}-{t}-{n}"
                pairs = [("CallUUID", seq), ("Seq", seq), ("Event", "Hangup")]
                try:
                    response = signed_request(
                        client, "POST", "/plivo/hangup", pairs, token=TOKEN, base=base
                    )
                except httpx.HTTPError:
                    time.sleep(0.02)  # the receiver is down or going down
                    continue
                with self.lock:
                    if response.status_code == 200:
                        self.acked.add(seq)
                    else:
                        self.refused.append((seq, response.status_code, response.text[:200]))

    def count(self) -> int:
        with self.lock:
            return len(self.acked)

    def wait_for(self, more: int, timeout: float = 20) -> None:
        target = self.count() + more
        deadline = time.monotonic() + timeout
        while self.count() < target:
            assert time.monotonic() < deadline, f"{self.label}: only {self.count()} acknowledged"
            time.sleep(0.01)

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)
            assert not thread.is_alive()


def stored(url: str) -> dict[str, tuple[int, set[str]]]:
    """Seq -> (rows carrying it, receivers that stored them)."""
    with psycopg.connect(url) as con:
        rows = con.execute(
            "SELECT params::json->>'Seq', count(*), array_agg(DISTINCT receiver) FROM webhook_inbox"
            " WHERE params::json->>'Seq' IS NOT NULL GROUP BY 1"
        ).fetchall()
    return {str(seq): (int(n), set(names)) for seq, n, names in rows}  # type: ignore[call-overload]


def simulate(receiver: Receiver, calls: int, seed: int) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PUBLIC_BASE_URL",)}
    env["PLIVO_AUTH_TOKEN"] = TOKEN
    command = [sys.executable, "-m", "callstatus.cli", "simulate", "--url", receiver.url]
    command += ["--calls", str(calls), "--rate", "100", "--seed", str(seed)]
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )


def accepted(output: str) -> int:
    match = re.search(
        r"([\d,]+) webhooks sent to .*?: ([\d,]+) accepted, 0 refused, 0 failed", output
    )
    assert match, output
    assert match.group(1) == match.group(2), output
    return int(match.group(2).replace(",", ""))


@pytest.mark.slow
def test_two_receivers_survive_a_kill_and_a_postgres_outage(
    server: PostgresServer, tmp_path: Path
) -> None:
    first = Receiver(tmp_path / "first", server.url)
    second = Receiver(tmp_path / "second", server.url)
    first.start()
    second.start()
    loads: list[Load] = []
    try:
        # Realistic signed traffic from the simulator, one run per receiver, beside the load.
        runs = [simulate(first, 10, 1), simulate(second, 10, 2)]
        a1, b1 = Load(first, "a1").start(), Load(second, "b1").start()
        loads += [a1, b1]
        a1.wait_for(100)
        b1.wait_for(100)
        outputs = [run.communicate(timeout=60)[0] for run in runs]
        assert [run.returncode for run in runs] == [0, 0], outputs
        simulated = sum(accepted(output) for output in outputs)

        # kill -9 of one receiver mid-run, then its restart on the same port.
        first.kill()
        a1.finish()
        b1.wait_for(50)
        first.start()
        a2 = Load(first, "a2").start()
        loads.append(a2)
        a2.wait_for(60)

        # PostgreSQL stopped under load: both receivers spool and keep acknowledging.
        server.stop()
        a2.wait_for(60)
        b1.wait_for(60)
        assert first.health()["spool_depth"] and second.health()["spool_depth"]
        # A receiver killed while its spool holds webhooks replays them after its restart.
        first.kill()
        a2.finish()
        server.start()
        first.start()
        a3 = Load(first, "a3").start()
        loads.append(a3)
        a3.wait_for(60)
        b1.wait_for(60)
        deadline = time.monotonic() + 30
        while any(r.health()["status"] != "ok" for r in (first, second)):
            assert time.monotonic() < deadline, (first.health(), second.health())
            time.sleep(0.1)
    finally:
        for load in loads:
            load.finish()
        statuses = [r.stop() if r.process else None for r in (first, second)]
    assert statuses == [0, 0], first.log.read_text()[-2000:] + second.log.read_text()[-2000:]
    for load in loads:
        assert not load.refused, load.refused[:3]
    acked = {seq: load.receiver.name for load in loads for seq in load.acked}
    rows = stored(server.url)
    missing = sorted(set(acked) - set(rows))
    assert not missing, f"{len(missing)} acknowledged webhooks lost, e.g. {missing[:5]}"
    twice = {seq: n for seq, (n, _) in rows.items() if n > 1}
    assert not twice, f"stored more than once: {list(twice.items())[:5]}"
    assert all(rows[seq][1] == {name} for seq, name in acked.items())
    assert len(acked) >= 500
    with psycopg.connect(server.url) as con:
        ((others, repeats, receivers),) = con.execute(
            "SELECT (SELECT count(*) FROM webhook_inbox WHERE params::json->>'Seq' IS NULL),"
            " (SELECT coalesce(sum(repeats), 0) FROM webhook_repeats),"
            " (SELECT array_agg(receiver ORDER BY receiver) FROM receivers)"
        ).fetchall()
    # The simulator's webhooks: each acknowledged one stored, or counted as a repeat.
    assert others + repeats == simulated
    assert receivers == sorted([first.name, second.name])
    log = first.log.read_text() + second.log.read_text()
    assert "Traceback" not in log, log[-3000:]
