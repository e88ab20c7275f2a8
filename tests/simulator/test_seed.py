"""`callstatus seed`: straight into DuckDB, the same rows and views as the same calls over HTTP."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest

from callstatus.cli import main
from callstatus.core import rollups
from callstatus.core.db import Database
from callstatus.simulator import seed as seed_module
from callstatus.simulator.seed import seed_calls
from callstatus.simulator.simulate import Plan, Target, simulate
from callstatus.simulator.traffic import TrafficModel
from tests.servers import running_server

TOKEN = "seed-token-0123456789"
ZONE = "Asia/Kolkata"
T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC).timestamp()
# Columns that come from arrival time, which HTTP and seeding cannot share.
ARRIVAL_COLUMNS = {
    "webhook_events": ("event_id", "received_at"),
    "dials": ("received_at", "event_id"),
    "dial_legs": ("answered_at", "ended_at"),
    "calls": ("rang_at",),  # the first ring callback's arrival
}


def _rows(db: Path, relation: str) -> list[tuple[object, ...]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        con.execute("SET TimeZone = 'UTC'")
        exclude = ARRIVAL_COLUMNS[relation]
        columns = f"* EXCLUDE ({', '.join(exclude)})" if exclude else "*"
        return con.execute(f"SELECT {columns} FROM {relation} ORDER BY ALL").fetchall()
    finally:
        con.close()


@pytest.mark.slow
def test_seeded_rows_equal_the_same_calls_received_over_http(tmp_path: Path) -> None:
    model = TrafficModel(21, plivo_timezone=ZONE)
    starts = [T0 + 13.0 * i for i in range(150)]
    over_http = tmp_path / "http.duckdb"
    with running_server(over_http, {"PLIVO_AUTH_TOKEN": TOKEN, "PLIVO_TIMEZONE": ZONE}) as server:
        plan = Plan(len(starts), rate=0, concurrency=16, starts=starts)
        tally = asyncio.run(simulate(Target(server.url, server.url, TOKEN), model, plan))
        assert tally.ok, tally
        server.stop()
    seeded = tmp_path / "seeded.duckdb"
    db = Database(seeded)
    seed_calls(db, model, starts, signature="valid", plivo_timezone=ZONE)
    # As `callstatus seed` and the server's rollup job do: the views' countries read the
    # numbers a refresh has learned (number_destinations).
    rollups.refresh(db.cursor())
    db.close()
    for relation in ("webhook_events", "calls", "dials", "dial_legs"):
        expected = _rows(over_http, relation)
        assert expected, relation
        assert _rows(seeded, relation) == expected, relation


def test_parallel_seeding_writes_what_inline_seeding_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(seed_module, "PARALLEL_FROM_CALLS", 0)
    monkeypatch.setattr(seed_module, "CHUNK_CALLS", 40)
    model = TrafficModel(8)
    starts = [T0 + 5.0 * i for i in range(300)]
    for name, workers in (("inline.duckdb", 1), ("parallel.duckdb", 2)):
        db = Database(tmp_path / name)
        result = seed_calls(
            db, model, starts, signature="unchecked", plivo_timezone="UTC", workers=workers
        )
        db.close()
        assert result.calls == 300
    inline = _rows(tmp_path / "inline.duckdb", "webhook_events")
    assert inline == _rows(tmp_path / "parallel.duckdb", "webhook_events")


def test_seed_command_spreads_calls_over_days(tmp_path: Path, cli_env, capsys) -> None:
    db = tmp_path / "seeded.duckdb"
    assert main(["seed", "--db", str(db), "--calls", "500", "--days", "6", "--seed", "3"]) == 0
    assert "seeded 500 calls" in capsys.readouterr().out
    con = duckdb.connect(str(db), read_only=True)
    first, last, latest, calls = con.execute(
        "SELECT min(start_time), max(start_time), max(received_at), count(DISTINCT call_uuid) "
        "FROM webhook_events WHERE kind IN ('answer', 'fallback', 'hangup', 'ring')"
    ).fetchone()
    assert calls == 500
    assert (last - first).days >= 4
    assert latest.timestamp() <= time.time()
    assert con.execute("SELECT DISTINCT signature FROM webhook_events").fetchall() == [
        ("unchecked",)
    ]


def test_seed_refuses_a_database_a_server_holds(tmp_path: Path, cli_env, capsys) -> None:
    db = tmp_path / "held.duckdb"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         f"import duckdb, sys, time; c = duckdb.connect({str(db)!r}); print('ready', flush=True);"
         " sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        assert main(["seed", "--db", str(db), "--calls", "10"]) == 1
    finally:
        holder.kill()
        holder.wait(timeout=10)
    err = capsys.readouterr().err
    assert "another process holds it" in err and "callstatus serve" in err
