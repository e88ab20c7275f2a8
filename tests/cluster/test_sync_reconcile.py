"""Reconciliation in clustered mode: Plivo's call records go to PostgreSQL (kind `cdr`, signature
`api`) and into the replica at once, so the run classifies them as the embedded store does and a
rebuilt replica keeps them."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from callstatus.cluster import inbox, pg
from callstatus.cluster.replica_records import RecordStore
from callstatus.cluster.sync import SyncJob, sync_once
from callstatus.core import rollups
from callstatus.core.db import Database
from callstatus.core.duplicates import DuplicateTracker
from callstatus.reconcile.client import CallApi
from callstatus.reconcile.run import Window, reconcile
from callstatus.simulator.call_api import CallApiServer
from callstatus.simulator.traffic import TrafficModel
from tests.factories import call_webhooks, deliver, make_settings
from tests.postgres import postgres_server

AUTH_ID = "MACLUSTERRECONCILE01"
TOKEN = "cluster-reconcile-token"
CALLS = 60


def rows(database: Database, view: str) -> list[tuple[Any, ...]]:
    return database.cursor().execute(f"SELECT * FROM {view} ORDER BY ALL").fetchall()


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with postgres_server() as server:
        pg.migrate(server.url)
        yield server.url


def test_records_reach_postgres_and_survive_a_rebuild(url: str, tmp_path: Path) -> None:
    now = datetime.now(UTC)
    model = TrafficModel(seed=31)
    starts = model.starts(CALLS, (now - timedelta(hours=1)).timestamp(), 1.0, model.rng(-1))
    calls = [model.call(i, at) for i, at in enumerate(starts)]
    # A third of the calls reached no receiver: only Plivo's records know them.
    kept = [call for call in calls if call.index % 3]
    received = [r for call in kept for r in call_webhooks(call)]
    DuplicateTracker().mark(received)
    with pg.connect(url) as con:
        inbox.insert_events(con, received, ZoneInfo("UTC"), "r1:8000")
        con.commit()
    replica = Database(tmp_path / "replica.duckdb")
    job = SyncJob(replica, url)
    job.sync_now()
    store = RecordStore(url, "UTC", "reconcile@dashboard:8000", job.sync_now)
    records = [record for call in calls for record in call.records]
    with CallApiServer(records, auth_id=AUTH_ID, token=TOKEN) as api:
        settings = make_settings(
            tmp_path, PLIVO_AUTH_ID=AUTH_ID, PLIVO_API_TOKEN=TOKEN, PLIVO_API_URL=api.url
        )
        client = CallApi.from_settings(settings)
        window = Window(now - timedelta(days=2), now)
        summary = reconcile(replica.cursor(), client, window, settings, trigger="job", store=store)
        again = reconcile(replica.cursor(), client, window, settings, trigger="job", store=store)
        client.close()
    job.stop()
    assert summary.status == "ok", summary.error
    assert summary.records_new == len(records)
    assert summary.calls_added == CALLS - len(kept)
    assert again.records_new == 0
    with pg.connect(url) as con:
        stored = con.execute(
            "SELECT count(*) FROM webhook_inbox WHERE kind = 'cdr' AND signature = 'api'"
            " AND receiver = 'reconcile@dashboard:8000'"
        ).fetchone()
    assert stored == (len(records),)

    # The embedded store with the same webhooks and records reads the same.
    embedded = Database(tmp_path / "embedded.duckdb")
    deliver(embedded, received, DuplicateTracker())
    with CallApiServer(records, auth_id=AUTH_ID, token=TOKEN) as api:
        settings = make_settings(
            tmp_path, PLIVO_AUTH_ID=AUTH_ID, PLIVO_API_TOKEN=TOKEN, PLIVO_API_URL=api.url
        )
        client = CallApi.from_settings(settings)
        there = reconcile(embedded.cursor(), client, window, settings, trigger="job")
        client.close()
    assert (there.calls_had, there.calls_completed, there.calls_added, there.legs_added) == (
        summary.calls_had,
        summary.calls_completed,
        summary.calls_added,
        summary.legs_added,
    )

    # A replica rebuilt from PostgreSQL keeps the records.
    rebuilt = Database(tmp_path / "rebuilt.duckdb")
    with pg.connect(url, autocommit=True) as con:
        sync_once(con, rebuilt.cursor())
    for database in (replica, rebuilt, embedded):
        rollups.refresh(database.cursor())
    for view in ("calls", "dials", "dial_legs"):
        assert rows(rebuilt, view) == rows(replica, view), view
    # Record rows carry their fetch time: compare what does not depend on it.
    sources = "SELECT call_uuid, source, end_source, outcome FROM calls ORDER BY ALL"
    assert replica.cursor().execute(sources).fetchall() == (
        embedded.cursor().execute(sources).fetchall()
    )
    for database in (replica, rebuilt, embedded):
        database.close()


def test_a_run_that_loses_postgres_is_recorded_as_failed(tmp_path: Path) -> None:
    """PostgreSQL stops before the run stores its records: the run ends in an error that names
    it, and reconcile_runs says 'error' with that reason instead of 'running' for ever."""
    import psycopg

    now = datetime.now(UTC)
    model = TrafficModel(seed=32)
    starts = model.starts(5, (now - timedelta(hours=1)).timestamp(), 1.0, model.rng(-1))
    records = [r for i, at in enumerate(starts) for r in model.call(i, at).records]
    replica = Database(tmp_path / "replica.duckdb")
    with postgres_server() as server:
        pg.migrate(server.url)
        store = RecordStore(server.url, "UTC", "reconcile@dashboard:8000", lambda: None)
        server.stop()
        with CallApiServer(records, auth_id=AUTH_ID, token=TOKEN) as api:
            settings = make_settings(
                tmp_path, PLIVO_AUTH_ID=AUTH_ID, PLIVO_API_TOKEN=TOKEN, PLIVO_API_URL=api.url
            )
            client = CallApi.from_settings(settings)
            window = Window(now - timedelta(days=1), now)
            with pytest.raises(psycopg.OperationalError):
                reconcile(replica.cursor(), client, window, settings, trigger="job", store=store)
            client.close()
    runs = rows(replica, "(SELECT status, error, finished_at IS NOT NULL FROM reconcile_runs)")
    assert len(runs) == 1
    status, error, finished = runs[0]
    assert (status, finished) == ("error", True)
    assert error.startswith("OperationalError"), error
