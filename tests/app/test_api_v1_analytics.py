"""/api/v1/timing, /concurrency, /destinations and /countries from a real `callstatus serve`
over the hand-timed analytics sample (tests/dashboard/analytics_sample.py): every figure equal
to a hand computation, the country filter, a token and the password, masked numbers looked up
from clear ones, and bad parameters refused in the one error shape."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from callstatus.core import rollups
from callstatus.core.db import Database
from callstatus.core.duplicates import DuplicateTracker
from callstatus.core.numbers import NumberMasker
from callstatus.core.records import make_record
from callstatus.core.storage import insert_events
from tests.dashboard import analytics_sample as sample
from tests.dashboard.analytics_sample import AGENT, END, SIP_AGENT, START
from tests.servers import ServerProcess, running_server

TOKEN = "analytics-api-token-0123456789"
PASSWORD = "analytics-password-0123"
KEY = "analytics-number-key-0123456789"
RANGE = {"start": START.isoformat(), "end": END.isoformat(), "bucket": "5min"}
BEARER = {"Authorization": f"Bearer {TOKEN}"}


def p90(values: list[float]) -> float:
    ordered = sorted(values)
    rank = 0.9 * (len(ordered) - 1)
    low = int(rank)
    return ordered[low] + (rank - low) * (ordered[min(low + 1, len(ordered) - 1)] - ordered[low])


def _write(path: Path, masker: NumberMasker | None = None) -> None:
    """The sample as the receiver stores it (masked by `masker`), rollups refreshed."""
    database = Database(path)
    records = [
        make_record(kind, "POST", masker.mask_params(kind, params) if masker else params, "x", at)
        for kind, params, at in sample.events()
    ]
    DuplicateTracker().mark(records)
    cur = database.cursor()
    cur.execute("BEGIN")
    insert_events(cur, records, "UTC")
    cur.execute("COMMIT")
    rollups.refresh(database.cursor())
    database.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    db = tmp_path_factory.mktemp("analytics-api") / "callstatus.duckdb"
    _write(db)
    env = {"CALLSTATUS_API_TOKENS": TOKEN, "DASHBOARD_PASSWORD": PASSWORD}
    with running_server(db, env) as running:
        yield running


def get(server: ServerProcess, path: str, **query: Any) -> Any:
    response = httpx.get(
        f"{server.url}/api/v1/{path}", params={**RANGE, **query}, headers=BEARER, timeout=30
    )
    assert response.status_code == 200, response.text
    return response.json()


def _by(rows: list[dict[str, Any]], *keys: str) -> dict[Any, dict[str, Any]]:
    return {tuple(row[k] for k in keys) if len(keys) > 1 else row[keys[0]]: row for row in rows}


def test_timing_is_the_hand_computation(server: ServerProcess) -> None:
    body = get(server, "timing")
    assert body["bucket"] == "5 minutes"
    summary = _by(body["summary"], "measure")
    # PDD: o1 rang 2 s after its start, o2 4 s, o4 answered 5 s after it (no ring); o3 none.
    pdd = summary["post_dial_delay"]
    assert (pdd["legs"], pdd["median_s"]) == (3, 4.0)
    assert pdd["p90_s"] == pytest.approx(p90([2, 4, 5])) == pytest.approx(4.8)
    # Ring: o1 2 -> 10, o2 34 -> hangup 64, o4 start 180 -> answer 185.
    ring = summary["ring_time"]
    assert (ring["legs"], ring["median_s"]) == (3, 8.0)
    assert ring["p90_s"] == pytest.approx(p90([8, 30, 5]))
    # b1 answered 10 s after i1's answer; b3 gave up 30 s after i2's; b2 lost the race.
    answer, give_up = summary["b_leg_time_to_answer"], summary["b_leg_time_to_give_up"]
    assert (answer["legs"], answer["median_s"], give_up["legs"], give_up["median_s"]) == (
        1,
        10.0,
        1,
        30.0,
    )
    points = _by(body["over_time"], "time", "measure")
    first = points[("2026-11-02T09:00:00Z", "post_dial_delay")]
    assert (first["legs"], first["median_s"], first["end"]) == (3, 4.0, "2026-11-02T09:05:00Z")
    assert points[("2026-11-02T09:05:00Z", "b_leg_time_to_give_up")]["legs"] == 1
    assert ("2026-11-02T09:05:00Z", "post_dial_delay") not in points  # no outbound call then
    where = _by(body["per_destination"], "destination", "measure")
    assert where[("GB", "post_dial_delay")]["median_s"] == 3.5  # o1 2 s, o4 5 s
    assert where[("US", "post_dial_delay")]["median_s"] == 4.0
    assert where[(AGENT, "b_leg_time_to_answer")]["median_s"] == 10.0
    assert (SIP_AGENT, "b_leg_time_to_answer") not in where


def test_concurrency_is_exact_at_bucket_edges(server: ServerProcess) -> None:
    body = get(server, "concurrency")
    # A legs 09:00-09:05, i3 (from before the range) under all of it: 0-30 s o1 i1, 30-60 o1 o2
    # i1, 60-64 o2 i1, 64-120 i1, 120-121 o3 (i1 ended as it began), 121-180 none, 180-300 o4.
    held = 2 * 30 + 3 * 30 + 2 * 4 + 1 * 56 + 1 * 1 + 1 * 120 + 300
    assert (body["legs"], body["peak"], body["peak_at"]) == ("a", 4, "2026-11-02T09:00:30Z")
    first, second = body["buckets"]
    assert (first["time"], first["end"], first["peak"]) == (
        "2026-11-02T09:00:00Z",
        "2026-11-02T09:05:00Z",
        4,
    )
    assert first["mean"] == pytest.approx(held / 300)
    # o4 ends at 09:05 exactly: not in the second bucket; i2 300-340, i3 until 450.
    assert (second["peak"], second["mean"]) == (2, pytest.approx((40 + 150) / 300))
    assert second["peak_at"] == "2026-11-02T09:05:00Z"
    # B legs from the Dial's start (i1 answered at 1 s): b1 1-119, b2 1-11.1; b3 301-331.
    b = get(server, "concurrency", legs="b")
    assert (b["peak"], b["peak_at"]) == (2, "2026-11-02T09:00:01Z")
    assert b["buckets"][0]["mean"] == pytest.approx((2 * 10.1 + 107.9) / 300)
    assert (b["buckets"][1]["peak"], b["buckets"][1]["mean"]) == (1, pytest.approx(0.1))


def test_buckets_in_the_zone_asked_for(server: ServerProcess) -> None:
    body = get(server, "concurrency", tz="Asia/Kolkata", bucket="hour")
    # One hour bucket from 14:00 India time: the range lies in it.
    (only,) = body["buckets"]
    assert (only["time"], only["end"]) == ("2026-11-02T14:00:00+05:30", "2026-11-02T15:00:00+05:30")
    assert (only["peak"], only["peak_at"]) == (4, "2026-11-02T14:30:30+05:30")
    assert body["bucket"] == "1 hour"
    timing = get(server, "timing", tz="Asia/Kolkata", bucket="hour")
    assert {p["time"] for p in timing["over_time"]} == {"2026-11-02T14:00:00+05:30"}


def test_destinations_table(server: ServerProcess) -> None:
    rows = _by(get(server, "destinations")["destinations"], "destination")
    assert list(rows) == [AGENT, SIP_AGENT]  # most dialled first
    agent = rows[AGENT]
    assert {k: agent[k] for k in ("dialled", "answered", "lost_races", "answer_rate")} == {
        "dialled": 2,
        "answered": 1,
        "lost_races": 0,
        "answer_rate": 0.5,
    }
    assert (agent["median_answer_s"], agent["talk_s"], agent["mean_talk_s"]) == (10.0, 108, 108.0)
    assert (agent["country"], agent["line_type"]) == ("US", "fixed_line_or_mobile")
    sip = rows[SIP_AGENT]
    assert (sip["dialled"], sip["lost_races"], sip["country"], sip["line_type"]) == (
        1,
        1,
        None,
        "sip",
    )
    assert sip["median_answer_s"] is None and sip["mean_talk_s"] is None
    assert len(get(server, "destinations", limit=1)["destinations"]) == 1


def test_countries(server: ServerProcess) -> None:
    body = get(server, "countries")
    calls = _by(body["calls"], "direction", "country")
    # i3 started before the range: not counted.
    assert set(calls) == {
        ("outbound", "GB"),
        ("outbound", "US"),
        ("outbound", "DE"),
        ("inbound", "IN"),
        ("inbound", "GB"),
    }
    gb = calls[("outbound", "GB")]
    assert (gb["calls"], gb["answered"], gb["call_answer_rate"], gb["acd_s"]) == (
        2,
        2,
        1.0,
        (50 + 115) / 2,
    )
    assert calls[("outbound", "US")]["no_answer"] == 1
    assert calls[("outbound", "DE")]["busy"] == 1
    per_country: dict[str, int] = {}
    for row in body["outcomes"]:
        per_country[row["country"]] = per_country.get(row["country"], 0) + row["calls"]
    assert per_country == {"DE": 1, "GB": 3, "IN": 1, "US": 1}
    outbound = get(server, "countries", direction="outbound", top=2)["outcomes"]
    # GB 2 calls, then DE and US 1 each: ties by name.
    assert {row["country"] for row in outbound} == {"GB", "DE"}
    legs = _by(body["b_legs"], "country")
    assert (legs["US"]["b_legs"], legs["US"]["answered"], legs["US"]["b_leg_answer_rate"]) == (
        2,
        1,
        0.5,
    )
    assert (legs["SIP"]["b_legs"], legs["SIP"]["lost_race"]) == (1, 1)


def test_the_country_filter_slices_every_figure(server: ServerProcess) -> None:
    for country in ("GB", "gb", ["GB"], "GB,XK"):
        summary = _by(get(server, "timing", country=country)["summary"], "measure")
        assert summary["post_dial_delay"]["median_s"] == 3.5  # o1 and o4 only
        assert "b_leg_time_to_answer" not in summary  # i1's caller is in India
        assert summary["b_leg_time_to_give_up"]["median_s"] == 30.0  # i2 from a GB mobile
    load = get(server, "concurrency", country="GB")["buckets"][0]
    assert (load["peak"], load["mean"]) == (1, pytest.approx(180 / 300))  # o1, o4
    calls = get(server, "countries", country="GB")["calls"]
    assert {r["country"] for r in calls} == {"GB"} and sum(r["calls"] for r in calls) == 3
    # i2 (from GB) dialled the agent once and nobody answered.
    (agent,) = get(server, "destinations", country="GB")["destinations"]
    assert (agent["destination"], agent["dialled"], agent["answered"]) == (AGENT, 1, 0)
    empty = get(server, "destinations", country="FR")["destinations"]
    assert empty == []


def test_the_other_filters_apply(server: ServerProcess) -> None:
    inbound = _by(get(server, "timing", direction="inbound")["summary"], "measure")
    assert set(inbound) == {"b_leg_time_to_answer", "b_leg_time_to_give_up"}
    (sip,) = get(server, "destinations", destination=SIP_AGENT)["destinations"]
    assert sip["destination"] == SIP_AGENT
    ours = get(server, "countries", number=sample.OTHER_OURS)["calls"]
    assert [(r["direction"], r["country"], r["calls"]) for r in ours] == [("inbound", "GB", 1)]


@pytest.mark.parametrize(
    ("path", "query", "code", "words"),
    [
        ("timing", {"country": "GBR"}, "invalid_country", "ISO 3166"),
        ("concurrency", {"country": "G1"}, "invalid_country", "ISO 3166"),
        ("concurrency", {"legs": "c"}, "invalid_request", "legs"),
        ("timing", {"bucket": "fortnight"}, "invalid_request", "bucket"),
        ("concurrency", {"bucket": "5min", "start": "2025-01-01"}, "too_many_buckets", ""),
        ("destinations", {"limit": "0"}, "invalid_request", "limit"),
        ("destinations", {"limit": "many"}, "invalid_request", "limit"),
        ("countries", {"top": "201"}, "invalid_request", "top"),
        ("countries", {"tz": "Mars/Olympus"}, "invalid_tz", "time zone"),
        ("timing", {"start": END.isoformat(), "end": START.isoformat()}, "invalid_range", ""),
        ("timing", {"start": "yesterday"}, "invalid_request", "start"),
    ],
)
def test_bad_parameters_are_refused_clearly(
    server: ServerProcess, path: str, query: dict[str, str], code: str, words: str
) -> None:
    response = httpx.get(
        f"{server.url}/api/v1/{path}", params={**RANGE, **query}, headers=BEARER, timeout=30
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert words in error["message"] and ".py" not in error["message"]


def test_credentials_as_for_the_rest_of_the_api(server: ServerProcess) -> None:
    for path in ("timing", "concurrency", "destinations", "countries"):
        url = f"{server.url}/api/v1/{path}"
        refused = httpx.get(url, params=RANGE, timeout=30)
        assert refused.status_code == 401 and refused.json()["error"]["code"], path
        wrong = httpx.get(url, params=RANGE, headers={"Authorization": "Bearer nope"}, timeout=30)
        assert wrong.status_code == 401
        password = httpx.get(url, params=RANGE, auth=("anyone", PASSWORD), timeout=30)
        assert password.status_code == 200, path


def test_openapi_describes_the_routes(server: ServerProcess) -> None:
    document = httpx.get(f"{server.url}/api/openapi.json", headers=BEARER, timeout=30).json()
    for path in ("timing", "concurrency", "destinations", "countries"):
        operation = document["paths"][f"/api/v1/{path}"]["get"]
        assert operation["description"] and operation["security"]
        assert {"400", "401"} <= set(operation["responses"])
        names = {p["name"] for p in operation["parameters"]}
        assert {"start", "end", "direction", "number", "destination", "country", "tz"} <= names
        for parameter in operation["parameters"]:
            assert parameter.get("description"), (path, parameter["name"])
    schemas = document["components"]["schemas"]
    assert "post_dial_delay" in schemas["TimingFigure"]["properties"]["measure"]["description"]


def test_masked_numbers_are_looked_up_from_clear_ones(tmp_path: Path) -> None:
    masker = NumberMasker(KEY, [sample.OURS, sample.OTHER_OURS])
    db = tmp_path / "masked.duckdb"
    _write(db, masker)
    env = {"CALLSTATUS_NUMBERS": "masked", "CALLSTATUS_NUMBER_KEY": KEY}
    with running_server(db, env) as masked:
        # The agent's clear number finds its pseudonym's row; the pseudonym is what comes back.
        (agent,) = get(masked, "destinations", destination=AGENT)["destinations"]
        timing = _by(get(masked, "timing", destination=AGENT)["per_destination"], "measure")
    assert agent["destination"] == masker.mask(AGENT) != AGENT
    assert (agent["dialled"], agent["answered"], agent["median_answer_s"]) == (2, 1, 10.0)
    assert agent["country"] == "US"  # a pseudonym keeps its country code
    assert timing["b_leg_time_to_answer"]["destination"] == masker.mask(AGENT)
