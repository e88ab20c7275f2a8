"""`callstatus reconcile` as a user runs it: on a stopped database, through a running server,
against a local server that answers as Plivo's Call API (429s and failures included)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest

from callstatus.simulator.call_api import CallApiServer
from tests.servers import start_server

AUTH_ID = "MACOMMAND00000000001"
TOKEN = "command-token"
DAYS = 30


def _time(moment: datetime) -> str:
    return moment.isoformat(sep=" ", timespec="seconds")


def _history(now: datetime) -> list[dict[str, Any]]:
    """Three calls a day for DAYS days (each with one B leg), ended at least an hour ago."""
    records = []
    for day in range(DAYS):
        for n in range(3):
            end = now - timedelta(days=day, hours=1 + n * 5)
            answered = n != 2
            a_uuid, b_uuid = f"a-{day}-{n}", f"b-{day}-{n}"
            common = {
                "call_direction": "inbound", "initiation_time": _time(end - timedelta(minutes=3)),
                "end_time": _time(end), "hangup_source": "Caller", "total_amount": "0.01",
            }  # fmt: skip
            records.append(
                {
                    **common,
                    "call_uuid": a_uuid,
                    "parent_call_uuid": None,
                    "from_number": "14155550100",
                    "to_number": "14155550111",
                    "answer_time": _time(end - timedelta(minutes=3)),
                    "call_duration": 180,
                    "bill_duration": 180,
                    "hangup_cause_code": 4000,
                    "hangup_cause_name": "Normal Hangup",
                }
            )
            records.append(
                {
                    **common,
                    "call_uuid": b_uuid,
                    "parent_call_uuid": a_uuid,
                    "call_direction": "outbound",
                    "from_number": "14155550100",
                    "to_number": "14155550122",
                    "answer_time": _time(end - timedelta(minutes=2)) if answered else None,
                    "call_duration": 120 if answered else 0,
                    "bill_duration": 120 if answered else 0,
                    "hangup_cause_code": 4000 if answered else 3010,
                    "hangup_cause_name": "Normal Hangup" if answered else "Busy Line",
                }
            )
    return records


@pytest.fixture
def api() -> Iterator[CallApiServer]:
    with CallApiServer(_history(datetime.now(UTC)), auth_id=AUTH_ID, token=TOKEN) as server:
        yield server


def _env(api: CallApiServer, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PLIVO_", "CALLSTATUS_"))}
    env.update(PLIVO_AUTH_ID=AUTH_ID, PLIVO_API_TOKEN=TOKEN, PLIVO_API_URL=api.url, **extra)
    return env


def _reconcile(db: Path, env: Mapping[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "callstatus.cli", "reconcile", "--db", str(db), *args],
        env=dict(env),
        cwd=db.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _calls(db: Path) -> dict[str, tuple[str, str]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        rows = con.execute("SELECT call_uuid, source, outcome FROM calls").fetchall()
    finally:
        con.close()
    return {uuid: (source, outcome) for uuid, source, outcome in rows}


def test_history_import_into_an_empty_database(api: CallApiServer, tmp_path: Path) -> None:
    db = tmp_path / "history.duckdb"
    # Rate limited at first, then a failure: both retried.
    api.fail(429, retry_after=0.2)
    api.fail(503)
    done = _reconcile(db, _env(api), "--days", str(DAYS + 1))
    assert done.returncode == 0, done.stderr
    assert "180 call records read" in done.stdout and "180 new" in done.stdout
    assert "calls added (no webhook at all):          90" in done.stdout
    assert "B legs added (no Dial callback at all):   90" in done.stdout
    assert "reconcile [" in done.stderr  # the progress bar
    assert [r.status for r in api.requests[:3]] == [429, 503, 200]
    calls = _calls(db)
    assert len(calls) == DAYS * 3
    assert {source for source, _ in calls.values()} == {"cdr"}
    assert {outcome for _, outcome in calls.values()} == {"answered"}

    again = _reconcile(db, _env(api), "--days", str(DAYS + 1))
    assert again.returncode == 0, again.stderr
    assert "nothing new" in again.stdout
    assert len(_calls(db)) == DAYS * 3


def test_through_the_running_server(api: CallApiServer, tmp_path: Path) -> None:
    db = tmp_path / "served.duckdb"
    env = _env(api, CALLSTATUS_RECONCILE_INTERVAL="0")
    server = start_server(db, env)
    try:
        done = _reconcile(db, env, "--days", "7")
        assert done.returncode == 0, done.stderr
        assert "asking it" in done.stderr
        assert "lock" not in done.stderr.lower()
        assert "calls added (no webhook at all):          21" in done.stdout
        again = _reconcile(db, env, "--days", "7")
        assert again.returncode == 0 and "nothing new" in again.stdout, again.stderr
    finally:
        assert server.stop() == 0
    calls = _calls(db)
    assert len(calls) == 21 and {s for s, _ in calls.values()} == {"cdr"}
    assert not (tmp_path / "served.duckdb.server.json").exists()


def test_a_server_without_reconciliation_says_what_to_set(
    api: CallApiServer, tmp_path: Path
) -> None:
    db = tmp_path / "plain.duckdb"
    server = start_server(db, {"CALLSTATUS_RECONCILE_INTERVAL": "0"})
    try:
        refused = _reconcile(db, _env(api))
    finally:
        server.stop()
    assert refused.returncode == 1
    assert "not configured on this server" in refused.stderr
    assert "PLIVO_AUTH_ID" in refused.stderr


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (("--days", "7"), {"PLIVO_AUTH_ID": ""}, "needs PLIVO_AUTH_ID"),
        (("--since", "last tuesday"), {}, "--since 'last tuesday' is not a date"),
        (("--days", "120"), {}, "at most 90"),
        (("--since", "2026-11-20", "--until", "2026-11-10"), {}, "the window is empty"),
    ],
)
def test_bad_input_is_one_clear_line(
    api: CallApiServer, tmp_path: Path, args: tuple[str, ...], env: dict[str, str], message: str
) -> None:
    result = _reconcile(tmp_path / "bad.duckdb", {**_env(api), **env}, *args)
    assert result.returncode == 2
    assert result.stderr.startswith("callstatus: error: ") and message in result.stderr
    assert TOKEN not in result.stderr


def test_wrong_credentials_fail_the_run_and_name_the_settings(
    api: CallApiServer, tmp_path: Path
) -> None:
    db = tmp_path / "wrong.duckdb"
    result = _reconcile(db, {**_env(api), "PLIVO_API_TOKEN": "not-the-token"}, "--days", "2")
    assert result.returncode == 1
    assert "reconcile failed" in result.stdout and "PLIVO_AUTH_ID" in result.stdout
    assert "not-the-token" not in result.stdout + result.stderr
