"""The traffic model's call records: what Plivo's Call API would list, as the webhooks say."""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from callstatus.simulator.traffic import Call, DialSpec, Endpoint, TrafficModel, Webhook

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC).timestamp()
RECORD_TIME = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d[+-]\d\d:\d\d")
FIELDS = {
    "answer_time", "bill_duration", "billed_duration", "call_direction", "call_duration",
    "call_state", "call_uuid", "conference_uuid", "end_time", "from_number",
    "hangup_cause_code", "hangup_cause_name", "hangup_source", "initiation_time",
    "parent_call_uuid", "resource_uri", "stir_verification", "to_number", "total_amount",
    "total_rate",
}  # fmt: skip
# A Dial from the server's XML: other targets, a caller id, and no callbackUrl.
NO_CALLBACK = DialSpec(
    ("15550001111", "sip:desk@example.com", "15550002222"),
    Endpoint("POST", "/custom/action", (("x", "1"),)),
    None,
    caller_id="15559990000",
    timeout_s=20,
)
# The Dial of the server's own answer XML: its standard paths, with callbacks.
SERVER_DIAL = DialSpec(
    ("15550001001", "15550001002", "sip:desk@phone.plivo.com"),
    Endpoint("POST", "/plivo/dial/action"),
    Endpoint("POST", "/plivo/dial/callback"),
    caller_id="15559990000",
    timeout_s=25,
)
DIALS = {"model": None, "server": SERVER_DIAL, "no-callback": NO_CALLBACK}
# sha256 of every webhook of 300 calls (`_digest`), computed on the model of commit b092a9d,
# before calls had records: records must not change a single webhook of a seed.
PINNED = {
    (11, "model"): "0c54625de1438ecf1789e740614a5ee0cd93b759046373de9ee9cc6125c6b8a6",
    (7, "server"): "a4b46b88011e9a09b23a4dc054f02600924e8e6a5f22288877bc0284db41693f",
    (29, "no-callback"): "4515bcc79da1ca3a35cfe6ed3ba561950aeb055a6d7e840243bfe269668b8624",
}


def _calls(seed: int, n: int, zone: str, spec: DialSpec | None = None) -> list[Call]:
    model = TrafficModel(seed, plivo_timezone=zone)
    return [model.call(i, T0 + 7.0 * i, spec) for i in range(n)]


@pytest.fixture(scope="module")
def calls() -> list[Call]:
    return _calls(11, 3000, "Asia/Kolkata")


def _originals(call: Call) -> list[Webhook]:
    return [hook for hook in call.webhooks if not hook.retry]


def _params(hook: Webhook) -> dict[str, str]:
    return {k: v for k, v in hook.params().items() if isinstance(v, str)}


def _epoch(text: str) -> float:
    assert RECORD_TIME.fullmatch(text), text
    return datetime.fromisoformat(text).timestamp()


def _offset_is_the_zones(text: str, zone: ZoneInfo) -> None:
    moment = datetime.fromisoformat(text)
    assert moment.utcoffset() == moment.astimezone(zone).utcoffset(), text


def _check_money(record: dict[str, Any], rate: str, cost: str) -> None:
    assert record["total_rate"] == f"{float(rate):.5f}"
    assert record["total_amount"] == cost


def _check_a_leg(call: Call, record: dict[str, Any], zone: ZoneInfo) -> None:
    """The A leg's record says what its hangup webhook said."""
    hangups = [_params(h) for h in _originals(call) if h.kind == "hangup"]
    assert len(hangups) == 1
    hangup, hook = hangups[0], next(h for h in _originals(call) if h.kind == "hangup")
    assert record["call_uuid"] == hangup["CallUUID"] == call.call_uuid
    assert record["parent_call_uuid"] is None
    assert record["call_direction"] == hangup["Direction"] == call.direction
    assert (record["from_number"], record["to_number"]) == (hangup["From"], hangup["To"])
    assert record["hangup_cause_code"] == int(hangup["HangupCauseCode"])
    assert record["hangup_cause_name"] == hangup["HangupCauseName"]
    assert record["hangup_source"] == hangup["HangupSource"]
    assert record["call_duration"] == int(hangup["Duration"])
    assert record["bill_duration"] == record["billed_duration"] == int(hangup["BillDuration"])
    _check_money(record, hangup["BillRate"], hangup["TotalCost"])
    assert record["initiation_time"][:19] == hangup["StartTime"]
    assert record["end_time"][:19] == hangup["EndTime"]
    assert _epoch(record["initiation_time"]) == math.floor(call.started_at)
    assert _epoch(record["end_time"]) == math.floor(hook.at)
    for name in ("initiation_time", "end_time"):
        _offset_is_the_zones(record[name], zone)
    if hangup["AnswerTime"]:
        assert record["answer_time"][:19] == hangup["AnswerTime"]
        assert record["call_state"] == "ANSWER"
    else:
        assert record["answer_time"] is None and record["call_state"] != "ANSWER"
    stir = hangup.get("STIRVerification", "Not Applicable")
    assert record["stir_verification"] == stir
    assert record["resource_uri"] == f"/v1/Account/{hangup['ParentAuthID']}/Call/{call.call_uuid}/"


def _check_b_leg(record: dict[str, Any], events: list[Webhook], winner: str) -> None:
    """A B leg's record says what its callbacks said, at the times they were sent."""
    hangup_hook = next(h for h in events if h.body["DialAction"] == "hangup")
    hangup = _params(hangup_hook)
    assert record["call_direction"] == "outbound"
    assert record["from_number"] == hangup["DialBLegFrom"]
    assert record["to_number"] == hangup["DialBLegTo"]
    assert record["hangup_cause_code"] == int(hangup["DialBLegHangupCauseCode"])
    assert record["hangup_cause_name"] == hangup["DialBLegHangupCauseName"]
    assert record["hangup_source"] == hangup["DialBLegHangupSource"]
    assert record["call_duration"] == int(hangup["DialBLegDuration"])
    assert record["bill_duration"] == int(hangup["DialBLegBillDuration"])
    _check_money(record, hangup["DialBLegBillRate"], hangup["DialBLegTotalCost"])
    # The hangup callback leaves 0.05 s after the leg ends.
    assert 0 <= hangup_hook.at - _epoch(record["end_time"]) < 1.06
    answers = [h for h in events if h.body["DialAction"] == "answer"]
    if record["call_uuid"] == winner:
        assert record["call_state"] == "ANSWER" and len(answers) == 1
        assert _epoch(record["answer_time"]) == math.floor(answers[0].at)
        talked = _epoch(record["end_time"]) - _epoch(record["answer_time"])
        assert abs(talked - record["call_duration"]) <= 1.0
    else:
        assert record["answer_time"] is None and record["call_state"] != "ANSWER"
        assert not answers


def _check_records(call: Call, zone: ZoneInfo, spec: DialSpec | None = None) -> None:
    records = call.records
    assert all(set(record) == FIELDS for record in records)
    assert json.loads(json.dumps(records)) == records  # plain JSON, as the API answers
    assert [r["parent_call_uuid"] for r in records][:1] == [None]
    _check_a_leg(call, records[0], zone)
    b_legs = records[1:]
    assert {r["parent_call_uuid"] for r in b_legs} <= {call.call_uuid}
    assert len({r["call_uuid"] for r in records}) == len(records)
    actions = [_params(h) for h in _originals(call) if h.kind == "dial_action"]
    callbacks: dict[str, list[Webhook]] = {}
    for hook in _originals(call):
        if hook.kind == "dial_callback":
            callbacks.setdefault(str(hook.body["DialBLegUUID"]), []).append(hook)
    if not actions:
        assert not b_legs and not callbacks
        return
    a_leg = records[0]
    dial_start = {r["initiation_time"] for r in b_legs}
    assert len(dial_start) == 1  # every target rings from the Dial's start
    assert _epoch(a_leg["answer_time"]) <= _epoch(dial_start.pop())
    assert all(_epoch(r["end_time"]) <= _epoch(a_leg["end_time"]) for r in b_legs)
    if spec is not None and spec.callback is None:
        assert not callbacks
        assert [r["to_number"] for r in b_legs] == list(spec.targets)
        assert {r["from_number"] for r in b_legs} == {spec.caller_id}
        winners = [r["call_uuid"] for r in b_legs if r["answer_time"] is not None]
        answered = actions[0]["DialStatus"] == "completed"
        assert winners == ([actions[0]["DialBLegUUID"]] if answered else [])
        return
    # One record per B leg, in the order of their positions.
    positions = {b: int(events[0].body["DialBLegPosition"]) for b, events in callbacks.items()}
    assert [r["call_uuid"] for r in b_legs] == sorted(callbacks, key=positions.__getitem__)
    for record in b_legs:
        _check_b_leg(record, callbacks[record["call_uuid"]], actions[0]["DialBLegUUID"])


def _dial_status(call: Call) -> str | None:
    return next((str(h.body["DialStatus"]) for h in call.webhooks if h.kind == "dial_action"), None)


def _kinds(call: Call) -> set[str]:
    return {hook.kind for hook in call.webhooks}


def _hangup_code(call: Call) -> int:
    return int(str(next(h for h in call.webhooks if h.kind == "hangup").body["HangupCauseCode"]))


# The flows of tests/samples/, and the model's other paths, each picked out of the traffic.
FLOWS: dict[str, Callable[[Call], bool]] = {
    "inbound_simultaneous_dial": lambda c: _dial_status(c) == "completed" and len(c.records) >= 3,
    "inbound_nobody_answers": lambda c: _dial_status(c) in ("no-answer", "timeout"),
    "busy_b_leg": lambda c: _dial_status(c) == "busy",
    "failed_dial": lambda c: _dial_status(c) == "failed",
    "caller_cancels_while_ringing": lambda c: _dial_status(c) == "cancel",
    "outbound_machine_detected": lambda c: any(
        h.kind == "machine_detection" and h.body["Machine"] == "true" for h in c.webhooks
    ),
    "outbound_ring_no_answer": lambda c: _kinds(c) == {"ring", "hangup"},
    "outbound_never_rang": lambda c: _kinds(c) == {"hangup"},
    "outbound_answered_talk": lambda c: _kinds(c) == {"ring", "answer", "hangup"},
    "caller_gone_before_answer": lambda c: (
        c.direction == "inbound" and _hangup_code(c) == 1000 and "dial_action" not in _kinds(c)
    ),
    "caller_gone_in_greeting": lambda c: (
        c.direction == "inbound" and _kinds(c) == {"answer", "hangup"} and _hangup_code(c) == 4000
    ),
    "fallback": lambda c: "fallback" in _kinds(c),
    "retried_webhook": lambda c: any(hook.retry for hook in c.webhooks),
    "unicode_and_unknown_params": lambda c: (
        any(not str(h.body.get("CallerName", "")).isascii() for h in c.webhooks)
        and any("SIP-H-X-Campaign" in h.body or "STIRAttestation" in h.body for h in c.webhooks)
    ),
}


@pytest.mark.parametrize("flow", sorted(FLOWS))
def test_records_agree_with_the_webhooks_of_every_flow(flow: str, calls: list[Call]) -> None:
    found = [call for call in calls if FLOWS[flow](call)]
    assert found, f"no {flow} call among {len(calls)}"
    for call in found[:25]:
        _check_records(call, ZoneInfo("Asia/Kolkata"))


def test_records_agree_with_the_webhooks_of_500_random_calls() -> None:
    zone = "America/New_York"  # a negative offset, and a DST change inside the span
    model = TrafficModel(2026, plivo_timezone=zone)
    end = datetime(2026, 11, 3, tzinfo=UTC).timestamp()
    starts = model.starts(500, end, 6.0, random.Random(5))
    calls = [model.call(i, at) for i, at in enumerate(starts)]
    offsets = {c.records[0]["initiation_time"][-6:] for c in calls}
    assert offsets == {"-04:00", "-05:00"}
    for call in calls:
        _check_records(call, ZoneInfo(zone))
    a_legs = [call.records[0] for call in calls]
    assert [r["call_uuid"] for r in a_legs] == [call.call_uuid for call in calls]
    b_legs = [r for call in calls for r in call.records[1:]]
    assert len(b_legs) > len(calls) / 2  # plenty of Dials, so the B-leg checks ran


def test_records_follow_the_servers_dial() -> None:
    calls = _calls(7, 400, "Asia/Kolkata", SERVER_DIAL)
    for call in calls:
        _check_records(call, ZoneInfo("Asia/Kolkata"), SERVER_DIAL)
    b_legs = [r for call in calls for r in call.records[1:]]
    assert {r["to_number"] for r in b_legs} == set(SERVER_DIAL.targets)
    assert {r["from_number"] for r in b_legs} == {SERVER_DIAL.caller_id}


def test_b_legs_have_records_when_the_dial_has_no_callback_url() -> None:
    calls = _calls(29, 400, "Europe/London", NO_CALLBACK)
    dialled = [call for call in calls if _dial_status(call) is not None]
    assert len(dialled) > 100
    for call in calls:
        _check_records(call, ZoneInfo("Europe/London"), NO_CALLBACK)
    answered = [r for call in dialled for r in call.records[1:] if r["answer_time"]]
    assert answered and all(r["hangup_cause_code"] == 4000 for r in answered)
    lost = [r for call in dialled for r in call.records[1:] if r["hangup_cause_code"] == 9000]
    assert lost and all(r["answer_time"] is None and r["bill_duration"] == 0 for r in lost)


def _digest(seed: int, spec: DialSpec | None) -> str:
    digest = hashlib.sha256()
    for call in _calls(seed, 300, "Asia/Kolkata", spec):
        for hook in call.webhooks:
            row = [
                call.head, hook.kind, hook.method, hook.url(), hook.form(), hook.params(),
                hook.at, hook.delivered_at, hook.retry,
            ]  # fmt: skip
            digest.update(json.dumps(row, sort_keys=True, ensure_ascii=False).encode() + b"\n")
    return digest.hexdigest()


@pytest.mark.parametrize(("seed", "dial"), sorted(PINNED))
def test_records_leave_a_seeds_webhooks_as_they_were(seed: int, dial: str) -> None:
    assert _digest(seed, DIALS[dial]) == PINNED[(seed, dial)]


def test_records_are_the_same_however_often_they_are_read() -> None:
    call = next(c for c in _calls(11, 50, "UTC") if len(c.records) >= 3)
    first = call.records
    first[0]["call_uuid"] = "changed by a reader"
    assert call.records[0]["call_uuid"] == call.call_uuid
    assert call.records[1:] == first[1:]
