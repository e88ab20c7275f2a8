"""/api/v1/'s answers, computed by the dashboard's own query functions on the live database.

Imported by the routes at their first request, not with the app: the dashboard's query modules
create Streamlit caches, which warn on stderr when created before Streamlit's runtime exists.
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pandas as pd

from callstatus.app.api_v1_models import (
    BLeg,
    Call,
    CallDetail,
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
from callstatus.app.api_v1_params import Cursor
from callstatus.core import server
from callstatus.dashboard import connection, tiles
from callstatus.dashboard.filters import Filters
from callstatus.dashboard.queries import calls, causes, legs, overview, sidebar
from callstatus.dashboard.queries.base import Result, run, with_
from callstatus.dashboard.queries.relations import Relations
from callstatus.dashboard.queries.scopes import scoped_calls
from callstatus.receiver.errors import RequestRefused

# Webhook entries listed for one call (the dashboard shows 200).
MAX_WEBHOOKS = 1000
KPI_COLUMNS = {"acd_seconds": "acd_s"}  # field -> the overview query's column, where they differ


def plain(value: Any) -> Any:
    """A query result's value as JSON-ready Python: NaN and NaT are null, numpy numbers and
    pandas timestamps their Python kind."""
    if value is None or value is pd.NaT or value is pd.NA:
        return None
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    if hasattr(value, "item"):  # numpy scalars
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """A result's rows as dicts of plain values."""
    columns = list(frame.columns)
    return [
        {name: plain(value) for name, value in zip(columns, row, strict=True)}
        for row in frame.itertuples(index=False, name=None)
    ]


def local(value: datetime, tz: str) -> datetime:
    """A wall-clock time the dashboard's SQL gave in zone `tz` (no offset), with its offset."""
    return value if value.tzinfo is not None else value.replace(tzinfo=ZoneInfo(tz))


def utc(value: datetime | None) -> datetime | None:
    """A time the dashboard's SQL gave in UTC wall-clock time (tz 'UTC'), marked as UTC."""
    return local(value, "UTC") if value is not None else None


def relations() -> Relations:
    """What the dashboard reads now (rollups while current, else the views) in the server's
    own database: the API answers only while the server runs."""
    if server.installed() is None:
        raise RequestRefused(503, "starting", "the server is starting or stopping")
    return connection.relations()


def _figures(result: Result, f: Filters) -> KpiFigures:
    row = result.frame.iloc[0]
    values = {
        name: plain(row.get(KPI_COLUMNS.get(name, name)))
        for name in KpiFigures.model_fields
        if name not in ("start", "end")
    }
    return KpiFigures(start=f.start, end=f.end, **values)


def kpis(rel: Relations, f: Filters) -> Kpis:
    before = f.previous()
    now_result, before_result = overview.kpis(rel, f), overview.kpis(rel, before)
    now, then = _figures(now_result, f), _figures(before_result, before)
    # As the overview decides whether to show changes (screens/overview.py, tiles.render).
    span = sidebar.data_span(rel)
    covered = span is not None and span[0] <= before.start
    lead = tiles.lead_metric(f.direction, now_result.frame.iloc[0])
    return Kpis(
        **now.model_dump(),
        lead="dial" if lead == "dial" else "call",
        comparable=covered and then.calls >= tiles.MIN_CALLS_TO_COMPARE,
        previous=then,
    )


def series(rel: Relations, f: Filters, metric: str) -> list[SeriesPoint]:
    frame = overview.rates_over_time(rel, f).frame
    return [
        SeriesPoint(
            time=local(row["bucket"], f.tz),
            end=local(row["bucket_end"], f.tz),
            value=row[metric],
            calls=row["calls"],
        )
        for row in records(frame)
    ]


# Fixed names from our own model, put into the SQL text.
_LISTED = ", ".join(ListedCall.model_fields)


def calls_page(
    rel: Relations, f: Filters, outcomes: tuple[str, ...], after: Cursor | None, limit: int
) -> list[ListedCall]:
    """Up to `limit` + 1 calls (one more tells there is a next page), newest first, after the
    cursor's position: keyset paging, so calls that arrive meanwhile (newer, or in pages
    already read) shift nothing."""
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
    return [ListedCall(**row) for row in records(run(sql, bound).frame)]


def _dials(rel: Relations, call_uuid: str) -> Result:
    sql = f"""
    SELECT {", ".join(Dial.model_fields)} FROM {rel.dials}
    WHERE a_leg_uuid = $uuid ORDER BY received_at, event_id
    """
    return run(sql, {"uuid": call_uuid})


def call_detail(rel: Relations, call_uuid: str) -> CallDetail | None:
    """The call as the Calls page shows it (times in UTC), None when there is no such call."""
    summary = records(calls.call_summary(rel, call_uuid, "UTC").frame)
    if not summary:
        return None
    row = summary[0]
    call = Call(
        **{
            **row,
            "started_at": utc(row["started"]),
            "answered_at": utc(row["answered_at"]),
            "ended_at": utc(row["ended"]),
        }
    )
    b_legs = [
        BLeg(
            **{
                **leg,
                "answered_at": utc(leg["answered_at"]),
                "ended_at": utc(leg["ended"]),
            }
        )
        for leg in records(calls.call_b_legs(rel, call_uuid, "UTC").frame)
    ]
    timeline = records(calls.call_timeline(rel, call_uuid, "UTC", MAX_WEBHOOKS).frame)
    webhooks = [
        WebhookEntry(
            **{
                **hook,
                "received": utc(hook["received"]),
                "last_received": utc(hook["last_received"]),
                "params": json.loads(hook["params"]),
            }
        )
        for hook in timeline
    ]
    return CallDetail(
        call=call,
        dials=[Dial(**dial) for dial in records(_dials(rel, call_uuid).frame)],
        b_legs=b_legs,
        webhooks=webhooks,
        webhook_entries=timeline[0]["entries"] if timeline else 0,
    )


def hangup_causes(rel: Relations, f: Filters, leg: str, answered: bool) -> HangupCauses:
    by_cause = causes.by_cause(rel, f, leg, answered).frame
    by_source = causes.by_source(rel, f, leg, answered).frame
    return HangupCauses(
        start=f.start,
        end=f.end,
        leg="a" if leg == "a" else "b",
        causes=[CauseRow(**row) for row in records(by_cause)],
        sources=[SourceRow(**row) for row in records(by_source)],
    )


def b_legs(rel: Relations, f: Filters) -> Legs:
    destinations = legs.destinations(rel, f).frame
    winners = legs.winners_by_position(rel, f).frame
    return Legs(
        start=f.start,
        end=f.end,
        destinations=[Destination(**row) for row in records(destinations)],
        winners_by_position=[Position(**row) for row in records(winners)],
    )
