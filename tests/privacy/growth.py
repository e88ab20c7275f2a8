"""A steady synthetic load, fast: each day CALLS small calls (an answer and a hangup each)
written straight into the inbox by one SQL statement, as many days as a test needs."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from callstatus.core import rollups
from callstatus.core.db import Database

NOW = datetime(2026, 11, 20, 0, 0, tzinfo=UTC)
CALLS = 1500

DAY_SQL = """
INSERT INTO webhook_inbox
WITH c AS (
    SELECT gen_random_uuid()::VARCHAR AS u, $start + to_seconds(i * $gap) AS t,
           '+1555' || lpad(i::VARCHAR, 7, '0') AS caller
    FROM range($n) r(i)
), e AS (
    SELECT c.*, k.kind, CASE k.kind WHEN 'answer' THEN t ELSE t + INTERVAL 60 SECOND END AS sent
    FROM c, (VALUES ('answer'), ('hangup')) k(kind)
), p AS (
    SELECT *, CASE kind
        WHEN 'answer' THEN json_object('CallUUID', u, 'From', caller, 'To', '+18005550199',
            'Direction', 'inbound', 'CallStatus', 'in-progress', 'Event', 'StartApp')
        ELSE json_object('CallUUID', u, 'From', caller, 'To', '+18005550199',
            'Direction', 'inbound', 'CallStatus', 'completed', 'Event', 'Hangup',
            'Duration', '60', 'BillDuration', '60', 'HangupCauseCode', '4000',
            'HangupCause', 'NORMAL_CLEARING', 'StartTime', strftime(t, '%Y-%m-%d %H:%M:%S'),
            'AnswerTime', strftime(t, '%Y-%m-%d %H:%M:%S'),
            'EndTime', strftime(sent, '%Y-%m-%d %H:%M:%S'))
        END AS params,
        CASE kind
        WHEN 'answer' THEN json_object('call_uuid', u, 'from_number', caller,
            'to_number', '+18005550199', 'direction', 'inbound', 'call_status', 'in-progress',
            'event', 'StartApp')
        ELSE json_object('call_uuid', u, 'from_number', caller, 'to_number', '+18005550199',
            'direction', 'inbound', 'call_status', 'completed', 'event', 'Hangup',
            'duration', 60, 'bill_duration', 60, 'hangup_cause_code', 4000,
            'hangup_cause', 'NORMAL_CLEARING', 'start_time', strftime(t, '%Y-%m-%dT%H:%M:%SZ'),
            'answer_time', strftime(t, '%Y-%m-%dT%H:%M:%SZ'),
            'end_time', strftime(sent, '%Y-%m-%dT%H:%M:%SZ'))
        END AS typed
    FROM e
)
SELECT gen_random_uuid(), sent, kind, 'POST', params, 'unchecked', false,
       (hash(params::VARCHAR) >> 1)::BIGINT, typed
FROM p ORDER BY sent
"""


def day_start(day: int, days: int) -> datetime:
    """The start of simulated day `day` of `days` ending at NOW."""
    return NOW - timedelta(days=days - day)


def add_day(
    db: Database,
    day: int,
    days: int,
    *,
    at: datetime | None = None,
    calls: int = CALLS,
    refresh: bool = True,
) -> None:
    """A day of calls spread evenly from `at` (default: the start of day `day` of `days`)."""
    start = at or day_start(day, days)
    cur = db.cursor()
    cur.execute(DAY_SQL, {"start": start, "gap": 86_000.0 / calls, "n": calls})
    if refresh:
        rollups.refresh(cur)


def live_call(call: str, n: int, now: datetime) -> list[tuple[str, str, list[tuple[str, str]]]]:
    """(path, kind, parameters) of an inbound call's answer and hangup as Plivo posts them, for
    tests and benchmarks that send signed webhooks to a running server."""
    caller = f"+1415{n % 10_000_000:07d}"
    common = [
        ("CallUUID", call),
        ("From", caller),
        ("To", "+18005550199"),
        ("Direction", "inbound"),
        ("CallerName", f"+{caller[1:]}"),
        ("BillRate", "0.0085"),
        ("ParentAuthID", "MAXXXXXXXXXXXXXXXXXX"),
        ("RequestUUID", str(uuid.uuid4())),
        ("STIRAttestation", "Not Applicable"),
        ("STIRVerification", "Not Applicable"),
        ("SessionStart", now.strftime("%Y-%m-%d %H:%M:%S.%f")),
    ]
    start = now.strftime("%Y-%m-%d %H:%M:%S")
    return [
        ("/plivo/answer", "answer", [*common, ("CallStatus", "ringing"), ("Event", "StartApp")]),
        (
            "/plivo/hangup",
            "hangup",
            [
                *common,
                ("CallStatus", "completed"),
                ("Event", "Hangup"),
                ("Duration", "42"),
                ("BillDuration", "60"),
                ("HangupCause", "NORMAL_CLEARING"),
                ("HangupCauseCode", "4000"),
                ("HangupCauseName", "Normal Hangup"),
                ("HangupSource", "Callee"),
                ("StartTime", start),
                ("AnswerTime", start),
                ("EndTime", (now + timedelta(seconds=42)).strftime("%Y-%m-%d %H:%M:%S")),
                ("TotalCost", "0.00850"),
            ],
        ),
    ]
