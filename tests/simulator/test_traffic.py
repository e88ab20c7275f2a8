"""The traffic model: every call's webhooks are a valid Plivo sequence, and a seed repeats."""

from __future__ import annotations

import json
import random
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path

import pytest

from callstatus.simulator.config import TrafficConfig
from callstatus.simulator.traffic import (
    ENDINGS,
    PATHS,
    Call,
    DialSpec,
    Endpoint,
    TrafficModel,
    Webhook,
)

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC).timestamp()
CODE_NAMES = {code: name for options in ENDINGS.values() for code, name, *_ in options}
CODE_CAUSES = {code: cause for options in ENDINGS.values() for code, _, cause, *_ in options}


def _calls(n: int, seed: int = 11, **config: object) -> list[Call]:
    model = TrafficModel(seed, TrafficConfig().with_overrides(dict(config)), "Asia/Kolkata")
    return [model.call(i, T0 + 7.0 * i) for i in range(n)]


@pytest.fixture(scope="module")
def calls() -> list[Call]:
    return _calls(3000)


def _params(hook: Webhook) -> dict[str, str]:
    return {k: v for k, v in hook.params().items() if isinstance(v, str)}


def _originals(call: Call) -> list[Webhook]:
    return [hook for hook in call.webhooks if not hook.retry]


def test_same_seed_same_calls_other_seed_other_calls() -> None:
    first = [[(h.kind, h.params(), h.delivered_at) for h in c.webhooks] for c in _calls(50)]
    again = [[(h.kind, h.params(), h.delivered_at) for h in c.webhooks] for c in _calls(50)]
    other = [[(h.kind, h.params(), h.delivered_at) for h in c.webhooks] for c in _calls(50, 12)]
    assert first == again
    assert first != other


def test_every_kind_and_url_style_shows_up(calls: list[Call]) -> None:
    hooks = [hook for call in calls for hook in call.webhooks]
    # PHLO reports replace Dial actions only when asked for (simulate --phlo).
    assert {hook.kind for hook in hooks} == set(PATHS) - {"phlo"}
    assert {hook.method for hook in hooks} == {"GET", "POST"}
    assert any("?tenant=acme" in hook.url() for hook in hooks)
    names = {hook.params().get("CallerName") for hook in hooks} - {None}
    assert any(not str(name).isascii() for name in names)
    assert any("SIP-H-X-Campaign" in hook.params() for hook in hooks)
    assert any(hook.retry for hook in hooks)
    directions = Counter(call.direction for call in calls)
    assert directions["inbound"] > directions["outbound"] > 0


def test_retries_are_exact_repeats_and_delivery_is_ordered(calls: list[Call]) -> None:
    for call in calls:
        times = [hook.delivered_at for hook in call.webhooks]
        assert times == sorted(times)
        for hook in call.webhooks:
            if hook.retry:
                twins = [h for h in _originals(call) if h.kind == hook.kind and h.body is hook.body]
                assert len(twins) == 1 and twins[0].delivered_at <= hook.delivered_at


def test_some_webhooks_arrive_out_of_call_order(calls: list[Call]) -> None:
    shuffled = 0
    for call in calls:
        fired = [hook.at for hook in _originals(call)]
        shuffled += fired != sorted(fired)
    assert 0 < shuffled < len(calls) * 0.2


def test_head_comes_first_and_answers_before_the_dial(calls: list[Call]) -> None:
    for call in calls:
        head = call.webhooks[: call.head]
        # Only an outbound call that never rang (busy, unreachable) has nothing before its end.
        assert head or [h.kind for h in _originals(call)] == ["hangup"], call
        assert {h.kind for h in head} <= {"ring", "answer", "fallback"}
        assert all(h.kind not in ("ring", "answer", "fallback") for h in call.webhooks[call.head :])


def _check_times(hangup: dict[str, str]) -> None:
    start, answer, end = hangup["StartTime"], hangup["AnswerTime"], hangup["EndTime"]
    assert start <= end
    if answer:
        assert start <= answer <= end
        assert int(hangup["BillDuration"]) >= int(hangup["Duration"]) > 0
    else:
        assert hangup["Duration"] == hangup["BillDuration"] == "0"


def test_every_call_ends_once_with_a_consistent_cause(calls: list[Call]) -> None:
    for call in calls:
        hangups = [_params(h) for h in _originals(call) if h.kind == "hangup"]
        assert len(hangups) == 1
        hangup = hangups[0]
        code = int(hangup["HangupCauseCode"])
        assert hangup["HangupCauseName"] == CODE_NAMES[code]
        assert hangup["HangupCause"] == CODE_CAUSES[code]
        assert hangup["CallUUID"] == call.call_uuid
        _check_times(hangup)
        if not hangup["AnswerTime"]:
            assert hangup["CallStatus"] in ("no-answer", "busy", "cancel", "timeout", "failed")
        else:
            assert hangup["CallStatus"] == "completed"


def _legs(call: Call) -> dict[str, list[dict[str, str]]]:
    legs: dict[str, list[dict[str, str]]] = defaultdict(list)
    for hook in _originals(call):
        if hook.kind == "dial_callback":
            legs[hook.params()["DialBLegUUID"]].append(_params(hook))  # type: ignore[index]
    return legs


def _check_dial(call: Call, action: dict[str, str], legs: dict[str, list[dict[str, str]]]) -> None:
    assert action["DialALegUUID"] == call.call_uuid
    winners = [b for b, events in legs.items() if any(e["DialAction"] == "answer" for e in events)]
    hangups = {
        b: next(e for e in events if e["DialAction"] == "hangup") for b, events in legs.items()
    }
    for event in hangups.values():
        code = int(event["DialBLegHangupCauseCode"])
        assert event["DialBLegHangupCauseName"] == CODE_NAMES[code]
        assert event["DialBLegHangupCause"] == CODE_CAUSES[code]
        assert (code == 9000) == (event["DialBLegHangupCause"] == "LOSE_RACE")
    if action["DialStatus"] == "completed":
        assert winners == [action["DialBLegUUID"]]
        assert int(hangups[winners[0]]["DialBLegHangupCauseCode"]) == 4000
        assert int(hangups[winners[0]]["DialBLegBillDuration"]) > 0
        # The others lost the race, unless they had already failed before the winner answered.
        others = [int(e["DialBLegHangupCauseCode"]) for b, e in hangups.items() if b != winners[0]]
        assert all(code == 9000 or code < 4000 or code >= 5000 for code in others)
    else:
        assert action["DialBLegUUID"] == "" and not winners
        assert all(e["DialBLegBillDuration"] == "0" for e in hangups.values())
        assert 9000 not in {int(e["DialBLegHangupCauseCode"]) for e in hangups.values()}


def test_b_legs_pair_with_their_a_leg_and_one_winner_takes_the_call(calls: list[Call]) -> None:
    seen = Counter()
    for call in calls:
        legs = _legs(call)
        actions = [_params(h) for h in _originals(call) if h.kind == "dial_action"]
        if not legs:
            assert not actions
            continue
        assert len(actions) == 1
        for events in legs.values():
            assert {e["DialALegUUID"] for e in events} == {e["CallUUID"] for e in events}
            assert {e["DialALegUUID"] for e in events} == {call.call_uuid}
            assert [e["DialAction"] for e in events][-1] == "hangup"
            assert len({e["DialBLegPosition"] for e in events}) == 1
        positions = sorted(int(events[0]["DialBLegPosition"]) for events in legs.values())
        assert positions == list(range(1, len(legs) + 1))
        _check_dial(call, actions[0], legs)
        seen[(actions[0]["DialStatus"], len(legs))] += 1
    assert seen[("completed", 3)] and seen[("completed", 1)]
    assert {status for status, _ in seen} >= {"completed", "busy", "timeout", "cancel", "failed"}


def test_dial_spec_from_the_server_replaces_targets_and_urls() -> None:
    model = TrafficModel(3)
    spec = DialSpec(
        ("15550001111", "sip:desk@example.com"),
        Endpoint("POST", "/custom/action", (("x", "1"),)),
        Endpoint("GET", "/custom/callback"),
        caller_id="15559990000",
    )
    inbound = [i for i in range(40) if model.call(i, T0).direction == "inbound"]
    for index in inbound:
        default, followed = model.call(index, T0), model.call(index, T0, spec)
        assert followed.webhooks[: followed.head] == default.webhooks[: default.head]
        for hook in followed.webhooks[followed.head :]:
            if hook.kind == "dial_callback":
                assert hook.method == "GET" and hook.url().startswith("/custom/callback?")
                assert hook.body["DialBLegTo"] in spec.targets
                assert hook.body["DialBLegFrom"] == "15559990000"
            if hook.kind == "dial_action":
                assert hook.url() == "/custom/action?x=1"


def test_starts_follow_the_office_week() -> None:
    model = TrafficModel(5)
    end = datetime(2026, 11, 30, tzinfo=UTC).timestamp()
    starts = model.starts(20_000, end, 28, random.Random(1))
    assert starts == sorted(starts) and end - 28 * 86400 <= starts[0] and starts[-1] < end
    moments = [datetime.fromtimestamp(t, UTC) for t in starts]
    weekdays = Counter(m.weekday() for m in moments)
    hours = Counter(m.hour for m in moments)
    assert weekdays[1] > 3 * weekdays[6]
    assert hours[10] > 10 * hours[3]


def test_config_file_overrides_the_mix(tmp_path: Path) -> None:
    path = tmp_path / "traffic.json"
    path.write_text(json.dumps({"inbound_share": 0.0, "machine_detection": 1.0, "machine": 1.0}))
    model = TrafficModel(1, TrafficConfig.from_file(path))
    calls = [model.call(i, T0) for i in range(200)]
    assert {call.direction for call in calls} == {"outbound"}
    kinds = Counter(hook.kind for call in calls for hook in call.webhooks)
    assert kinds["machine_detection"] >= kinds["answer"]
    with pytest.raises(ValueError, match="unknown traffic settings"):
        TrafficConfig().with_overrides({"inbound_sahre": 0.5})
