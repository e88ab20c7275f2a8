"""A small hand-timed sample for the analytics figures: every time chosen so that each figure
(post-dial delay, ring time, concurrency at bucket edges, countries) can be computed by hand.

Times are seconds after T0 (2026-11-02 09:00:00 UTC). Calls (A legs, [start, end)):
  o1 outbound to GB fixed   start 0,   ring 2,  answer 10, end 60
  o2 outbound to US         start 30,  ring 34, no answer, end 64
  o3 outbound to DE         start 120, busy at once,      end 121  (starts as i1 ends)
  o4 outbound to GB fixed   start 180, answer 185 (no ring), end 300 (a bucket's start)
  i1 inbound from IN mobile start 0, answer 1, end 120; Dial: b1 (US) answers at 11, talks
     until 119; b2 (SIP) loses the race at 11.1
  i2 inbound from GB mobile start 300, answer 301, end 340; Dial: b3 (US) gives up at 331
  i3 inbound from US        start -120 (before the range), end 450, no Dial
"""

from __future__ import annotations

from datetime import datetime, timedelta

from callstatus.core.db import Database
from callstatus.core.duplicates import DuplicateTracker
from callstatus.core.records import Params, make_record
from callstatus.core.storage import insert_events
from tests.factories import T0

OURS, OTHER_OURS = "18005550199", "442038080100"
GB, US, DE, IN = "442071838750", "14155550107", "4930123456", "919820012345"
GB_MOBILE, AGENT, SIP_AGENT = "447400123456", "14155550101", "sip:ana@phone.plivo.com"
START, END = T0, T0 + timedelta(minutes=10)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def _clock(seconds: float) -> str:
    return at(seconds).strftime("%Y-%m-%d %H:%M:%S")


def _hangup(
    uuid: str,
    direction: str,
    frm: str,
    to: str,
    times: tuple[float, float | None, float],
    code: tuple[str, str],
) -> tuple[str, Params, datetime]:
    start, answer, end = times
    duration = round(end - answer) if answer is not None else 0
    return (
        "hangup",
        {
            "CallUUID": uuid,
            "Direction": direction,
            "From": frm,
            "To": to,
            "CallStatus": "completed" if answer is not None else "busy",
            "HangupCauseCode": code[0],
            "HangupCauseName": code[1],
            "StartTime": _clock(start),
            "AnswerTime": _clock(answer) if answer is not None else "",
            "EndTime": _clock(end),
            "Duration": str(duration),
            "BillDuration": str(duration),
        },
        at(end),
    )


def _ring(uuid: str, to: str, seconds: float) -> tuple[str, Params, datetime]:
    params = {"CallUUID": uuid, "Direction": "outbound", "From": OURS, "To": to}
    return "ring", {**params, "CallStatus": "ringing"}, at(seconds)


def _callback(
    a: str, b: str, to: str, action: str, seconds: float, **more: str
) -> tuple[str, Params, datetime]:
    params = {"CallUUID": a, "DialALegUUID": a, "DialBLegUUID": b, "DialBLegTo": to}
    return "dial_callback", {**params, "DialAction": action, **more}, at(seconds)


def _dial(a: str, status: str, seconds: float, b: str = "") -> tuple[str, Params, datetime]:
    params = {"CallUUID": a, "DialALegUUID": a, "DialBLegUUID": b, "DialStatus": status}
    return "dial_action", params, at(seconds)


NORMAL, BUSY, NO_ANSWER = ("4000", "Normal Hangup"), ("3010", "Busy Line"), ("3000", "No Answer")


def events() -> list[tuple[str, Params, datetime]]:
    return [
        _ring("o1", GB, 2),
        _hangup("o1", "outbound", OURS, GB, (0, 10, 60), NORMAL),
        _ring("o2", US, 34),
        _hangup("o2", "outbound", OURS, US, (30, None, 64), NO_ANSWER),
        _hangup("o3", "outbound", OURS, DE, (120, None, 121), BUSY),
        _hangup("o4", "outbound", OURS, GB, (180, 185, 300), NORMAL),
        _callback("i1", "b1", AGENT, "answer", 11),
        _callback("i1", "b2", SIP_AGENT, "hangup", 11.1, DialBLegHangupCauseCode="9000"),
        _callback(
            "i1", "b1", AGENT, "hangup", 119, DialBLegHangupCauseCode="4000", DialBLegDuration="108"
        ),
        _dial("i1", "completed", 119.5, "b1"),
        _hangup("i1", "inbound", IN, OURS, (0, 1, 120), NORMAL),
        _callback("i2", "b3", AGENT, "hangup", 331, DialBLegHangupCauseCode="3000"),
        _dial("i2", "no-answer", 331.5),
        _hangup("i2", "inbound", GB_MOBILE, OTHER_OURS, (300, 301, 340), NORMAL),
        _hangup("i3", "inbound", US, OURS, (-120, -119, 450), NORMAL),
    ]


def write(database: Database) -> None:
    """Store the sample as the receiver would."""
    records = [
        make_record(kind, "POST", params, "unchecked", when) for kind, params, when in events()
    ]
    DuplicateTracker().mark(records)
    cur = database.cursor()
    cur.execute("BEGIN")
    insert_events(cur, records, "UTC")
    cur.execute("COMMIT")
