"""The views calls, dials, dial_legs (migration 0002) over recorded and hand-made webhook flows."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from callstatus.core import rollups
from callstatus.core.db import Database
from callstatus.core.duplicates import DuplicateTracker
from callstatus.core.records import Params, make_record
from callstatus.core.storage import move_inbox
from callstatus.core.typed import phlo_typed_values, typed_values
from callstatus.simulator.traffic import PHLO_KEYS as PLIVO_DIAL_KEYS
from callstatus.simulator.traffic import TrafficModel, with_phlo
from tests.factories import (
    T0,
    assert_rollups_equal_views,
    call_webhooks,
    cdr,
    deliver,
    split,
    store,
)

SAMPLES = Path(__file__).parents[1] / "samples"
SECOND = timedelta(seconds=1)
UTC_ZONE = ZoneInfo("UTC")

Event = tuple[str, Params]


def load_sample(name: str) -> list[Event]:
    data = json.loads((SAMPLES / f"{name}.json").read_text(encoding="utf-8"))
    return [(item["kind"], item["params"]) for item in data]


def rows(db: Database, view: str, columns: str = "*") -> list[tuple[Any, ...]]:
    """Every row of a view, in a stable order; `columns` is a select list of the test's own."""
    return db.cursor().execute(f"SELECT {columns} FROM {view} ORDER BY ALL").fetchall()


def utc(hour: int, minute: int = 0, second: int = 0) -> datetime:
    return datetime(2026, 11, 2, hour, minute, second, tzinfo=UTC)


def clear(db: Database) -> None:
    db.cursor().execute("DELETE FROM webhook_rows")
    db.cursor().execute("DELETE FROM webhook_inbox")


# --- every view of every recorded sample ---------------------------------------------------------

CALL_COLUMNS = (
    "call_uuid, direction, from_number, to_number, started_at, answered_at, ended_at, "
    "duration_s, bill_duration_s, call_status, hangup_cause, hangup_cause_code, "
    "hangup_cause_name, hangup_source, answered, outcome"
)
DIAL_COLUMNS = "a_leg_uuid, b_leg_uuid, dial_status, dial_ring_status, dial_hangup_cause"
LEG_COLUMNS = (
    "a_leg_uuid, b_leg_uuid, b_leg_to, b_leg_from, position, answered, duration_s, "
    "hangup_cause_code, hangup_cause_name, hangup_source, outcome"
)
# Columns that come from received_at, i.e. from when a webhook happened to arrive.
ARRIVAL_COLUMNS = {
    # rang_at is when the ring callback arrived, as dial_legs' times are.
    "calls": "* EXCLUDE (rang_at)",
    "dials": "* EXCLUDE (received_at, event_id)",
    "dial_legs": "* EXCLUDE (answered_at, ended_at)",
}
ALL_COLUMNS = {"calls": "*", "dials": "* EXCLUDE (event_id)", "dial_legs": "*"}

CALLER, DID = "14155550123", "18005550199"
NORMAL, END_OF_XML = "Normal Hangup", "End Of XML Instructions"

A1 = "0f3b6b7e-7b1e-11f1-a9d4-0242ac110002"
A2 = "1e8a0c55-7b1f-11f1-a9d4-0242ac110002"
A3 = "2b9e4d10-7b20-11f1-a9d4-0242ac110002"
A4 = "3c0f5e21-7b21-11f1-a9d4-0242ac110002"
O5 = "4d1a6f32-7b22-11f1-a9d4-0242ac110002"
O6 = "5e2b7a43-7b23-11f1-a9d4-0242ac110002"
A7 = "6f3c8b54-7b24-11f1-a9d4-0242ac110002"
SIP_TO = "sip:réception-zoë@example.sip.plivo.com"


def b_leg(n: str, series: str) -> str:
    return f"{n}{series}-b0a1-0242ac110003"


# fmt: off
EXPECTED: dict[str, dict[str, list[tuple[Any, ...]]]] = {
    "inbound_simultaneous_dial": {
        "calls": [
            (A1, "inbound", CALLER, DID, utc(9), utc(9), utc(9, 1, 40), 100, 120, "completed",
             "NORMAL_CLEARING", 4010, END_OF_XML, "Plivo", True, "answered"),
        ],
        "dials": [(A1, b_leg("2", "c1d2e3f-7b1e-11f1"), "completed", True, "NORMAL_CLEARING")],
        "dial_legs": [
            (A1, b_leg("1", "c1d2e3f-7b1e-11f1"), "14155550101", DID, 1, False, 0, 9000,
             "Lost Race", "Plivo", "lost-race"),
            (A1, b_leg("2", "c1d2e3f-7b1e-11f1"), "14155550102", DID, 2, True, 94, 4000,
             NORMAL, "Call recipient", "answered"),
            (A1, b_leg("3", "c1d2e3f-7b1e-11f1"), "sip:agent3@phone.plivo.com", DID, 3, False,
             0, 9000, "Lost Race", "Plivo", "lost-race"),
        ],
    },
    "inbound_nobody_answers": {
        "calls": [
            (A2, "inbound", CALLER, DID, utc(10, 15), utc(10, 15), utc(10, 15, 33), 33, 60,
             "completed", "NORMAL_CLEARING", 4010, END_OF_XML, "Plivo", True, "answered"),
        ],
        "dials": [(A2, None, "no-answer", True, "NO_ANSWER")],
        "dial_legs": [
            (A2, b_leg("4", "d7f8a9b-7b1f-11f1"), "14155550101", DID, 1, False, 0, 3000,
             "No Answer", "Call recipient", "no-answer"),
            (A2, b_leg("5", "d7f8a9b-7b1f-11f1"), "14155550102", DID, 2, False, 0, 6010,
             "Ring Timeout Reached", "Plivo", "no-answer"),
            (A2, b_leg("6", "d7f8a9b-7b1f-11f1"), "14155550103", DID, 3, False, 0, 3000,
             "No Answer", "Carrier", "no-answer"),
        ],
    },
    "busy_b_leg": {
        "calls": [
            (A3, "inbound", CALLER, DID, utc(11, 30, 5), utc(11, 30, 5), utc(11, 30, 12), 7, 60,
             "completed", "NORMAL_CLEARING", 4010, END_OF_XML, "Plivo", True, "answered"),
        ],
        "dials": [(A3, None, "busy", False, "USER_BUSY")],
        "dial_legs": [
            (A3, "7e2a3b4c-7b20-11f1-b0a1-0242ac110003", "14155550101", DID, 1, False, 0, 3010,
             "Busy Line", "Call recipient", "busy"),
        ],
    },
    "caller_cancels_while_ringing": {
        "calls": [
            (A4, "inbound", CALLER, DID, utc(12), utc(12), utc(12, 0, 14), 14, 60, "completed",
             "NORMAL_CLEARING", 4000, NORMAL, "Caller", True, "answered"),
        ],
        "dials": [(A4, None, "cancel", True, "ORIGINATOR_CANCEL")],
        "dial_legs": [
            (A4, b_leg("8", "f3a4b5c-7b21-11f1"), "14155550101", DID, 1, False, 0, 1000,
             "Canceled", "Caller", "canceled"),
            (A4, b_leg("9", "f3a4b5c-7b21-11f1"), "14155550102", DID, 2, False, 0, 1000,
             "Canceled", "Caller", "canceled"),
        ],
    },
    "outbound_ring_no_answer": {
        "calls": [
            (O5, "outbound", DID, "14155550177", utc(13), None, utc(13, 0, 45), 0, 0,
             "no-answer", "NO_ANSWER", 3000, "No Answer", "Carrier", False, "no-answer"),
        ],
        "dials": [],
        "dial_legs": [],
    },
    "outbound_machine_detected": {
        "calls": [
            (O6, "outbound", DID, "14155550188", utc(14), utc(14, 0, 6), utc(14, 0, 31), 25, 60,
             "completed", "NORMAL_CLEARING", 4010, END_OF_XML, "Plivo", True, "machine"),
        ],
        "dials": [],
        "dial_legs": [],
    },
    "unicode_and_unknown_params": {
        "calls": [
            (A7, "inbound", CALLER, SIP_TO, utc(15), utc(15, 0, 1), utc(15, 1, 5), 64, 120,
             "completed", "NORMAL_CLEARING", 4000, NORMAL, "Caller", True, "answered"),
        ],
        "dials": [(A7, "8a4d9c65-7b24-11f1-b0a1-0242ac110003", "completed", True,
                   "NORMAL_CLEARING")],
        "dial_legs": [
            (A7, "8a4d9c65-7b24-11f1-b0a1-0242ac110003", "sip:renée@example.com", "Zoë Ødegård",
             1, True, 61, 4000, NORMAL, "Caller", "answered"),
        ],
    },
}
# fmt: on
SAMPLE_NAMES = sorted(EXPECTED)


def test_every_sample_has_expectations() -> None:
    assert sorted(path.stem for path in SAMPLES.glob("*.json")) == SAMPLE_NAMES


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_sample_views(db: Database, name: str) -> None:
    store(db, load_sample(name))
    expected = EXPECTED[name]
    assert rows(db, "calls", CALL_COLUMNS) == sorted(expected["calls"])
    assert rows(db, "dials", DIAL_COLUMNS) == expected["dials"]  # at most one per sample
    assert rows(db, "dial_legs", LEG_COLUMNS) == sorted(expected["dial_legs"])


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_sample_arrival_times(db: Database, name: str) -> None:
    """Dials are stamped with their own arrival; B legs with their answer and hangup callbacks."""
    events = load_sample(name)
    store(db, events)
    arrival = {i: T0 + i * SECOND for i in range(len(events))}
    dial_times = [arrival[i] for i, (kind, _) in enumerate(events) if kind == "dial_action"]
    assert [r[0] for r in rows(db, "dials", "received_at")] == dial_times
    for b_leg_uuid, answered_at, ended_at in rows(
        db, "dial_legs", "b_leg_uuid, answered_at, ended_at"
    ):
        by_action = {
            p["DialAction"]: arrival[i]
            for i, (kind, p) in enumerate(events)
            if kind == "dial_callback" and p["DialBLegUUID"] == b_leg_uuid
        }
        assert (answered_at, ended_at) == (by_action.get("answer"), by_action["hangup"])


def test_unknown_and_non_ascii_parameters_are_kept(db: Database) -> None:
    store(db, load_sample("unicode_and_unknown_params"))
    kept = (
        db.cursor()
        .execute(
            "SELECT params->>'$.VoiceAnalyticsScore', params->'$.\"SIP-H-X-Tag\"', "
            "params->>'$.CallerName' FROM webhook_events WHERE kind = 'hangup'"
        )
        .fetchone()
    )
    assert kept is not None
    assert kept[0] == "0,87 ≈ élevé"
    assert json.loads(kept[1]) == ["vip", "rückruf"]
    assert kept[2] == "Zoë Ødegård 北京"


# --- order and duplicates ------------------------------------------------------------------------


def snapshot(db: Database, columns: dict[str, str]) -> dict[str, list[tuple[Any, ...]]]:
    return {view: rows(db, view, select) for view, select in columns.items()}


def permutations(events: list[Event]) -> list[list[int]]:
    """Several fixed random orders plus the reversed one."""
    orders = [list(reversed(range(len(events))))]
    for seed in (1, 7, 42, 2026):
        order = list(range(len(events)))
        random.Random(seed).shuffle(order)
        orders.append(order)
    return orders


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_delivery_order_does_not_change_views(db: Database, name: str) -> None:
    events = load_sample(name)
    store(db, events)
    recorded = snapshot(db, ARRIVAL_COLUMNS)
    for order in permutations(events):
        clear(db)
        store(db, [events[i] for i in order])
        assert snapshot(db, ARRIVAL_COLUMNS) == recorded, order


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_storage_order_does_not_change_views(db: Database, name: str) -> None:
    """The same deliveries written in another order (spool replay, batching) give every column."""
    events = load_sample(name)
    store(db, events)
    recorded = snapshot(db, ALL_COLUMNS)
    for order in permutations(events):
        clear(db)
        tracker = DuplicateTracker()
        for i in order:
            store(db, [events[i]], start=T0 + i * SECOND, tracker=tracker)
        assert snapshot(db, ALL_COLUMNS) == recorded, order


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_exact_repeats_change_nothing(db: Database, name: str) -> None:
    events = load_sample(name)
    store(db, events)
    recorded, recorded_anytime = snapshot(db, ALL_COLUMNS), snapshot(db, ARRIVAL_COLUMNS)

    clear(db)
    store(db, events + [events[i] for i in permutations(events)[1]])  # late retries
    flagged = db.cursor().execute("SELECT count(*) FROM webhook_events WHERE duplicate").fetchone()
    assert flagged == (len(events),)
    assert snapshot(db, ALL_COLUMNS) == recorded

    clear(db)
    store(db, [event for event in events for _ in range(3)])  # each one retried twice at once
    assert snapshot(db, ARRIVAL_COLUMNS) == recorded_anytime


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_repeats_not_flagged_as_duplicates_count_once(db: Database, name: str) -> None:
    """A retry the duplicate tracker no longer remembers still adds no row and no leg."""
    events = load_sample(name)
    store(db, events)
    recorded = snapshot(db, ALL_COLUMNS)
    store(db, events, start=T0 + timedelta(hours=1))  # a fresh tracker: nothing flagged
    assert snapshot(db, ALL_COLUMNS) == recorded


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_views_read_webhook_events_once(db: Database, name: str) -> None:
    events = load_sample(name)
    # Half the webhooks typed in webhook_rows, half still in the inbox: both tables hold rows.
    store(db, events[: len(events) // 2])
    move_inbox(db.cursor())
    store(db, events[len(events) // 2 :])
    for view in ("calls", "dials", "dial_legs"):
        plan = db.cursor().execute(f"EXPLAIN SELECT * FROM {view}").fetchall()
        text = "\n".join(str(part) for row in plan for part in row)
        inbox = text.count("webhook_inbox") - text.count("webhook_inbox_typed")
        scans = [text.count("webhook_rows"), inbox]
        # Each table at most once; a table whose statistics rule out every matching row (or a
        # view with none at all) may be planned as an empty result: no scan.
        assert max(scans) <= 1, view
        assert sum(scans) >= 1 if rows(db, view) else True, view


# --- in progress ---------------------------------------------------------------------------------

OUTBOUND = {"CallUUID": "c-out", "Direction": "outbound", "From": DID, "To": "14155550177"}


def test_ringing_call_is_in_progress(db: Database) -> None:
    store(db, [("ring", {**OUTBOUND, "CallStatus": "ringing", "Event": "Ring"})])
    assert rows(db, "calls", "call_uuid, started_at, ended_at, call_status, answered, outcome") == [
        ("c-out", T0, None, "ringing", False, "in-progress")
    ]


@pytest.mark.parametrize("reverse", [False, True])
def test_live_call_status_is_the_furthest_one(db: Database, reverse: bool) -> None:
    events: list[Event] = [
        ("ring", {**OUTBOUND, "CallStatus": "ringing"}),
        ("answer", {**OUTBOUND, "CallStatus": "in-progress", "Event": "StartApp"}),
    ]
    store(db, events[::-1] if reverse else events)
    assert rows(db, "calls", "call_status, started_at, outcome") == [
        ("in-progress", T0, "in-progress")
    ]


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_flows_without_final_events_are_in_progress(db: Database, name: str) -> None:
    events = [
        (kind, params)
        for kind, params in load_sample(name)
        if kind != "hangup" and params.get("DialAction") != "hangup"
    ]
    store(db, events)
    for view in ("calls", "dial_legs"):
        assert {row for row in rows(db, view, "outcome, ended_at")} <= {("in-progress", None)}
    assert len(rows(db, "calls")) == len(EXPECTED[name]["calls"])
    still_ringing = {p["DialBLegUUID"] for kind, p in events if kind == "dial_callback"}
    assert {row[0] for row in rows(db, "dial_legs", "b_leg_uuid")} == still_ringing


# --- outcome rules, in order ---------------------------------------------------------------------

ANSWERED_AT = {"AnswerTime": "2026-11-02 09:00:05", "BillDuration": "60", "Duration": "55"}
NEVER_ANSWERED = {"AnswerTime": "", "BillDuration": "0", "Duration": "0"}

# fmt: off
CALL_CASES = [
    # id, hangup params, Machine of a machine_detection event (None: none), answered, outcome
    ("9100-beats-answered", {**ANSWERED_AT, "HangupCauseCode": "9100"}, None, True, "machine"),
    ("machine-event-beats-answered", {**ANSWERED_AT, "HangupCauseCode": "4000"}, "true", True,
     "machine"),
    ("machine-event-false", {**ANSWERED_AT, "HangupCauseCode": "4000"}, "false", True,
     "answered"),
    ("9000-beats-answered", {**ANSWERED_AT, "HangupCauseCode": "9000"}, None, True, "lost-race"),
    ("answered-by-answer-time", {**ANSWERED_AT, "BillDuration": "0", "HangupCauseCode": "5000"},
     None, True, "answered"),
    ("answered-by-bill-duration", {"BillDuration": "1", "HangupCauseCode": "3000"}, None, True,
     "answered"),
    ("normal-never-answered-is-canceled", {**NEVER_ANSWERED, "HangupCauseCode": "4000"}, None,
     False, "canceled"),
    ("end-of-xml-never-answered", {**NEVER_ANSWERED, "HangupCauseCode": "4010"}, None, False,
     "canceled"),
    ("scheduled-never-answered", {"HangupCauseCode": "6000"}, None, False, "canceled"),
    ("code-canceled", {"HangupCauseCode": "1010"}, None, False, "canceled"),
    ("code-unreachable", {"HangupCauseCode": "2060"}, None, False, "unreachable"),
    ("code-no-answer", {"HangupCauseCode": "3000"}, None, False, "no-answer"),
    ("code-ring-timeout", {"HangupCauseCode": "6010"}, None, False, "no-answer"),
    ("code-busy", {"HangupCauseCode": "3100"}, None, False, "busy"),
    ("code-rejected", {"HangupCauseCode": "9110"}, None, False, "rejected"),
    ("code-failed-carrier", {"HangupCauseCode": "3080"}, None, False, "failed"),
    ("code-unknown-0", {"HangupCauseCode": "0"}, None, False, "failed"),
    ("code-app", {"HangupCauseCode": "8011"}, None, False, "failed"),
    ("code-beats-name", {"HangupCauseCode": "3010", "HangupCause": "NO_ANSWER"}, None, False,
     "busy"),
    ("code-beats-status", {"HangupCauseCode": "3000", "CallStatus": "busy"}, None, False,
     "no-answer"),
    ("no-code-name-busy", {"HangupCause": "USER_BUSY"}, None, False, "busy"),
    ("empty-code-name", {"HangupCauseCode": "", "HangupCause": "NO_ANSWER"}, None, False,
     "no-answer"),
    ("no-code-name-no-user-response", {"HangupCause": "NO_USER_RESPONSE"}, None, False,
     "no-answer"),
    ("no-code-name-rejected", {"HangupCause": "CALL_REJECTED"}, None, False, "rejected"),
    ("no-code-name-unallocated", {"HangupCause": "UNALLOCATED_NUMBER"}, None, False,
     "unreachable"),
    ("no-code-name-no-route", {"HangupCause": "NO_ROUTE_DESTINATION"}, None, False,
     "unreachable"),
    ("no-code-name-cancel", {"HangupCause": "ORIGINATOR_CANCEL"}, None, False, "canceled"),
    ("no-code-name-lose-race", {"HangupCause": "LOSE_RACE"}, None, False, "lost-race"),
    ("no-code-name-lowercase", {"HangupCause": "user_busy"}, None, False, "busy"),
    ("name-beats-status", {"HangupCause": "USER_BUSY", "CallStatus": "no-answer"}, None, False,
     "busy"),
    ("unknown-code-falls-to-name", {"HangupCauseCode": "7777", "HangupCause": "USER_BUSY"}, None,
     False, "busy"),
    ("unmapped-name-falls-to-status",
     {"HangupCause": "NORMAL_TEMPORARY_FAILURE", "CallStatus": "busy"}, None, False, "busy"),
    ("no-name-status-busy", {"CallStatus": "busy"}, None, False, "busy"),
    ("no-name-status-no-answer", {"CallStatus": "no-answer"}, None, False, "no-answer"),
    ("no-name-status-timeout", {"CallStatus": "timeout"}, None, False, "no-answer"),
    ("no-name-status-cancel", {"CallStatus": "cancel"}, None, False, "canceled"),
    ("no-name-status-failed", {"CallStatus": "failed"}, None, False, "failed"),
    ("status-completed-only", {"CallStatus": "completed"}, None, False, "failed"),
    ("nothing-is-failed", {}, None, False, "failed"),
]
# fmt: on


@pytest.mark.parametrize(
    ("hangup", "machine", "answered", "outcome"),
    [case[1:] for case in CALL_CASES],
    ids=[case[0] for case in CALL_CASES],
)
def test_call_outcome_rules(
    db: Database, hangup: Params, machine: str | None, answered: bool, outcome: str
) -> None:
    events: list[Event] = [("hangup", {**OUTBOUND, **hangup})]
    if machine is not None:
        events.insert(0, ("machine_detection", {**OUTBOUND, "Machine": machine}))
    store(db, events)
    assert rows(db, "calls", "answered, outcome") == [(answered, outcome)]


A_LEG = "c-in"
B_LEG = {
    "CallUUID": A_LEG,
    "DialALegUUID": A_LEG,
    "DialBLegUUID": "b-1",
    "DialBLegTo": "14155550101",
    "DialBLegPosition": "1",
}
ANSWER_CB: Event = ("dial_callback", {**B_LEG, "DialAction": "answer", "DialBLegStatus": "answer"})


def hangup_cb(**params: str) -> Event:
    return (
        "dial_callback",
        {**B_LEG, "DialAction": "hangup", "DialBLegStatus": "hangup", **params},
    )


# fmt: off
B_LEG_CASES = [
    ("9000-beats-answered", [ANSWER_CB, hangup_cb(DialBLegHangupCauseCode="9000")], True,
     "lost-race"),
    ("9100-machine", [ANSWER_CB, hangup_cb(DialBLegHangupCauseCode="9100")], True, "machine"),
    ("answered-then-normal", [ANSWER_CB, hangup_cb(DialBLegHangupCauseCode="4000")], True,
     "answered"),
    ("answered-by-bill-duration",
     [hangup_cb(DialBLegHangupCauseCode="4000", DialBLegBillDuration="60")], True, "answered"),
    ("normal-never-answered-is-canceled",
     [hangup_cb(DialBLegHangupCauseCode="4000", DialBLegBillDuration="0")], False, "canceled"),
    ("code-busy", [hangup_cb(DialBLegHangupCauseCode="3010")], False, "busy"),
    ("no-code-lose-race", [hangup_cb(DialBLegHangupCause="LOSE_RACE")], False, "lost-race"),
    ("no-code-name-busy", [hangup_cb(DialBLegHangupCause="USER_BUSY")], False, "busy"),
    ("nothing-is-failed", [hangup_cb()], False, "failed"),
    ("answer-only-is-in-progress", [ANSWER_CB], True, "in-progress"),
    ("hangup-before-answer", [hangup_cb(DialBLegHangupCauseCode="4000"), ANSWER_CB], True,
     "answered"),
]
# fmt: on


@pytest.mark.parametrize(
    ("events", "answered", "outcome"),
    [case[1:] for case in B_LEG_CASES],
    ids=[case[0] for case in B_LEG_CASES],
)
def test_b_leg_outcome_rules(
    db: Database, events: list[Event], answered: bool, outcome: str
) -> None:
    store(db, events)
    assert rows(db, "dial_legs", "a_leg_uuid, b_leg_uuid, answered, outcome") == [
        (A_LEG, "b-1", answered, outcome)
    ]


def test_b_leg_answer_after_its_hangup(db: Database) -> None:
    store(db, [hangup_cb(DialBLegHangupCauseCode="4000", DialBLegDuration="30"), ANSWER_CB])
    assert rows(db, "dial_legs", "answered, answered_at, ended_at, duration_s, outcome") == [
        (True, T0 + SECOND, T0, 30, "answered")
    ]


def test_b_leg_without_dial_a_leg_uuid_joins_its_leg(db: Database) -> None:
    no_a_leg = {key: value for key, value in B_LEG.items() if key != "DialALegUUID"}
    store(db, [("dial_callback", {**no_a_leg, "DialAction": "answer"}), hangup_cb()])
    assert rows(db, "dial_legs", "a_leg_uuid, b_leg_uuid") == [(A_LEG, "b-1")]


def test_dial_events_alone_make_no_call(db: Database) -> None:
    store(
        db,
        [
            ANSWER_CB,
            hangup_cb(DialBLegHangupCauseCode="4000"),
            ("dial_action", {"CallUUID": A_LEG, "DialStatus": "completed", "DialBLegUUID": "b-1"}),
        ],
    )
    assert rows(db, "calls") == []
    assert rows(db, "dials", "a_leg_uuid, b_leg_uuid, dial_status") == [(A_LEG, "b-1", "completed")]
    assert len(rows(db, "dial_legs")) == 1


def test_each_dial_action_is_one_dial(db: Database) -> None:
    first = {
        "CallUUID": A_LEG,
        "DialALegUUID": A_LEG,
        "DialStatus": "no-answer",
        "DialBLegUUID": "",
    }
    second = {**first, "DialStatus": "completed", "DialBLegUUID": "b-2"}
    store(db, [("dial_action", first), ("dial_action", second), ("dial_action", first)])
    assert rows(db, "dials", "received_at, a_leg_uuid, b_leg_uuid, dial_status") == [
        (T0, A_LEG, None, "no-answer"),
        (T0 + SECOND, A_LEG, "b-2", "completed"),
    ]


# --- times ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("zone", "local_start"),
    [
        ("UTC", "2026-11-02 09:00:00"),
        ("Asia/Kolkata", "2026-11-02 14:30:00"),
        ("America/New_York", "2026-11-02 04:00:00"),  # EST, the day after DST ended
        ("Europe/Paris", "2026-11-02 10:00:00"),
    ],
)
def test_plivo_timezone_gives_utc_times(db: Database, zone: str, local_start: str) -> None:
    start = datetime.fromisoformat(local_start)
    hangup = {
        **OUTBOUND,
        "StartTime": local_start,
        "AnswerTime": str(start + 5 * SECOND),
        "EndTime": str(start + 65 * SECOND),
        "BillDuration": "60",
        "HangupCauseCode": "4000",
    }
    store(db, [("hangup", hangup)], start=utc(12), plivo_timezone=zone)
    assert rows(db, "calls", "started_at, answered_at, ended_at") == [
        (utc(9), utc(9, 0, 5), utc(9, 1, 5))
    ]


def test_hangup_without_end_time_ends_at_its_arrival(db: Database) -> None:
    store(db, [("ring", OUTBOUND), ("hangup", {**OUTBOUND, "HangupCauseCode": "3000"})])
    assert rows(db, "calls", "started_at, ended_at, outcome") == [(T0, T0 + SECOND, "no-answer")]


# --- the cause table -----------------------------------------------------------------------------

# fmt: off
SECTION_3_CODES = {
    0, 1000, 1010, 1020, 2000, 2010, 2020, 2030, 2040, 2050, 2060, 2070, 3000, 3010, 3020, 3030,
    3040, 3050, 3070, 3080, 3090, 3100, 3110, 3120, 3130, 3140, 4000, 4010, 4020, 4030, 5000,
    5010, 5020, 6000, 6010, 6020, 7011, 7012, 7013, 7014, 7022, 7023, 7024, 7032, 7033, 7034,
    8011, 8012, 8013, 8014, 9000, 9100, 9110,
}
# fmt: on


def test_hangup_cause_groups_cover_section_3(db: Database) -> None:
    table = dict(rows(db, "hangup_cause_groups", "code, grp"))
    assert set(table) == SECTION_3_CODES
    assert set(table.values()) == {
        "failed",
        "canceled",
        "unreachable",
        "no-answer",
        "busy",
        "rejected",
        "normal",
        "lost-race",
        "machine",
    }
    assert [table[code] for code in (3050, 3090, 3100, 4030, 6000, 6010, 6020, 9110)] == [
        "rejected",
        "failed",
        "busy",
        "normal",
        "normal",
        "no-answer",
        "failed",
        "rejected",
    ]


# --- PHLO reports (migration 0009) ---------------------------------------------------------------

PHLO_REPORT = {
    "dial_status": "completed",
    "Dial_Ring_Status": "true",
    "dialhangupcause": "NORMAL_CLEARING",
    "DialALegUUID": "a-phlo",
    "DIAL_B_LEG_UUID": "b-phlo",
}
PHLO_ACTION = {
    "CallUUID": "a-phlo",
    "DialALegUUID": "a-phlo",
    "DialStatus": "no-answer",
    "DialRingStatus": "true",
    "DialHangupCause": "NO_ANSWER",
    "DialBLegUUID": "",
}
PHLO_DIAL_COLUMNS = f"{DIAL_COLUMNS}, call_uuid, source"


def test_a_phlo_report_is_a_dial_read_in_any_spelling(db: Database) -> None:
    store(db, [("phlo", PHLO_REPORT), ("phlo", {"DialALegUUID": "a-test", "note": "no status"})])
    assert rows(db, "dials", PHLO_DIAL_COLUMNS) == [
        ("a-phlo", "b-phlo", "completed", True, "NORMAL_CLEARING", None, "phlo")
    ]
    assert rows(db, "dials", "received_at") == [(T0,)]


@pytest.mark.parametrize("phlo_first", [True, False])
def test_a_dial_action_wins_over_a_phlo_report_of_its_a_leg(db: Database, phlo_first: bool) -> None:
    events: list[Event] = [("phlo", PHLO_REPORT), ("dial_action", PHLO_ACTION)]
    other = ("phlo", {**PHLO_REPORT, "DialALegUUID": "a-other"})
    for event in [*(events if phlo_first else events[::-1]), other]:
        store(db, [event], start=T0 + len(rows(db, "webhook_events", "event_id")) * SECOND)
        rollups.refresh(db.cursor())
        assert_rollups_equal_views(db)
    assert rows(db, "dials", PHLO_DIAL_COLUMNS) == [
        ("a-other", "b-phlo", "completed", True, "NORMAL_CLEARING", None, "phlo"),
        ("a-phlo", None, "no-answer", True, "NO_ANSWER", "a-phlo", "webhooks"),
    ]


@pytest.mark.parametrize("records_first", [True, False])
def test_a_phlo_report_outranks_a_dial_inferred_from_records(
    db: Database, records_first: bool
) -> None:
    b_leg = cdr(7, T0 + 40 * SECOND, parent_call_uuid="a-phlo", answer_time=None)
    events: list[Event] = [("cdr", b_leg), ("phlo", PHLO_REPORT)]
    for i, event in enumerate(events if records_first else events[::-1]):
        store(db, [event], start=T0 + i * SECOND)
        rollups.refresh(db.cursor())
        assert_rollups_equal_views(db)
    assert rows(db, "dials", "a_leg_uuid, dial_status, source") == [("a-phlo", "completed", "phlo")]


def test_views_read_webhook_events_once_with_phlo_reports(db: Database) -> None:
    events = [*load_sample("inbound_nobody_answers"), ("phlo", PHLO_REPORT)]
    b_leg = cdr(8, T0, parent_call_uuid="a-records")
    store(db, [*events[:3], ("cdr", b_leg)])
    move_inbox(db.cursor())
    store(db, events[3:], start=T0 + 10 * SECOND)
    plan = db.cursor().execute("EXPLAIN SELECT * FROM dials").fetchall()
    text = "\n".join(str(part) for row in plan for part in row)
    inbox = text.count("webhook_inbox") - text.count("webhook_inbox_typed")
    assert max(text.count("webhook_rows"), inbox) == 1
    assert {row[0] for row in rows(db, "dials", "source")} == {"webhooks", "phlo", "cdr"}


@pytest.mark.parametrize("seed", [3, 4])
def test_rollups_equal_views_with_phlo_reports_in_any_order(db: Database, seed: int) -> None:
    """Half the calls report through PHLO; some others send a PHLO report beside their Dial
    action (that A leg counts once), delivered in any order, refreshed in any split."""
    rng = random.Random(seed)
    model = TrafficModel(seed)
    calls = [with_phlo(model.call(i, T0.timestamp() + 9.0 * i), seed, 0.5) for i in range(120)]
    records = [r for call in calls for r in call_webhooks(call)]
    actions = [r for r in records if r.kind == "dial_action"]
    for action in rng.sample(actions, 15):
        params = {
            key: action.params[name] for key, name in zip(PHLO_REPORT, PLIVO_DIAL_KEYS, strict=True)
        }
        at = action.received_at + timedelta(seconds=rng.uniform(-5, 5))
        records.append(make_record("phlo", "POST", params, "secret", at))
    rng.shuffle(records)
    tracker = DuplicateTracker()
    for batch in split(records, 6, rng):
        deliver(db, batch, tracker)
        rollups.refresh(db.cursor())
    assert_rollups_equal_views(db)

    def a_legs(kind: str) -> set[object]:
        typed = phlo_typed_values if kind == "phlo" else typed_values
        return {typed(r.params, UTC_ZONE).get("dial_a_leg_uuid") for r in records if r.kind == kind}

    sources = rows(db, "dials", "a_leg_uuid, source")
    assert len(sources) == len(set(sources))
    assert {a_leg for a_leg, _ in sources} == a_legs("dial_action") | a_legs("phlo")
    phlo_only = a_legs("phlo") - a_legs("dial_action")
    assert {a_leg for a_leg, source in sources if source == "phlo"} == phlo_only
    assert len(phlo_only) > 20
