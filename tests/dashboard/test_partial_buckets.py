"""The overview's paler volume bars: buckets the range covers only in part."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from callstatus.cli import main as callstatus
from callstatus.core import settings as settings_module
from callstatus.dashboard import charts
from callstatus.dashboard.filters import Filters, resolve_range

APP = str(Path(__file__).resolve().parents[2] / "callstatus" / "dashboard" / "app.py")
BERLIN = "Europe/Berlin"


def _days(*firsts: str) -> pd.DataFrame:
    bucket = pd.to_datetime(list(firsts))
    return pd.DataFrame(
        {
            "bucket": bucket,
            "bucket_end": bucket + pd.Timedelta(days=1),
            "calls": range(1, len(firsts) + 1),
            "call_answer_rate": 0.5,
            "dial_answer_rate": 0.5,
            "b_leg_answer_rate": 0.5,
        }
    )


def test_wall_clock_is_the_zones_and_stops_at_now() -> None:
    # 2026-10-25: Berlin leaves summer time at 03:00 (UTC+2 before, UTC+1 after).
    f = Filters(
        start=datetime(2026, 10, 24, 22, 30, tzinfo=UTC),
        end=datetime(2026, 10, 27, 9, 0, tzinfo=UTC),
        tz=BERLIN,
    )
    assert f.wall_clock() == (datetime(2026, 10, 25, 0, 30), datetime(2026, 10, 27, 10, 0))
    now = datetime(2026, 10, 26, 5, 15, tzinfo=UTC)
    assert f.wall_clock(now) == (datetime(2026, 10, 25, 0, 30), datetime(2026, 10, 26, 6, 15))


def test_first_and_last_buckets_cut_by_the_range_are_partial() -> None:
    frame = _days("2026-10-25", "2026-10-26", "2026-10-27")
    span = (datetime(2026, 10, 25, 0, 30), datetime(2026, 10, 27, 10, 0))
    assert charts.partial_buckets(frame, span).tolist() == [True, False, True]
    # Whole days, as a custom range of past days gives: nothing partial.
    whole = (datetime(2026, 10, 25), datetime(2026, 10, 28))
    assert charts.partial_buckets(frame, whole).tolist() == [False, False, False]


def test_the_chart_draws_partial_buckets_paler() -> None:
    frame = _days("2026-10-25", "2026-10-26", "2026-10-27")
    span = (datetime(2026, 10, 25, 0, 30), datetime(2026, 10, 27, 10, 0))
    spec = charts.rates_with_volume(frame, "dial answer rate", BERLIN, span).to_dict()
    bars = spec["vconcat"][1]
    rows = spec["datasets"][bars["data"]["name"]]
    assert [row["covered"] for row in rows] == [
        charts.PART_OF_BUCKET,
        charts.WHOLE_BUCKET,
        charts.PART_OF_BUCKET,
    ]
    opacity = bars["encoding"]["opacity"]
    assert opacity["condition"]["value"] == 0.4 and opacity["value"] == 1.0
    assert charts.PART_OF_BUCKET in opacity["condition"]["test"]
    # Without a span (no range known), every bar as before: no opacity, no extra tooltip.
    plain = charts.rates_with_volume(frame, "dial answer rate", BERLIN).to_dict()
    assert "opacity" not in plain["vconcat"][1]["encoding"]


def test_how_calls_ended_draws_partial_buckets_paler_too() -> None:
    frame = _days("2026-10-25", "2026-10-26").assign(outcome=["answered", "busy"])
    span = (datetime(2026, 10, 25, 0, 30), datetime(2026, 10, 27))
    spec = charts.outcomes_stacked(frame, BERLIN, span=span).to_dict()
    rows = spec["datasets"][spec["data"]["name"]]
    assert [row["covered"] for row in rows] == [charts.PART_OF_BUCKET, charts.WHOLE_BUCKET]
    assert spec["encoding"]["opacity"]["condition"]["value"] == 0.4
    assert "opacity" not in charts.outcomes_stacked(frame, BERLIN).to_dict()["encoding"]


@pytest.fixture
def seeded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    path = tmp_path / "seeded.duckdb"
    assert (
        callstatus(["seed", "--db", str(path), "--calls", "60", "--days", "3", "--seed", "5"]) == 0
    )
    monkeypatch.setenv("CALLSTATUS_DB", str(path))
    settings_module.get_settings.cache_clear()
    yield path
    settings_module.get_settings.cache_clear()


def _notes(at: AppTest) -> list[str]:
    return [c.value for c in at.caption if c.value.startswith("Paler bars")]


def _calls_since(path: Path, since: datetime) -> int:
    con = duckdb.connect(str(path), read_only=True)
    try:
        row = con.execute("SELECT count(*) FROM calls WHERE started_at >= ?", [since]).fetchone()
    finally:
        con.close()
    assert row is not None
    return int(row[0])


def test_overview_says_which_bars_are_paler(seeded: Path) -> None:
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["range"] = "Last 24 hours"
    at.query_params["bucket"] = "day"
    at.run()
    assert not at.exception
    # Daily buckets of the last 24 hours: yesterday's starts before the range, today's is
    # still filling, so any call in the range stands in a partial bucket.
    now = datetime.now(UTC)
    start, _ = resolve_range("Last 24 hours", now, None, "UTC", None)
    assert _calls_since(seeded, start) > 0, "the seed left the last 24 hours empty"
    [note] = _notes(at)
    assert f"it covers {start:%Y-%m-%d %H:%M} to {now:%Y-%m-%d}" in note

    # The last 7 days by day: the seed's 3 days leave the first bucket empty, so only
    # today's bucket can be partial, and only if a call started today.
    at.query_params["range"] = "Last 7 days"
    at.run()
    assert not at.exception
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    assert len(_notes(at)) == (1 if _calls_since(seeded, midnight) else 0)


def test_overview_says_what_grey_heatmap_cells_mean(seeded: Path) -> None:
    # 60 calls over 3 days: no weekday-hour cell reaches MIN_CELL Dials.
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["range"] = "Last 7 days"
    at.run()
    assert not at.exception
    grey = [c.value for c in at.caption if c.value.startswith("Grey cells")]
    assert grey == [
        f"Grey cells: fewer than {charts.MIN_CELL} Dials in that hour, too few for a rate."
    ]
    at.segmented_control(key="heat").set_value("call").run()
    assert not at.exception
    grey = [c.value for c in at.caption if c.value.startswith("Grey cells")]
    assert grey == [
        f"Grey cells: fewer than {charts.MIN_CELL} calls in that hour, too few for a rate."
    ]
