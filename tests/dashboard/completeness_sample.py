"""The completeness sample: calls known from webhooks, records or both, and a reconcile run
(tests/dashboard/test_completeness.py and the page tests use it)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

from callstatus.core.db import Database
from callstatus.core.records import EventRecord, make_record
from callstatus.core.storage import insert_events
from callstatus.core.typed import CDR_KIND

OURS = "+14155550100"
# 10:00 in New York (EST, -05:00): the sample's calls span two local days, and one call at
# 23:30 local falls on the next day in UTC.
DAY0 = datetime(2026, 11, 2, 15, 0, tzinfo=UTC)

# (name, hours after day0, what we know of it, direction). `webhooks`: answer and hangup
# webhooks, no record; `both`: the same and its record; `completed`: the answer webhook and the
# record (the hangup webhook was lost); `added`: the record only; `live`: an answer webhook only
# (in progress, no record yet).
CALLS: tuple[tuple[str, float, str, str], ...] = (
    ("w1", 0, "webhooks", "inbound"),
    ("w2", 1, "webhooks", "inbound"),
    ("b1", 2, "both", "inbound"),
    ("c1", 3, "completed", "inbound"),
    ("a1", 4, "added", "inbound"),
    ("a2", 5, "added", "outbound"),
    ("n1", 13.5, "added", "inbound"),
    ("w3", 24, "webhooks", "inbound"),
    ("b2", 25, "both", "inbound"),
    ("b3", 26, "both", "outbound"),
    ("c2", 27, "completed", "inbound"),
    ("c3", 28, "completed", "inbound"),
    ("a3", 29, "added", "inbound"),
    ("p1", 30, "live", "inbound"),
)
# What the sample holds, by construction (the tests also count it with plain SQL).
EXPECTED = {
    "calls": 14,
    "reported": 10,
    "with_webhooks": 10,
    "completed": 3,
    "added": 4,
}
# Per day in New York, newest first: (calls, reported, with_webhooks, completed, added).
EXPECTED_NEW_YORK = [(7, 5, 6, 2, 1), (7, 5, 4, 1, 3)]
EXPECTED_UTC = [(8, 6, 6, 2, 2), (6, 4, 4, 1, 2)]
FETCHED_AFTER = timedelta(hours=31)  # when the records were fetched, after day0


def call_id(name: str, day0: datetime) -> str:
    """A UUID per call and sample, stable for one day0."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{name}@{day0.isoformat()}"))


def _plivo_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _numbers(direction: str, name: str) -> tuple[str, str]:
    them = "+1555000" + str(sum(map(ord, name))).zfill(4)
    return (them, OURS) if direction == "inbound" else (OURS, them)


def _webhooks(name: str, start: datetime, how: str, direction: str, day0: datetime) -> list[Any]:
    call = call_id(name, day0)
    source, dest = _numbers(direction, name)
    common = {"CallUUID": call, "Direction": direction, "From": source, "To": dest}
    answer = make_record(
        "answer", "POST", {**common, "CallStatus": "in-progress"}, "unchecked", start
    )
    if how in ("completed", "live"):
        return [answer]
    end = start + timedelta(minutes=2)
    hangup = {
        **common,
        "CallStatus": "completed",
        "HangupCauseCode": "4000",
        "HangupCauseName": "Normal Hangup",
        "HangupCause": "NORMAL_CLEARING",
        "HangupSource": "Caller",
        "StartTime": _plivo_time(start),
        "AnswerTime": _plivo_time(start + timedelta(seconds=5)),
        "EndTime": _plivo_time(end),
        "Duration": "120",
        "BillDuration": "115",
    }
    return [answer, make_record("hangup", "POST", hangup, "unchecked", end)]


def call_record(
    call: str, start: datetime, direction: str, numbers: tuple[str, str], parent: str | None = None
) -> dict[str, Any]:
    """A record as Plivo's Call API returns one (contract: fields kept verbatim)."""
    end = start + timedelta(minutes=2)
    return {
        "call_uuid": call,
        "parent_call_uuid": parent,
        "call_direction": direction,
        "from_number": numbers[0],
        "to_number": numbers[1],
        "initiation_time": f"{_plivo_time(start)}+00:00",
        "answer_time": f"{_plivo_time(start + timedelta(seconds=5))}+00:00",
        "end_time": f"{_plivo_time(end)}+00:00",
        "call_duration": 120,
        "bill_duration": 115,
        "billed_duration": 120,
        "hangup_cause_code": 4000,
        "hangup_cause_name": "Normal Hangup",
        "hangup_source": "Caller",
        "total_amount": "0.00950",
        "total_rate": "0.00475",
        "resource_uri": f"/v1/Account/MA0000/Call/{call}/",
    }


def sample_records(day0: datetime) -> list[EventRecord]:
    """Every webhook and record of the sample (CALLS), plus two B-leg records (never calls)."""
    fetched = day0 + FETCHED_AFTER
    stored: list[EventRecord] = []
    for name, hours, how, direction in CALLS:
        start = day0 + timedelta(hours=hours)
        if how != "added":
            stored += _webhooks(name, start, how, direction, day0)
        if how in ("both", "completed", "added"):
            record = call_record(call_id(name, day0), start, direction, _numbers(direction, name))
            stored.append(make_record(CDR_KIND, "GET", record, "api", fetched))
    for a_leg in ("b1", "a1"):
        b_leg = call_record(
            call_id(a_leg + "-b", day0),
            day0 + timedelta(hours=2),
            "outbound",
            (OURS, "+17005550001"),
            parent=call_id(a_leg, day0),
        )
        stored.append(make_record(CDR_KIND, "GET", b_leg, "api", fetched))
    return stored


def add_run(
    cur: duckdb.DuckDBPyConnection,
    started: datetime,
    status: str = "ok",
    trigger: str = "job",
    error: str | None = None,
    finished: datetime | None = None,
) -> None:
    """One reconcile_runs row, as a run of callstatus/reconcile would leave it."""
    cur.execute(
        "INSERT INTO reconcile_runs VALUES (?, ?, ?, ?, ?, ?, 12, 12, 3, 3, 4, 2, ?, ?)",
        [
            str(uuid.uuid4()),
            started,
            None if status == "running" else (finished or started + timedelta(seconds=4)),
            trigger,
            started - timedelta(days=2),
            started - timedelta(minutes=5),
            status,
            error,
        ],
    )


def store_sample(db: Database, day0: datetime, *, run: bool = True) -> None:
    """The sample's webhooks and records in `db`, and (with `run`) the run that fetched them."""
    cur = db.cursor()
    cur.execute("BEGIN")
    insert_events(cur, sample_records(day0), "UTC")
    if run:
        add_run(cur, day0 + FETCHED_AFTER)
    cur.execute("COMMIT")


# Plain definitions, on the views: what the dashboard's figures must equal.
HAND_TOTALS = """
SELECT count(*), count(*) FILTER (WHERE source IN ('cdr', 'both')),
       count(*) FILTER (WHERE source IN ('webhooks', 'both')),
       count(*) FILTER (WHERE source = 'both' AND end_source = 'cdr'),
       count(*) FILTER (WHERE source = 'cdr')
FROM calls WHERE started_at >= $start AND started_at < $end
"""
HAND_PER_DAY = """
SELECT CAST(timezone($tz, started_at) AS DATE) AS day, count(*),
       count(*) FILTER (WHERE source IN ('cdr', 'both')),
       count(*) FILTER (WHERE source IN ('webhooks', 'both')),
       count(*) FILTER (WHERE source = 'both' AND end_source = 'cdr'),
       count(*) FILTER (WHERE source = 'cdr')
FROM calls WHERE started_at >= $start AND started_at < $end GROUP BY day ORDER BY day DESC
"""


def hand_counts(path: Path, sql: str, params: dict[str, object]) -> list[tuple[Any, ...]]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        con.execute("SET TimeZone = 'UTC'")
        return con.execute(sql, params).fetchall()
    finally:
        con.close()
