"""The SQL page's runner: one read-only statement on the snapshot, sandboxed and limited."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from streamlit.testing.v1 import AppTest

from callstatus.analyst import sandbox as safe_sql
from callstatus.core.db import Database
from callstatus.core.snapshot import write_snapshot
from tests.factories import store

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


def test_page_without_snapshot_says_so(tmp_path: Path) -> None:
    at = AppTest.from_function(_page, args=(str(tmp_path / "none.duckdb"),)).run()
    assert not at.exception
    assert "No snapshot yet" in at.info[0].value
