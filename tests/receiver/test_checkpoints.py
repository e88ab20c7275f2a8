"""Who checkpoints the WAL: the rollup job after its refresh, on its own thread, past its bound;
the writer's commits never (DuckDB's automatic checkpoint is moved above the writer's bound, its
backstop). A checkpoint inside the writer's commit held its webhooks for up to 0.5 s."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest

from callstatus.core.db import Database
from callstatus.core.records import EventRecord, make_record
from callstatus.core.rollups import RollupJob
from callstatus.receiver import metrics
from callstatus.receiver.spool import Spool
from callstatus.receiver.writer import Writer
from tests.factories import wait_until

MIB = 2**20


def _records(count: int, pad: int, prefix: str) -> list[EventRecord]:
    now = datetime.now(UTC)
    return [
        make_record(
            "hangup",
            "POST",
            {"CallUUID": f"{prefix}{i}", "Event": "Hangup", "Pad": f"{i:08d}" * (pad // 8)},
            "valid",
            now,
        )
        for i in range(count)
    ]


def _store(writer: Writer, records: Sequence[EventRecord]) -> None:
    async def run() -> None:
        assert set(await asyncio.gather(*(writer.store(r) for r in records))) == {"stored"}

    asyncio.run(run())


def _wal(database: Database) -> int:
    path = database.wal_path
    return path.stat().st_size if path.exists() else 0


def _writer_checkpoints() -> float:
    return metrics.REGISTRY.get_sample_value("callstatus_wal_checkpoints_total") or 0.0


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Database]:
    database = Database(tmp_path / "wal.duckdb")
    try:
        yield database
    finally:
        database.close()


@pytest.fixture
def writer(database: Database, tmp_path: Path) -> Iterator[Writer]:
    writer = Writer(database, Spool(tmp_path / "spool"), "UTC")  # the default 64 MiB bound
    writer.start()
    try:
        yield writer
    finally:
        writer.stop()


def test_the_writers_commits_leave_the_wal_to_others(database: Database, writer: Writer) -> None:
    (threshold,) = (
        database.cursor().execute("SELECT current_setting('checkpoint_threshold')").fetchall()
    )
    assert threshold == ("128.0 MiB",)  # twice the writer's bound
    before = _writer_checkpoints()
    # About 29 MiB of WAL in many commits: past DuckDB's default threshold (16 MiB), where one
    # of these commits would have run a checkpoint (measured: at about 20 MiB, the WAL then
    # holding only what came after).
    for part in range(6):
        _store(writer, _records(1000, 5000, f"c{part}-"))
    assert _wal(database) > 24 * MIB
    assert _writer_checkpoints() == before


def test_the_rollup_job_checkpoints_past_its_bound(database: Database, writer: Writer) -> None:
    job = RollupJob(database, interval_s=0.1, checkpoint_bytes=1 * MIB)
    before = _writer_checkpoints()
    _store(writer, _records(3000, 1200, "j"))
    assert _wal(database) > 1 * MIB  # the job is not running yet: nothing checkpointed
    job.loop.start()
    try:
        wait_until(lambda: job.checkpoints > 0 and _wal(database) < 1 * MIB, timeout=20)
        # Webhooks stored while the job refreshes and checkpoints are all there afterwards.
        _store(writer, _records(3000, 1200, "k"))
        wait_until(lambda: job.checkpoints > 1, timeout=20)
    finally:
        job.stop()
    assert _writer_checkpoints() == before  # the writer's backstop was never needed
    (count,) = database.cursor().execute("SELECT count(*) FROM webhook_events").fetchall()
    assert count == (6000,)
    assert database.absolute_path.stat().st_size > 4 * MIB


def test_no_checkpoint_below_the_jobs_bound(database: Database, writer: Writer) -> None:
    job = RollupJob(database, checkpoint_bytes=64 * MIB)
    _store(writer, _records(500, 1200, "s"))
    job.refresh()
    assert job.checkpoints == 0
    assert _wal(database) > 0
