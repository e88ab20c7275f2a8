"""Masked mode in the receiver: numbers masked after the signature check and before anything is
written (rows, typed copies, refused requests, the spool, the log); repeats still recognised;
searches by a clear number still find the call."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import duckdb
import pytest
from starlette.testclient import TestClient

import callstatus.receiver.writer
from callstatus.core import rollups, server
from callstatus.core.numbers import NumberMasker, pseudonym
from callstatus.core.records import EventRecord
from callstatus.core.storage import InboxAppender
from callstatus.dashboard import connection
from callstatus.dashboard.queries import calls as call_queries
from tests.factories import app_client, rows, signed_request, wait_until

KEY = "test-number-key-0123456789abcdef"
TOKEN = "main-account-token"
SECRET = "phlo-shared-secret-7f3a9c"
BASE = "http://testserver"
OURS = "+14155550100"
CALLER = "14155550107"  # as Plivo sends it: no "+"
AGENT = "+447700900123"
FORWARDER = "+33142685300"
PHLO_CALLER = "+919876543210"
# Every clear number sent, in every form it went out in: none may be stored or logged.
CLEAR = (CALLER, "4155550107", AGENT, "7700900123", FORWARDER, "142685300", PHLO_CALLER[1:])
SETTINGS = {
    "PLIVO_AUTH_TOKEN": TOKEN,
    "PHLO_SECRET": SECRET,
    "CALLSTATUS_NUMBERS": "masked",
    "CALLSTATUS_NUMBER_KEY": KEY,
    "DIAL_NUMBERS": OURS,
}


def masked(number: str) -> str:
    return pseudonym(number, KEY)


def assert_no_clear_number(text: str) -> None:
    found = [number for number in CLEAR if number in text]
    assert not found, f"clear numbers {found} in {text[:2000]}"


def send(
    client: TestClient, method: str, path: str, pairs: Sequence[tuple[str, str]], **kw: Any
) -> None:
    response = signed_request(client, method, path, pairs, base=BASE, token=TOKEN, **kw)
    assert response.status_code == 200, response.text


def call_flow(client: TestClient, a_leg: str, b_leg: str) -> None:
    """An inbound call to our number, put through to an agent's mobile, as Plivo posts it."""
    common = [("CallUUID", a_leg), ("From", CALLER), ("To", OURS), ("Direction", "inbound")]
    send(
        client,
        "POST",
        "/plivo/answer",
        [
            *common,
            ("CallStatus", "ringing"),
            ("Event", "StartApp"),
            ("CallerName", "Maria Garcia"),
            ("ForwardedFrom", FORWARDER),
            ("SIP-H-Diversion", f"<sip:{FORWARDER}@carrier.test>"),
        ],
    )
    b_common = [("CallUUID", a_leg), ("DialALegUUID", a_leg), ("DialBLegUUID", b_leg)]
    b_numbers = [("DialBLegTo", AGENT), ("DialBLegFrom", CALLER), ("DialBLegPosition", "1")]
    send(
        client,
        "POST",
        "/plivo/dial/callback",
        [*b_common, *b_numbers, ("DialAction", "answer"), ("DialBLegStatus", "answer")],
    )
    send(
        client,
        "POST",
        "/plivo/dial/callback",
        [
            *b_common,
            *b_numbers,
            ("DialAction", "hangup"),
            ("DialBLegStatus", "hangup"),
            ("DialBLegDuration", "40"),
            ("DialBLegHangupCause", "NORMAL_CLEARING"),
        ],
    )
    send(
        client,
        "POST",
        "/plivo/dial/action",
        [*common, ("DialStatus", "completed"), ("DialALegUUID", a_leg), ("DialBLegUUID", b_leg)],
    )
    # The hangup as a GET: every parameter, numbers included, in the signed URL's query.
    send(
        client,
        "GET",
        "/plivo/hangup",
        [
            *common,
            ("CallStatus", "completed"),
            ("HangupCause", "NORMAL_CLEARING"),
            ("HangupCauseCode", "4000"),
            ("Duration", "45"),
            ("BillDuration", "45"),
        ],
    )


# Tests with an app of their own first: one app runs in a process at a time, and the module's
# app lives until the module ends.


class FailingDisk:
    """Every append to webhook_inbox fails while `failing`: the writer spools."""

    failing = True


def test_spooled_webhooks_hold_pseudonyms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    disk = FailingDisk()
    real = InboxAppender.append

    def append(appender: InboxAppender, records: Sequence[EventRecord]) -> None:
        if disk.failing:
            raise duckdb.IOException("IO Error: No space left on device")
        real(appender, records)

    monkeypatch.setattr(InboxAppender, "append", append)
    monkeypatch.setattr(callstatus.receiver.writer, "SPOOL_RETRY_S", 0.1)
    spool_dir = tmp_path / "spool"
    with app_client(tmp_path, **SETTINGS) as client:
        call_flow(client, "m-spooled", "m-spooled-b")
        spooled = "".join(p.read_text() for p in sorted(spool_dir.glob("spool-*.jsonl")))
        assert spooled.count('"event_id"') == 5
        assert_no_clear_number(spooled)
        assert "\\u2026" in spooled or "…" in spooled  # the pseudonyms are there
        disk.failing = False
        wait_until(lambda: len(rows("SELECT 1 FROM webhook_events")) == 5)
        (call,) = rows("SELECT from_number FROM calls WHERE call_uuid = 'm-spooled'")
    assert call["from_number"] == masked(CALLER)


def test_clear_mode_stores_numbers_as_sent(tmp_path: Path) -> None:
    with app_client(tmp_path, PLIVO_AUTH_TOKEN=TOKEN) as client:
        send(client, "POST", "/plivo/hangup", [("CallUUID", "c-1"), ("From", CALLER)])
        wait_until(lambda: len(rows("SELECT 1 FROM webhook_events")) == 1)
        (row,) = rows("SELECT from_number FROM webhook_events")
    assert row["from_number"] == CALLER


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    with app_client(tmp_path_factory.mktemp("masked"), **SETTINGS) as client:
        call_flow(client, "m-call-1", "m-bleg-1")
        yield client


def test_parameters_and_typed_copies_hold_pseudonyms(client: TestClient) -> None:
    stored = rows(
        "SELECT kind, params, from_number, to_number, dial_b_leg_to, dial_b_leg_from"
        " FROM webhook_events WHERE call_uuid = 'm-call-1' ORDER BY received_at"
    )
    assert [row["kind"] for row in stored] == [
        "answer",
        "dial_callback",
        "dial_callback",
        "dial_action",
        "hangup",
    ]
    assert_no_clear_number(json.dumps(stored, default=str))
    answer = json.loads(stored[0]["params"])
    assert answer["From"] == masked(CALLER) == stored[0]["from_number"]
    assert answer["To"] == OURS == stored[0]["to_number"]  # our own number stays in clear
    assert answer["ForwardedFrom"] == masked(FORWARDER)
    assert answer["SIP-H-Diversion"] == f"<sip:{masked(FORWARDER)}@carrier.test>"
    assert answer["CallerName"].startswith("…#") and "Maria" not in stored[0]["params"]
    callback = stored[1]
    assert callback["dial_b_leg_to"] == masked(AGENT)
    assert callback["dial_b_leg_from"] == masked(CALLER)
    assert stored[4]["from_number"] == masked(CALLER)


def test_the_views_join_on_pseudonyms(client: TestClient) -> None:
    (call,) = rows("SELECT from_number, to_number, outcome FROM calls WHERE call_uuid = 'm-call-1'")
    assert call == {"from_number": masked(CALLER), "to_number": OURS, "outcome": "answered"}
    (leg,) = rows("SELECT b_leg_to, answered FROM dial_legs WHERE a_leg_uuid = 'm-call-1'")
    assert leg == {"b_leg_to": masked(AGENT), "answered": True}


def test_a_repeat_is_still_recognised_by_its_masked_fingerprint(client: TestClient) -> None:
    pairs = [("CallUUID", "m-repeat"), ("From", CALLER), ("To", OURS), ("Duration", "3")]
    send(client, "POST", "/plivo/hangup", pairs)
    send(client, "POST", "/plivo/hangup", pairs)  # Plivo's retry: another nonce, same values
    wait_until(lambda: len(rows("SELECT 1 FROM webhook_events WHERE call_uuid = 'm-repeat'")) == 2)
    flags = rows(
        "SELECT duplicate FROM webhook_events WHERE call_uuid = 'm-repeat' ORDER BY received_at"
    )
    assert [row["duplicate"] for row in flags] == [False, True]


def test_refused_requests_and_their_log_lines_hold_no_clear_number(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    pairs = [("CallUUID", "m-forged"), ("From", CALLER), ("DialBLegTo", AGENT)]
    with caplog.at_level(logging.INFO):
        for method in ("GET", "POST"):
            response = signed_request(
                client, method, "/plivo/hangup", pairs, base=BASE, token="a-wrong-token"
            )
            assert response.status_code == 403
    wait_until(lambda: len(rows("SELECT 1 FROM rejected_webhooks")) >= 2)
    kept = rows("SELECT http_method, checked_url, params FROM rejected_webhooks")
    assert {row["http_method"] for row in kept} == {"GET", "POST"}
    # Our loggers only: the test's own HTTP client logs the URL it sent.
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("callstatus"))
    assert_no_clear_number(json.dumps(kept) + logged)
    get = next(row for row in kept if row["http_method"] == "GET")
    assert "From=%2B1%E2%80%A607%23" in get["checked_url"]  # the masked number, URL-encoded
    assert json.loads(get["params"])["From"] == masked(CALLER)
    assert "refused GET /plivo/hangup" in logged


def test_phlo_reports_are_masked_in_any_spelling(client: TestClient) -> None:
    report = {
        "DialStatus": "completed",
        "DialALegUUID": "m-phlo-a",
        "caller_number": PHLO_CALLER,
        "Agent": {"Phone Number": AGENT},
    }
    response = client.post("/plivo/phlo", json=report, headers={"X-Callstatus-Secret": SECRET})
    assert response.status_code == 200, response.text
    refused = client.get(f"/plivo/phlo?{urlencode({'From': PHLO_CALLER, 'secret': 'wrong'})}")
    assert refused.status_code == 403
    wait_until(lambda: len(rows("SELECT 1 FROM webhook_events WHERE kind = 'phlo'")) == 1)
    (row,) = rows("SELECT params FROM webhook_events WHERE kind = 'phlo'")
    params = json.loads(row["params"])
    assert params["caller_number"] == masked(PHLO_CALLER)
    assert params["Agent"] == {"Phone Number": masked(AGENT)}
    wait_until(lambda: len(rows("SELECT 1 FROM rejected_webhooks WHERE path = '/plivo/phlo'")) == 1)
    kept = rows("SELECT checked_url, params FROM rejected_webhooks WHERE path = '/plivo/phlo'")
    assert_no_clear_number(json.dumps(kept))


def test_a_clear_number_finds_its_calls(client: TestClient) -> None:
    masker = NumberMasker(KEY, [OURS])
    # The dashboard and the API read the rollups, which trail the webhooks by a refresh.
    handle = server.installed()
    assert handle is not None
    wait_until(lambda: rollups.is_current(handle.database.cursor()), timeout=30)
    rel = connection.relations()
    for typed in ("+1 415 555 0107", CALLER, masked(CALLER), "+447700900123"):
        found = call_queries.search_calls(rel, typed, "UTC", masker=masker).frame
        assert "m-call-1" in set(found["call_uuid"]), typed
    assert call_queries.search_calls(rel, CALLER, "UTC").frame.empty  # unmasked: no match
    start = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    for query, expected in (
        ({"destination": "00447700900123"}, ["m-call-1"]),
        ({"destination": masked(AGENT)}, ["m-call-1"]),
        ({"number": "14155550100"}, ["m-repeat", "m-call-1"]),  # our own number, in clear
    ):
        response = client.get("/api/v1/calls", params={"start": start, **query})
        assert response.status_code == 200, response.text
        assert [c["call_uuid"] for c in response.json()["calls"]] == expected, query
    response = client.get("/api/v1/calls", params={"start": start, "destination": "+4477009001"})
    assert response.json()["calls"] == []
