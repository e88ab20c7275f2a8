"""The clustered mode's check: two `serve --role receiver` processes and one `serve --role
dashboard` on one real PostgreSQL. Simulated calls' signed webhooks are split between the
receivers as a load balancer would (a refused or failed request goes to the other one), a
receiver and the dashboard are killed with -9 mid-run and restarted, and the dashboard's calls,
dials and dial_legs then equal what really happened: every webhook of every call."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest

from callstatus.core.db import Database
from callstatus.core.duplicates import DuplicateTracker
from callstatus.simulator.traffic import Call, TrafficModel, Webhook
from tests.factories import call_webhooks, deliver, signed_request
from tests.postgres import PostgresServer
from tests.servers import free_port

TOKEN = "cluster-e2e-token"
CALLS = 80
SENDERS = 4

# Every column that does not come from arrival times (a real receiver's clock, not the model's).
COLUMNS = {
    "calls": (
        "call_uuid, direction, from_number, to_number, started_at, answered_at, ended_at,"
        " duration_s, bill_duration_s, call_status, hangup_cause, hangup_cause_code,"
        " hangup_cause_name, hangup_source, answered, outcome"
    ),
    "dial_legs": (
        "a_leg_uuid, b_leg_uuid, b_leg_to, b_leg_from, position, answered, duration_s,"
        " hangup_cause_code, hangup_cause_name, hangup_source, outcome"
    ),
    "dials": "a_leg_uuid, b_leg_uuid, dial_status, dial_ring_status, dial_hangup_cause",
}


@dataclass
class Serve:
    """One `callstatus serve --role ROLE` process; `restart()` keeps its port and files."""

    role: str
    folder: Path
    url_pg: str
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def db(self) -> Path:
        return self.folder / "callstatus.duckdb"

    @property
    def log(self) -> Path:
        return self.folder / f"{self.role}-{self.port}.log"

    def launch(self) -> Serve:
        """Start the process; `ready()` waits for it to listen (several start at once)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("PUBLIC_BASE_URL", "DASHBOARD_PASSWORD", "DIAL_NUMBERS")
        }
        env.update(
            {
                "PLIVO_AUTH_TOKEN": TOKEN,
                "CALLSTATUS_POSTGRES_URL": self.url_pg,
                "CALLSTATUS_RECONCILE_INTERVAL": "0",
            }
        )
        command = [sys.executable, "-m", "callstatus.cli", "serve", "--role", self.role]
        command += ["--port", str(self.port), "--db", str(self.db)]
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=self.folder
            )
        return self

    def ready(self, timeout: float = 90) -> Serve:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()[-3000:]
            try:
                httpx.get(f"{self.url}/healthz", timeout=1)  # any answer: it listens
                return self
            except httpx.HTTPError:
                time.sleep(0.1)
        raise AssertionError(f"{self.role} did not start:\n{self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> int:
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=90)


class Balancer:
    """Sends each webhook to a receiver picked at random; a failed or refused request goes to
    the other one, until some receiver acknowledges it (Plivo retries; a load balancer takes a
    dead receiver out)."""

    def __init__(self, receivers: list[Serve], seed: int) -> None:
        self.receivers = receivers
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.acked: dict[str, int] = {}  # receiver -> webhooks it acknowledged

    def send(self, client: httpx.Client, hook: Webhook) -> None:
        with self.lock:
            first = self.rng.randrange(len(self.receivers))
        deadline = time.monotonic() + 30
        for attempt in range(1000):
            receiver = self.receivers[(first + attempt) % len(self.receivers)]
            pairs = [
                (k, x) for k, v in hook.body.items() for x in (v if isinstance(v, list) else [v])
            ]
            try:
                response = signed_request(
                    client,
                    hook.method,
                    receiver.url + hook.endpoint.path,
                    pairs,
                    token=TOKEN,
                    base="",
                    query=list(hook.endpoint.query),
                )
            except httpx.HTTPError:
                response = None
            if response is not None and response.status_code == 200:
                with self.lock:
                    self.acked[receiver.url] = self.acked.get(receiver.url, 0) + 1
                return
            assert time.monotonic() < deadline, f"no receiver took {hook.kind}"
            time.sleep(0.02)


def calls_played(model: TrafficModel) -> list[Call]:
    """CALLS calls that started in the last hour, all ended by now."""
    end = time.time() - model.max_span_s
    starts = model.starts(CALLS, end, 1 / 24, random.Random(model.seed))
    return [model.call(index, at) for index, at in enumerate(starts)]


def send_all(balancer: Balancer, calls: list[Call], progress: list[int]) -> list[threading.Thread]:
    """SENDERS threads, each sending its share of the calls' webhooks in delivery order."""

    def run(share: list[Call]) -> None:
        with httpx.Client(timeout=10) as client:
            for call in share:
                for hook in sorted(call.webhooks, key=lambda h: h.delivered_at):
                    balancer.send(client, hook)
                    progress.append(1)
                time.sleep(0.05)  # a steady pace: the kills land mid-run

    threads = [
        threading.Thread(target=run, args=(calls[k::SENDERS],), daemon=True) for k in range(SENDERS)
    ]
    for thread in threads:
        thread.start()
    return threads


def wait_until(done: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def rows(
    con: duckdb.DuckDBPyConnection, view: str, relation: str | None = None
) -> list[tuple[Any, ...]]:
    """A view's columns of COLUMNS, from the view or from `relation` (its rollup)."""
    return con.execute(f"SELECT {COLUMNS[view]} FROM {relation or view} ORDER BY ALL").fetchall()


@pytest.mark.slow
def test_receivers_and_a_dashboard_equal_what_really_happened(
    server: PostgresServer, tmp_path: Path
) -> None:
    model = TrafficModel(seed=21)
    calls = calls_played(model)
    total = sum(len(call.webhooks) for call in calls)
    first = Serve("receiver", tmp_path / "r1", server.url).launch()
    second = Serve("receiver", tmp_path / "r2", server.url).launch()
    dashboard = Serve("dashboard", tmp_path / "dashboard", server.url).launch()
    for process in (first, second, dashboard):
        process.ready()
    balancer = Balancer([first, second], seed=5)
    progress: list[int] = []
    try:
        senders = send_all(balancer, calls, progress)
        wait_until(lambda: len(progress) > total // 4, 60, "the first quarter was not sent")
        first.kill()  # mid-run: its share goes to the other receiver meanwhile
        wait_until(lambda: len(progress) > total // 2, 60, "half was not sent")
        first.launch()
        dashboard.kill()
        wait_until(lambda: len(progress) > 3 * total // 4, 60, "three quarters not sent")
        dashboard.launch()
        first.ready()
        dashboard.ready()
        for thread in senders:
            thread.join(timeout=120)
            assert not thread.is_alive()
        assert len(progress) == total
        # The dashboard's Receiver health: both receivers and the replica, live.
        health = httpx.get(f"{dashboard.url}/healthz", timeout=5)
        assert health.status_code == 200, health.text
    finally:
        statuses = [s.stop() for s in (first, second, dashboard)]
    logs = "".join(s.log.read_text() for s in (first, second, dashboard))
    assert statuses == [0, 0, 0], logs[-4000:]
    assert "Traceback" not in logs, logs[-4000:]
    assert len(balancer.acked) == 2 and all(balancer.acked.values())

    # What really happened: every webhook of every call, none lost.
    truth = Database(tmp_path / "truth.duckdb")
    deliver(truth, [r for call in calls for r in call_webhooks(call)], DuplicateTracker())
    replica = duckdb.connect(str(dashboard.db), read_only=True)
    try:
        for view in COLUMNS:
            got, want = rows(replica, view), rows(truth.cursor(), view)
            assert got == want, view
            assert got
        # The dashboard's final refresh: its rollups hold the same rows as its views.
        for view, rollup in (("calls", "calls_rollup"), ("dial_legs", "dial_legs_rollup")):
            assert rows(replica, view) == rows(replica, view, rollup), rollup
        ((held, distinct),) = replica.execute(
            "SELECT count(*), count(DISTINCT event_id) FROM webhook_events"
        ).fetchall()
        assert held == distinct  # no row copied twice
        receivers = replica.execute("SELECT receiver FROM cluster_receivers").fetchall()
        assert len(receivers) == 2
        ((synced,),) = replica.execute("SELECT synced_at FROM replica_state").fetchall()
        assert (datetime.now(UTC) - synced).total_seconds() < 60
    finally:
        replica.close()
        truth.close()
