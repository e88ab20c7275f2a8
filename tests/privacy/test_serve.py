"""End to end through `callstatus serve`: CALLSTATUS_RETENTION_DAYS=30 over 60 simulated days,
the archive, `callstatus erase` through the running server (API tokens refused), the snapshot
without the erased number, and the file compacted while the server runs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import httpx
import pytest

from callstatus.core.db import Database
from callstatus.dashboard.filters import Filters
from tests.factories import store
from tests.privacy.charts import assert_same, charts
from tests.servers import start_server

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
NUMBER = "+447911654321"
PATTERN = r"(^|[^0-9])(00)?447911654321([^0-9]|$)"
TOKEN = "an-api-token-for-grafana-only"
CALLS = 2000


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "callstatus.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env=env,
    )


def read_file(db: Path, sql: str, params: list[object] | None = None) -> list[tuple[object, ...]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        con.execute("SET TimeZone = 'UTC'")
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


def caller(db: Path, at: datetime, uuid: str) -> None:
    database = Database(db)
    try:
        params = {"CallUUID": uuid, "From": NUMBER[1:], "To": "18005550199"}
        store(database, [("answer", params), ("hangup", {**params, "Duration": "5"})], start=at)
    finally:
        database.close()


def mentions(db: Path) -> int:
    (row,) = read_file(
        db,
        "SELECT (SELECT count(*) FROM webhook_events WHERE regexp_matches(params::VARCHAR, "
        f"'{PATTERN}')) + (SELECT count(*) FROM calls WHERE regexp_matches(from_number, "
        f"'{PATTERN}')) + (SELECT count(*) FROM rejected_webhooks WHERE "
        f"regexp_matches(params::VARCHAR, '{PATTERN}'))",
    )
    return int(row[0])  # type: ignore[call-overload]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    folder = tmp_path_factory.mktemp("serve")
    db = folder / "callstatus.duckdb"
    baseline = folder / "thirty.duckdb"
    for path, calls, days in [(db, CALLS, "60"), (baseline, CALLS // 2, "30")]:
        seeded = cli(
            "seed", "--db", str(path), "--calls", str(calls), "--days", days, "--seed", "3"
        )
        assert seeded.returncode == 0, seeded.stderr
    now = datetime.now(UTC)
    caller(db, now - timedelta(days=2), "cccccccc-0000-0000-0000-000000000001")
    caller(db, now - timedelta(days=40), "cccccccc-0000-0000-0000-000000000002")
    yield {"db": db, "folder": folder, "now": now, "baseline": baseline}


def test_retention_erase_and_compaction_through_serve(
    world: dict[str, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    db, folder, now = Path(str(world["db"])), Path(str(world["folder"])), world["now"]
    assert isinstance(now, datetime)
    archive = folder / "archive"
    # The last 30 days' charts, up to the day before the erased calls.
    recent = Filters(now - timedelta(days=29), now - timedelta(days=3), bucket="1 day")
    before = charts(db, recent, monkeypatch)
    assert int(before[0].iloc[0]["calls"]) > 500  # else the comparison proves little
    old = read_file(
        db, "SELECT count(*) FROM webhook_events WHERE received_at < ?", [now - timedelta(days=31)]
    )
    assert old[0][0] > 0  # type: ignore[operator]

    env = {
        "CALLSTATUS_RETENTION_DAYS": "30",
        # Aggregates too: the file is then compared with one seeded with 30 days only.
        "CALLSTATUS_AGGREGATE_RETENTION_DAYS": "30",
        "CALLSTATUS_ARCHIVE_DIR": str(archive),
        "CALLSTATUS_API_TOKENS": TOKEN,
    }
    server = start_server(db, env, timeout=120)
    try:
        deadline = time.monotonic() + 60
        while "retention run 1 (ok)" not in server.log.read_text():
            assert time.monotonic() < deadline, server.log.read_text()
            time.sleep(0.2)
        # An API token may read, never erase.
        refused = httpx.post(
            f"{server.url}/api/erase",
            json={"number": NUMBER, "dry_run": True},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        assert refused.status_code == 403
        cmd_env = {**os.environ, **env, "CALLSTATUS_DB": str(db)}
        dry = cli("erase", "--number", NUMBER, "--dry-run", env=cmd_env)
        assert dry.returncode == 0, dry.stderr
        assert "asking it" in dry.stderr and "would remove" in dry.stdout
        assert "webhook_events" in dry.stdout and "archive/webhook_events" in dry.stdout
        done = cli("erase", "--number", NUMBER, env=cmd_env)
        assert done.returncode == 0, done.stderr
        assert "removed" in done.stdout and "snapshot: rewritten" in done.stdout
        assert NUMBER[1:] not in done.stdout + done.stderr
        snapshot = db.with_name("callstatus-snapshot.duckdb")
        assert mentions(snapshot) == 0
    finally:
        assert server.stop() == 0
    assert NUMBER[1:] not in server.log.read_text()

    # Nothing older than 30 days in the raw tables; the archive has it (minus the erased).
    for table in ("webhook_events", "rejected_webhooks"):
        (row,) = read_file(db, f"SELECT min(received_at) FROM {table}")
        assert row[0] is None or row[0] >= now - timedelta(days=30)  # type: ignore[operator]
    (row,) = read_file(db, "SELECT min(started_at) FROM calls")
    assert row[0] >= now - timedelta(days=30)  # type: ignore[operator]
    files = str(archive / "webhook_events" / "*" / "*.parquet")
    con = duckdb.connect()
    archived = con.execute(
        "SELECT count(*), count(*) FILTER (WHERE regexp_matches(params::VARCHAR, ?))"
        " FROM read_parquet(?)",
        [PATTERN, files],
    ).fetchall()[0]
    assert archived[0] >= old[0][0] and archived[1] == 0  # type: ignore[index,operator]
    assert mentions(db) == 0
    counts = read_file(db, "SELECT dry_run, counts FROM erasures ORDER BY erased_at")
    assert [r[0] for r in counts] == [True, False]
    assert json.loads(str(counts[1][1]))["webhook_events"] == 2
    assert json.loads(str(counts[1][1]))["archive/webhook_events"] == 2

    # The last 30 days' charts are what they were.
    assert_same(before, charts(db, recent, monkeypatch))

    # The server compacted the file while it ran, after its first retention run: no larger than
    # one seeded with 30 days of the same traffic, but for two blocks (256 KiB each) holding
    # retention_runs and erasures, which that file lacks, and block granularity: at 5.5 MiB one
    # block is 4.5% of the file, and a copy lays the same rows out in a block more or less than
    # days of seeding did (measured: 25 blocks against 22 for the same tables' rows). The server
    # then running on it (the erasure, which also rewrites the hourly aggregates of the hours its
    # calls touched, and the stop's checkpoint) reuses or adds a few: 4.6 blocks measured.
    logs = "".join(path.read_text() for path in folder.glob("*.log"))
    found = re.findall(
        r"compacted the database from ([\d.]+) MiB to ([\d.]+) MiB in [\d.]+ s while serving", logs
    )
    assert found, logs
    compacted = float(found[-1][1]) * 2**20
    baseline = Path(str(world["baseline"])).stat().st_size
    assert compacted <= baseline * 1.05 + 2 * 256 * 1024, (compacted, baseline)
    extra = (db.stat().st_size - baseline * 1.05) / (256 * 1024)
    print(f"live file {db.stat().st_size:,} B, the 30-day file {baseline:,} B: {extra:.1f} blocks")
    assert db.stat().st_size <= baseline * 1.05 + 8 * 256 * 1024, (db.stat().st_size, baseline)
    # A restart finds nothing left to compact: the copy recorded itself in retention_runs.
    server = start_server(db, {"CALLSTATUS_RETENTION_DAYS": "30"}, timeout=120)
    assert server.stop() == 0
    assert "compacted the database" not in server.log.read_text()
