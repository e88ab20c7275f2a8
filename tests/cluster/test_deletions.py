"""Erasure and retention in clustered mode reach PostgreSQL: after either, a replica rebuilt from
PostgreSQL holds nothing they removed (a real PostgreSQL, the app in-process)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import psycopg
import pytest
from starlette.testclient import TestClient
from streamlit.runtime import Runtime as StreamlitRuntime

from callstatus.app.asgi import build_app
from callstatus.app.runtime import Role
from callstatus.cluster import deletions, pg
from callstatus.core import server as core_server
from tests.cluster.pg_rows import insert_pg, insert_rejected_pg, traffic
from tests.factories import make_settings
from tests.servers import free_port

NUMBER = "+447911222333"


@pytest.fixture(autouse=True)
def _streamlit_singleton() -> Iterator[None]:
    yield
    StreamlitRuntime._instance = None


def client(tmp_path: Path, role: Role, **values: Any) -> TestClient:
    # A test may start the app again (a rebuild): Streamlit keeps its stopped runtime.
    StreamlitRuntime._instance = None
    app = build_app(make_settings(tmp_path, **values), ("127.0.0.1", 8125), role)
    return TestClient(app, base_url="http://testserver")


def live(sql: str) -> list[tuple[Any, ...]]:
    handle = core_server.installed()
    assert handle is not None
    return handle.database.cursor().execute(sql).fetchall()


def wait_for(sql: str, want: object, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while (got := live(sql)[0][0]) != want:
        assert time.monotonic() < deadline, f"{sql}: {got}, not {want}"
        time.sleep(0.05)


def in_pg(url: str, sql: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as con:
        return con.execute(sql, params).fetchall()


def rebuilt(tmp_path: Path) -> None:
    """Delete the replica (what an operator does to rebuild it)."""
    for name in ("callstatus.duckdb", "callstatus.duckdb.wal"):
        (tmp_path / name).unlink(missing_ok=True)


def replica_ids(tmp_path: Path) -> set[str]:
    with duckdb.connect(str(tmp_path / "callstatus.duckdb"), read_only=True) as con:
        return {str(r[0]) for r in con.execute("SELECT event_id FROM webhook_events").fetchall()}


def post_call(http: TestClient, uuid: str, caller: str) -> None:
    for path in ("/plivo/answer", "/plivo/hangup"):
        reply = http.post(path, data={"CallUUID": uuid, "From": caller, "To": "18005550199"})
        assert reply.status_code == 200, reply.text


def test_an_erased_number_stays_gone_after_a_rebuild(url: str, tmp_path: Path) -> None:
    with pg.connect(url) as con:
        insert_rejected_pg(con, params=json.dumps({"From": NUMBER[1:]}))
        insert_rejected_pg(con, params='{"From":"15550001111"}')
        con.commit()
    with client(tmp_path, "all", CALLSTATUS_POSTGRES_URL=url) as http:
        post_call(http, "eeeeeeee-0000-0000-0000-000000000001", NUMBER[1:])
        post_call(http, "eeeeeeee-0000-0000-0000-000000000002", "15550009999")
        wait_for("SELECT count(*) FROM webhook_events", 4)
        wait_for("SELECT count(*) FROM rejected_webhooks", 2)
        done = http.post("/api/erase", json={"number": NUMBER})
        assert done.status_code == 200, done.text
        counts = done.json()["counts"]
        assert counts["webhook_events"] == 2 and counts["rejected_webhooks"] == 1
        assert counts["postgres/webhook_events"] == 2
        assert counts["postgres/rejected_webhooks"] == 1
        # The sync goes on and does not bring them back.
        time.sleep(1.2)
        assert live("SELECT count(*) FROM webhook_events")[0][0] == 2
    mentions = "SELECT count(*) FROM {} WHERE params LIKE %s"
    for table in ("webhook_inbox", "rejected_webhooks"):
        assert in_pg(url, mentions.format(table), (f"%{NUMBER[1:]}%",)) == [(0,)]
    assert in_pg(url, "SELECT count(*) FROM webhook_inbox") == [(2,)]
    # The erased webhooks' fingerprints went with them; the other call's stay.
    assert in_pg(url, "SELECT count(*) FROM webhook_fingerprints") == [(2,)]
    kept = replica_ids(tmp_path)
    rebuilt(tmp_path)
    with client(tmp_path, "dashboard", CALLSTATUS_POSTGRES_URL=url):
        wait_for("SELECT count(*) FROM webhook_events", 2)
        assert live(f"SELECT count(*) FROM webhook_events WHERE from_number = '{NUMBER[1:]}'") == [
            (0,)
        ]
        assert live("SELECT count(*) FROM rejected_webhooks") == [(1,)]
    assert replica_ids(tmp_path) == kept


def test_retention_reaches_postgres_and_a_rebuild_has_nothing_past_the_horizon(
    url: str, tmp_path: Path
) -> None:
    rows = traffic(120, seed=4, days=6)
    old_bucket = datetime.now(UTC).replace(microsecond=0) - timedelta(days=5)
    with pg.connect(url) as con:
        insert_pg(con, rows)
        insert_rejected_pg(con)  # received now: kept
        con.execute(
            "INSERT INTO rejected_webhooks (rejected_id, received_at, reason, path, http_method,"
            " headers, params, truncated, receiver) VALUES (gen_random_uuid(),"
            " now() - interval '4 days', 'bad_signature', '/plivo/hangup', 'POST', '{}', '{}',"
            " false, 'test:1')"
        )
        con.execute(
            "INSERT INTO webhook_repeats VALUES (%s, 'hangup', 3), (now(), 'hangup', 2)",
            (old_bucket,),
        )
        con.commit()
    settings = {"CALLSTATUS_POSTGRES_URL": url, "CALLSTATUS_RETENTION_DAYS": 2}
    with client(tmp_path, "dashboard", **settings):
        deadline = time.monotonic() + 60
        while not live("SELECT count(*) FROM retention_runs WHERE status = 'ok'")[0][0]:
            assert time.monotonic() < deadline, "no retention run"
            time.sleep(0.1)
        ((horizon, removed),) = live(
            "SELECT horizon, removed FROM retention_runs WHERE status = 'ok'"
        )
        assert json.loads(removed)["webhook_events"] > 0
        time.sleep(1.2)  # a few sync steps: nothing comes back
        kept = {str(r[0]) for r in live("SELECT event_id FROM webhook_events")}
    in_postgres = {str(r[0]) for r in in_pg(url, "SELECT event_id FROM webhook_inbox")}
    assert in_postgres == kept and 0 < len(kept) < rows.num_rows
    assert in_pg(url, "SELECT count(*) FROM rejected_webhooks") == [(1,)]
    assert in_pg(url, "SELECT count(*) FROM webhook_repeats WHERE bucket < %s", (horizon,)) == [
        (0,)
    ]
    rebuilt(tmp_path)
    with client(tmp_path, "dashboard", CALLSTATUS_POSTGRES_URL=url):
        wait_for("SELECT count(*) FROM webhook_events", len(kept))
        # Whole calls go by their start: nothing left started before the horizon.
        (started,) = live("SELECT min(started_at) FROM calls")[0]
        assert started >= horizon
        assert live("SELECT count(*) FROM webhook_repeats") == [(1,)]
    assert replica_ids(tmp_path) == kept


def test_erase_removes_nothing_while_postgres_cannot_be_read(tmp_path: Path) -> None:
    nowhere = f"postgresql://postgres@127.0.0.1:{free_port()}/callstatus"
    with client(tmp_path, "dashboard", CALLSTATUS_POSTGRES_URL=nowhere) as http:
        reply = http.post("/api/erase", json={"number": NUMBER})
        assert reply.status_code == 503
        error = reply.json()["error"]
        assert error["code"] == "postgres_unreachable"
        assert "nothing was removed" in error["message"]
        assert live("SELECT count(*) FROM erasures") == [(0,)]


def test_deletions_postgres_could_not_take_wait_and_are_done_later(
    url: str, tmp_path: Path
) -> None:
    rows = traffic(5, seed=2)
    with pg.connect(url) as con:
        insert_pg(con, rows)
        con.commit()
    database = tmp_path / "replica.duckdb"
    with duckdb.connect(str(database)) as cur:
        cur.execute("CREATE TABLE webhook_events (event_id UUID)")
        cur.execute("CREATE TABLE rejected_webhooks (rejected_id UUID)")
        cur.execute("CREATE TABLE webhook_repeats (bucket TIMESTAMPTZ, kind VARCHAR)")
        ids = {"ids": rows["event_id"].to_pylist()}
        cur.execute("INSERT INTO webhook_events SELECT unnest($ids)", ids)
        gone = str(rows["event_id"][0])
        nowhere = f"postgresql://postgres@127.0.0.1:{free_port()}/callstatus"
        with deletions.mirrored(cur.cursor(), nowhere, database) as mirrored:
            cur.execute("DELETE FROM webhook_events WHERE event_id = ?", [gone])
    assert mirrored.counts is None and mirrored.error is not None
    assert mirrored.as_counts() == {"postgres/waiting": 1}
    path = deletions.pending_path(database)
    assert json.loads(path.read_text()) == {"webhook_inbox": [gone]}
    assert deletions.flush_pending(url, path) == {"webhook_inbox": 1}
    assert not path.exists()
    assert in_pg(url, "SELECT count(*) FROM webhook_inbox WHERE event_id = %s", (gone,)) == [(0,)]
    assert in_pg(url, "SELECT count(*) FROM webhook_inbox") == [(rows.num_rows - 1,)]
