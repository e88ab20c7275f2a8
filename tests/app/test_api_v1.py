"""/api/v1/: figures equal to the dashboard's queries on the same data, calls paged without
skips or repeats while webhooks arrive, the password and the API tokens, errors in the one
shape, and the OpenAPI document describing it all."""

from __future__ import annotations

import asyncio
import base64
import itertools
import math
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
import streamlit as st

from callstatus.app.api_v1_models import KpiFigures
from callstatus.core import rollups, server
from callstatus.core import settings as settings_module
from callstatus.core.db import Database
from callstatus.core.duplicates import DuplicateTracker
from callstatus.dashboard import connection, tiles
from callstatus.dashboard.filters import Filters
from callstatus.dashboard.queries import calls, causes, legs, overview
from callstatus.simulator.simulate import Plan, Target, simulate
from callstatus.simulator.traffic import Call, TrafficModel
from tests.factories import app_client, call_webhooks, deliver, wait_until
from tests.servers import running_server

SEED = 11
# Whole hours, so that a range's ends never cut a call's StartTime second.
NOW = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
FIRST = NOW - timedelta(days=4)
# Two calls start at each moment: the cursor must order ties by call_uuid.
STARTS = [FIRST.timestamp() + 1200.0 * (i // 2) for i in range(2 * 3 * 24 * 4)]
RANGE = {"start": (NOW - timedelta(days=2)).isoformat(), "end": NOW.isoformat()}
PASSWORD = "correct-horse-battery"
TOKENS = ("grafana-token-0123456789", "slack-bot-token-9876543210")


def _model_calls() -> list[Call]:
    model = TrafficModel(SEED)
    return [model.call(i, at) for i, at in enumerate(STARTS)]


CALLS = _model_calls()


def _seed(path: Path, calls: list[Call] = CALLS) -> None:
    database = Database(path)
    deliver(database, [r for call in calls for r in call_webhooks(call)], DuplicateTracker())
    database.close()


@pytest.fixture
def client(tmp_path: Path) -> Iterator[Any]:
    """The app in-process over the seeded database; open (no password, no tokens)."""
    _seed(tmp_path / "callstatus.duckdb")
    with app_client(tmp_path) as test_client:
        yield test_client


def _filters(**values: Any) -> Filters:
    return Filters(start=NOW - timedelta(days=2), end=NOW, **values)


def _fresh() -> None:
    """Forget cached results: the test's own query runs, not the API's cached one."""
    st.cache_data.clear()


def _same(got: Any, expected: Any) -> bool:
    expected = expected.item() if hasattr(expected, "item") else expected
    if expected is None or (isinstance(expected, float) and math.isnan(expected)):
        return got is None
    if isinstance(expected, float):
        return got == pytest.approx(expected, rel=1e-12)
    return bool(got == expected)


def _assert_figures(got: dict[str, Any], f: Filters) -> None:
    _fresh()
    row = overview.kpis(connection.relations(), f).frame.iloc[0]
    assert datetime.fromisoformat(got["start"]) == f.start
    assert datetime.fromisoformat(got["end"]) == f.end
    for column in row.index:
        name = "acd_seconds" if column == "acd_s" else column
        assert _same(got[name], row[column]), (name, got[name], row[column])
    # As the tiles write them: "to the decimal shown".
    for tile in tiles.TILES.values():
        name = "acd_seconds" if tile.column == "acd_s" else tile.column
        assert tile.fmt(got[name]) == tile.fmt(row[tile.column]), tile.label


@pytest.mark.parametrize(
    "query",
    [
        {},
        {"direction": "inbound"},
        {"direction": "outbound", "number": "18005550150"},
        {"destination": "14155550101,sip:ana@phone.plivo.com"},
        {"destination": ["14155550101", "sip:ana@phone.plivo.com"], "tz": "Asia/Kolkata"},
    ],
)
def test_kpis_are_the_overview_tiles_for_the_range_and_the_one_before(
    client: Any, query: dict[str, Any]
) -> None:
    response = client.get("/api/v1/kpis", params={**RANGE, **query})
    assert response.status_code == 200, response.text
    body = response.json()
    destinations = query.get("destination", ())
    if isinstance(destinations, str):
        destinations = destinations.split(",")
    f = _filters(
        direction=query.get("direction"),
        numbers=(query["number"],) if "number" in query else (),
        destinations=tuple(destinations),
        tz=query.get("tz", "UTC"),
    )
    _assert_figures(body, f)
    _assert_figures(body["previous"], f.previous())
    row = overview.kpis(connection.relations(), f).frame.iloc[0]
    assert body["lead"] == tiles.lead_metric(f.direction, row)
    # The data goes back 4 days: the 2 days before the range are covered.
    assert body["calls"] > 0 and body["previous"]["calls"] > 0
    assert body["comparable"] is (body["previous"]["calls"] >= tiles.MIN_CALLS_TO_COMPARE)
    if not query:
        # Counted from the traffic model itself, not from any query.
        started = [c for c in CALLS if f.start.timestamp() <= c.started_at < f.end.timestamp()]
        assert body["calls"] == len(started) == 2 * 3 * 24 * 2
        inbound = sum(c.direction == "inbound" for c in started)
        assert (body["inbound_calls"], body["outbound_calls"]) == (inbound, len(started) - inbound)


def test_every_figure_of_the_overview_query_is_in_the_api(client: Any) -> None:
    body = client.get("/api/v1/kpis").json()
    columns = set(overview.kpis(connection.relations(), _filters()).frame.columns)
    named = {"acd_seconds" if c == "acd_s" else c for c in columns}
    assert named <= set(body) - {"lead", "comparable", "previous"}
    assert set(body["previous"]) == set(KpiFigures.model_fields)


def test_kpis_default_to_the_last_7_days_and_say_when_there_is_nothing_to_compare(
    client: Any,
) -> None:
    before = datetime.now(UTC)
    body = client.get("/api/v1/kpis").json()
    start, end = datetime.fromisoformat(body["start"]), datetime.fromisoformat(body["end"])
    assert end - start == timedelta(days=7)
    assert before <= end <= before + timedelta(minutes=1) and end.second == 0
    # The range holds all 4 days of data; the 7 days before it hold none.
    assert body["calls"] == len(CALLS)
    assert body["comparable"] is False and body["previous"]["calls"] == 0
    assert body["previous"]["call_answer_rate"] is None


@pytest.mark.parametrize("metric", ["calls", "call_answer_rate", "dial_answer_rate"])
def test_series_are_the_rates_chart_per_bucket_in_the_zone_asked_for(
    client: Any, metric: str
) -> None:
    query = {**RANGE, "metric": metric, "bucket": "hour", "tz": "Asia/Kolkata"}
    points = client.get("/api/v1/series", params=query).json()
    _fresh()
    f = replace(_filters(tz="Asia/Kolkata"), bucket="1 hour")
    frame = overview.rates_over_time(connection.relations(), f).frame
    # Whole UTC hours are half past in India: 48 of them touch 49 local hours.
    assert len(points) == len(frame) == 49
    zone = ZoneInfo("Asia/Kolkata")
    for point, (_, row) in zip(points, frame.iterrows(), strict=True):
        assert point["time"].endswith("+05:30")
        assert datetime.fromisoformat(point["time"]) == row["bucket"].to_pydatetime().replace(
            tzinfo=zone
        )
        assert datetime.fromisoformat(point["end"]) - datetime.fromisoformat(
            point["time"]
        ) == timedelta(hours=1)
        assert _same(point["value"], row[metric])
        assert point["calls"] == row["calls"]
    kpis = client.get("/api/v1/kpis", params=RANGE).json()
    assert sum(point["calls"] for point in points) == kpis["calls"]


def test_series_buckets_auto_and_refusals(client: Any) -> None:
    day = client.get("/api/v1/series", params={"metric": "b_leg_answer_rate"}).json()
    # 7 days, automatically: daily buckets, at UTC midnight.
    assert all(p["time"].endswith("T00:00:00Z") for p in day) and 4 <= len(day) <= 6
    too_fine = client.get(
        "/api/v1/series",
        params={"metric": "calls", "bucket": "5min", "start": "2026-01-01T00:00:00Z"},
    )
    unknown = client.get("/api/v1/series", params={"metric": "happiness"})
    missing = client.get("/api/v1/series")
    assert (too_fine.status_code, too_fine.json()["error"]["code"]) == (400, "too_many_buckets")
    for refused in (unknown, missing):
        assert (refused.status_code, refused.json()["error"]["code"]) == (400, "invalid_request")
        assert "metric" in refused.json()["error"]["message"]
        assert ".py" not in refused.json()["error"]["message"]


def _rollups_hold_everything() -> bool:
    """rollups.is_current in one statement, so one snapshot: its three reads can straddle a
    move of the inbox and say True while the moved webhooks wait for the next refresh."""
    handle = server.installed()
    assert handle is not None
    sql = (
        "SELECT (SELECT min(watermark) FROM rollup_state WHERE list_contains($names, name))"
        " = (SELECT watermark FROM rollup_state WHERE name = 'webhook_rows')"
        " AND NOT EXISTS (SELECT 1 FROM webhook_inbox)"
    )
    (row,) = handle.database.cursor().execute(sql, {"names": list(rollups.TABLES)}).fetchall()
    return bool(row[0])


def _pages(client: Any, query: dict[str, Any], between: Any = None) -> list[list[dict[str, Any]]]:
    pages: list[list[dict[str, Any]]] = []
    cursor = None
    while True:
        params = {**query, **({"cursor": cursor} if cursor else {})}
        response = client.get("/api/v1/calls", params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        pages.append(body["calls"])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages
        if between is not None:
            between(len(pages), body["calls"][-1])


def _hangup(uuid: str, started: datetime, direction: str = "inbound") -> dict[str, str]:
    """A hangup webhook for a call we heard nothing else of."""
    return {
        "CallUUID": uuid,
        "Direction": direction,
        "From": "+15550009999",
        "To": "+18005550150",
        "CallStatus": "completed",
        "Event": "Hangup",
        "HangupCauseCode": "4000",
        "HangupCauseName": "Normal Hangup",
        "HangupCause": "NORMAL_CLEARING",
        "HangupSource": "Caller",
        "StartTime": started.strftime("%Y-%m-%d %H:%M:%S"),
        "AnswerTime": "",
        "EndTime": (started + timedelta(seconds=30)).strftime("%Y-%m-%d %H:%M:%S"),
        "Duration": "30",
        "BillDuration": "0",
    }


def test_calls_are_paged_newest_first_with_nothing_skipped_or_repeated_while_webhooks_arrive(
    client: Any,
) -> None:
    f = _filters()
    in_range = sorted(
        (
            (datetime.fromtimestamp(math.floor(c.started_at), UTC), c.call_uuid)
            for c in CALLS
            if f.start.timestamp() <= c.started_at < f.end.timestamp()
        ),
        reverse=True,
    )
    late: list[str] = []

    def meanwhile(page: int, last: dict[str, Any]) -> None:
        at = datetime.fromisoformat(last["started_at"])
        # A new call, started now: after the range.
        new = CALLS[0].call_uuid[:-4] + f"n{page:03d}"
        assert client.post("/plivo/hangup", data=_hangup(new, NOW)).status_code == 200
        # A retried hangup of a call already listed: stored as a duplicate, changes nothing.
        again = next(hook for hook in CALLS[-2 * page].webhooks if hook.kind == "hangup")
        retried = client.request(again.method, again.url(), data=again.form() or None)
        assert retried.status_code == 200
        # Calls first heard of now (records, lost webhooks), started before and after the
        # cursor: the older one is on a later page, the newer one was passed and is not. Only
        # within a day of their start, as webhooks come (the rollups' assumption, docs/data.md).
        if at >= NOW - timedelta(hours=20):
            older, newer = f"late-old-{page:03d}", f"late-new-{page:03d}"
            for uuid, started in (
                (older, at - timedelta(seconds=7)),
                (newer, at + timedelta(seconds=7)),
            ):
                assert client.post("/plivo/hangup", data=_hangup(uuid, started)).status_code == 200
            late.append(older)
        # Once the server has taken them in: the rollups, which the API reads, lag a refresh.
        wait_until(_rollups_hold_everything)

    pages = _pages(client, {**RANGE, "limit": 37}, meanwhile)
    listed = [(datetime.fromisoformat(c["started_at"]), c["call_uuid"]) for p in pages for c in p]
    assert len(pages) > 7 and all(len(p) == 37 for p in pages[:-1])
    assert Counter(uuid for _, uuid in listed).most_common(1)[0][1] == 1  # none repeated
    assert listed == sorted(listed, reverse=True)  # newest first, ties by call_uuid
    assert {u for _, u in listed} == {u for _, u in in_range} | set(late)  # none skipped
    assert not any(u.startswith("late-new") for _, u in listed)
    assert len(late) >= 2
    # Two calls start each time, and a cursor fell between two such: ties ordered by call_uuid.
    assert len({t for t, _ in in_range}) == len(in_range) // 2
    assert any(a[-1]["started_at"] == b[0]["started_at"] for a, b in itertools.pairwise(pages))
    # Read again: every call in the range, the ones passed by then too.
    again = [c["call_uuid"] for p in _pages(client, {**RANGE, "limit": 1000}) for c in p]
    passed = {uuid.replace("late-old", "late-new") for uuid in late}
    assert sorted(again) == sorted({u for _, u in in_range} | set(late) | passed)


def test_calls_filters_and_cursor_checks(client: Any) -> None:
    query = {**RANGE, "direction": "outbound", "outcome": "busy,no-answer", "limit": 2}
    first = client.get("/api/v1/calls", params=query).json()
    every = [c for p in _pages(client, query) for c in p]
    assert every and {c["direction"] for c in every} == {"outbound"}
    assert {c["outcome"] for c in every} <= {"busy", "no-answer"}
    _fresh()
    view = calls.search_calls(connection.relations(), "", "UTC", limit=10_000).frame
    expected = view[
        (view["direction"] == "outbound")
        & view["outcome"].isin(["busy", "no-answer"])
        & (view["started"] >= (NOW - timedelta(days=2)).replace(tzinfo=None))
        & (view["started"] < NOW.replace(tzinfo=None))
    ]
    newest_first = expected.sort_values(["started", "call_uuid"], ascending=False)
    assert [c["call_uuid"] for c in every] == list(newest_first["call_uuid"])
    cursor = first["next_cursor"]
    # The cursor keeps the first page's range: the relative default range works too.
    relative = client.get("/api/v1/calls", params={"limit": 1}).json()
    assert (
        client.get("/api/v1/calls", params={"limit": 1, "cursor": relative["next_cursor"]}).json()[
            "start"
        ]
        == relative["start"]
    )
    other = client.get("/api/v1/calls", params={**query, "direction": "inbound", "cursor": cursor})
    moved = client.get(
        "/api/v1/calls", params={**query, "start": FIRST.isoformat(), "cursor": cursor}
    )
    forged = client.get("/api/v1/calls", params={"cursor": "bm90IGEgY3Vyc29y"})
    garbage = client.get("/api/v1/calls", params={"cursor": "%%%"})
    beyond = base64.urlsafe_b64encode(b'[1e30,"x",0,1,"q"]').decode()
    year_10k = base64.urlsafe_b64encode(b'[10000000000000000000,"x",0,1,"q"]').decode()
    too_many = client.get("/api/v1/calls", params={"limit": 5000})
    for response, code in [
        (other, "cursor_mismatch"),
        (moved, "cursor_mismatch"),
        (forged, "invalid_cursor"),
        (garbage, "invalid_cursor"),
        (client.get("/api/v1/calls", params={"cursor": beyond}), "invalid_cursor"),
        (client.get("/api/v1/calls", params={"cursor": year_10k}), "invalid_cursor"),
        (too_many, "invalid_request"),
    ]:
        assert (response.status_code, response.json()["error"]["code"]) == (400, code)
    assert base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))  # plain base64url


def test_a_call_with_its_dial_b_legs_and_webhooks_in_order(client: Any) -> None:
    call = next(
        c
        for c in CALLS
        if sum(leg.parent is not None for leg in c.legs) >= 2 and any(h.retry for h in c.webhooks)
    )
    body = client.get(f"/api/v1/calls/{call.call_uuid}").json()
    assert body["call"]["call_uuid"] == call.call_uuid
    assert body["call"]["direction"] == call.direction
    assert datetime.fromisoformat(body["call"]["started_at"]).timestamp() == math.floor(
        call.started_at
    )
    _fresh()
    rel = connection.relations()
    summary = calls.call_summary(rel, call.call_uuid, "UTC").frame.iloc[0]
    assert body["call"]["outcome"] == summary["outcome"]
    assert body["call"]["hangup_cause_code"] == summary["hangup_cause_code"]
    b_legs = calls.call_b_legs(rel, call.call_uuid, "UTC").frame
    assert [b["b_leg_uuid"] for b in body["b_legs"]] == list(b_legs["b_leg_uuid"])
    assert {b["b_leg_uuid"] for b in body["b_legs"]} == {
        leg.uuid for leg in call.legs if leg.parent is not None
    }
    assert [d["a_leg_uuid"] for d in body["dials"]] == [call.call_uuid]
    # Every webhook the model delivered for the call, each delivery of a retried one folded.
    hooks = body["webhooks"]
    assert sum(h["deliveries"] for h in hooks) == len(call.webhooks)
    assert Counter(h["kind"] for h in hooks for _ in range(h["deliveries"])) == Counter(
        hook.kind for hook in call.webhooks
    )
    assert body["webhook_entries"] == len(hooks) and any(h["duplicate"] for h in hooks)
    received = [datetime.fromisoformat(h["received"]) for h in hooks]
    assert received == sorted(received)
    first = min(call.webhooks, key=lambda hook: hook.delivered_at)
    assert hooks[0]["params"] == dict(first.params())


def test_an_unknown_call_is_a_404_in_the_error_shape(client: Any) -> None:
    response = client.get("/api/v1/calls/no-such-call")
    assert response.status_code == 404
    assert response.json() == {"error": {"code": "not_found", "message": "no call no-such-call"}}


@pytest.mark.parametrize("leg", ["a", "b"])
def test_hangup_causes_are_the_causes_page(client: Any, leg: str) -> None:
    query = {**RANGE, "leg": leg, "answered": "false", "direction": "inbound"}
    body = client.get("/api/v1/hangup-causes", params=query).json()
    _fresh()
    f, rel = _filters(direction="inbound"), connection.relations()
    by_cause = causes.by_cause(rel, f, leg, with_answered=False).frame
    by_source = causes.by_source(rel, f, leg, with_answered=False).frame
    # The same rows; ties (equal counts) may come in either order.
    assert sorted((r["cause"], r["outcome"], r["legs"]) for r in body["causes"]) == sorted(
        zip(by_cause["cause"], by_cause["outcome"], by_cause["legs"], strict=True)
    )
    assert [(r["source"], r["outcome"], r["legs"]) for r in body["sources"]] == list(
        zip(by_source["source"], by_source["outcome"], by_source["legs"], strict=True)
    )
    most = [r["cause_legs"] for r in body["causes"]]
    assert most == sorted(most, reverse=True)
    assert body["causes"] and all(r["outcome"] != "answered" for r in body["causes"])


def test_legs_are_the_destinations_and_winners_of_the_legs_page(client: Any) -> None:
    body = client.get("/api/v1/legs", params=RANGE).json()
    _fresh()
    f, rel = _filters(), connection.relations()
    destinations = legs.destinations(rel, f).frame
    winners = legs.winners_by_position(rel, f).frame
    # Most dialled first; destinations dialled equally often may come in either order.
    assert len(body["destinations"]) == len(destinations)
    rows = {row["b_leg_to"]: row for _, row in destinations.iterrows()}
    for got in body["destinations"]:
        row = rows[got["b_leg_to"]]
        assert (got["b_legs"], got["answered"], got["lost_race"]) == (
            row["b_legs"],
            row["answered"],
            row["lost_race"],
        )
        assert _same(got["answer_rate"], row["answer_rate"])
        assert _same(got["answer_rate_excl_lost_race"], row["answer_rate_excl_lost_race"])
    most = [d["b_legs"] for d in body["destinations"]]
    assert most == sorted(most, reverse=True)
    assert [(w["position"], w["b_legs"], w["wins"]) for w in body["winners_by_position"]] == list(
        zip(winners["position"], winners["b_legs"], winners["wins"], strict=True)
    )
    kpis = client.get("/api/v1/kpis", params=RANGE).json()
    assert sum(d["b_legs"] for d in body["destinations"]) == kpis["b_legs"]


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ({"start": "yesterday"}, "invalid_request"),
        ({"start": RANGE["end"], "end": RANGE["start"]}, "invalid_range"),
        ({"tz": "Mars/Olympus_Mons"}, "invalid_tz"),
        ({"direction": "sideways"}, "invalid_request"),
    ],
)
def test_bad_parameters_are_400_in_the_error_shape(
    client: Any, query: dict[str, str], code: str
) -> None:
    for path in ("/api/v1/kpis", "/api/v1/calls", "/api/v1/legs", "/api/v1/hangup-causes"):
        response = client.get(path, params=query)
        assert response.status_code == 400, path
        assert set(response.json()) == {"error"} and response.json()["error"]["code"] == code


def test_naive_times_are_utc_and_offsets_are_honoured(client: Any) -> None:
    naive = client.get("/api/v1/kpis", params={"start": "2026-01-01T00:00:00"}).json()
    offset = client.get("/api/v1/kpis", params={"start": "2026-01-01T05:30:00+05:30"}).json()
    assert naive["start"] == offset["start"] == "2026-01-01T00:00:00Z"


# Access: the password, the API tokens, both or neither.


def _basic(password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"ops:{password}".encode()).decode()}


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize(
    ("settings", "challenges"),
    [
        ({"DASHBOARD_PASSWORD": PASSWORD}, ["Basic"]),
        ({"CALLSTATUS_API_TOKENS": ",".join(TOKENS)}, ["Bearer"]),
        (
            {"DASHBOARD_PASSWORD": PASSWORD, "CALLSTATUS_API_TOKENS": ",".join(TOKENS)},
            ["Basic", "Bearer"],
        ),
    ],
)
def test_the_api_takes_the_password_or_a_token_and_nothing_else(
    tmp_path: Path, settings: dict[str, str], challenges: list[str]
) -> None:
    with app_client(tmp_path, **settings) as client:
        local = client.app.runtime.local_token

        def get(headers: dict[str, str]) -> httpx.Response:
            response: httpx.Response = client.get("/api/v1/kpis", headers=headers)
            return response

        missing, wrong_token = get({}), get(_bearer("guess-0123456789"))
        wrong_password, scheme = get(_basic("guess")), get({"Authorization": "Token x"})
        password, tokens = get(_basic(PASSWORD)), [get(_bearer(t)) for t in TOKENS]
        local_token = get(_bearer(local))
        metrics = client.get("/metrics", headers=_bearer(TOKENS[1]))
        health = client.get("/healthz", headers=_bearer(TOKENS[0])).json()
    for refused in (missing, wrong_token, wrong_password, scheme):
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "unauthorized"
        assert "CALLSTATUS_API_TOKENS" in refused.json()["error"]["message"]
        offered = refused.headers.get_list("www-authenticate")
        assert [value.split()[0] for value in offered] == challenges
    assert local_token.status_code == 200  # commands on this machine (callstatus reconcile)
    assert password.status_code == (200 if "DASHBOARD_PASSWORD" in settings else 401)
    with_tokens = "CALLSTATUS_API_TOKENS" in settings
    assert [r.status_code for r in tokens] == [200 if with_tokens else 401] * 2
    assert metrics.status_code == (200 if with_tokens else 401)
    assert ("database" in health) is with_tokens


def test_api_tokens_open_neither_the_dashboard_nor_a_write(tmp_path: Path) -> None:
    settings = {"DASHBOARD_PASSWORD": PASSWORD, "CALLSTATUS_API_TOKENS": TOKENS[0]}
    with app_client(tmp_path, **settings) as client:
        page_token = client.get("/", headers=_bearer(TOKENS[0]))
        page_password = client.get("/", headers=_basic(PASSWORD))
        write_token = client.post("/api/reconcile", headers=_bearer(TOKENS[0]))
        write_password = client.post("/api/reconcile", headers=_basic(PASSWORD))
    assert page_token.status_code == 401 and page_password.status_code == 200
    assert (write_token.status_code, write_token.json()["error"]["code"]) == (
        403,
        "read_only_token",
    )
    # Past the check: this server has no Call API account to reconcile with.
    assert write_password.json()["error"]["code"] == "reconcile_not_configured"


def test_wrong_tokens_count_with_wrong_passwords(tmp_path: Path) -> None:
    settings = {"DASHBOARD_PASSWORD": PASSWORD, "CALLSTATUS_API_TOKENS": TOKENS[0]}
    with app_client(tmp_path, **settings) as client:
        for n in range(10):
            guess = _bearer(f"guess-{n}") if n % 2 else _basic(f"guess-{n}")
            assert client.get("/api/v1/kpis", headers=guess).status_code == 401
        token = client.get("/api/v1/kpis", headers=_bearer(TOKENS[0]))
        password = client.get("/", headers=_basic(PASSWORD))
    for locked in (token, password):
        assert locked.status_code == 429
        assert locked.json()["error"]["code"] == "too_many_failed_logins"
        assert int(locked.headers["retry-after"]) > 0


def test_without_the_server_running_the_api_says_starting(tmp_path: Path) -> None:
    from starlette.testclient import TestClient

    from callstatus.app.asgi import build_app
    from tests.factories import make_settings

    # No `with`: the lifespan never runs, so nothing is installed.
    response = TestClient(build_app(make_settings(tmp_path))).get("/api/v1/kpis")
    assert (response.status_code, response.json()["error"]["code"]) == (503, "starting")


# The OpenAPI document.


def test_the_openapi_document_types_every_read_route_and_its_errors(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        document = client.get("/api/openapi.json").json()
    paths = document["paths"]
    reads = {
        "/api/v1/kpis": "Kpis",
        "/api/v1/series": None,  # an array of SeriesPoint
        "/api/v1/calls": "CallPage",
        "/api/v1/calls/{call_uuid}": "CallDetail",
        "/api/v1/hangup-causes": "HangupCauses",
        "/api/v1/legs": "Legs",
    }
    assert set(reads) <= set(paths)
    for path, model in reads.items():
        operation = paths[path]["get"]
        schema = operation["responses"]["200"]["content"]["application/json"]["schema"]
        ref = schema.get("$ref") or schema["items"]["$ref"]
        assert ref.endswith(f"/{model or 'SeriesPoint'}"), path
        for status in ("400", "401", "429", "503"):
            error = operation["responses"][status]["content"]["application/json"]["schema"]
            assert error == {"$ref": "#/components/schemas/Error"}, (path, status)
        assert "422" not in operation["responses"]
        assert operation["security"] == [{"password": []}, {"token": []}]
        for parameter in operation.get("parameters", []):
            assert parameter.get("description"), (path, parameter["name"])
    assert "404" in paths["/api/v1/calls/{call_uuid}"]["get"]["responses"]
    schemas = document["components"]["schemas"]
    assert "HTTPValidationError" not in schemas
    assert set(schemas["Kpis"]["properties"]) >= {"calls", "dial_answer_rate", "previous"}
    assert document["components"]["securitySchemes"]["token"]["scheme"] == "bearer"


# Signed traffic through a real server, figures compared with the tiles on the same file.


@pytest.mark.slow
def test_kpis_over_signed_traffic_match_the_overview_tiles(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = "plivo-auth-token-0123456789"
    db = tmp_path / "signed.duckdb"
    env = {"PLIVO_AUTH_TOKEN": token, "CALLSTATUS_API_TOKENS": TOKENS[0]}
    with running_server(db, env) as server:
        began = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
        target = Target(server.url, server.url, token)
        tally = asyncio.run(simulate(target, TrafficModel(SEED), Plan(200, rate=0)))
        assert tally.ok and tally.calls == 200, tally
        query = {"start": began.isoformat(), "end": (began + timedelta(hours=1)).isoformat()}

        def kpis() -> dict[str, Any]:
            url, token = f"{server.url}/api/v1/kpis", _bearer(TOKENS[0])
            response = httpx.get(url, params=query, headers=token)
            assert response.status_code == 200, response.text
            body: dict[str, Any] = response.json()
            return body

        # The API reads the rollups while they keep up, a refresh (2 s) behind at most, longer
        # on a busy host: the figures are final once every simulated call has ended in them and
        # two reads a refresh apart agree.
        seen = [kpis()]

        def settled() -> bool:
            time.sleep(2.5)
            seen.append(kpis())
            return seen[-1] == seen[-2] and seen[-1]["ended_calls"] == 200

        wait_until(settled, timeout=60)
        refused = httpx.get(f"{server.url}/api/v1/kpis", params=query)
        server.stop()
    assert refused.status_code == 401
    body = seen[-1]
    assert body["calls"] == 200
    # The same file as the dashboard reads it when no server holds it.
    monkeypatch.setenv("CALLSTATUS_DB", str(db))
    settings_module.get_settings.cache_clear()
    try:
        f = Filters(start=began, end=began + timedelta(hours=1))
        _assert_figures(body, f)
        row = overview.kpis(connection.relations(), f).frame.iloc[0]
        for name in ("call_answer_rate", "dial_answer_rate", "b_leg_answer_rate"):
            assert tiles.fmt_rate(body[name]) == tiles.fmt_rate(row[name]) != "—", name
    finally:
        settings_module.get_settings.cache_clear()
