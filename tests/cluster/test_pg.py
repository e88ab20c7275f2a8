"""The shared store's migrations on a real PostgreSQL server."""

from __future__ import annotations

import threading

import psycopg
import pytest

from callstatus.cluster import pg
from tests.postgres import PostgresServer, reset


@pytest.fixture
def url(server: PostgresServer) -> str:
    reset(server.url)
    return server.url


def test_migrations_apply_once(url: str) -> None:
    names = [name for name, _ in pg.migrations()]
    assert names[0] == "0001_webhooks"
    assert pg.migrate(url) == names
    assert pg.migrate(url) == []
    with psycopg.connect(url) as con:
        tables = {
            row[0]
            for row in con.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
            )
        }
    assert {"webhook_inbox", "webhook_fingerprints", "rejected_webhooks", "receivers"} <= tables


def test_receivers_starting_together_migrate_once(url: str) -> None:
    results: list[list[str]] = []
    threads = [threading.Thread(target=lambda: results.append(pg.migrate(url))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(len(applied) for applied in results) == [0, 0, 0, len(pg.migrations())]


def test_rows_record_their_transaction(url: str) -> None:
    """The replication watermark's premise: a row's tx is below the xmin of any snapshot taken
    after its transaction ended, and at or above it while the transaction is open."""
    pg.migrate(url)
    insert = (
        "INSERT INTO webhook_inbox (event_id, received_at, kind, http_method, params, signature,"
        " duplicate, params_hash, typed, receiver) VALUES (gen_random_uuid(), now(), 'hangup',"
        " 'POST', '{}', 'valid', false, 1, '{}', 'test:1')"
    )
    with pg.connect(url) as slow, pg.connect(url, autocommit=True) as reader:
        slow.execute(insert)  # open: its row has taken a seq but is not visible yet
        with pg.connect(url) as fast:
            fast.execute(insert)
            fast.commit()
        xmin = reader.execute("SELECT pg_snapshot_xmin(pg_current_snapshot())").fetchone()
        rows = reader.execute("SELECT seq, tx FROM webhook_inbox").fetchall()
        assert [row[0] for row in rows] == [2]  # the later seq is visible before the earlier
        assert xmin is not None
        slow_tx = slow.execute("SELECT pg_current_xact_id()").fetchone()
        assert slow_tx is not None
        # The open transaction holds the snapshot's xmin at or below its own id.
        assert int(str(xmin[0])) <= int(str(slow_tx[0]))
        slow.commit()
        seqs = [row[0] for row in reader.execute("SELECT seq FROM webhook_inbox ORDER BY tx")]
        assert seqs == [1, 2]
