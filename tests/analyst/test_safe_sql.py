"""The SQL page's runner: one read-only statement on the snapshot, sandboxed and limited."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow.parquet as pq
import pytest
from streamlit.testing.v1 import AppTest

from callstatus.analyst import sandbox as safe_sql
from callstatus.analyst import sandbox_worker as sql_worker
from callstatus.core.db import Database
from callstatus.core.snapshot import write_snapshot
from tests.factories import store

# One long function call: DuckDB's interrupt is not checked inside it (ran 123 s in the server).
RUNAWAY = "SELECT length(regexp_replace(repeat('a', 300000000), 'a', 'bb', 'g'))"
# Three 100 KB columns x 10,000 rows: 3 GB of result (took 6 GB inside the server).
WIDE = (
    "SELECT repeat('x', 100000) || i AS a, repeat('y', 100000) || i AS b, "
    "repeat('z', 100000) || i AS c FROM range(10000) t(i)"
)

# Two inbound calls dialling two agents each, one outbound call that nobody answers.
EVENTS: list[tuple[str, dict[str, str]]] = [
    ("answer", {"CallUUID": "a1", "Direction": "inbound", "From": "+1555", "To": "+1800"}),
    (
        "dial_callback",
        {
            "CallUUID": "a1",
            "DialALegUUID": "a1",
            "DialBLegUUID": "b1",
            "DialAction": "answer",
            "DialBLegTo": "+agent1",
        },
    ),
    (
        "dial_callback",
        {
            "CallUUID": "a1",
            "DialALegUUID": "a1",
            "DialBLegUUID": "b2",
            "DialAction": "hangup",
            "DialBLegTo": "+agent2",
            "DialBLegHangupCauseCode": "9000",
        },
    ),
    (
        "dial_callback",
        {
            "CallUUID": "a1",
            "DialALegUUID": "a1",
            "DialBLegUUID": "b1",
            "DialAction": "hangup",
            "DialBLegTo": "+agent1",
            "DialBLegBillDuration": "30",
            "DialBLegHangupCauseCode": "4000",
        },
    ),
    (
        "dial_action",
        {"CallUUID": "a1", "DialALegUUID": "a1", "DialBLegUUID": "b1", "DialStatus": "completed"},
    ),
    (
        "hangup",
        {
            "CallUUID": "a1",
            "Direction": "inbound",
            "AnswerTime": "2026-11-02 09:00:01",
            "HangupCauseCode": "4000",
            "HangupCauseName": "Normal Hangup",
            "Duration": "40",
            "BillDuration": "40",
        },
    ),
    ("answer", {"CallUUID": "a2", "Direction": "inbound"}),
    (
        "dial_callback",
        {
            "CallUUID": "a2",
            "DialALegUUID": "a2",
            "DialBLegUUID": "b3",
            "DialAction": "hangup",
            "DialBLegTo": "+agent3",
            "DialBLegHangupCauseCode": "3000",
        },
    ),
    ("dial_action", {"CallUUID": "a2", "DialALegUUID": "a2", "DialStatus": "no-answer"}),
    (
        "hangup",
        {
            "CallUUID": "a2",
            "Direction": "inbound",
            "HangupCauseCode": "4000",
            "HangupCauseName": "Normal Hangup",
            "AnswerTime": "2026-11-02 09:00:07",
        },
    ),
    (
        "hangup",
        {
            "CallUUID": "o1",
            "Direction": "outbound",
            "HangupCauseCode": "3010",
            "HangupCauseName": "Busy Line",
        },
    ),
]


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Read-only for every test, so one file serves the module."""
    folder = tmp_path_factory.mktemp("snapshot")
    database = Database(folder / "callstatus.duckdb")
    store(database, EVENTS)
    target = folder / "callstatus-snapshot.duckdb"
    write_snapshot(database.cursor(), target)
    database.close()
    yield target


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("INSERT INTO webhook_events SELECT * FROM webhook_events", "this statement is INSERT"),
        ("UPDATE webhook_events SET kind = 'x'", "this statement is UPDATE"),
        ("DELETE FROM webhook_events", "this statement is DELETE"),
        ("CREATE TABLE t AS SELECT 1", "this statement is CREATE"),
        ("DROP VIEW calls", "this statement is DROP"),
        ("COPY webhook_events TO '/tmp/out.csv'", "this statement is COPY"),
        ("ATTACH '/tmp/other.duckdb' AS other", "this statement is ATTACH"),
        ("INSTALL httpfs", "this statement is LOAD"),
        ("LOAD httpfs", "this statement is LOAD"),
        ("SET enable_external_access = true", "this statement is SET"),
        ("PRAGMA threads = 64", "this statement is SET"),
        ("CALL pragma_version()", "this statement is CALL"),
        ("SELECT 1; SELECT 2", "exactly one statement"),
        ("SELECT 1; DROP VIEW calls", "exactly one statement"),
        ("SELECT * FROM read_csv('/etc/passwd')", "Reading files"),
        ("SELECT * FROM '/etc/passwd'", "SQL error"),
        ("SELECT content FROM read_text('/etc/hostname')", "Reading files"),
        ("SELECT * FROM glob('/*')", "Reading files"),
        ("SELECT * FROM query('DROP VIEW calls')", "SQL error"),
        ("SELEC 1", "SQL error: Parser Error"),
        ("   ", "Type a query first"),
    ],
)
def test_refusals_say_why(snapshot: Path, sql: str, message: str) -> None:
    with pytest.raises(safe_sql.Refused, match=message):
        safe_sql.run_query(snapshot, sql)


def test_configuration_is_locked_on_the_connection_itself(snapshot: Path) -> None:
    con = safe_sql.connect_sandboxed(snapshot)
    try:
        for statement in (
            "SET enable_external_access = true",
            "SET lock_configuration = false",
            "RESET autoload_known_extensions",
            "PRAGMA threads = 1",
        ):
            with pytest.raises(Exception, match="configuration has been locked"):
                con.execute(statement)
    finally:
        con.close()


def test_python_variables_are_not_tables(snapshot: Path) -> None:
    secrets_frame = pd.DataFrame({"password": ["hunter2"]})  # noqa: F841 - the bait
    with pytest.raises(safe_sql.Refused, match="secrets_frame does not exist"):
        safe_sql.run_query(snapshot, "SELECT * FROM secrets_frame")


def _children() -> dict[int, str]:
    """{pid: state} of this process's children, zombies ('Z') included."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if int(ppid) == os.getpid():
            children[int(entry)] = state
    return children


@pytest.fixture
def taken(monkeypatch: pytest.MonkeyPatch) -> list[subprocess.Popen[bytes]]:
    """The worker processes that ran the test's queries, in order."""
    workers: list[subprocess.Popen[bytes]] = []
    take = safe_sql._pool.take

    def record() -> subprocess.Popen[bytes]:
        proc = take()
        workers.append(proc)
        return proc

    monkeypatch.setattr(safe_sql._pool, "take", record)
    return workers


def _assert_gone(proc: subprocess.Popen[bytes]) -> None:
    """Ended and reaped: no zombie left in the process table."""
    assert proc.returncode is not None
    assert not Path(f"/proc/{proc.pid}").exists()
    assert "Z" not in _children().values()


def _peak_rss_reset() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(field)


def test_a_long_function_call_is_killed_at_the_time_limit(
    snapshot: Path, taken: list[subprocess.Popen[bytes]]
) -> None:
    started = time.perf_counter()
    with pytest.raises(safe_sql.Refused, match="Stopped after 2 s, the time limit"):
        safe_sql.run_query(snapshot, RUNAWAY, time_limit_s=2)
    elapsed = time.perf_counter() - started
    # The limit, the grace after it, and starting the worker's Python on a busy machine.
    assert elapsed < 2 + safe_sql.KILL_GRACE_S + 2.5, elapsed
    worker = taken[0]
    assert worker.returncode == -9  # SIGKILL: the interrupt alone would not stop it
    _assert_gone(worker)


def test_a_query_cancelled_by_its_caller_is_killed(
    snapshot: Path, taken: list[subprocess.Popen[bytes]]
) -> None:
    gone = threading.Event()
    threading.Timer(1.0, gone.set).start()
    started = time.perf_counter()
    with pytest.raises(safe_sql.Refused, match="Cancelled"):
        safe_sql.run_query(snapshot, RUNAWAY, time_limit_s=30, cancelled=gone.is_set)
    assert time.perf_counter() - started < 3
    _assert_gone(taken[0])


PARENT = """
import sys
from pathlib import Path
from callstatus.analyst import sandbox as safe_sql

take = safe_sql._pool.take

def announce():
    proc = take()
    print(proc.pid, flush=True)
    return proc

safe_sql._pool.take = announce
safe_sql.run_query(Path(sys.argv[1]), sys.argv[2], time_limit_s=60)
"""


def _exited(pid: int) -> bool:
    """Gone, or a zombie waiting for whoever adopted it: either way no longer running."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def _has_open(pid: int, path: Path) -> bool:
    try:
        return any(
            os.readlink(f"/proc/{pid}/fd/{fd}") == str(path.resolve())
            for fd in os.listdir(f"/proc/{pid}/fd")
        )
    except OSError:
        return False


def test_a_worker_whose_parent_dies_ends_too(snapshot: Path) -> None:
    """A server killed (kill -9) in the middle of a query leaves no query running."""
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, str(snapshot), RUNAWAY],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert parent.stdout is not None
        worker = int(parent.stdout.readline())
        deadline = time.monotonic() + 15
        while not _has_open(worker, snapshot) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _has_open(worker, snapshot)  # the query has started
        time.sleep(0.2)
        assert not _exited(worker)
    finally:
        parent.kill()
        parent.wait()
        parent.stdout.close()  # type: ignore[union-attr]
    deadline = time.monotonic() + 3
    while not _exited(worker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _exited(worker)


def test_the_worker_gets_no_secrets_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLIVO_AUTH_TOKEN", "token")
    monkeypatch.setenv("DASHBOARD_PASSWORD", "password")
    monkeypatch.setenv("LC_ALL", "C.UTF-8")
    env = safe_sql._worker_env()
    assert "PLIVO_AUTH_TOKEN" not in env and "DASHBOARD_PASSWORD" not in env
    assert env["LC_ALL"] == "C.UTF-8" and env["MALLOC_ARENA_MAX"] == "2"
    assert env["PATH"] == os.environ["PATH"]


def test_a_huge_result_is_cut_at_the_byte_bound_outside_this_process(
    snapshot: Path, taken: list[subprocess.Popen[bytes]]
) -> None:
    before = _status_kib("VmRSS")
    _peak_rss_reset()
    result = safe_sql.run_query(snapshot, WIDE)
    grown_mib = (_status_kib("VmHWM") - before) / 1024
    assert result.truncated and result.truncated_reason == "bytes"
    ipc_size = sum(batch.nbytes for batch in result.table.to_batches())
    assert 24 * safe_sql.MiB < ipc_size <= safe_sql.DEFAULT_BYTE_LIMIT
    # Rows in order from the first, each whole.
    rows = result.table.num_rows
    assert 0 < rows < 10_000
    assert result.table.column("a")[rows - 1].as_py() == "x" * 100_000 + str(rows - 1)
    assert "Result cut at 32 MB" in (result.notice or "")
    assert "select fewer" in (result.notice or "")
    # The whole result would be 3 GB; this process held the 32 MB cut and little else.
    assert grown_mib < 160, grown_mib
    _assert_gone(taken[0])


# A worker that does not keep its side of the protocol: it claims a huge result and streams
# bytes without end.
GREEDY_WORKER = """
import json, sys
out = sys.stdout.buffer
out.write(b"R"); out.flush()
sys.stdin.buffer.readline()
out.write(json.dumps({"ok": True, "rows": 1, "bytes": 2**40, "truncated": None}).encode())
out.write(b"\\n")
while True:
    out.write(b"x" * 65536)
"""


def test_this_process_never_reads_past_the_byte_bound(
    snapshot: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    safe_sql._pool.retire()
    monkeypatch.setattr(safe_sql._pool, "enabled", False)
    monkeypatch.setattr(safe_sql, "_worker_command", lambda: [sys.executable, "-c", GREEDY_WORKER])
    before = _status_kib("VmRSS")
    _peak_rss_reset()
    with pytest.raises(safe_sql.Refused, match="larger than 32 MB"):
        safe_sql.run_query(snapshot, "SELECT 1")
    assert (_status_kib("VmHWM") - before) / 1024 < 20
    assert "Z" not in _children().values()


def test_a_runaway_allocation_dies_in_the_worker(
    snapshot: Path, taken: list[subprocess.Popen[bytes]]
) -> None:
    before = _status_kib("VmRSS")
    _peak_rss_reset()
    with pytest.raises(safe_sql.Refused, match="more memory than a query may use"):
        safe_sql.run_query(snapshot, "SELECT length(repeat('a', 3000000000)) AS n")
    assert (_status_kib("VmHWM") - before) / 1024 < 100
    _assert_gone(taken[0])


def test_a_normal_query_returns_the_same_table_as_duckdb(snapshot: Path) -> None:
    sql = "SELECT * FROM calls ORDER BY call_uuid"
    con = duckdb.connect(str(snapshot), read_only=True)
    try:
        con.execute("SET TimeZone = 'UTC'")
        expected = con.sql(sql).to_arrow_table()
    finally:
        con.close()
    result = safe_sql.run_query(snapshot, sql)
    assert not result.truncated and result.truncated_reason is None and result.notice is None
    assert result.table.equals(expected)
    assert result.table.num_rows == 3


def test_queries_at_once_each_get_their_answer(snapshot: Path) -> None:
    answers: dict[int, Any] = {}

    def ask(n: int) -> None:
        answers[n] = safe_sql.run_query(snapshot, f"SELECT {n} AS n").table.to_pylist()

    threads = [threading.Thread(target=ask, args=(n,)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert answers == {n: [{"n": n}] for n in range(3)}


def _ask_worker(snapshot: Path, sql: str) -> subprocess.Popen[bytes]:
    """A worker given `sql` directly, without the parent's statement check."""
    proc = safe_sql._spawn()
    request: sql_worker.Request = {
        "snapshot": str(snapshot),
        "sql": sql,
        "row_limit": 10,
        "byte_limit": safe_sql.MiB,
        "time_limit_s": 10,
        "memory_limit": "256MB",
        "threads": 1,
        "address_space_bytes": safe_sql.GiB,
        "temp_dir": "",
        "max_temp_size": "",
    }
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(request).encode() + b"\n")
    proc.stdin.flush()
    return proc


def _worker_reply(proc: subprocess.Popen[bytes]) -> dict[str, Any]:
    # Read to the end before closing stdin: its end tells a worker that its parent is gone.
    assert proc.stdout is not None and proc.stdin is not None
    out = proc.stdout.read()
    proc.stdin.close()
    proc.stdout.close()
    proc.wait(timeout=10)
    assert out[:1] == sql_worker.READY
    reply: dict[str, Any] = json.loads(out[1:].split(b"\n", 1)[0])
    return reply


def test_the_worker_itself_refuses_writes_files_and_settings(
    snapshot: Path, tmp_path: Path
) -> None:
    """The parent's statement check aside, the worker's connection holds on its own."""
    target = tmp_path / "written.csv"
    cases = {
        "SET enable_external_access = true": "configuration has been locked",
        "SET lock_configuration = false": "configuration has been locked",
        f"COPY (SELECT 1) TO '{target}'": "disabled",
        f"ATTACH '{tmp_path / 'other.duckdb'}' AS other": "disabled",
        "CREATE TABLE t AS SELECT 1": "read-only",
        "SELECT * FROM read_csv('/etc/passwd')": "disabled",
    }
    workers = {sql: _ask_worker(snapshot, sql) for sql in cases}
    replies = {sql: _worker_reply(proc) for sql, proc in workers.items()}
    for sql, message in cases.items():
        assert replies[sql]["ok"] is False, sql
        assert message in replies[sql]["detail"], (sql, replies[sql])
        _assert_gone(workers[sql])
    assert not target.exists() and not (tmp_path / "other.duckdb").exists()


def test_a_runaway_query_is_stopped_by_the_time_limit(snapshot: Path) -> None:
    started = time.perf_counter()
    with pytest.raises(safe_sql.Refused, match="Stopped after 1 s"):
        safe_sql.run_query(
            snapshot,
            "SELECT count(*) FROM range(1000000000) a, range(1000000000) b",
            time_limit_s=1,
        )
    assert time.perf_counter() - started < 5


def test_the_row_limit_truncates_and_says_so(snapshot: Path) -> None:
    result = safe_sql.run_query(
        snapshot, "SELECT * FROM range(50) ORDER BY range DESC", row_limit=10
    )
    assert result.truncated
    assert result.table.column("range").to_pylist() == list(range(49, 39, -1))
    whole = safe_sql.run_query(snapshot, "FROM range(10)", row_limit=10)
    assert not whole.truncated and whole.table.num_rows == 10


def test_examples_answer_on_the_views(snapshot: Path) -> None:
    results = {
        name: safe_sql.run_query(snapshot, sql).table.to_pylist()
        for name, sql in safe_sql.EXAMPLES.items()
    }
    dials = results["Dial answer rate by hour (did an agent pick up)"]
    assert [(r["all_dials"], r["answered_dials"], r["answer_rate_pct"]) for r in dials] == [
        (2, 1, 50.0)
    ]
    calls = {r["direction"]: r for r in results["Call answer rate by hour and direction"]}
    assert calls["inbound"]["answer_rate_pct"] == 100.0
    assert calls["outbound"]["answer_rate_pct"] == 0.0
    causes = results["Top hangup causes"]
    assert causes[0]["outcome"] == "answered" and causes[0]["ended_calls"] == 2
    never = results["B numbers that never answer"]
    assert [(r["b_leg_to"], r["usual_outcome"]) for r in never] == [("+agent3", "no-answer")]


def test_schema_lists_tables_and_views(snapshot: Path) -> None:
    relations = safe_sql.schema(snapshot)
    assert ("call_uuid", "VARCHAR") in relations["calls (view)"]
    assert {
        "webhook_events (view)",
        "rejected_webhooks",
        "dials (view)",
        "dial_legs (view)",
    } <= set(relations)
    # Bookkeeping and the tables behind webhook_events are not listed.
    assert not {"schema_migrations", "webhook_rows", "webhook_inbox"} & set(relations)


def test_downloads_round_trip(snapshot: Path) -> None:
    result = safe_sql.run_query(snapshot, "SELECT call_uuid, answered FROM calls ORDER BY 1")
    frame = pd.read_csv(io.BytesIO(safe_sql.to_csv_bytes(result.table)))
    assert frame["call_uuid"].tolist() == ["a1", "a2", "o1"]
    assert pq.read_table(io.BytesIO(safe_sql.to_parquet_bytes(result.table))) == result.table


def test_missing_snapshot_is_a_refusal(tmp_path: Path) -> None:
    with pytest.raises(safe_sql.Refused, match="No snapshot yet"):
        safe_sql.run_query(tmp_path / "none.duckdb", "SELECT 1")


# -- the page ---------------------------------------------------------------------------------


def _page(path: str) -> None:
    from pathlib import Path

    from callstatus.dashboard.sql_page import render

    render(Path(path))


def test_page_runs_examples_and_shows_refusals(snapshot: Path) -> None:
    at = AppTest.from_function(_page, args=(str(snapshot),), default_timeout=30).run()
    assert not at.exception
    assert "current as of" in at.caption[0].value
    assert {e.label for e in at.expander} >= {"calls (view)", "webhook_events (view)"}

    at.selectbox[0].select("Top hangup causes").run()
    assert at.text_area[0].value == safe_sql.EXAMPLES["Top hangup causes"]
    at.button[0].click().run()
    assert not at.error
    frame = at.dataframe[0].value
    assert frame["ended_calls"].tolist()[0] == 2

    at.text_area[0].input("DROP VIEW calls").run()
    at.button[0].click().run()
    assert "this statement is DROP" in at.error[0].value

    at.text_area[0].input("SELECT * FROM range(20000)").run()
    at.button[0].click().run()
    assert "first 10,000 rows" in at.warning[0].value
    assert len(at.dataframe[0].value) == 10_000

    # 40 MB of text: cut at the byte limit, and the page says so.
    at.text_area[0].input("SELECT repeat('x', 1000000) || range AS s FROM range(40)").run()
    at.button[0].click().run()
    assert "Result cut at 32 MB" in at.warning[0].value
    assert 0 < len(at.dataframe[0].value) < 40


def test_page_without_snapshot_says_so(tmp_path: Path) -> None:
    at = AppTest.from_function(_page, args=(str(tmp_path / "none.duckdb"),)).run()
    assert not at.exception
    assert "No snapshot yet" in at.info[0].value
