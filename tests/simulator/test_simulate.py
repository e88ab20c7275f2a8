"""`callstatus simulate` against a real server: signed, accepted, stored, following the XML."""

from __future__ import annotations

import asyncio
from pathlib import Path

import duckdb
import pytest

from callstatus.cli import main
from callstatus.receiver.xml import answer_xml, empty_xml
from callstatus.simulator.simulate import Plan, Target, dial_from_xml, simulate
from callstatus.simulator.traffic import Endpoint, TrafficModel
from tests.factories import make_settings
from tests.servers import free_port, running_server

TOKEN = "sim-token-0123456789"
DIAL_NUMBERS = "15550001001,15550001002,sip:desk@phone.plivo.com"


def test_dial_is_read_from_the_answer_xml(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path, DIAL_NUMBERS=DIAL_NUMBERS, DIAL_TIMEOUT=20, DIAL_CALLER_ID="15559990000"
    )
    spec = dial_from_xml(answer_xml(settings, "https://calls.example.com"))
    assert spec is not None
    assert spec.targets == tuple(DIAL_NUMBERS.split(","))
    assert spec.action == Endpoint("POST", "/plivo/dial/action")
    assert spec.callback == Endpoint("POST", "/plivo/dial/callback")
    assert (spec.timeout_s, spec.caller_id) == (20, "15559990000")
    assert dial_from_xml(answer_xml(make_settings(tmp_path), "http://x")) is None
    assert dial_from_xml(empty_xml()) is None
    assert dial_from_xml("not xml") is None


@pytest.mark.slow
def test_signed_traffic_is_stored_and_follows_dial_numbers(tmp_path: Path, cli_env, capsys) -> None:
    db = tmp_path / "sim.duckdb"
    env = {"PLIVO_AUTH_TOKEN": TOKEN, "DIAL_NUMBERS": DIAL_NUMBERS}
    with running_server(db, env) as server:
        target = Target(server.url, server.url, TOKEN)
        tally = asyncio.run(simulate(target, TrafficModel(4), Plan(120, rate=0, concurrency=16)))
        assert tally.ok and tally.calls == 120, tally
        cli_env.setenv("PLIVO_AUTH_TOKEN", "not-the-servers-token")
        status = main(["simulate", "--url", server.url, "--calls", "2", "--rate", "0"])
        server.stop()
    out, err = capsys.readouterr()
    assert status == 1 and "refused" in out and "PLIVO_AUTH_TOKEN" in err
    con = duckdb.connect(str(db), read_only=True)
    kinds = dict(con.execute("SELECT kind, count(*) FROM webhook_events GROUP BY kind").fetchall())
    assert kinds == dict(tally.accepted)
    assert con.execute("SELECT DISTINCT signature FROM webhook_events").fetchall() == [("valid",)]
    targets = {
        row[0]
        for row in con.execute(
            "SELECT DISTINCT dial_b_leg_to FROM webhook_events WHERE kind = 'dial_callback'"
        ).fetchall()
    }
    assert targets and targets <= set(DIAL_NUMBERS.split(","))
    assert con.execute("SELECT count(*) FROM rejected_webhooks").fetchone()[0] > 0


def test_unreachable_server_is_a_clear_failure(cli_env, capsys) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    assert main(["simulate", "--url", url, "--calls", "1"]) == 1
    assert f"cannot reach {url}: is `callstatus serve` running?" in capsys.readouterr().err
