"""The issue's check: signed traffic to a real server with some calls' webhooks lost entirely and
others missing their hangup, then `callstatus reconcile` through that server against a server
that answers as Plivo's Call API, gives calls and dial_legs equal to what really happened."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

from callstatus.core.db import Database
from callstatus.core.duplicates import DuplicateTracker
from callstatus.simulator.call_api import CallApiServer
from callstatus.simulator.simulate import LOSE_CALL, LOSE_HANGUP, SimulateOptions, simulated_calls
from tests.factories import call_webhooks, deliver, make_settings
from tests.servers import start_server

TOKEN = "e2e-webhook-token-0123"
AUTH_ID = "MAENDTOEND0000000001"
DIAL_NUMBERS = "14155550301,14155550302,sip:agent3@example.com"
CALLS = 120

# Every column that does not come from arrival times (which differ between a real server and
# the model's clock); the time columns of calls come from Plivo's own times.
COLUMNS = {
    "calls": (
        "call_uuid, direction, from_number, to_number, started_at, answered_at, ended_at,"
        " duration_s, bill_duration_s, call_status, hangup_cause_code, hangup_cause_name,"
        " hangup_source, answered, outcome"
    ),
    "dial_legs": (
        "a_leg_uuid, b_leg_uuid, b_leg_to, b_leg_from, answered, duration_s, bill_duration_s,"
        " hangup_cause_code, hangup_cause_name, hangup_source, outcome"
    ),
    "dials": "a_leg_uuid, b_leg_uuid, dial_status, dial_ring_status",
}


def _rows(con: duckdb.DuckDBPyConnection, view: str) -> list[tuple[Any, ...]]:
    return con.execute(f"SELECT {COLUMNS[view]} FROM {view} ORDER BY ALL").fetchall()


def test_reconcile_restores_what_really_happened(tmp_path: Path) -> None:
    db = tmp_path / "served.duckdb"
    settings = make_settings(tmp_path, PLIVO_AUTH_TOKEN=TOKEN)
    with CallApiServer([], auth_id=AUTH_ID, token=TOKEN) as api:
        env = {
            "PLIVO_AUTH_TOKEN": TOKEN, "PLIVO_AUTH_ID": AUTH_ID, "PLIVO_API_URL": api.url,
            "DIAL_NUMBERS": DIAL_NUMBERS, "CALLSTATUS_RECONCILE_INTERVAL": "0",
        }  # fmt: skip
        server = start_server(db, env)
        try:
            options = SimulateOptions(
                calls=CALLS, rate=0, seed=33, lose_calls=0.2, lose_hangups=0.2
            )
            status, played = simulated_calls(replace(options, url=server.url), settings)
            assert status == 0 and len(played) == CALLS
            losses = [p.loss for p in played]
            assert LOSE_CALL in losses and LOSE_HANGUP in losses and None in losses
            api.add([record for p in played for record in p.call.records])
            now = datetime.now(UTC)
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "callstatus.cli",
                    "reconcile",
                    "--db",
                    str(db),
                    "--since",
                    (now - timedelta(hours=2)).isoformat(timespec="seconds"),
                    "--until",
                    (now + timedelta(hours=2)).isoformat(timespec="seconds"),
                ],
                env={**os.environ, **env},
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert done.returncode == 0, done.stderr
            assert "asking it" in done.stderr
        finally:
            assert server.stop() == 0

    # What really happened: every webhook of every call, none lost.
    truth = Database(tmp_path / "truth.duckdb")
    deliver(truth, [r for p in played for r in call_webhooks(p.call)], DuplicateTracker())
    served = duckdb.connect(str(db), read_only=True)
    try:
        for view in COLUMNS:
            assert _rows(served, view) == _rows(truth.cursor(), view), view
        sources = dict(
            served.execute("SELECT call_uuid, source || '/' || end_source FROM calls").fetchall()
        )
        rollup = dict(
            served.execute(
                "SELECT call_uuid, source || '/' || end_source FROM calls_rollup"
            ).fetchall()
        )
    finally:
        served.close()
        truth.close()
    assert rollup == sources  # the server's last refresh took the records in
    for p in played:
        source = sources[p.call.call_uuid]
        if p.loss == LOSE_CALL:
            assert source == "cdr/cdr"
        elif p.loss == LOSE_HANGUP:
            assert source.endswith("/cdr")
        else:
            assert source in ("both/webhooks", "webhooks/webhooks"), source
    assert "summary" not in done.stdout and "calls added (no webhook at all)" in done.stdout
    # Lost whole, or lost a hangup that was all the call sent (an outbound call that failed
    # before ringing): known from its record alone.
    added = sum(source.startswith("cdr/") for source in sources.values())
    assert added >= sum(p.loss == LOSE_CALL for p in played)
    assert f"calls added (no webhook at all):          {added}\n" in done.stdout
