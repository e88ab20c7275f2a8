"""The analysts' snapshot: complete, point-in-time, atomically replaced, kept by a real server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import duckdb
import httpx
import pytest

from callstatus.core.db import Database
from callstatus.core.snapshot import (
    SnapshotJob,
    age_s,
    read_fingerprint,
    tmp_path_for,
    write_snapshot,
)
from tests.factories import store, wait_until
from tests.servers import running_server

RELATIONS_SQL = (
    "SELECT table_name, table_type FROM information_schema.tables "
    "WHERE table_schema = 'main' ORDER BY table_name"
)


def answers(n: int, prefix: str = "u") -> list[tuple[str, dict[str, str]]]:
    return [("answer", {"CallUUID": f"{prefix}{i}", "Direction": "inbound"}) for i in range(n)]


def count(path: Path, sql: str = "SELECT count(*) FROM webhook_events") -> int:
    con = duckdb.connect(str(path), read_only=True)
    try:
        row = con.execute(sql).fetchone()
        assert row is not None
        return int(row[0])
    finally:
        con.close()


def test_snapshot_has_every_table_view_and_row(db: Database, tmp_path: Path) -> None:
    store(db, [*answers(5), ("hangup", {"CallUUID": "u1", "HangupCauseCode": "3000"})])
    target = tmp_path / "callstatus-snapshot.duckdb"

    copied = write_snapshot(db.cursor(), target)

    snapshot = duckdb.connect(str(target), read_only=True)
    try:
        live_relations = db.cursor().execute(RELATIONS_SQL).fetchall()
        assert snapshot.execute(RELATIONS_SQL).fetchall() == live_relations
        assert ("calls", "VIEW") in live_relations
        # Views (and the macros they call) work in the copy, under its own catalog name.
        outcomes = snapshot.execute("SELECT call_uuid, outcome FROM calls ORDER BY 1").fetchall()
        live = db.cursor().execute("SELECT call_uuid, outcome FROM calls ORDER BY 1").fetchall()
        assert outcomes == live
        assert ("u1", "no-answer") in outcomes
    finally:
        snapshot.close()
    assert read_fingerprint(db.cursor(), target) == copied
    assert not tmp_path_for(target).exists()
    assert not target.with_name(target.name + ".wal").exists()


def test_refresh_copies_only_when_data_changed(db: Database, tmp_path: Path) -> None:
    target = tmp_path / "snap.duckdb"
    store(db, answers(3))
    job = SnapshotJob(db, target, interval_s=60)
    assert job.refresh() is True
    past = time.time() - 600
    os.utime(target, (past, past))

    assert job.refresh() is False
    age = age_s(target)
    assert age is not None and age < 5, "a confirmed-current snapshot is young again"

    store(db, answers(2, prefix="v"))
    assert job.refresh() is True
    assert count(target) == 5


def test_start_rewrites_only_a_stale_or_broken_snapshot(db: Database, tmp_path: Path) -> None:
    target = tmp_path / "snap.duckdb"
    store(db, answers(3))
    assert SnapshotJob(db, target, 60).refresh() is True
    assert SnapshotJob(db, target, 60).refresh() is False, "a restart keeps a current snapshot"

    store(db, answers(1, prefix="late"))
    assert SnapshotJob(db, target, 60).refresh() is True, "stale: rewritten"

    target.write_bytes(b"not a database")
    assert SnapshotJob(db, target, 60).refresh() is True, "broken: rewritten"
    assert count(target) == 4


def test_copy_is_one_point_in_time_while_batches_commit(db: Database, tmp_path: Path) -> None:
    """Each writer transaction stores BATCH rows sharing a marker: a snapshot holding a
    marker with fewer rows would have caught a transaction halfway."""
    batch = 300
    store(db, answers(20_000, prefix="seed-"))  # a copy long enough for commits to land in it
    stop = threading.Event()
    committed = [0]

    def write_batches() -> None:
        k = 0
        while not stop.is_set():
            store(db, answers(batch, prefix=f"batch{k}-"))
            k += 1
            committed[0] = k

    writer = threading.Thread(target=write_batches)
    writer.start()
    try:
        seen = []
        for i in range(4):
            target = tmp_path / f"snap{i}.duckdb"
            write_snapshot(db.cursor(), target)
            reader = duckdb.connect(str(target), read_only=True)
            sizes = reader.execute(
                "SELECT split_part(call_uuid, '-', 1) AS marker, count(*) FROM webhook_events "
                "WHERE call_uuid LIKE 'batch%' GROUP BY marker"
            ).fetchall()
            reader.close()
            assert all(n == batch for _, n in sizes), sizes
            seen.append(len(sizes))
    finally:
        stop.set()
        writer.join()
    assert committed[0] > seen[0], "batches were committing while the snapshots were taken"
    assert seen == sorted(seen)


def test_reader_of_the_old_file_keeps_reading_after_replace(db: Database, tmp_path: Path) -> None:
    target = tmp_path / "snap.duckdb"
    store(db, answers(3))
    write_snapshot(db.cursor(), target)
    reader = duckdb.connect(str(target), read_only=True)
    try:
        store(db, answers(4, prefix="v"))
        write_snapshot(db.cursor(), target)
        # The old reader sees the old file, whole; a new process sees the new one.
        assert reader.execute("SELECT count(*) FROM webhook_events").fetchone() == (3,)
        assert reader.execute("SELECT count(*) FROM calls").fetchone() == (3,)
    finally:
        reader.close()
    fresh = subprocess.run(
        [
            sys.executable,
            "-c",
            "import duckdb, sys; print(duckdb.connect(sys.argv[1], "
            "read_only=True).execute('SELECT count(*) FROM webhook_events').fetchone()[0])",
            str(target),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert fresh.stdout.strip() == "7"


def inode(path: Path) -> int | None:
    try:
        return path.stat().st_ino
    except FileNotFoundError:
        return None


def snapshot_rows(path: Path) -> int:
    try:
        return count(path)
    except (duckdb.Error, FileNotFoundError):
        return -1


@pytest.mark.slow
def test_server_keeps_a_snapshot_others_can_read(tmp_path: Path) -> None:
    db = tmp_path / "callstatus.duckdb"
    snapshot = tmp_path / "callstatus-snapshot.duckdb"
    with (
        running_server(db, {"CALLSTATUS_SNAPSHOT_INTERVAL": "1"}) as server,
        httpx.Client(base_url=server.url, timeout=10) as client,
    ):
        sent = 0

        def send(n: int) -> None:
            nonlocal sent
            for _ in range(n):
                reply = client.post("/plivo/answer", data={"CallUUID": f"c{sent}"})
                assert reply.status_code == 200
                sent += 1

        send(20)
        wait_until(lambda: snapshot_rows(snapshot) == 20, timeout=15)
        # This test process reads while the server holds the database and keeps writing.
        with pytest.raises(duckdb.IOException, match="lock"):
            duckdb.connect(str(db), read_only=True)
        reader = duckdb.connect(str(snapshot), read_only=True)
        first = inode(snapshot)
        send(15)
        # Only a refresh puts a new file at the path (written aside, then renamed over it).
        wait_until(lambda: inode(snapshot) not in (first, None), timeout=15)
        assert reader.execute("SELECT count(*) FROM calls").fetchone() == (20,)
        # Closed before looking again: DuckDB's Python client hands a new connect() to a
        # path the instance still open on the old file.
        reader.close()
        wait_until(lambda: snapshot_rows(snapshot) == 35, timeout=15)
        health = client.get("/healthz").json()
        assert isinstance(health["snapshot_age_s"], float) and health["snapshot_age_s"] < 10

        send(10)  # right before the stop: these may reach it only through the final snapshot
        assert server.stop(signal.SIGTERM) == 0
    assert snapshot_rows(snapshot) == sent == 45
