"""The hourly aggregates (migration 0015) against the rollups they summarise.

Simulated calls across the end of daylight saving time in New York (06:00 UTC, Nov 1st 2026),
stored in batches with an incremental refresh after each, then the hangups of early calls
arriving hours late: the aggregates equal a full rebuild, and every page query reading them
gives the rollups' own answer, for ranges cut inside hours, whole-hour and non-whole-hour zones,
each sidebar slice, and both bucket sizes the aggregates serve. Percentiles read from the
timing histograms are within one bin of the exact ones.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import pytest

from callstatus.core import rollups
from callstatus.core import settings as settings_module
from callstatus.core.db import Database
from callstatus.core.duplicates import DuplicateTracker
from callstatus.core.records import make_record
from callstatus.dashboard.filters import Filters
from callstatus.dashboard.queries import (
    causes,
    concurrency,
    destinations,
    facts,
    legs,
    overview,
    sidebar,
    timing,
)
from callstatus.dashboard.queries.base import Result
from callstatus.dashboard.queries.relations import ROLLUPS, ROLLUPS_ONLY
from callstatus.simulator.traffic import TrafficModel
from tests.factories import deliver, model_records, split

FIRST = datetime(2026, 10, 31, 22, 0, tzinfo=UTC)
CALLS = 900
STEP_S = 60.0  # 15 hours of calls
LATE = 12  # early calls whose hangup arrives hours late


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    path = tmp_path_factory.mktemp("hourly") / "hourly.duckdb"
    db = Database(path)
    rng = random.Random(5)
    records = model_records(
        TrafficModel(11), [FIRST.timestamp() + STEP_S * i for i in range(CALLS)]
    )
    records.sort(key=lambda r: r.received_at)
    held = [r for r in records[:1500] if r.kind == "hangup"][:LATE]
    assert len(held) == LATE
    kept = [r for r in records if all(r is not h for h in held)]
    tracker = DuplicateTracker()
    for batch in split(kept, 6, rng):
        deliver(db, batch, tracker)
        rollups.refresh(db.cursor())
    last = max(r.received_at for r in records)
    late = [
        make_record(r.kind, r.http_method, r.params, "unchecked", last + timedelta(hours=2))
        for r in held
    ]
    deliver(db, late, tracker)
    assert rollups.refresh(db.cursor()) == LATE
    cur = db.cursor()
    incremental = {
        a.table: cur.execute(f"SELECT * FROM {a.table} ORDER BY ALL").fetchall()
        for a in rollups.AGGREGATES
    }
    numbers = cur.execute(
        "SELECT our_number FROM calls_hourly WHERE our_number IS NOT NULL"
        " GROUP BY 1 ORDER BY sum(calls) DESC LIMIT 1"
    ).fetchall()[0][0]
    country = cur.execute(
        "SELECT country FROM calls_hourly WHERE country IS NOT NULL"
        " GROUP BY 1 ORDER BY sum(calls) DESC LIMIT 1"
    ).fetchall()[0][0]
    b_number = cur.execute(
        "SELECT b_leg_to FROM legs_hourly WHERE b_leg_to IS NOT NULL"
        " GROUP BY 1 ORDER BY sum(legs) DESC LIMIT 1"
    ).fetchall()[0][0]
    rollups.refresh(cur, full=True)
    rebuilt = {
        a.table: cur.execute(f"SELECT * FROM {a.table} ORDER BY ALL").fetchall()
        for a in rollups.AGGREGATES
    }
    db.close()
    old = os.environ.get("CALLSTATUS_DB")
    os.environ["CALLSTATUS_DB"] = str(path)
    settings_module.get_settings.cache_clear()
    yield {
        "incremental": incremental,
        "rebuilt": rebuilt,
        "number": numbers,
        "country": country,
        "b_number": b_number,
    }
    if old is None:
        del os.environ["CALLSTATUS_DB"]
    else:
        os.environ["CALLSTATUS_DB"] = old
    settings_module.get_settings.cache_clear()


def test_incremental_refreshes_and_late_webhooks_equal_a_rebuild(built: dict[str, Any]) -> None:
    for table, rows in built["rebuilt"].items():
        assert rows, table
        assert built["incremental"][table] == rows, table


# Ends cut inside hours, and a range starting on an hour; the DST change inside all of them.
RANGES = [
    (FIRST + timedelta(minutes=17, seconds=23), FIRST + timedelta(hours=14, minutes=41, seconds=5)),
    (FIRST + timedelta(hours=2), FIRST + timedelta(hours=16)),
    (FIRST - timedelta(hours=3), FIRST + timedelta(hours=40)),
]


def _slices(built: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {},
        {"direction": "inbound"},
        {"direction": "outbound"},
        {"numbers": (built["number"],)},
        {"countries": (built["country"],)},
        {"destinations": (built["b_number"],)},
    ]


QueryFn = Callable[[Any, Filters], Result]
EXACT: dict[str, QueryFn] = {
    "kpis": overview.kpis,
    "rates_over_time": overview.rates_over_time,
    "outcomes_over_time": overview.outcomes_over_time,
    "heatmap call": lambda r, f: overview.answer_heatmap(r, f, "call"),
    "heatmap dial": lambda r, f: overview.answer_heatmap(r, f, "dial"),
    "by_cause a": lambda r, f: causes.by_cause(r, f, "a"),
    "by_cause b unanswered": lambda r, f: causes.by_cause(r, f, "b", False),
    "by_source a": lambda r, f: causes.by_source(r, f, "a"),
    "by_source b": lambda r, f: causes.by_source(r, f, "b"),
    "causes over_time a": lambda r, f: causes.over_time(r, f, "a"),
    "causes over_time b": lambda r, f: causes.over_time(r, f, "b", top=3),
    "by_country": destinations.by_country,
    "outcomes_by_country": lambda r, f: destinations.outcomes_by_country(r, f, None, 5),
    "outcomes_by_country inbound": lambda r, f: destinations.outcomes_by_country(r, f, "inbound"),
    "legs_by_country": destinations.legs_by_country,
    "by_our_number": destinations.by_our_number,
    "leg destinations": legs.destinations,
    "outcome_matrix": legs.outcome_matrix,
    "ring_times": lambda r, f: legs.ring_times(r, f, cap_s=120),
    "ring_times by 1 s": lambda r, f: legs.ring_times(r, f, bin_s=1, cap_s=60),
    "concurrency A": lambda r, f: concurrency.over_time(r, f, concurrency.A_LEGS),
    "legs_with_cause a": lambda r, f: causes.legs_with_cause(
        r, f, "a", "4000 Normal Hangup", limit=40
    ),
    "legs_with_cause b": lambda r, f: causes.legs_with_cause(
        r, f, "b", "4000 Normal Hangup", limit=40
    ),
    "pairings": lambda r, f: legs.pairings(r, f, limit=40),
    "pairings answered": lambda r, f: legs.pairings(r, f, ("answered",), limit=40),
    "concurrency B": lambda r, f: concurrency.over_time(r, f, concurrency.B_LEGS),
}


LISTINGS = {name for name in EXACT if name.startswith(("legs_with_cause", "pairings"))}


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows in one order: ties in a query's ORDER BY may come either way."""
    return frame.sort_values(list(frame.columns)).reset_index(drop=True)


@pytest.mark.parametrize(
    ("tz", "bucket"), [("UTC", "1 hour"), ("America/New_York", "1 day"), ("Asia/Kolkata", "1 hour")]
)
def test_every_query_on_the_aggregates_equals_the_rollups(
    built: dict[str, Any], tz: str, bucket: str
) -> None:
    used = 0
    for start, end in RANGES:
        for extra in _slices(built):
            f = Filters(start=start, end=end, bucket=bucket, tz=tz, **extra)
            for name, query in EXACT.items():
                got, expected = query(ROLLUPS, f), query(ROLLUPS_ONLY, f)
                used += "_hourly" in got.sql
                assert "_hourly" not in expected.sql
                assert expected.params.get("start", start) == start
                pd.testing.assert_frame_equal(
                    _sorted(got.frame),
                    _sorted(expected.frame),
                    check_dtype=True,
                    rtol=1e-12,
                    obj=f"{name} {f}",
                )
    assert used > 0


def test_the_default_view_reads_the_aggregates(built: dict[str, Any]) -> None:
    """Whole-hour zones, no B-destination filter: every converted query reads the tables."""
    start, end = RANGES[0]
    for tz in ("UTC", "America/New_York"):
        f = Filters(start=start, end=end, bucket="1 day", tz=tz)
        for name, query in EXACT.items():
            result = query(ROLLUPS, f)
            if name in LISTINGS:  # the newest rows: their hours found from the aggregates
                assert result.params["start"] > f.start, name
            else:
                assert "_hourly" in result.sql, name
        assert "timings_hourly" in timing.figures(ROLLUPS, f).sql
        assert "timings_hourly" in destinations.per_destination(ROLLUPS, f).sql
    # Kolkata's half-hour offset cuts UTC hours: the bucketed queries read the rollups.
    f = Filters(start=start, end=end, bucket="1 day", tz="Asia/Kolkata")
    assert facts.hours(ROLLUPS, f) is None
    assert "_hourly" not in overview.rates_over_time(ROLLUPS, f).sql
    assert "_hourly" in overview.kpis(ROLLUPS, f).sql  # not bucketed: any zone


def _width_s(seconds: float) -> float:
    """The width of the histogram bin holding `seconds`."""
    return 0.1 if seconds < 10 else 1.0 if seconds < 600 else 60.0


@pytest.mark.parametrize("tz", ["UTC", "America/New_York"])
def test_timing_percentiles_are_within_a_bin_of_the_exact_ones(
    built: dict[str, Any], tz: str
) -> None:
    for start, end in RANGES:
        f = Filters(start=start, end=end, bucket="1 hour", tz=tz)
        got = timing.figures(ROLLUPS, f).frame
        exact = timing.figures(ROLLUPS_ONLY, f).frame
        keys = ["level", "bucket", "destination", "measure"]
        both = exact.merge(got, on=keys, how="outer", suffixes=("", "_hist"), indicator=True)
        assert (both["_merge"] == "both").all()
        assert (both["legs"] == both["legs_hist"]).all()
        assert len(both) > 50
        for column in ("median_s", "p90_s"):
            for value, estimate in zip(both[column], both[f"{column}_hist"], strict=True):
                width = _width_s(max(value, estimate))
                assert abs(value - estimate) <= width + 1e-9, (column, value, estimate)
        per_destination = destinations.per_destination(ROLLUPS, f).frame
        exact_destination = destinations.per_destination(ROLLUPS_ONLY, f).frame
        pd.testing.assert_frame_equal(
            per_destination.drop(columns="median_answer_s"),
            exact_destination.drop(columns="median_answer_s"),
            check_dtype=True,
            rtol=1e-12,
        )
        for value, estimate in zip(
            exact_destination["median_answer_s"], per_destination["median_answer_s"], strict=True
        ):
            if pd.isna(value):
                assert pd.isna(estimate)
            else:
                assert abs(value - estimate) <= _width_s(max(value, estimate)) + 1e-9


def test_sidebar_choices_from_the_aggregates(built: dict[str, Any]) -> None:
    assert set(sidebar.our_numbers(ROLLUPS)) == set(sidebar.our_numbers(ROLLUPS_ONLY))
    assert set(sidebar.destinations_list(ROLLUPS)) == set(sidebar.destinations_list(ROLLUPS_ONLY))
    assert destinations.countries(ROLLUPS) == destinations.countries(ROLLUPS_ONLY)
