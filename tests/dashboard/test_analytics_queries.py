"""Timing, concurrency and destination figures against hand computations on analytics_sample."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from callstatus.core import rollups
from callstatus.core import settings as settings_module
from callstatus.core.db import Database
from callstatus.dashboard import connection
from callstatus.dashboard.filters import Filters
from callstatus.dashboard.queries import concurrency, destinations, timing
from callstatus.dashboard.queries.relations import Relations
from tests.dashboard import analytics_sample as sample
from tests.dashboard.analytics_sample import AGENT, END, SIP_AGENT, START


@pytest.fixture(scope="module", params=["rollups", "views"])
def analytics_db(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp(request.param) / "analytics.duckdb"
    database = Database(path)
    sample.write(database)
    if request.param == "rollups":
        rollups.refresh(database.cursor())
    else:
        # The views read the countries the refresh learnt, without the rollups being current.
        rollups.refresh(database.cursor())
        database.cursor().execute("DELETE FROM rollup_state")
    database.close()
    return path


@pytest.fixture
def rel(analytics_db: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Relations]:
    monkeypatch.setenv("CALLSTATUS_DB", str(analytics_db))
    settings_module.get_settings.cache_clear()
    found = connection.relations()
    assert found.stored == ("rollups" in analytics_db.parent.name)
    yield found
    settings_module.get_settings.cache_clear()


def filters(**kwargs: object) -> Filters:
    return Filters(start=START, end=END, bucket="5 minutes", **kwargs)  # type: ignore[arg-type]


def _by(frame: pd.DataFrame, *keys: str) -> dict[object, pd.Series]:
    index = frame.set_index(list(keys))
    return {key: index.loc[key] for key in index.index}


def p90(values: list[float]) -> float:
    """quantile_cont(0.9): linear between the two ranks around 0.9 * (n - 1)."""
    ordered = sorted(values)
    rank = 0.9 * (len(ordered) - 1)
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (rank - low) * (ordered[high] - ordered[low])


def test_post_dial_delay_and_ring_time(rel: Relations) -> None:
    got = _by(timing.summary(rel, filters()).frame, "measure")
    # PDD: o1 rang 2 s after its start, o2 4 s, o4 answered 5 s after it without ringing;
    # o3 (busy at once) neither rang nor answered.
    pdd = got[timing.PDD]
    assert (pdd["legs"], pdd["median_s"]) == (3, pytest.approx(4.0))
    assert pdd["p90_s"] == pytest.approx(p90([2, 4, 5]))
    # Ring time: o1 ring 2 -> answer 10, o2 ring 34 -> hangup 64, o4 start 180 -> answer 185.
    ring = got[timing.RING]
    assert (ring["legs"], ring["median_s"]) == (3, pytest.approx(8.0))
    assert ring["p90_s"] == pytest.approx(p90([8, 30, 5]))
    # B legs from the Dial's start (the A leg's answer): b1 answered 11 - 1 s, b3 gave up at
    # 331 - 301 s; b2 lost the race and is in neither.
    assert got[timing.B_ANSWER]["median_s"] == pytest.approx(10.0)
    assert got[timing.B_GIVE_UP]["median_s"] == pytest.approx(30.0)
    assert got[timing.B_ANSWER]["legs"] == got[timing.B_GIVE_UP]["legs"] == 1


def test_timing_over_time_and_per_destination(rel: Relations) -> None:
    per_bucket = _by(timing.over_time(rel, filters()).frame, "bucket", "measure")
    first = pd.Timestamp("2026-11-02 09:00:00")
    assert per_bucket[(first, timing.PDD)]["legs"] == 3
    assert per_bucket[(pd.Timestamp("2026-11-02 09:05:00"), timing.B_GIVE_UP)]["legs"] == 1
    where = _by(timing.per_destination(rel, filters()).frame, "destination", "measure")
    assert where[("GB", timing.PDD)]["median_s"] == pytest.approx(3.5)  # o1 2 s, o4 5 s
    assert where[("US", timing.PDD)]["median_s"] == pytest.approx(4.0)
    assert where[(AGENT, timing.B_ANSWER)]["median_s"] == pytest.approx(10.0)
    assert where[(AGENT, timing.B_GIVE_UP)]["median_s"] == pytest.approx(30.0)
    assert (SIP_AGENT, timing.B_ANSWER) not in where


def test_concurrency_is_exact_at_bucket_edges(rel: Relations) -> None:
    got = _by(_both(rel, filters()), "bucket", "series")
    first, second = pd.Timestamp("2026-11-02 09:00:00"), pd.Timestamp("2026-11-02 09:05:00")
    # A legs in 09:00-09:05, i3 (from before the range to 07:30) under everything:
    # 0-30 s o1 i1 (+i3), 30-60 o1 o2 i1, 60-64 o2 i1, 64-120 i1, 120-121 o3 alone (i1 ended
    # as it began: not counted together), 121-180 none, 180-300 o4.
    held = 2 * 30 + 3 * 30 + 2 * 4 + 1 * 56 + 1 * 1 + 0 * 59 + 1 * 120
    a1 = got[(first, concurrency.A_LEGS)]
    assert a1["peak"] == 4
    assert a1["mean"] == pytest.approx((held + 300) / 300)
    # o4 ends exactly at 09:05: not in the second bucket. i2 300-340 and i3 until 450.
    a2 = got[(second, concurrency.A_LEGS)]
    assert a2["peak"] == 2
    assert a2["mean"] == pytest.approx((40 + 150) / 300)
    # B legs from the Dial's start (A answered at 1 s): b1 1-119, b2 1-11.1; b3 301-331.
    b1 = got[(first, concurrency.B_LEGS)]
    assert b1["peak"] == 2
    assert b1["mean"] == pytest.approx((2 * 10.1 + 1 * 107.9) / 300)
    b2 = got[(second, concurrency.B_LEGS)]
    assert (b2["peak"], b2["mean"]) == (1, pytest.approx(30 / 300))


def test_concurrency_spans_several_buckets(rel: Relations) -> None:
    # One-minute buckets: i3 is up in the first eight (until 7:30); i1 in the first two.
    calls = concurrency.over_time(rel, replace(filters(), bucket="1 minute")).frame
    calls = calls.set_index("bucket")
    assert len(calls) == 10
    assert list(calls["peak"]) == [4, 3, 2, 2, 2, 2, 1, 1, 0, 0]
    minute = pd.Timestamp("2026-11-02 09:01:00")
    # 60-64 s: o2 i1 i3; 64-120: i1 i3.
    assert calls.loc[minute, "peak"] == 3
    assert calls.loc[minute, "mean"] == pytest.approx((3 * 4 + 2 * 56) / 60)
    # 7:30 to 8:00: nobody left after i3.
    assert calls.loc[pd.Timestamp("2026-11-02 09:07:00"), "mean"] == pytest.approx(0.5)


def _both(rel: Relations, f: Filters) -> pd.DataFrame:
    return pd.concat(
        [concurrency.over_time(rel, f, s).frame for s in (concurrency.A_LEGS, concurrency.B_LEGS)]
    )


def test_peak_and_when(rel: Relations) -> None:
    row = concurrency.peak(rel, filters()).frame.iloc[0]
    assert row["peak"] == 4
    assert row["at"] == pd.Timestamp("2026-11-02 09:00:30")  # o2 joins o1, i1, i3
    # The same from the buckets' own peaks (what the Timing page's tile reads).
    assert concurrency.peak_of(concurrency.over_time(rel, filters()).frame) == (
        4,
        pd.Timestamp("2026-11-02 09:00:30"),
    )
    b = concurrency.peak(rel, filters(), concurrency.B_LEGS).frame.iloc[0]
    assert (b["peak"], b["at"]) == (2, pd.Timestamp("2026-11-02 09:00:01"))


def test_today_is_midnight_to_now_in_the_zone() -> None:
    f = Filters(START, END, tz="Europe/Berlin")
    now = datetime(2026, 11, 2, 23, 30, 10, tzinfo=UTC)  # already 3 November in Berlin
    day = concurrency.today(f, now)
    assert day.start == datetime(2026, 11, 2, 23, 0, tzinfo=UTC)
    assert day.end == datetime(2026, 11, 2, 23, 31, tzinfo=UTC)


def test_country_filter_slices_every_figure(rel: Relations) -> None:
    gb = filters(countries=("GB",))
    got = _by(timing.summary(rel, gb).frame, "measure")
    assert got[timing.PDD]["median_s"] == pytest.approx(3.5)  # o1 and o4 only
    assert timing.B_ANSWER not in got  # i1's caller is in India
    assert got[timing.B_GIVE_UP]["median_s"] == pytest.approx(30.0)  # i2 from a GB mobile
    peaks = _by(_both(rel, gb), "bucket", "series")
    first = peaks[(pd.Timestamp("2026-11-02 09:00:00"), concurrency.A_LEGS)]
    assert (first["peak"], first["mean"]) == (1, pytest.approx(180 / 300))  # o1, o4
    rows = destinations.by_country(rel, gb).frame
    assert set(rows["country"]) == {"GB"} and rows["calls"].sum() == 3


def test_outcomes_by_country(rel: Relations) -> None:
    got = _by(destinations.by_country(rel, filters()).frame, "direction", "country")
    assert set(got) == {
        ("outbound", "GB"),
        ("outbound", "US"),
        ("outbound", "DE"),
        ("inbound", "IN"),
        ("inbound", "GB"),
    }  # i3 started before the range
    gb = got[("outbound", "GB")]
    assert (gb["calls"], gb["answered"], gb["call_answer_rate"]) == (2, 2, 1.0)
    assert got[("outbound", "US")]["no_answer"] == 1
    assert got[("outbound", "DE")]["busy"] == 1
    chart = destinations.outcomes_by_country(rel, filters()).frame
    assert chart.groupby("country")["calls"].sum().to_dict() == {"DE": 1, "GB": 3, "IN": 1, "US": 1}
    outbound = destinations.outcomes_by_country(rel, filters(), "outbound").frame
    assert outbound.groupby("country")["calls"].sum().to_dict() == {"DE": 1, "GB": 2, "US": 1}


def test_b_legs_by_country_and_our_numbers(rel: Relations) -> None:
    legs = _by(destinations.legs_by_country(rel, filters()).frame, "country")
    assert (legs["US"]["b_legs"], legs["US"]["answered"]) == (2, 1)
    assert (legs["SIP"]["b_legs"], legs["SIP"]["lost_race"]) == (1, 1)
    ours = _by(destinations.by_our_number(rel, filters()).frame, "our_number")
    main = ours[sample.OURS]  # o1-o4 (our caller ID) and i1
    assert (main["calls"], main["answered"], main["call_answer_rate"]) == (5, 3, 0.6)
    assert (main["dials"], main["dial_answer_rate"]) == (1, 1.0)
    other = ours[sample.OTHER_OURS]
    assert (other["calls"], other["dials"], other["dial_answer_rate"]) == (1, 1, 0.0)


def test_a_row_per_b_destination(rel: Relations) -> None:
    got = _by(destinations.per_destination(rel, filters()).frame, "destination")
    agent = got[AGENT]
    assert (agent["dialled"], agent["answered"], agent["lost_races"]) == (2, 1, 0)
    assert agent["median_answer_s"] == pytest.approx(10.0)
    assert (agent["talk_s"], agent["country"], agent["line_type"]) == (
        108,
        "US",
        "fixed_line_or_mobile",
    )
    sip = got[SIP_AGENT]
    assert (sip["dialled"], sip["answered"], sip["lost_races"], sip["line_type"]) == (
        1,
        0,
        1,
        "sip",
    )
    assert pd.isna(sip["median_answer_s"])


def test_countries_for_the_sidebar(rel: Relations) -> None:
    # Far ends of every stored call, most calls first: GB (o1, o4, i2), US (o2, i3), DE, IN.
    assert destinations.countries(rel) == ["GB", "US", "DE", "IN"]
    assert START < END < START + timedelta(hours=1)
