"""/api/v1/: the dashboard's figures for machines (Grafana, BI jobs, bots), read from the live
database through the dashboard's own query functions, so every metric has one definition."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query

from callstatus.app import api_v1_params as params
from callstatus.app.api_v1_models import (
    BLeg,
    Call,
    CallDetail,
    CallPage,
    CauseRow,
    Destination,
    Dial,
    HangupCauses,
    KpiFigures,
    Kpis,
    Legs,
    ListedCall,
    Position,
    SeriesPoint,
    SourceRow,
    WebhookEntry,
)
from callstatus.app.api_v1_params import Asked, Cursor
from callstatus.app.openapi import ERROR_REF
from callstatus.core import server
from callstatus.dashboard import connection, tiles
from callstatus.dashboard.filters import BUCKETS, Filters, auto_bucket
from callstatus.dashboard.queries import calls, causes, legs, overview, sidebar
from callstatus.dashboard.queries.base import Result, run, with_
from callstatus.dashboard.queries.relations import Relations
from callstatus.dashboard.queries.scopes import scoped_calls
from callstatus.receiver.errors import RequestRefused

TAG = "Read API"
# Buckets in one series at most: 5-minute buckets over a month, or hours over a year.
MAX_POINTS = 10_000
# Webhook entries listed for one call (the dashboard shows 200).
MAX_WEBHOOKS = 1000


def _error(text: str) -> dict[str, Any]:
    return {"description": text, "content": {"application/json": {"schema": ERROR_REF}}}


ERRORS: dict[int | str, dict[str, Any]] = {
    400: _error("A parameter is missing or malformed (code says which check failed)."),
    401: _error(
        "DASHBOARD_PASSWORD or CALLSTATUS_API_TOKENS is set and no valid credentials "
        "came: HTTP Basic with the password, or `Authorization: Bearer <token>`."
    ),
    429: _error("Too many failed logins from this address; Retry-After says for how long."),
    503: _error("The server is starting or stopping."),
}


def live_relations() -> Relations:
    """What the dashboard reads now (rollups while current, else the views) in the server's
    own database: the API answers only while the server runs."""
    if server.installed() is None:
        raise RequestRefused(503, "starting", "the server is starting or stopping")
    return connection.relations()


Rel = Annotated[Relations, Depends(live_relations)]
Slice = Annotated[Asked, Depends(params.asked)]

KPI_COLUMNS = {"acd_seconds": "acd_s"}  # field -> the overview query's column, where they differ


def _figures(result: Result, f: Filters) -> KpiFigures:
    row = result.frame.iloc[0]
    values = {
        name: params.plain(row.get(KPI_COLUMNS.get(name, name)))
        for name in KpiFigures.model_fields
        if name not in ("start", "end")
    }
    return KpiFigures(start=f.start, end=f.end, **values)


router = APIRouter(prefix="/api/v1", tags=[TAG], responses=ERRORS)


@router.get("/kpis", operation_id="kpis")
def kpis(rel: Rel, asked: Slice) -> Kpis:
    """Every KPI tile of the overview for the range, and for the range just before it (for
    changes), computed by the overview's own query."""
    f = asked.filters
    before = f.previous()
    now_result, before_result = overview.kpis(rel, f), overview.kpis(rel, before)
    now, then = _figures(now_result, f), _figures(before_result, before)
    span = sidebar.data_span(rel)
    covered = span is not None and span[0] <= before.start
    lead = tiles.lead_metric(f.direction, now_result.frame.iloc[0])
    return Kpis(
        **now.model_dump(),
        lead="dial" if lead == "dial" else "call",
        comparable=covered and then.calls >= tiles.MIN_CALLS_TO_COMPARE,
        previous=then,
    )


Metric = Literal["calls", "call_answer_rate", "dial_answer_rate", "b_leg_answer_rate"]
Bucket = Literal["auto", "5min", "hour", "day", "week"]
_BUCKETS = {"5min": "5 min", "hour": "hour", "day": "day", "week": "week"}
_BUCKET_SPAN = {
    "5 minutes": timedelta(minutes=5),
    "1 hour": timedelta(hours=1),
    "1 day": timedelta(days=1),
    "7 days": timedelta(days=7),
}


@router.get("/series", operation_id="series")
def series(
    rel: Rel,
    asked: Slice,
    metric: Annotated[Metric, Query(description="What each point's `value` is.")],
    bucket: Annotated[
        Bucket,
        Query(description="Bucket size; `auto` picks one giving about 24 to 300 points."),
    ] = "auto",
) -> list[SeriesPoint]:
    """The metric per time bucket with the calls that started in it, oldest first, as the
    overview's "answer rates over time" chart computes it. A plain array of objects with a
    `time` field: Grafana's Infinity and JSON data sources read it as a time series. Buckets
    without calls, dials or B legs are left out."""
    f = asked.filters
    interval = auto_bucket(f.end - f.start) if bucket == "auto" else BUCKETS[_BUCKETS[bucket]]
    if (f.end - f.start) / _BUCKET_SPAN[interval] > MAX_POINTS:
        raise RequestRefused(
            400, "too_many_buckets", f"over {MAX_POINTS} buckets: take a larger bucket"
        )
    frame = overview.rates_over_time(rel, replace(f, bucket=interval)).frame
    return [
        SeriesPoint(
            time=params.local(row["bucket"], f.tz),
            end=params.local(row["bucket_end"], f.tz),
            value=row[metric],
            calls=row["calls"],
        )
        for row in params.records(frame)
    ]


Outcomes = Annotated[
    list[str] | None,
    Query(
        description="Only calls with these outcomes (answered, busy, no-answer, failed, ...): "
        "repeated or comma-separated."
    ),
]
_LISTED = ", ".join(ListedCall.model_fields)


def _calls_page(
    rel: Relations, f: Filters, outcomes: tuple[str, ...], after: Cursor | None, limit: int
) -> Result:
    """One more call than asked for, newest first, after the cursor's position: keyset
    paging, so calls that arrive meanwhile (newer, or in pages already read) shift nothing."""
    keyset = ""
    bound: dict[str, Any] = {**f.params(), "outcomes": list(outcomes), "limit": limit + 1}
    if after is not None:
        keyset = "AND (started_at < $after_t OR (started_at = $after_t AND call_uuid < $after_u))"
        bound.update(after_t=after.started_at, after_u=after.call_uuid)
    sql = (
        with_(scoped_calls(rel))
        + f"""
    SELECT {_LISTED} FROM scoped_calls
    WHERE (len(CAST($outcomes AS VARCHAR[])) = 0
           OR list_contains(CAST($outcomes AS VARCHAR[]), outcome)) {keyset}
    ORDER BY started_at DESC, call_uuid DESC LIMIT $limit
    """
    )
    return run(sql, bound)


@router.get("/calls", operation_id="list_calls")
def list_calls(
    rel: Rel,
    asked: Slice,
    outcome: Outcomes = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="Calls per page.")] = 100,
    cursor: Annotated[
        str | None,
        Query(
            max_length=512,
            description="`next_cursor` of the previous page. It keeps that page's range; the "
            "other parameters must be passed again, unchanged.",
        ),
    ] = None,
) -> CallPage:
    """Calls that started in the range, newest first (by started_at, then call_uuid), a page
    at a time. Webhooks arriving between pages neither skip nor repeat a call, with one
    exception: a call still in progress is timed by its first webhook until its hangup brings
    Plivo's StartTime (a second or so earlier), which may list it once more on a later page."""
    outcomes = params.listed(outcome)
    query = params.query_digest(asked.filters, outcomes)
    after = Cursor.decode(cursor) if cursor is not None else None
    f = params.paged_range(asked, after, query) if after is not None else asked.filters
    rows = params.records(_calls_page(rel, f, outcomes, after, limit).frame)
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        last = rows[-1]
        next_cursor = Cursor(
            params.to_us(last["started_at"]),
            last["call_uuid"],
            params.to_us(f.start),
            params.to_us(f.end),
            query,
        ).encode()
    return CallPage(
        start=f.start,
        end=f.end,
        calls=[ListedCall(**row) for row in rows],
        next_cursor=next_cursor,
    )


def _dials(rel: Relations, call_uuid: str) -> Result:
    sql = f"""
    SELECT {", ".join(Dial.model_fields)} FROM {rel.dials}
    WHERE a_leg_uuid = $uuid ORDER BY received_at, event_id
    """
    return run(sql, {"uuid": call_uuid})


@router.get(
    "/calls/{call_uuid}",
    operation_id="get_call",
    responses={404: _error("No call with this UUID.")},
)
def get_call(
    rel: Rel,
    call_uuid: Annotated[str, Path(max_length=128, description="The A leg's CallUUID.")],
) -> CallDetail:
    """The call, its Dial(s), the B legs it dialled and its webhooks in the order they arrived
    (the dashboard's Calls page). Times in UTC."""
    summary = params.records(calls.call_summary(rel, call_uuid, "UTC").frame)
    if not summary:
        raise RequestRefused(404, "not_found", f"no call {call_uuid}")
    row = summary[0]
    call = Call(
        **{
            **row,
            "started_at": params.utc(row["started"]),
            "answered_at": params.utc(row["answered_at"]),
            "ended_at": params.utc(row["ended"]),
        }
    )
    b_legs = [
        BLeg(
            **{
                **leg,
                "answered_at": params.utc(leg["answered_at"]),
                "ended_at": params.utc(leg["ended"]),
            }
        )
        for leg in params.records(calls.call_b_legs(rel, call_uuid, "UTC").frame)
    ]
    timeline = params.records(calls.call_timeline(rel, call_uuid, "UTC", MAX_WEBHOOKS).frame)
    webhooks = [
        WebhookEntry(
            **{
                **hook,
                "received": params.utc(hook["received"]),
                "last_received": params.utc(hook["last_received"]),
                "params": json.loads(hook["params"]),
            }
        )
        for hook in timeline
    ]
    return CallDetail(
        call=call,
        dials=[Dial(**dial) for dial in params.records(_dials(rel, call_uuid).frame)],
        b_legs=b_legs,
        webhooks=webhooks,
        webhook_entries=timeline[0]["entries"] if timeline else 0,
    )


@router.get("/hangup-causes", operation_id="hangup_causes")
def hangup_causes(
    rel: Rel,
    asked: Slice,
    leg: Annotated[
        Literal["a", "b"], Query(description="`a`: the calls; `b`: the B legs they dialled.")
    ] = "a",
    answered: Annotated[bool, Query(description="Count answered legs too.")] = True,
) -> HangupCauses:
    """Legs per Plivo hangup cause and per hangup source, split by outcome, as on the
    dashboard's Hangup causes page."""
    f = asked.filters
    return HangupCauses(
        start=f.start,
        end=f.end,
        leg=leg,
        causes=[
            CauseRow(**row) for row in params.records(causes.by_cause(rel, f, leg, answered).frame)
        ],
        sources=[
            SourceRow(**row)
            for row in params.records(causes.by_source(rel, f, leg, answered).frame)
        ],
    )


@router.get("/legs", operation_id="legs")
def b_legs(rel: Rel, asked: Slice) -> Legs:
    """The B-leg answer rate per destination (the 100 most dialled) and, in simultaneous
    dials, who answered first by position in the Dial, as on the dashboard's A/B legs page."""
    f = asked.filters
    return Legs(
        start=f.start,
        end=f.end,
        destinations=[
            Destination(**row) for row in params.records(legs.destinations(rel, f).frame)
        ],
        winners_by_position=[
            Position(**row) for row in params.records(legs.winners_by_position(rel, f).frame)
        ],
    )
