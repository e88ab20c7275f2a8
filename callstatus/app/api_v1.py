"""/api/v1/: the dashboard's figures for machines (Grafana, BI jobs, bots), read from the live
database through the dashboard's own query functions, so every metric has one definition.

The answers come from callstatus.app.api_v1_answers, imported at the first request (see there).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query

from callstatus.app import api_v1_params as params
from callstatus.app.api_v1_models import (
    CallDetail,
    CallPage,
    HangupCauses,
    Kpis,
    Legs,
    SeriesPoint,
)
from callstatus.app.api_v1_params import Asked, Cursor
from callstatus.app.openapi import ERROR_REF
from callstatus.dashboard.queries.relations import Relations
from callstatus.receiver.errors import RequestRefused

TAG = "Read API"


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
    """What the dashboard reads now, in the server's own database (503 while it is not running)."""
    from callstatus.app import api_v1_answers as answers

    return answers.relations()


Rel = Annotated[Relations, Depends(live_relations)]
Slice = Annotated[Asked, Depends(params.asked)]


router = APIRouter(prefix="/api/v1", tags=[TAG], responses=ERRORS)


@router.get("/kpis", operation_id="kpis")
def kpis(rel: Rel, asked: Slice) -> Kpis:
    """Every KPI tile of the overview for the range, and for the range just before it (for
    changes), computed by the overview's own query."""
    from callstatus.app import api_v1_answers as answers

    return answers.kpis(rel, asked.filters)


Metric = Literal["calls", "call_answer_rate", "dial_answer_rate", "b_leg_answer_rate"]


@router.get("/series", operation_id="series")
def series(
    rel: Rel,
    asked: Slice,
    metric: Annotated[Metric, Query(description="What each point's `value` is.")],
    bucket: params.BucketSize = "auto",
) -> list[SeriesPoint]:
    """The metric per time bucket with the calls that started in it, oldest first, as the
    overview's "answer rates over time" chart computes it. A plain array of objects with a
    `time` field: Grafana's Infinity and JSON data sources read it as a time series. Buckets
    without calls, dials or B legs are left out."""
    from callstatus.app import api_v1_answers as answers

    return answers.series(rel, params.bucketed(asked.filters, bucket), metric)


Outcomes = Annotated[
    list[str] | None,
    Query(
        description="Only calls with these outcomes (answered, busy, no-answer, failed, ...): "
        "repeated or comma-separated."
    ),
]


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
    from callstatus.app import api_v1_answers as answers

    outcomes = params.listed(outcome)
    query = params.query_digest(asked.filters, outcomes)
    after = Cursor.decode(cursor) if cursor is not None else None
    f = params.paged_range(asked, after, query) if after is not None else asked.filters
    rows = answers.calls_page(rel, f, outcomes, after, limit)
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        last = rows[-1]
        assert last.started_at is not None  # scoped_calls: started in the range
        next_cursor = Cursor(
            params.to_us(last.started_at),
            last.call_uuid,
            params.to_us(f.start),
            params.to_us(f.end),
            query,
        ).encode()
    return CallPage(start=f.start, end=f.end, calls=rows, next_cursor=next_cursor)


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
    from callstatus.app import api_v1_answers as answers

    detail = answers.call_detail(rel, call_uuid)
    if detail is None:
        raise RequestRefused(404, "not_found", f"no call {call_uuid}")
    return detail


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
    from callstatus.app import api_v1_answers as answers

    return answers.hangup_causes(rel, asked.filters, leg, answered)


@router.get("/legs", operation_id="legs")
def b_legs(rel: Rel, asked: Slice) -> Legs:
    """The B-leg answer rate per destination (the 100 most dialled) and, in simultaneous
    dials, who answered first by position in the Dial, as on the dashboard's A/B legs page."""
    from callstatus.app import api_v1_answers as answers

    return answers.b_legs(rel, asked.filters)
