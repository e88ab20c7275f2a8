"""The replica's sync step on a real PostgreSQL: every committed row once, whatever the order of
commits; nothing rolled back; a failed step changes nothing; the replica's views equal the truth;
a rebuilt replica equals the old one."""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import psycopg
import pyarrow as pa
import pytest

from callstatus.cluster import pg
from callstatus.cluster.sync import ReplicaMismatch, SyncJob, state, sync_once
from callstatus.core import rollups
from callstatus.core.db import Database
from tests.cluster.pg_rows import insert_pg, insert_rejected_pg, insert_truth, traffic
from tests.postgres import PostgresServer, reset

Connection = Any  # psycopg.Connection[tuple[object, ...]]


@pytest.fixture
def reader(url: str) -> Iterator[Connection]:
    with pg.connect(url, autocommit=True) as con:
        yield con


@pytest.fixture
def replica(tmp_path: Path) -> Iterator[Database]:
    database = Database(tmp_path / "replica.duckdb")
    yield database
    database.close()


@pytest.fixture(scope="module")
def calls() -> pa.Table:
    """Simulated traffic: 150 calls' webhooks, duplicates flagged."""
    return traffic(150, seed=11)


def ids(database: Database) -> list[str]:
    """The replica's event_ids, sorted, each as often as it is held."""
    rows = database.cursor().execute("SELECT event_id::VARCHAR FROM webhook_events").fetchall()
    return sorted(row[0] for row in rows)


def hook(con: Connection) -> str:
    """One hand-made webhook row written in con's transaction; its event_id."""
    event_id = str(uuid.uuid4())
    con.execute(
        "INSERT INTO webhook_inbox (event_id, received_at, kind, http_method, params, signature,"
        " duplicate, params_hash, typed, receiver) VALUES (%s, now(), 'hangup', 'POST',"
        " '{\"CallUUID\":\"c\"}', 'valid', false, 1, '{\"call_uuid\":\"c\"}', 'test:1')",
        (event_id,),
    )
    return event_id


def test_out_of_order_commits_arrive_once(url: str, reader: Connection, replica: Database) -> None:
    cur = replica.cursor()
    with pg.connect(url) as slow, pg.connect(url) as fast:
        a = hook(slow)  # takes the smaller seq, commits last
        b = hook(fast)
        fast.commit()
        assert sync_once(reader, cur).webhooks == 1
        assert ids(replica) == [b]
        slow.commit()
    assert sync_once(reader, cur).webhooks == 1
    assert ids(replica) == sorted([a, b])
    assert sync_once(reader, cur).webhooks == 0
    assert ids(replica) == sorted([a, b])


def test_concurrent_writers_every_committed_row_once(
    url: str, reader: Connection, replica: Database
) -> None:
    """Writers commit in random order after random delays, a fifth roll back, while steps run."""
    committed: list[str] = []
    lock = threading.Lock()
    failures: list[BaseException] = []

    def write(seed: int) -> None:
        rng = random.Random(seed)
        try:
            with pg.connect(url) as con:
                for _ in range(25):
                    mine = [hook(con) for _ in range(rng.randint(1, 4))]
                    time.sleep(rng.random() * 0.02)
                    if rng.random() < 0.2:
                        con.rollback()
                        continue
                    con.commit()
                    with lock:
                        committed.extend(mine)
        except BaseException as exc:  # reported by the test, not lost in the thread
            failures.append(exc)

    writers = [threading.Thread(target=write, args=(seed,)) for seed in range(6)]
    for thread in writers:
        thread.start()
    cur = replica.cursor()
    steps = 0
    while any(thread.is_alive() for thread in writers):
        sync_once(reader, cur)
        steps += 1
    for thread in writers:
        thread.join()
    sync_once(reader, cur)
    assert not failures
    assert steps > 3
    assert len(committed) > 100
    assert ids(replica) == sorted(committed)


def test_failed_step_changes_nothing(url: str, reader: Connection, replica: Database) -> None:
    cur = replica.cursor()
    with pg.connect(url) as con:
        first = [hook(con) for _ in range(3)]
        con.commit()
    sync_once(reader, cur)
    before = state(cur)
    with pg.connect(url) as con:
        later = [hook(con) for _ in range(3)]
        insert_rejected_pg(con)
        con.commit()

    def crash(table: str, rows: int) -> None:
        raise RuntimeError(f"killed after copying {rows} rows of {table}")

    with pytest.raises(RuntimeError, match="killed"):
        sync_once(reader, cur, progress=crash)
    assert ids(replica) == sorted(first)
    assert state(cur) == before
    assert reader.info.transaction_status.name == "IDLE"
    result = sync_once(reader, cur)
    assert (result.webhooks, result.rejected) == (3, 1)
    assert ids(replica) == sorted(first + later)


def test_first_step_failing_leaves_an_empty_replica(
    url: str, reader: Connection, replica: Database
) -> None:
    with pg.connect(url) as con:
        written = [hook(con) for _ in range(5)]
        con.commit()

    def crash(table: str, rows: int) -> None:
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        sync_once(reader, replica.cursor(), progress=crash)
    assert ids(replica) == []
    assert state(replica.cursor()) is None
    sync_once(reader, replica.cursor())
    assert ids(replica) == sorted(written)


def test_text_survives_the_copy(url: str, reader: Connection, replica: Database) -> None:
    """Backslashes, tabs, line ends, quotes, a literal \\N, non-ASCII text and NULLs arrive as
    PostgreSQL holds them."""
    params = '{"A":"back\\\\slash \\"quoted\\"","B":"tab\\there\\nnew line","C":"\\\\N","D":"é 中"}'
    with pg.connect(url) as con:
        con.execute(
            "INSERT INTO webhook_inbox (event_id, received_at, kind, http_method, params,"
            " signature, duplicate, params_hash, typed, receiver) VALUES (gen_random_uuid(),"
            " now(), 'hangup', 'POST', %s, 'valid', true, -5, '{}', 'test:1')",
            (params,),
        )
        insert_rejected_pg(con, path="/plivo/a\tb\\c\nd", checked_url=None, params=params)
        con.commit()
    sync_once(reader, replica.cursor())
    cur = replica.cursor()
    row = cur.execute(
        "SELECT params::VARCHAR, duplicate, params_hash FROM webhook_events"
    ).fetchall()
    assert row == [(params, True, -5)]
    rejected = cur.execute(
        "SELECT path, checked_url, params::VARCHAR FROM rejected_webhooks"
    ).fetchall()
    assert rejected == [("/plivo/a\tb\\c\nd", None, params)]
    there = reader.execute("SELECT params, received_at FROM webhook_inbox").fetchall()
    here = cur.execute("SELECT params::VARCHAR, received_at FROM webhook_events").fetchall()
    assert here == there


def test_rows_in_many_chunks(
    url: str, reader: Connection, replica: Database, calls: pa.Table
) -> None:
    with pg.connect(url) as con:
        insert_pg(con, calls)
        con.commit()
    result = sync_once(reader, replica.cursor(), chunk_bytes=4096)
    assert result.webhooks == calls.num_rows
    assert ids(replica) == sorted(calls.column("event_id").to_pylist())


VIEWS = ("calls", "dials", "dial_legs")


def view_rows(database: Database, view: str) -> list[tuple[Any, ...]]:
    return database.cursor().execute(f"SELECT * FROM {view} ORDER BY ALL").fetchall()


def test_views_equal_the_truth(
    url: str, reader: Connection, replica: Database, calls: pa.Table, tmp_path: Path
) -> None:
    """Simulated traffic split between receivers whose transactions commit out of order, synced
    step by step, reads call by call as the same rows stored by the embedded writer."""
    truth = Database(tmp_path / "truth.duckdb")
    insert_truth(truth, calls)
    parts = [calls.slice(start, 97) for start in range(0, calls.num_rows, 97)]
    cur = replica.cursor()
    opened = []
    for index, part in enumerate(parts):
        con = pg.connect(url)
        insert_pg(con, part, receiver=f"r{index % 2}:8000")
        opened.append(con)
        if index % 3 == 2:  # the newest commits first, the oldest waits
            for con in reversed(opened[1:]):
                con.commit()
                con.close()
            opened = opened[:1]
            sync_once(reader, cur)
            rollups.refresh(cur)
    for con in opened:
        con.commit()
        con.close()
    sync_once(reader, cur)
    rollups.refresh(cur)
    rollups.refresh(truth.cursor())
    try:
        assert ids(replica) == sorted(calls.column("event_id").to_pylist())
        for view in VIEWS:
            assert view_rows(replica, view) == view_rows(truth, view), view
            assert view_rows(replica, view)
        assert rollups.is_current(cur)
        for table in rollups.TABLES:
            assert view_rows(replica, table) == view_rows(truth, table), table
    finally:
        truth.close()


def test_rebuilt_replica_equals_the_old(
    url: str, reader: Connection, calls: pa.Table, tmp_path: Path
) -> None:
    old = Database(tmp_path / "old.duckdb")
    cur = old.cursor()
    for start in range(0, calls.num_rows, 200):
        with pg.connect(url) as con:
            insert_pg(con, calls.slice(start, 200))
            if start % 400 == 0:
                insert_rejected_pg(con)
            con.execute(
                "INSERT INTO webhook_repeats VALUES (date_trunc('hour', now()), 'hangup', 1)"
                " ON CONFLICT (bucket, kind) DO UPDATE SET repeats = webhook_repeats.repeats + 1"
            )
            con.execute(
                "INSERT INTO receivers (receiver, started_at, seen_at, stored)"
                " VALUES ('r1:8000', now(), now(), %s) ON CONFLICT (receiver) DO UPDATE"
                " SET seen_at = now(), stored = EXCLUDED.stored",
                (start,),
            )
            con.commit()
        sync_once(reader, cur)
        rollups.refresh(cur)
    old.close()
    (tmp_path / "old.duckdb").rename(tmp_path / "kept.duckdb")  # the file deleted, kept aside
    rebuilt = Database(tmp_path / "old.duckdb")
    assert state(rebuilt.cursor()) is None
    sync_once(reader, rebuilt.cursor())
    rollups.refresh(rebuilt.cursor())
    kept = Database(tmp_path / "kept.duckdb", read_only=True)
    try:
        for relation in (
            "webhook_events",
            "rejected_webhooks",
            "webhook_repeats",
            "cluster_receivers",
            *VIEWS,
            *rollups.TABLES,
        ):
            assert view_rows(rebuilt, relation) == view_rows(kept, relation), relation
        assert len(view_rows(kept, "webhook_events")) == calls.num_rows
        assert view_rows(kept, "cluster_receivers")[0][5] == calls.num_rows // 200 * 200
        assert state(rebuilt.cursor()).total_webhooks == calls.num_rows  # type: ignore[union-attr]
    finally:
        kept.close()
        rebuilt.close()


def test_replica_of_another_store_is_refused(
    url: str, reader: Connection, replica: Database
) -> None:
    cur = replica.cursor()
    sync_once(reader, cur)
    # A position far ahead of this store's transactions: the replica came from elsewhere.
    cur.execute("UPDATE replica_state SET snapshot = '900000000:900000000:'")
    with pytest.raises(ReplicaMismatch, match="Delete the replica file"):
        sync_once(reader, cur)


def test_job_keeps_the_replica_current(url: str, replica: Database) -> None:
    job = SyncJob(replica, url, interval_s=0.1)
    job.folder.mkdir()
    stray = job.folder / "left-by-a-killed-step.tsv"
    stray.write_text("x")
    job.start()
    assert not stray.exists()
    try:
        with pg.connect(url) as con:
            written = [hook(con) for _ in range(10)]
            con.commit()
        committed = time.monotonic()
        while ids(replica) != sorted(written):
            # Within a second on an idle machine; the bound leaves room for a loaded one.
            assert time.monotonic() - committed < 5.0, "the replica fell behind"
            time.sleep(0.02)
        assert job.last_error is None
    finally:
        job.stop()
    assert job._con is None
    assert not job.folder.exists()


def test_job_survives_postgres_going_away(
    server: PostgresServer, url: str, replica: Database
) -> None:
    job = SyncJob(replica, url, interval_s=0.1)
    job.start()
    try:
        with pg.connect(url) as con:
            first = hook(con)
            con.commit()
        deadline = time.monotonic() + 30
        while ids(replica) != [first]:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        server.stop()
        try:
            deadline = time.monotonic() + 30
            while job.last_error is None:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        finally:
            server.start()
        with pg.connect(url) as con:
            second = hook(con)
            con.commit()
        deadline = time.monotonic() + 30
        while ids(replica) != sorted([first, second]):
            assert time.monotonic() < deadline, job.last_error
            time.sleep(0.05)
        assert job.last_error is None
    finally:
        job.stop()


def test_reads_nothing_it_need_not(reader: Connection, replica: Database) -> None:
    """An idle step copies nothing and leaves the receivers' and repeats' tables as they are."""
    cur = replica.cursor()
    sync_once(reader, cur)
    result = sync_once(reader, cur)
    assert (result.webhooks, result.rejected, result.repeats_copied, result.receivers_copied) == (
        0,
        0,
        False,
        False,
    )
    assert isinstance(cur, duckdb.DuckDBPyConnection)


def test_a_postgres_error_leaves_the_connection_usable(
    url: str, reader: Connection, replica: Database
) -> None:
    reset(url)  # no tables: the step fails inside its transaction
    with pytest.raises(psycopg.errors.UndefinedTable):
        sync_once(reader, replica.cursor())
    assert state(replica.cursor()) is None
    pg.migrate(url)
    with pg.connect(url) as con:
        written = hook(con)
        con.commit()
    sync_once(reader, replica.cursor())
    assert ids(replica) == [written]


def test_job_says_once_what_is_wrong(
    url: str, replica: Database, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A replica of another store, then a replica file deleted under the job: each is logged
    once, not at every step."""
    with pg.connect(url, autocommit=True) as con:
        sync_once(con, replica.cursor())
    replica.cursor().execute("UPDATE replica_state SET snapshot = '900000000:900000000:'")
    job = SyncJob(replica, url, interval_s=0.02)
    with caplog.at_level(logging.WARNING, logger="callstatus.replica"):
        job.start()
        time.sleep(0.5)
        (tmp_path / "replica.duckdb").rename(tmp_path / "moved.duckdb")
        time.sleep(0.5)
        job.stop()
    messages = [r.getMessage() for r in caplog.records]
    assert len([m for m in messages if "built from another PostgreSQL" in m]) == 1, messages
    assert len([m for m in messages if "deleted or replaced" in m]) == 1, messages
    assert isinstance(job.last_error, str) and "ReplicaMismatch" in job.last_error
