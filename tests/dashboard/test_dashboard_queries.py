"""Dashboard queries on a hand-built sample: each figure checked against the sample itself."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from callstatus.core import rollups
from callstatus.core import settings as settings_module
from callstatus.core.db import Database
from callstatus.core.duplicates import DuplicateTracker
from callstatus.core.records import Params
from callstatus.dashboard import connection
from callstatus.dashboard.filters import BUCKETS, Filters
from callstatus.dashboard.queries import base, calls, causes, health, legs, overview, scopes
from callstatus.dashboard.queries.relations import ROLLUPS, VIEWS, Relations
from tests.factories import T0, store

START, END = T0 - timedelta(hours=1), T0 + timedelta(hours=2)


def _hangup(
    uuid: str,
    direction: str,
    code: int,
    name: str,
    cause: str,
    duration: int,
    answered: bool,
    source: str = "Caller",
) -> tuple[str, Params]:
    ours, them = "+14155550100", "+15550001" + uuid[-3:]
    return "hangup", {
        "CallUUID": uuid,
        "Direction": direction,
        "From": them if direction == "inbound" else ours,
        "To": ours if direction == "inbound" else them,
        "CallStatus": "completed",
        "HangupCauseCode": str(code),
        "HangupCauseName": name,
        "HangupCause": cause,
        "HangupSource": source,
        "StartTime": "2026-11-02 09:00:00",
        "AnswerTime": "2026-11-02 09:00:01" if answered else "",
        "EndTime": "2026-11-02 09:05:00",
        "Duration": str(duration),
        "BillDuration": str(duration if answered else 0),
    }


def _b_leg(
    a: str, b: str, to: str, position: int, code: int, name: str, answered: bool
) -> list[tuple[str, Params]]:
    base = {
        "CallUUID": a,
        "DialALegUUID": a,
        "DialBLegUUID": b,
        "DialBLegTo": to,
        "DialBLegFrom": "+14155550100",
        "DialBLegPosition": str(position),
    }
    events: list[tuple[str, Params]] = []
    if answered:
        events.append(("dial_callback", {**base, "DialAction": "answer"}))
    events.append(
        (
            "dial_callback",
            {
                **base,
                "DialAction": "hangup",
                "DialBLegHangupCauseCode": str(code),
                "DialBLegHangupCauseName": name,
                "DialBLegDuration": "30" if answered else "0",
                "DialBLegBillDuration": "30" if answered else "0",
            },
        )
    )
    return events


def _dial(a: str, status: str, b: str = "") -> tuple[str, Params]:
    return "dial_action", {
        "CallUUID": a,
        "DialALegUUID": a,
        "DialBLegUUID": b,
        "DialStatus": status,
        "DialRingStatus": "true",
    }


def sample_events() -> list[tuple[str, Params]]:
    """3 inbound calls that dial 5 B legs, 4 outbound calls, and one retried webhook."""
    events: list[tuple[str, Params]] = []
    # in1: two agents ring, the first answers, the second loses the race.
    events += _b_leg("in-001", "b-1", "+1700", 1, 4000, "Normal Hangup", True)
    events += _b_leg("in-001", "b-2", "+1701", 2, 9000, "Lost Race", False)
    events += [
        _dial("in-001", "completed", "b-1"),
        _hangup("in-001", "inbound", 4000, "Normal Hangup", "NORMAL_CLEARING", 60, True),
    ]
    # in2: one agent, no answer.
    events += _b_leg("in-002", "b-3", "+1700", 1, 3000, "No Answer", False)
    events += [
        _dial("in-002", "no-answer"),
        _hangup(
            "in-002",
            "inbound",
            4010,
            "End Of XML Instructions",
            "NORMAL_CLEARING",
            20,
            True,
            "Plivo",
        ),
    ]
    # in3: the caller gives up while two agents ring.
    events += _b_leg("in-003", "b-4", "+1700", 1, 1000, "Canceled", False)
    events += _b_leg("in-003", "b-5", "+1701", 2, 1000, "Canceled", False)
    events += [
        _dial("in-003", "cancel"),
        _hangup("in-003", "inbound", 1000, "Canceled", "ORIGINATOR_CANCEL", 15, True),
    ]
    answered = _hangup("out-001", "outbound", 4000, "Normal Hangup", "NORMAL_CLEARING", 100, True)
    events += [
        answered,
        answered,  # Plivo retried: a duplicate, counted once
        _hangup("out-002", "outbound", 3010, "Busy Line", "USER_BUSY", 0, False, "Carrier"),
        _hangup(
            "out-003",
            "outbound",
            5010,
            "Internal Error",
            "NORMAL_TEMPORARY_FAILURE",
            0,
            False,
            "Plivo",
        ),
        _hangup("out-004", "outbound", 3000, "No Answer", "NO_ANSWER", 0, False, "Carrier"),
    ]
    return events


# Every query runs on the rollup tables when they are current, on the views otherwise.
@pytest.fixture(params=["rollups", "views"])
def sample(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    path = tmp_path / "sample.duckdb"
    database = Database(path)
    store(database, sample_events())
    if request.param == "rollups":
        rollups.refresh(database.cursor())
    database.close()
    monkeypatch.setenv("CALLSTATUS_DB", str(path))
    settings_module.get_settings.cache_clear()
    yield path
    settings_module.get_settings.cache_clear()


def rel() -> Relations:
    """What the dashboard reads in the configured file now: the connection's check decides."""
    return connection.relations()


def filters(**kwargs: object) -> Filters:
    return Filters(start=START, end=END, bucket="1 hour", **kwargs)  # type: ignore[arg-type]


def test_kpis_match_the_sample(sample: Path) -> None:
    k = overview.kpis(rel(), filters()).frame.iloc[0]
    assert k["calls"] == 7
    # in1, in2, in3 (answered by our XML) and out1 of 7 ended calls.
    assert k["call_answer_rate"] == pytest.approx(4 / 7)
    assert k["dial_answer_rate"] == pytest.approx(1 / 3)
    assert k["b_legs"] == 5
    assert k["b_leg_answer_rate"] == pytest.approx(1 / 5)
    assert k["b_lost_race_share"] == pytest.approx(1 / 5)
    assert k["acd_s"] == pytest.approx((60 + 20 + 15 + 100) / 4)
    assert k["busy_share"] == pytest.approx(1 / 7)
    assert k["no_answer_share"] == pytest.approx(1 / 7)
    assert k["failed_share"] == pytest.approx(1 / 7)


def test_kpis_equal_plain_sql_on_the_views(sample: Path) -> None:
    import duckdb

    con = duckdb.connect(str(sample), read_only=True)
    try:
        call_rate, acd = con.execute(
            "SELECT avg(CASE WHEN answered THEN 1 ELSE 0 END) FILTER (WHERE outcome <> "
            "'in-progress'), avg(duration_s) FILTER (WHERE answered) FROM calls"
        ).fetchone()  # type: ignore[misc]
        (dial_rate,) = con.execute(
            "SELECT avg(CASE WHEN dial_status = 'completed' THEN 1 ELSE 0 END) FROM dials"
        ).fetchone()  # type: ignore[misc]
    finally:
        con.close()
    k = overview.kpis(rel(), filters()).frame.iloc[0]
    assert k["call_answer_rate"] == pytest.approx(call_rate)
    assert k["acd_s"] == pytest.approx(acd)
    assert k["dial_answer_rate"] == pytest.approx(dial_rate)


def test_direction_and_destination_slices(sample: Path) -> None:
    inbound = overview.kpis(rel(), filters(direction="inbound")).frame.iloc[0]
    assert (inbound["calls"], inbound["dials"], inbound["b_legs"]) == (3, 3, 5)
    only = overview.kpis(rel(), filters(destinations=("+1701",))).frame.iloc[0]
    assert (only["calls"], only["b_legs"], only["b_answered"]) == (2, 2, 0)


def test_an_empty_range_has_no_rates(sample: Path) -> None:
    f = Filters(start=START - timedelta(days=9), end=START - timedelta(days=8))
    k = overview.kpis(rel(), f).frame.iloc[0]
    assert k["calls"] == 0
    assert k["call_answer_rate"] != k["call_answer_rate"]  # NaN: no division by zero


def test_outcomes_and_causes(sample: Path) -> None:
    outcomes = overview.outcomes_over_time(rel(), filters()).frame
    assert dict(zip(outcomes["outcome"], outcomes["calls"], strict=True)) == {
        "answered": 4,
        "busy": 1,
        "failed": 1,
        "no-answer": 1,
    }
    b_causes = causes.by_cause(rel(), filters(), "b", with_answered=False).frame
    per_code = b_causes.groupby("code")["legs"].sum().to_dict()
    assert per_code == {1000: 2, 3000: 1, 9000: 1}
    listed = causes.legs_with_cause(rel(), filters(), "b", "1000 Canceled").frame
    assert sorted(listed["b_leg_uuid"]) == ["b-4", "b-5"]


def test_a_b_leg_figures(sample: Path) -> None:
    fan = legs.fanout(rel(), filters()).frame
    assert dict(zip(fan["b_legs"], fan["a_legs"], strict=True)) == {1: 1, 2: 2}
    wins = legs.winners_by_position(rel(), filters()).frame.set_index("position")
    assert (wins.loc[1, "wins"], wins.loc[2, "lost_race"]) == (1, 1)
    gone = legs.abandoned(rel(), filters()).frame.iloc[0]
    assert (gone["dialled_a_legs"], gone["abandoned"]) == (3, 1)
    matrix = legs.outcome_matrix(rel(), filters()).frame
    assert matrix["pairs"].sum() == 5
    pairs = legs.pairings(rel(), filters(), b_outcomes=("canceled",)).frame
    assert set(pairs["b_leg_uuid"]) == {"b-4", "b-5"}


def test_one_call_timeline_holds_every_webhook(sample: Path) -> None:
    timeline = calls.call_timeline(rel(), "in-001", "UTC").frame
    # 3 callbacks, the dial action and the hangup.
    assert len(timeline) == 5
    assert '"DialBLegUUID":"b-2"' in "".join(timeline["params"])
    legs = calls.call_b_legs(rel(), "in-001", "UTC").frame
    assert list(legs["outcome"]) == ["answered", "lost-race"]
    assert list(calls.search_calls(rel(), "out-00", "UTC").frame["call_uuid"].sort_values()) == [
        "out-001",
        "out-002",
        "out-003",
        "out-004",
    ]
    # A number typed in any common form finds the calls that stored it as "+15550001001" (the
    # caller of in-001, the called number of out-001).
    for typed in ("15550001001", "+1 555 000 1001", "001-555-000-1001", "(1) 555 0001001"):
        found = calls.search_calls(rel(), typed, "UTC").frame
        assert sorted(found["call_uuid"]) == ["in-001", "out-001"], typed


def test_receiver_totals_count_duplicates(sample: Path) -> None:
    totals = health.receiver_totals(rel(), filters()).frame.iloc[0]
    assert (totals["webhooks"], totals["duplicates"]) == (len(sample_events()), 1)


def test_values_are_bound_never_formatted(sample: Path) -> None:
    hostile = "x' OR 1=1 --"
    assert calls.search_calls(rel(), hostile, "UTC").frame.empty
    result = legs.pairings(rel(), filters(), search=hostile)
    assert hostile not in result.sql and result.params["search"] == hostile


# A relation read in FROM or JOIN: the views, and the tables the rollup refresh keeps.
VIEW_READ = re.compile(r"\b(?:FROM|JOIN)\s+(calls|dials|dial_legs)\b")
ROLLUP_READ = re.compile(r"\b(?:FROM|JOIN)\s+(calls_rollup|dials_rollup|dial_legs_rollup)\b")


def every_query(r: Relations, f: Filters) -> dict[str, base.Result]:
    """Every query that reads calls, Dials or B legs, as the pages call them."""
    found = {
        "kpis": overview.kpis(r, f),
        "rates_over_time": overview.rates_over_time(r, f),
        "outcomes_over_time": overview.outcomes_over_time(r, f),
        "heatmap dial": overview.answer_heatmap(r, f, "dial"),
        "heatmap call": overview.answer_heatmap(r, f, "call"),
        "fanout": legs.fanout(r, f),
        "winners_by_position": legs.winners_by_position(r, f),
        "destinations": legs.destinations(r, f),
        "outcome_matrix": legs.outcome_matrix(r, f),
        "ring_times": legs.ring_times(r, f),
        "abandoned": legs.abandoned(r, f),
        "pairings": legs.pairings(r, f),
        "pairings searched": legs.pairings(r, f, search="in-"),
        "search_calls": calls.search_calls(r, "", "UTC"),
        "search_calls text": calls.search_calls(r, "in-", "UTC"),
        "call_summary": calls.call_summary(r, "in-001", "UTC"),
        "call_b_legs": calls.call_b_legs(r, "in-001", "UTC"),
        "call_timeline": calls.call_timeline(r, "in-001", "UTC"),
    }
    for leg in ("a", "b"):
        found[f"by_cause {leg}"] = causes.by_cause(r, f, leg)
        found[f"by_source {leg}"] = causes.by_source(r, f, leg)
        found[f"over_time {leg}"] = causes.over_time(r, f, leg)
        found[f"legs_with_cause {leg}"] = causes.legs_with_cause(r, f, leg, "1000 Canceled")
    return found


def test_queries_read_the_rollups_exactly_when_they_are_current(
    sample: Path, request: pytest.FixtureRequest
) -> None:
    built = request.node.callspec.params["sample"] == "rollups"
    db = Database(sample, read_only=True)
    assert rollups.is_current(db.cursor()) == built
    db.close()
    r = rel()
    assert r is (ROLLUPS if built else VIEWS)
    for f in (filters(), filters(direction="inbound", destinations=("+1700",))):
        for name, result in every_query(r, f).items():
            views, tables = VIEW_READ.findall(result.sql), ROLLUP_READ.findall(result.sql)
            if built:
                assert tables and not views, (name, views)
            else:
                assert views and not tables, (name, tables)
        for result in (health.webhooks_per_kind(r, f), health.receiver_totals(r, f)):
            assert ("webhook_counts" in result.sql) == built


def test_rollups_behind_the_webhooks_are_not_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A webhook stored after the last refresh: the views are read, and they count it."""
    path = tmp_path / "behind.duckdb"
    database = Database(path)
    events = sample_events()
    store(database, events[:-1])
    rollups.refresh(database.cursor())
    store(database, events[-1:], start=T0 + timedelta(minutes=5))
    database.close()
    _on(path, monkeypatch)
    try:
        r = rel()
        kpi = overview.kpis(r, filters())
    finally:
        settings_module.get_settings.cache_clear()
    assert r is VIEWS
    assert "calls_rollup" not in kpi.sql and kpi.frame.iloc[0]["calls"] == 7


# Webhooks about 97 s apart on Nov 1st, across the end of daylight saving time in Los Angeles
# (-07:00 to -08:00 at 09:00 UTC), within a day of the sample's calls: the sample delivered
# eight times, then B legs without an A leg or a position.
SPREAD_START = datetime(2026, 11, 1, 6, 58, 41, tzinfo=UTC)
SPREAD_STEP = timedelta(seconds=97)
# (start, end) after SPREAD_START (the webhooks span 3 h 53 min): both ends inside 5-minute
# buckets, both on bucket edges, within one bucket, around everything.
RANGES = [
    (timedelta(minutes=7, seconds=13), timedelta(hours=2, minutes=2, seconds=31)),
    (timedelta(minutes=1, seconds=19), timedelta(hours=3, minutes=41, seconds=19)),
    (timedelta(minutes=2, seconds=50), timedelta(minutes=3, seconds=40)),
    (timedelta(minutes=-20), timedelta(hours=6)),
]


def spread_events() -> list[tuple[str, Params]]:
    odd: list[tuple[str, Params]] = [
        ("dial_callback", {"DialBLegUUID": "b-orphan-1", "DialAction": "answer"}),
        (
            "dial_callback",
            {
                "DialBLegUUID": "b-orphan-2",
                "DialAction": "hangup",
                "DialBLegHangupCauseCode": "3000",
            },
        ),
        *_b_leg("in-009", "b-9a", "+1700", 1, 4000, "Normal Hangup", True),
        *_b_leg("in-009", "b-9b", "+1701", 2, 9000, "Lost Race", False),
        *_b_leg("in-010", "b-10a", "+1700", 1, 3000, "No Answer", False),
    ]
    for _, params in odd[2:4]:
        del params["DialBLegPosition"]  # b-9a, on both of its callbacks
    return sample_events() * 8 + odd


@pytest.fixture(scope="module")
def spread(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same webhooks in two files: rollups refreshed between deliveries, and never."""
    events = spread_events()
    half = len(events) // 2
    files = {}
    for name in ("rollups", "views"):
        path = tmp_path_factory.mktemp(name) / f"{name}.duckdb"
        database = Database(path)
        tracker = DuplicateTracker()
        store(database, events[:half], start=SPREAD_START, step=SPREAD_STEP, tracker=tracker)
        if name == "rollups":
            rollups.refresh(database.cursor())
        later = SPREAD_START + half * SPREAD_STEP
        store(database, events[half:], start=later, step=SPREAD_STEP, tracker=tracker)
        if name == "rollups":
            rollups.refresh(database.cursor())
        database.close()
        files[name] = path
    return files


def _on(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALLSTATUS_DB", str(path))
    settings_module.get_settings.cache_clear()


@pytest.mark.parametrize("tz", ["UTC", "Asia/Kathmandu", "America/St_Johns", "America/Los_Angeles"])
def test_webhook_counts_give_the_rows_of_webhook_events(
    spread: dict[str, Path], monkeypatch: pytest.MonkeyPatch, tz: str
) -> None:
    for bucket in BUCKETS.values():
        for start, end in RANGES:
            f = Filters(start=SPREAD_START + start, end=SPREAD_START + end, bucket=bucket, tz=tz)
            results = {}
            for name, path in spread.items():
                _on(path, monkeypatch)
                results[name] = (
                    health.webhooks_per_kind(rel(), f),
                    health.receiver_totals(rel(), f),
                )
            per_kind, totals = results["rollups"]
            assert "webhook_counts" in per_kind.sql and "webhook_counts" in totals.sql
            assert "webhook_counts" not in results["views"][0].sql
            pd.testing.assert_frame_equal(per_kind.frame, results["views"][0].frame)
            pd.testing.assert_frame_equal(
                totals.frame.drop(columns="last_event_at"),
                results["views"][1].frame.drop(columns="last_event_at"),
            )
    settings_module.get_settings.cache_clear()


def test_webhooks_per_kind_counts_every_delivery(
    spread: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    events = spread_events()
    f = Filters(start=SPREAD_START, end=SPREAD_START + len(events) * SPREAD_STEP, bucket="1 day")
    for path in spread.values():
        _on(path, monkeypatch)
        frame = health.webhooks_per_kind(rel(), f).frame
        per_kind = frame.groupby("kind")[["webhooks", "duplicates"]].sum()
        kinds = pd.Series([kind for kind, _ in events]).value_counts()
        assert per_kind["webhooks"].to_dict() == kinds.to_dict()
        # Every delivery after the first of each webhook is a duplicate.
        firsts = len({(kind, str(sorted(params.items()))) for kind, params in events})
        assert per_kind["duplicates"].sum() == len(events) - firsts
        totals = health.receiver_totals(rel(), f).frame.iloc[0]
        assert (totals["webhooks"], totals["duplicates"]) == (len(events), len(events) - firsts)
    settings_module.get_settings.cache_clear()


# The plain definitions the faster SQL of winners_by_position and ring_times must equal.
WINNERS = """
, simultaneous AS (SELECT a_leg_uuid FROM scoped_legs GROUP BY a_leg_uuid HAVING count(*) > 1)
SELECT position, count(*) AS b_legs, count(*) FILTER (WHERE answered) AS wins,
       count(*) FILTER (WHERE outcome = 'lost-race') AS lost_race,
       count(*) FILTER (WHERE answered) / count(*) AS win_rate
FROM scoped_legs SEMI JOIN simultaneous USING (a_leg_uuid) GROUP BY position ORDER BY position
"""
RING_TIMES = """
, timed AS (
    SELECT CASE WHEN answered THEN 'time to answer' ELSE 'ring time, not answered' END AS measure,
           epoch(CASE WHEN answered THEN answered_at ELSE ended_at END - a_started_at) AS s
    FROM scoped_legs
    WHERE outcome NOT IN ('lost-race', 'in-progress') AND a_started_at IS NOT NULL)
SELECT measure, CAST(least(greatest(floor(s / $bin) * $bin, 0), $cap) AS INTEGER) AS seconds,
       count(*) AS legs
FROM timed WHERE s IS NOT NULL GROUP BY ALL ORDER BY measure, seconds
"""


def _plain(con: duckdb.DuckDBPyConnection, sql: str, params: dict[str, object]) -> pd.DataFrame:
    return con.execute(sql, {k: v for k, v in params.items() if f"${k}" in sql}).df()


@pytest.mark.parametrize("start", [timedelta(minutes=-20), timedelta(hours=3, minutes=30)])
def test_b_leg_figures_equal_their_plain_definitions(
    spread: dict[str, Path], monkeypatch: pytest.MonkeyPatch, start: timedelta
) -> None:
    f = Filters(start=SPREAD_START + start, end=SPREAD_START + timedelta(hours=6))
    params = {**f.params(), "bin": 1, "cap": 120}
    con = duckdb.connect(str(spread["views"]), read_only=True)
    try:
        expected = {
            name: _plain(con, base.with_(scopes.scoped_legs(VIEWS, f, a_leg=a_leg)) + body, params)
            for name, a_leg, body in [("winners", False, WINNERS), ("ring", True, RING_TIMES)]
        }
    finally:
        con.close()
    assert len(expected["winners"]) >= 2
    for path in spread.values():
        _on(path, monkeypatch)
        got = {
            "winners": legs.winners_by_position(rel(), f).frame,
            "ring": legs.ring_times(rel(), f, bin_s=1, cap_s=120).frame,
        }
        for name, frame in got.items():
            pd.testing.assert_frame_equal(frame, expected[name], check_dtype=True)
    settings_module.get_settings.cache_clear()


# rates_over_time as first written: every row bucketed in the chosen zone.
RATES = """
, c AS (SELECT time_bucket(CAST($bucket AS INTERVAL), timezone($tz, t)) AS bucket,
               count(*) AS calls,
               count(*) FILTER (WHERE outcome <> 'in-progress' AND answered)
               / nullif(count(*) FILTER (WHERE outcome <> 'in-progress'), 0) AS call_answer_rate
        FROM scoped_calls GROUP BY bucket)
, d AS (SELECT time_bucket(CAST($bucket AS INTERVAL), timezone($tz, t)) AS bucket,
               count(*) FILTER (WHERE dial_status = 'completed') / count(*) AS dial_answer_rate
        FROM scoped_dials GROUP BY bucket)
, l AS (SELECT time_bucket(CAST($bucket AS INTERVAL), timezone($tz, t)) AS bucket,
               count(*) FILTER (WHERE answered) / count(*) AS b_leg_answer_rate
        FROM scoped_legs GROUP BY bucket)
SELECT bucket, bucket + CAST($bucket AS INTERVAL) AS bucket_end, coalesce(c.calls, 0) AS calls,
       call_answer_rate, dial_answer_rate, b_leg_answer_rate
FROM c FULL JOIN d USING (bucket) FULL JOIN l USING (bucket) ORDER BY bucket
"""


@pytest.mark.parametrize("tz", ["UTC", "Asia/Kathmandu", "America/St_Johns", "America/Los_Angeles"])
def test_rates_over_time_equal_their_plain_definition(
    spread: dict[str, Path], monkeypatch: pytest.MonkeyPatch, tz: str
) -> None:
    for bucket in BUCKETS.values():
        for start, end in RANGES:
            f = Filters(start=SPREAD_START + start, end=SPREAD_START + end, bucket=bucket, tz=tz)
            sql = base.with_(
                scopes.scoped_calls(VIEWS),
                scopes.scoped_dials(VIEWS, f),
                scopes.scoped_legs(VIEWS, f, a_leg=False),
            )
            con = duckdb.connect(str(spread["views"]), read_only=True)
            try:
                expected = _plain(con, sql + RATES, f.params())
            finally:
                con.close()
            for path in spread.values():
                _on(path, monkeypatch)
                got = overview.rates_over_time(rel(), f).frame
                pd.testing.assert_frame_equal(got, expected, check_dtype=True)
    settings_module.get_settings.cache_clear()


@pytest.mark.parametrize("on_rollups", [True, False])
def test_call_timeline_collapses_repeats_and_stays_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, on_rollups: bool
) -> None:
    """A webhook replayed 300 times is one entry; past the cap, entries are counted only."""
    path = tmp_path / "replayed.duckdb"
    database = Database(path)
    hangup = _hangup("rep-001", "inbound", 4000, "Normal Hangup", "NORMAL_CLEARING", 30, True)
    rings = [
        ("ring", {"CallUUID": "rep-001", "Direction": "inbound", "Seq": str(i)}) for i in range(250)
    ]
    store(database, [hangup] * 300 + rings, step=timedelta(milliseconds=10))
    if on_rollups:
        rollups.refresh(database.cursor())
    database.close()
    monkeypatch.setenv("CALLSTATUS_DB", str(path))
    settings_module.get_settings.cache_clear()
    try:
        timeline = calls.call_timeline(rel(), "rep-001", "UTC", limit=200)
    finally:
        settings_module.get_settings.cache_clear()
    # On the rollups the call's span bounds the scan of webhook_events; the views scan it all.
    assert ("received_at >= $lo" in timeline.sql) == on_rollups
    assert ("dial_legs_rollup" in timeline.sql) == on_rollups
    frame = timeline.frame
    assert len(frame) == 200
    first = frame.iloc[0]
    assert (first["kind"], first["deliveries"], bool(first["duplicate"])) == ("hangup", 300, True)
    assert first["last_received"] > first["received"]
    assert (frame["entries"].iloc[0], frame["webhooks"].iloc[0]) == (251, 550)
    assert frame["deliveries"].iloc[1:].eq(1).all() and not frame["duplicate"].iloc[1:].any()
    assert frame["received"].is_monotonic_increasing
