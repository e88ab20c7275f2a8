"""`callstatus simulate` against a real server: signed, accepted, stored, following the XML."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from dataclasses import replace
from pathlib import Path

import duckdb
import httpx
import pytest

from callstatus.cli import main
from callstatus.receiver.xml import answer_xml, empty_xml
from callstatus.simulator.simulate import (
    LOSE_CALL,
    LOSE_HANGUP,
    Plan,
    Sender,
    SimulateOptions,
    Tally,
    Target,
    dial_from_xml,
    loss_of,
    run_simulate,
    simulate,
    simulated_calls,
)
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


# Plivo's retry settings ride in a URL's fragment; Plivo never sends it, nor signs it.
FRAGMENT_XML = (
    "<Response><Speak>Connecting</Speak>"
    '<Dial action="http://calls.example.com/plivo/dial/action#rc=3&amp;rp=5xx,ct,rt" '
    'callbackUrl="http://calls.example.com/plivo/dial/callback?leg=b#ct=2000&amp;rc=2" '
    'callbackMethod="POST" callerId="15559990000">'
    "<Number>15550001001</Number><Number>15550001002</Number></Dial></Response>"
)


def test_a_urls_fragment_is_dropped() -> None:
    spec = dial_from_xml(FRAGMENT_XML)
    assert spec is not None
    assert spec.action == Endpoint("POST", "/plivo/dial/action")
    assert spec.callback == Endpoint("POST", "/plivo/dial/callback", (("leg", "b"),))


@pytest.mark.slow
def test_webhooks_to_urls_with_fragments_are_signed_without_them(tmp_path: Path) -> None:
    spec = dial_from_xml(FRAGMENT_XML)
    assert spec is not None
    model = TrafficModel(8)
    calls = [model.call(i, 1.7e9 + i, spec) for i in range(60)]
    hooks = [h for c in calls for h in c.webhooks if h.kind in ("dial_action", "dial_callback")]
    assert len(hooks) > 40 and not any("#" in hook.url() for hook in hooks)
    db = tmp_path / "fragments.duckdb"
    with running_server(db, {"PLIVO_AUTH_TOKEN": TOKEN}) as server:
        tally = Tally()

        async def send_all() -> None:
            async with httpx.AsyncClient() as client:
                sender = Sender(client, Target(server.url, server.url, TOKEN), 8, tally)
                await asyncio.gather(*(sender.send(hook) for hook in hooks))

        asyncio.run(send_all())
        server.stop()
    # The server signs what it was sent: every signature checks out, so none covered a fragment.
    assert tally.ok and sum(tally.accepted.values()) == len(hooks), tally
    con = duckdb.connect(str(db), read_only=True)
    rows = con.execute(
        "SELECT kind, signature, json_extract_string(params, '$.leg') FROM webhook_events"
    ).fetchall()
    assert len(rows) == len(hooks) and {signature for _, signature, _ in rows} == {"valid"}
    assert {leg for kind, _, leg in rows if kind == "dial_callback"} == {"b"}


def test_which_calls_lose_is_fixed_by_the_seed_and_grows_with_the_share() -> None:
    indexes = range(4000)
    losses = [loss_of(3, i, 0.10, 0.20) for i in indexes]
    assert losses == [loss_of(3, i, 0.10, 0.20) for i in indexes]
    assert losses != [loss_of(4, i, 0.10, 0.20) for i in indexes]
    shares = Counter(losses)
    assert 300 < shares[LOSE_CALL] < 500 and 680 < shares[LOSE_HANGUP] < 920
    more = [loss_of(3, i, 0.30, 0.0) for i in indexes]
    assert {i for i in indexes if losses[i] == LOSE_CALL} < {i for i in indexes if more[i]}
    assert {loss_of(3, i, 0.0, 0.0) for i in indexes} == {None}
    assert {loss_of(3, i, 1.0, 0.0) for i in indexes} == {LOSE_CALL}


def test_shares_out_of_range_are_refused(tmp_path: Path, capsys) -> None:
    settings = make_settings(tmp_path)
    for lose_calls, lose_hangups in ((1.5, 0.0), (-0.1, 0.0), (0.6, 0.5)):
        options = SimulateOptions(lose_calls=lose_calls, lose_hangups=lose_hangups)
        assert run_simulate(options, settings) == 2
    err = capsys.readouterr().err
    assert err.count("--lose-calls and --lose-hangups are shares") == 3
    assert "cannot reach" not in err  # refused before any request


def _stored(db: Path) -> list[tuple[str, str | None, str | None]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(
            "SELECT kind, call_uuid, json_extract_string(params, '$.CallUUID') FROM webhook_events"
        ).fetchall()
    finally:
        con.close()


@pytest.mark.slow
def test_lost_webhooks_never_reach_the_server_and_records_list_every_call(tmp_path: Path) -> None:
    db, out = tmp_path / "lose.duckdb", tmp_path / "records.jsonl"
    settings = make_settings(tmp_path, PLIVO_AUTH_TOKEN=TOKEN, PLIVO_TIMEZONE="Asia/Kolkata")
    options = SimulateOptions(
        calls=150, rate=0, seed=21, lose_calls=0.2, lose_hangups=0.3, records_out=out
    )
    with running_server(db, {"PLIVO_AUTH_TOKEN": TOKEN, "DIAL_NUMBERS": DIAL_NUMBERS}) as server:
        status, played = simulated_calls(replace(options, url=server.url), settings)
        server.stop()
    assert status == 0 and len(played) == 150
    assert [p.call.index for p in played] == list(range(150))
    lost = {p.call.call_uuid for p in played if p.loss == LOSE_CALL}
    no_hangup = {p.call.call_uuid for p in played if p.loss == LOSE_HANGUP}
    kept = {p.call.call_uuid for p in played if p.loss is None}
    assert 15 < len(lost) < 45 and 30 < len(no_hangup) < 70
    assert all(p.loss == loss_of(21, p.call.index, 0.2, 0.3) for p in played)
    rows = _stored(db)
    assert len(rows) == sum(len(p.sent) for p in played)
    # Every webhook of a call carries its A leg's uuid as CallUUID.
    assert {row[2] for row in rows} == kept | {
        p.call.call_uuid for p in played if p.loss == LOSE_HANGUP and p.sent
    }
    assert not lost & {row[2] for row in rows}
    hung_up = {uuid for kind, uuid, _ in rows if kind == "hangup"}
    assert hung_up == kept and not hung_up & no_hangup
    for p in played:
        if p.loss is None:
            assert p.sent == p.call.webhooks
        elif p.loss == LOSE_HANGUP:
            assert p.sent == [h for h in p.call.webhooks if h.kind != "hangup"]
        else:
            assert p.sent == []
    # The records file lists every call, sent or lost, as the calls the run played say.
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert lines == [record for p in played for record in p.call.records]
    a_legs = [r["call_uuid"] for r in lines if r["parent_call_uuid"] is None]
    assert a_legs == [p.call.call_uuid for p in played]
    # Calls that reached the server followed its Dial; lost ones kept the model's own.
    for p in played:
        targets = {r["to_number"] for r in p.call.records if r["parent_call_uuid"]}
        if p.loss == LOSE_CALL:
            assert not targets & set(DIAL_NUMBERS.split(","))
        else:
            assert targets <= set(DIAL_NUMBERS.split(","))
