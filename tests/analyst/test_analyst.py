"""`callstatus sql` and `callstatus export`: the database read-only, or the snapshot if served."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import duckdb
import httpx
import pandas as pd
import pyarrow.parquet as pq
import pytest

from callstatus.analyst import sandbox as safe_sql
from callstatus.cli import main
from callstatus.core.db import Database
from tests.factories import T0, store
from tests.servers import ServerProcess, running_server

SNAPSHOT_NOTE = "reading the snapshot written"
# One long function call: DuckDB's interrupt is not checked inside it.
RUNAWAY = "SELECT length(regexp_replace(repeat('a', 300000000), 'a', 'bb', 'g'))"


def six_calls(day: str) -> list[tuple[str, dict[str, str]]]:
    events: list[tuple[str, dict[str, str]]] = []
    for i in range(6):
        uuid = f"{day}-call-{i}"
        events.append(("answer", {"CallUUID": uuid, "Direction": "outbound", "To": f"+4930{i}"}))
        events.append(
            (
                "hangup",
                {
                    "CallUUID": uuid,
                    "HangupCauseCode": "3000" if i % 2 else "4000",
                    "AnswerTime": "" if i % 2 else "2026-11-02 09:00:05",
                },
            )
        )
    return events


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """A closed database: 12 events on 2026-11-02 (09:00) and 12 on 2026-11-03 (09:00)."""
    path = tmp_path / "callstatus.duckdb"
    database = Database(path)
    store(database, six_calls("d1"), start=T0)
    store(database, six_calls("d2"), start=T0 + timedelta(days=1))
    database.close()
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def test_sql_prints_a_table_from_the_database(
    db_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(
        capsys,
        "sql",
        "--db",
        str(db_path),
        "SELECT kind, count(*) AS n FROM webhook_events GROUP BY kind ORDER BY kind",
    )
    assert code == 0
    assert SNAPSHOT_NOTE not in err
    lines = [line for line in out.splitlines() if "answer" in line or "hangup" in line]
    assert len(lines) == 2 and all("12" in line for line in lines)


def test_sql_csv_and_json_go_to_stdout(db_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    query = "SELECT call_uuid, outcome FROM calls ORDER BY started_at, call_uuid LIMIT 2"
    code, out, _ = run(capsys, "sql", "--db", str(db_path), "--format", "csv", query)
    assert code == 0
    assert list(csv.DictReader(io.StringIO(out))) == [
        {"call_uuid": "d1-call-0", "outcome": "answered"},
        {"call_uuid": "d1-call-1", "outcome": "no-answer"},
    ]
    code, out, _ = run(capsys, "sql", "--db", str(db_path), "--format", "json", query)
    assert code == 0
    assert json.loads(out) == [
        {"call_uuid": "d1-call-0", "outcome": "answered"},
        {"call_uuid": "d1-call-1", "outcome": "no-answer"},
    ]


def test_sql_parquet_needs_and_writes_a_file(
    db_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "sql", "--db", str(db_path), "--format", "parquet", "SELECT 1")
    assert code == 2 and "--out" in err  # a usage error
    out = tmp_path / "events.parquet"
    query = "SELECT * FROM webhook_events;"  # a trailing semicolon is fine
    code, _, err = run(
        capsys, "sql", "--db", str(db_path), "--format", "parquet", "--out", str(out), query
    )
    assert code == 0 and "24 rows" in err
    assert pq.read_table(out).num_rows == 24


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("SELECT nope FROM calls", "SQL error: Binder Error"),
        ("SELEC 1", "SQL error: Parser Error"),
        ("DELETE FROM rejected_webhooks", "read-only"),
    ],
)
def test_sql_errors_are_one_line(
    db_path: Path, capsys: pytest.CaptureFixture[str], query: str, message: str
) -> None:
    code, _, err = run(capsys, "sql", "--db", str(db_path), query)
    assert code == 1
    assert message in err


def test_missing_database_is_explained(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nothing.duckdb"
    for argv in (["sql", "SELECT 1"], ["export", "--out", str(tmp_path / "x")]):
        code, _, err = run(capsys, *argv, "--db", str(missing))
        assert code == 1
        assert f"no database at {missing}" in err


def test_export_parquet_partitions_events_by_day(
    db_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "export"
    code, _, err = run(capsys, "export", "--db", str(db_path), "--out", str(out))
    assert code == 0
    assert sorted(p.name for p in (out / "webhook_events").iterdir()) == [
        "day=2026-11-02",
        "day=2026-11-03",
    ]
    for name in ("calls", "dials", "dial_legs", "rejected_webhooks"):
        assert (out / f"{name}.parquet").is_file()
    assert not (out / "schema_migrations.parquet").exists()
    assert "exporting view calls" in err and "exported" in err
    # DuckDB and pandas (pyarrow) read the day back from the folder names.
    con = duckdb.connect()
    by_day = con.execute(
        "SELECT day::VARCHAR, count(*) FROM read_parquet(?, hive_partitioning = true) "
        "GROUP BY ALL ORDER BY 1",
        [str(out / "webhook_events" / "*" / "*.parquet")],
    ).fetchall()
    assert by_day == [("2026-11-02", 12), ("2026-11-03", 12)]
    frame = pd.read_parquet(out / "webhook_events")
    assert len(frame) == 24 and set(frame["day"].astype(str)) == {"2026-11-02", "2026-11-03"}
    assert len(pd.read_parquet(out / "calls.parquet")) == 12


def test_export_csv_keeps_the_days_asked_for(
    db_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "csv"
    code, _, _ = run(
        capsys,
        "export",
        "--db",
        str(db_path),
        "--out",
        str(out),
        "--format",
        "csv",
        "--since",
        "2026-11-03",
        "--until",
        "2026-11-03",
    )
    assert code == 0
    events = pd.read_csv(out / "webhook_events.csv")
    assert len(events) == 12 and events["received_at"].str.startswith("2026-11-03").all()
    assert len(pd.read_csv(out / "calls.csv")) == 6


@pytest.mark.parametrize(
    ("since", "until", "message"),
    [
        ("yesterday", "2026-11-03", "--since wants a day"),
        ("2026-11-03", "2026-11-02", "is before --since"),
    ],
)
def test_export_refuses_bad_days(
    db_path: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    since: str,
    until: str,
    message: str,
) -> None:
    code, _, err = run(
        capsys,
        "export",
        "--db",
        str(db_path),
        "--out",
        str(tmp_path / "x"),
        "--since",
        since,
        "--until",
        until,
    )
    assert code == 2 and message in err  # a usage error
    assert err.startswith("callstatus: error: ") and err.count("\n") == 1


def test_export_until_the_last_day_there_is(
    db_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "all"
    code, _, err = run(
        capsys,
        "export",
        "--db",
        str(db_path),
        "--out",
        str(out),
        "--format",
        "csv",
        "--until",
        "9999-12-31",
    )
    assert code == 0, err
    assert len(pd.read_csv(out / "webhook_events.csv")) == 24


def test_sql_bounds_duckdb_memory(db_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    query = "SELECT current_setting('memory_limit') AS m"
    code, out, _ = run(capsys, "sql", "--db", str(db_path), "--format", "csv", query)
    assert code == 0 and out.splitlines()[1].endswith("GiB")  # 2GB, DuckDB says 1.8 GiB
    code, out, _ = run(
        capsys, "sql", "--db", str(db_path), "--format", "csv", "--memory-limit", "300MB", query
    )
    assert code == 0 and out.splitlines()[1] == "286.1 MiB"


# -- while a server holds the database ---------------------------------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A real server holding its database, with 10 webhooks in its snapshot."""
    db = tmp_path_factory.mktemp("served") / "callstatus.duckdb"
    with running_server(db, {"CALLSTATUS_SNAPSHOT_INTERVAL": "1"}) as server:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            for i in range(10):
                assert client.post("/plivo/answer", data={"CallUUID": f"s{i}"}).status_code == 200
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not _snapshot_has(db, 10):
            time.sleep(0.1)
        yield server


def _snapshot_has(db: Path, rows: int) -> bool:
    try:
        con = duckdb.connect(str(db.with_name("callstatus-snapshot.duckdb")), read_only=True)
    except duckdb.Error:
        return False
    try:
        return con.execute("SELECT count(*) FROM webhook_events").fetchone() == (rows,)
    finally:
        con.close()


@pytest.mark.slow
def test_sql_reads_the_snapshot_while_served(
    served: ServerProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(
        capsys, "sql", "--db", str(served.db), "--format", "csv", "SELECT count(*) AS n FROM calls"
    )
    assert code == 0
    assert out.splitlines() == ["n", "10"]
    assert SNAPSHOT_NOTE in err and "the server holds the live database" in err


@pytest.mark.slow
def test_export_reads_the_snapshot_while_served(
    served: ServerProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "export", "--db", str(served.db), "--out", str(tmp_path))
    assert code == 0 and SNAPSHOT_NOTE in err
    assert len(pd.read_parquet(tmp_path / "webhook_events")) == 10


def test_missing_snapshot_while_locked_is_explained(
    db_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Another process holds the database the way a server does, but wrote no snapshot.
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys, time; con = duckdb.connect(sys.argv[1]); "
            "print('ready', flush=True); time.sleep(60)",
            str(db_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        code, _, err = run(capsys, "sql", "--db", str(db_path), "SELECT 1")
    finally:
        holder.kill()
        holder.wait(timeout=10)
    assert code == 1
    assert "held by another process" in err and "has not written its snapshot" in err


# Last in this file: it stores more webhooks in the served database.
@pytest.mark.slow
def test_the_server_keeps_answering_while_a_runaway_query_runs_on_its_snapshot(
    served: ServerProcess,
) -> None:
    """The SQL page's runner against a real server's snapshot: the query that once held the
    server 123 s runs in its own worker, killed at the limit, while /healthz and webhooks keep
    their pace."""
    snapshot = served.db.with_name("callstatus-snapshot.duckdb")
    outcome: list[BaseException] = []

    def query() -> None:
        try:
            safe_sql.run_query(snapshot, RUNAWAY, time_limit_s=2)
        except safe_sql.Refused as refusal:
            outcome.append(refusal)

    runner = threading.Thread(target=query)
    started = time.perf_counter()
    runner.start()
    slowest = 0.0
    stored = 0
    with httpx.Client(base_url=served.url, timeout=5) as client:
        while runner.is_alive():
            asked = time.perf_counter()
            health = client.get("/healthz")
            posted = client.post("/plivo/hangup", data={"CallUUID": f"s{stored % 10}"})
            slowest = max(slowest, time.perf_counter() - asked)
            assert health.status_code == 200 and posted.status_code == 200
            stored += 1
            time.sleep(0.05)
    runner.join()
    assert time.perf_counter() - started < 2 + safe_sql.KILL_GRACE_S + 2.5
    assert slowest < 1.0, slowest
    assert stored >= 10
    assert len(outcome) == 1 and "Stopped after 2 s" in str(outcome[0])
    assert served.process.poll() is None
