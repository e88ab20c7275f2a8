"""`serve --role`: what a receiver, a dashboard and `all` in clustered mode serve, in-process
on a real PostgreSQL server."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from starlette.testclient import TestClient
from streamlit.runtime import Runtime as StreamlitRuntime

from callstatus.app.asgi import build_app
from callstatus.app.runtime import Role
from callstatus.cli import main
from callstatus.core.settings import SettingsError
from tests.factories import make_settings, metric
from tests.postgres import PostgresServer, reset


@pytest.fixture
def url(server: PostgresServer) -> str:
    reset(server.url)
    return server.url


def client(tmp_path: Path, role: Role, **values: Any) -> TestClient:
    app = build_app(make_settings(tmp_path, **values), ("127.0.0.1", 8123), role)
    return TestClient(app, base_url="http://testserver")


@pytest.fixture(autouse=True)
def _streamlit_singleton() -> Iterator[None]:
    yield
    # Streamlit keeps its stopped runtime as a process-wide singleton (see tests/factories.py).
    StreamlitRuntime._instance = None


def stored(url: str) -> list[tuple[object, ...]]:
    with psycopg.connect(url) as con:
        return con.execute(
            "SELECT params::json->>'CallUUID', receiver FROM webhook_inbox ORDER BY seq"
        ).fetchall()


@pytest.mark.parametrize("role", ["receiver", "dashboard"])
def test_a_clustered_role_needs_the_postgres_url(tmp_path: Path, role: Role) -> None:
    with pytest.raises(SettingsError, match="CALLSTATUS_POSTGRES_URL"):
        build_app(make_settings(tmp_path), role=role)


def test_serve_as_a_receiver_without_the_url_is_one_line_and_status_2(
    cli_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cli_env.delenv("CALLSTATUS_POSTGRES_URL", raising=False)
    assert main(["serve", "--role", "receiver", "--port", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("callstatus: error: --role receiver stores webhooks in PostgreSQL")


def test_a_receiver_stores_into_postgres_and_serves_nothing_else(url: str, tmp_path: Path) -> None:
    with client(tmp_path, "receiver", CALLSTATUS_POSTGRES_URL=url) as http:
        reply = http.post("/plivo/hangup", data={"CallUUID": "r-1", "Event": "Hangup"})
        assert reply.status_code == 200
        health = http.get("/healthz").json()
        assert health["status"] == "ok"
        assert health["role"] == "receiver"
        assert health["postgres"] == "ok"
        assert health["receiver"] == "127.0.0.1:8123"
        assert health["spool_depth"] == 0
        assert health["last_event_at"] is not None
        assert metric(http, "callstatus_postgres_up") == 1
        for path in ("/", "/api/v1/kpis", "/health"):
            refused = http.get(path)
            assert refused.status_code == 404, path
            assert "serve --role dashboard" in refused.json()["error"]["message"]
        assert http.get("/plivo/nothing").status_code == 404
    assert stored(url) == [("r-1", "127.0.0.1:8123")]
    # No database file, and no snapshot, were created: the receiver keeps only its spool.
    assert not list(tmp_path.glob("*.duckdb"))


def test_a_receiver_reports_postgres_down_and_spools(
    server: PostgresServer, url: str, tmp_path: Path
) -> None:
    with client(
        tmp_path, "receiver", CALLSTATUS_POSTGRES_URL=url, DASHBOARD_PASSWORD="a-long-password"
    ) as http:
        server.stop()
        try:
            reply = http.post("/plivo/hangup", data={"CallUUID": "spooled-1"})
            assert reply.status_code == 200
            public = http.get("/healthz")
            assert (public.status_code, public.json()) == (503, {"status": "degraded"})
            details = http.get("/healthz", auth=("any", "a-long-password")).json()
            assert details["postgres"].startswith("PostgreSQL")
            assert details["spool_depth"] == 1
            text = http.get("/metrics", auth=("any", "a-long-password")).text
            assert "callstatus_postgres_up 0.0" in text
            assert "callstatus_spool_depth 1.0" in text
        finally:
            server.start()
        # Back: the spool is replayed, and /healthz says ok again.
        for _ in range(200):
            if http.get("/healthz").status_code == 200:
                break
            time.sleep(0.05)
        assert http.get("/healthz").json() == {"status": "ok"}
    assert stored(url) == [("spooled-1", "127.0.0.1:8123")]


def test_a_dashboard_refuses_webhooks_in_the_error_shape(url: str, tmp_path: Path) -> None:
    with client(tmp_path, "dashboard", CALLSTATUS_POSTGRES_URL=url) as http:
        reply = http.post("/plivo/hangup", data={"CallUUID": "d-1"})
        assert reply.status_code == 503
        error = reply.json()["error"]
        assert error["code"] == "not_a_receiver"
        assert "dashboard" in error["message"]
        health = http.get("/healthz")
        assert health.status_code == 200
        assert health.json()["role"] == "dashboard"
        assert "postgres" not in health.json()
        assert http.get("/").status_code == 200  # the dashboard itself
    assert (tmp_path / "callstatus.duckdb").exists()


def test_a_dashboard_says_when_its_replica_cannot_sync(
    server: PostgresServer, url: str, tmp_path: Path
) -> None:
    # Started before any receiver: the store is not migrated yet, and the dashboard does it.
    with client(tmp_path, "dashboard", CALLSTATUS_POSTGRES_URL=url) as http:
        assert _replica_state(http, lambda state: state == "ok") == "ok"
        assert "0001" in " ".join(str(name) for (name,) in _migrations(url))
        server.stop()
        try:
            # It still serves its replica (a load balancer keeps it), and says it is stale.
            state = _replica_state(http, lambda state: state != "ok")
            assert "PostgreSQL" in state or "connection" in state, state
            assert http.get("/healthz").json()["status"] == "ok"
        finally:
            server.start()
        assert _replica_state(http, lambda state: state == "ok") == "ok"


def _migrations(url: str) -> list[tuple[object, ...]]:
    with psycopg.connect(url) as con:
        return con.execute("SELECT name FROM schema_migrations").fetchall()


def _replica_state(http: TestClient, until: Callable[[str], bool]) -> str:
    """/healthz's `replica` once `until` holds for it (the sync steps every half second)."""
    state = ""
    for _ in range(300):
        health = http.get("/healthz")
        assert health.status_code == 200
        state = str(health.json()["replica"])
        if until(state):
            break
        time.sleep(0.05)
    return state


def test_all_with_the_url_stores_webhooks_in_postgres(url: str, tmp_path: Path) -> None:
    with client(tmp_path, "all", CALLSTATUS_POSTGRES_URL=url) as http:
        assert http.post("/plivo/hangup", data={"CallUUID": "a-1"}).status_code == 200
        health = http.get("/healthz").json()
        assert (health["role"], health["postgres"], health["status"]) == ("all", "ok", "ok")
    assert stored(url) == [("a-1", "127.0.0.1:8123")]
