"""Receiver health in clustered mode (AppTest): each receiver from its heartbeat, the spools
added up, and the replica's lag, read from a replica synced from a real PostgreSQL."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
from streamlit.testing.v1 import AppTest

from callstatus.cluster import pg
from callstatus.cluster.sync import sync_once
from callstatus.core import rollups
from callstatus.core import settings as settings_module
from callstatus.core.db import Database
from callstatus.dashboard import tiles
from tests.cluster.pg_rows import insert_pg, traffic
from tests.postgres import postgres_server

APP = str(Path(__file__).resolve().parents[2] / "callstatus" / "dashboard" / "app.py")


@pytest.fixture(scope="module")
def replica(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A replica of a store holding 40 calls' webhooks and two receivers, one silent."""
    path = tmp_path_factory.mktemp("health") / "replica.duckdb"
    with postgres_server() as server:
        pg.migrate(server.url)
        with pg.connect(server.url) as con:
            insert_pg(con, traffic(40, seed=5, days=0.5))
            con.execute(
                "INSERT INTO receivers VALUES"
                " ('10.0.0.1:8000', now() - interval '1 hour', now(), now(), 3, 120),"
                " ('10.0.0.2:8000', now() - interval '1 hour', now() - interval '5 minutes',"
                "  NULL, 2, 80)"
            )
            con.commit()
        database = Database(path)
        with pg.connect(server.url, autocommit=True) as con:
            sync_once(con, database.cursor())
        rollups.refresh(database.cursor())
        database.close()
        with pytest.MonkeyPatch.context() as monkeypatch:
            monkeypatch.setenv("CALLSTATUS_DB", str(path))
            monkeypatch.setenv("CALLSTATUS_POSTGRES_URL", server.url)
            settings_module.get_settings.cache_clear()
            yield path
    settings_module.get_settings.cache_clear()


def _health() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["range"] = "Last 30 days"
    at.run()
    at.switch_page("screens/health.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _metric(at: AppTest, label: str) -> str:
    values = [m.value for m in at.metric if m.label == label]
    assert values, f"no {label!r} tile among {[m.label for m in at.metric]}"
    return str(values[0])


def _one(path: Path, sql: str) -> object:
    with duckdb.connect(str(path), read_only=True) as con:
        row = con.execute(sql).fetchone()
    assert row is not None
    return row[0]


def test_receivers_and_the_replica(replica: Path) -> None:
    at = _health()
    assert "Receivers and this dashboard's replica" in [h.value for h in at.subheader]
    assert _metric(at, "Receivers up") == "1 of 2"
    assert _metric(at, "Spool depth") == "5"  # both receivers' spools
    copied = _one(replica, "SELECT count(*) FROM webhook_events")
    assert _metric(at, "Webhooks copied") == tiles.fmt_count(copied)
    assert _metric(at, "Replica lag").endswith(" s")
    table = next(df.value for df in at.dataframe if "receiver" in df.value.columns)
    assert table["receiver"].tolist() == ["10.0.0.1:8000", "10.0.0.2:8000"]
    assert table["status"].tolist() == ["up", "silent"]
    assert table["stored since start"].tolist() == [120, 80]
    assert table["last seen"].tolist()[1] == "5 min"


def test_a_replica_behind_says_so(
    replica: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A copy: the dashboard keeps the first file open read-only in this process.
    behind = tmp_path / "behind.duckdb"
    shutil.copyfile(replica, behind)
    with duckdb.connect(str(behind)) as con:
        con.execute("UPDATE replica_state SET synced_at = now() - INTERVAL 3 MINUTE")
    monkeypatch.setenv("CALLSTATUS_DB", str(behind))
    settings_module.get_settings.cache_clear()
    at = _health()
    lag = float(_metric(at, "Replica lag").removesuffix(" s"))
    assert 175 < lag < 300
    assert any("cannot reach PostgreSQL" in w.value for w in at.warning)


def test_not_shown_without_postgres(replica: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CALLSTATUS_POSTGRES_URL")
    settings_module.get_settings.cache_clear()
    at = _health()
    assert "Receivers and this dashboard's replica" not in [h.value for h in at.subheader]
    assert not [m for m in at.metric if m.label == "Receivers up"]
