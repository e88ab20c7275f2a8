"""Simulated PHLO traffic: which calls report through a PHLO, what each report carries, and a real
server taking them with the secret, signed, or refusing them without."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import duckdb
import pytest

from callstatus.core.db import Database
from callstatus.core.typed import phlo_typed_values, typed_values
from callstatus.simulator.simulate import (
    Plan,
    Simulated,
    SimulateOptions,
    Target,
    run_simulate,
    simulate,
)
from callstatus.simulator.traffic import (
    PHLO_ENCODINGS,
    PHLO_SECRET_PLACES,
    PHLO_SPELLINGS,
    Call,
    TrafficModel,
    Webhook,
    with_phlo,
)
from tests.factories import assert_rollups_equal_views, make_settings
from tests.servers import running_server

TOKEN = "phlo-sim-token-0123"
SECRET = "phlo-sim-secret-4567"
DIAL_COLUMNS = ("dial_a_leg_uuid", "dial_b_leg_uuid", "dial_status", "dial_ring_status")
DIAL_COLUMNS += ("dial_hangup_cause",)


def _calls(seed: int, n: int) -> list[Call]:
    model = TrafficModel(seed)
    return [model.call(i, 1.7e9 + 30.0 * i) for i in range(n)]


def _shape(hooks: list[Webhook]) -> list[tuple[Any, ...]]:
    return [(h.kind, h.endpoint, h.body, h.at, h.delivered_at, h.retry) for h in hooks]


def test_off_leaves_every_call_as_it_was() -> None:
    before = _calls(5, 300)
    after = [with_phlo(call, 5, 0.0) for call in _calls(5, 300)]
    assert [_shape(c.webhooks) for c in after] == [_shape(c.webhooks) for c in before]
    assert not any(h.kind == "phlo" for c in after for h in c.webhooks)


def test_which_calls_report_through_phlo_is_fixed_by_the_seed_and_grows_with_the_share() -> None:
    calls = _calls(6, 1000)

    def chosen(seed: int, share: float) -> set[int]:
        return {
            c.index
            for c in calls
            if any(h.kind == "phlo" for h in with_phlo(c, seed, share).webhooks)
        }

    with_actions = {c.index for c in calls if any(h.kind == "dial_action" for h in c.webhooks)}
    some, more = chosen(6, 0.3), chosen(6, 0.6)
    assert some == chosen(6, 0.3) and some != chosen(7, 0.3)
    assert some < more <= with_actions == chosen(6, 1.0)
    assert 0.2 < len(some) / len(with_actions) < 0.4


def test_each_report_carries_its_dial_actions_values_in_place_of_it() -> None:
    spellings: Counter[tuple[str, ...]] = Counter()
    styles: Counter[tuple[str, str, str | None]] = Counter()
    reports = 0
    for call in _calls(9, 400):
        phlo = with_phlo(call, 9, 1.0)
        actions = [h for h in call.webhooks if h.kind == "dial_action"]
        sent = [h for h in phlo.webhooks if h.kind == "phlo"]
        # Every other webhook stays, in order; PHLO does not retry, so retries go.
        assert _shape([h for h in phlo.webhooks if h.kind != "phlo"]) == _shape(
            [h for h in call.webhooks if h.kind != "dial_action"]
        )
        originals = [h for h in actions if not h.retry]
        assert len(sent) == len(originals)
        for action, report in zip(originals, sent, strict=True):
            assert (report.at, report.delivered_at) == (action.at, action.delivered_at)
            assert report.endpoint.path == "/plivo/phlo" and not report.endpoint.query
            expected = typed_values(action.params(), TrafficModel(9).zone)
            got = phlo_typed_values(report.params(), TrafficModel(9).zone)
            assert {k: got.get(k) for k in DIAL_COLUMNS} == {
                k: expected.get(k) for k in DIAL_COLUMNS
            }
            spellings[tuple(report.body)[:5]] += 1
            styles[(report.method, report.encoding, report.secret_in)] += 1
            reports += 1
    assert reports > 150
    assert set(spellings) == set(PHLO_SPELLINGS)
    assert {(m, e) for m, e, _ in styles} == set(PHLO_ENCODINGS)
    assert {place for _, _, place in styles} == set(PHLO_SECRET_PLACES)


def _expected_dials(played: list[Simulated]) -> Counter[tuple[Any, ...]]:
    """The dials every Dial action and PHLO report sent should give: one per distinct one."""
    seen: set[tuple[str, str]] = set()
    dials: Counter[tuple[Any, ...]] = Counter()
    zone = TrafficModel(0).zone
    for simulated in played:
        for hook in simulated.sent:
            if hook.kind not in ("dial_action", "phlo"):
                continue
            key = (hook.kind, repr(sorted(hook.body.items())))
            if key in seen:
                continue  # a retry: a duplicate to the views
            seen.add(key)
            if hook.kind == "phlo":
                typed = phlo_typed_values(hook.params(), zone)
            else:
                typed = typed_values(hook.params(), zone)
            source = "phlo" if hook.kind == "phlo" else "webhooks"
            dials[(*(typed.get(k) for k in DIAL_COLUMNS), source)] += 1
    return dials


@pytest.mark.slow
def test_a_server_takes_phlo_reports_with_the_secret_or_signed(tmp_path: Path, capsys) -> None:
    db = tmp_path / "phlo.duckdb"
    env = {"PLIVO_AUTH_TOKEN": TOKEN, "PHLO_SECRET": SECRET}
    played: list[Simulated] = []
    with running_server(db, env) as server:
        for seed, secret in ((21, SECRET), (22, None)):  # the secret; then signed only
            model = TrafficModel(seed)
            target = Target(server.url, server.url, TOKEN, secret)
            plan = Plan(80, rate=0, concurrency=16, phlo=0.5)
            tally = asyncio.run(simulate(target, model, plan, played=played.append))
            assert tally.ok and tally.calls == 80, tally
            assert tally.accepted["phlo"] > 10 and tally.accepted["dial_action"] > 10
        # A wrong secret: PHLO reports refused, and the command says which setting to fix.
        settings = make_settings(tmp_path, PLIVO_AUTH_TOKEN=TOKEN, PHLO_SECRET="wrong-secret")
        options = SimulateOptions(url=server.url, calls=20, rate=0, seed=23, phlo=1.0)
        assert run_simulate(options, settings) == 1
        server.stop()
    out, err = capsys.readouterr()
    assert "PHLO_SECRET" in err and "refused" in out
    con = duckdb.connect(str(db), read_only=True)
    try:
        signatures = dict(
            con.execute(
                "SELECT signature, count(*) FROM webhook_events WHERE kind = 'phlo' GROUP BY 1"
            ).fetchall()
        )
        stored = con.execute(
            "SELECT a_leg_uuid, b_leg_uuid, dial_status, dial_ring_status, dial_hangup_cause,"
            " source FROM dials"
        ).fetchall()
        reasons = con.execute("SELECT DISTINCT reason FROM rejected_webhooks").fetchall()
    finally:
        con.close()
    sent = Counter(h.kind for s in played for h in s.sent)
    assert signatures["secret"] + signatures["valid"] == sent["phlo"]
    assert signatures["secret"] > 10 and signatures["valid"] > 10
    assert Counter(stored) == _expected_dials(played)
    assert reasons == [("bad_secret",)]
    database = Database(db)
    try:
        assert_rollups_equal_views(database)
    finally:
        database.close()


def test_phlo_is_a_share_from_0_to_1(tmp_path: Path, capsys) -> None:
    options = SimulateOptions(url="http://127.0.0.1:9", calls=1, phlo=1.5)
    assert run_simulate(options, make_settings(tmp_path)) == 2
    assert "--phlo" in capsys.readouterr().err
