"""The replica sync inside `serve`: a dashboard's database follows PostgreSQL while it runs and
holds every committed row after it stops; `all` with the URL reads back what it received."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
from starlette.testclient import TestClient
from streamlit.runtime import Runtime as StreamlitRuntime

from callstatus.app.asgi import build_app
from callstatus.app.runtime import Role
from callstatus.cluster import pg
from callstatus.core import server as core_server
from tests.cluster.pg_rows import insert_pg, traffic
from tests.factories import make_settings
from tests.postgres import postgres_server


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with postgres_server() as server:
        pg.migrate(server.url)
        yield server.url


@pytest.fixture(autouse=True)
def _streamlit_singleton() -> Iterator[None]:
    yield
    # Streamlit keeps its stopped runtime as a process-wide singleton (see tests/factories.py).
    StreamlitRuntime._instance = None


def client(tmp_path: Path, role: Role, **values: Any) -> TestClient:
    app = build_app(make_settings(tmp_path, **values), ("127.0.0.1", 8124), role)
    return TestClient(app, base_url="http://testserver")


def live_count(sql: str) -> int:
    """A count from the database of the server running in this process."""
    handle = core_server.installed()
    assert handle is not None
    (row,) = handle.database.cursor().execute(sql).fetchall()
    return int(row[0])


def wait_for(sql: str, want: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while live_count(sql) != want:
        assert time.monotonic() < deadline, f"{sql}: {live_count(sql)}, not {want}"
        time.sleep(0.05)


def test_a_dashboard_follows_postgres(url: str, tmp_path: Path) -> None:
    rows = traffic(30, seed=9)
    first, second = rows.slice(0, 60), rows.slice(60)
    with pg.connect(url) as con:
        insert_pg(con, first)
        con.commit()
    with client(tmp_path, "dashboard", CALLSTATUS_POSTGRES_URL=url):
        wait_for("SELECT count(*) FROM webhook_events", 60)  # a rebuild at start
        with pg.connect(url) as con:
            insert_pg(con, second)
            con.commit()
        wait_for("SELECT count(*) FROM webhook_events", rows.num_rows)
        ((source,),) = (
            core_server.installed()
            .database.cursor()
            .execute(  # type: ignore[union-attr]
                "SELECT source FROM replica_state"
            )
        ).fetchall()
        assert source.endswith("/callstatus")
    # Stopped: the file holds every row, and the rollups' final refresh took them in.
    with duckdb.connect(str(tmp_path / "callstatus.duckdb"), read_only=True) as con:
        ((held, moved),) = con.execute(
            "SELECT (SELECT count(*) FROM webhook_events), (SELECT count(*) FROM webhook_rows)"
        ).fetchall()
    assert held == moved == rows.num_rows


def test_all_reads_back_what_it_received(url: str, tmp_path: Path) -> None:
    with client(tmp_path, "all", CALLSTATUS_POSTGRES_URL=url) as http:
        for n in range(5):
            reply = http.post("/plivo/hangup", data={"CallUUID": f"all-{n}"})
            assert reply.status_code == 200
        wait_for(
            "SELECT count(*) FROM webhook_events WHERE call_uuid LIKE 'all-%'"
            " AND kind = 'hangup' AND NOT duplicate",
            5,
        )
