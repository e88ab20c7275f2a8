"""The previous range without data is not drawn as zeros, one with real zeros is; every
over-time chart (overview, Timing, Hangup causes, Receiver health) takes the overlay, and its
CSV keeps both series. On the hand-timed sample: stored calls begin at 08:58 (i3)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from callstatus.core import rollups
from callstatus.core import settings as settings_module
from callstatus.core.db import Database
from callstatus.dashboard import analytics_charts, charts, comparison, connection
from callstatus.dashboard.filters import Filters
from callstatus.dashboard.queries import causes, concurrency, health
from callstatus.dashboard.queries.relations import Relations
from tests.dashboard import analytics_sample as sample
from tests.factories import T0

APP = str(Path(__file__).resolve().parents[2] / "callstatus" / "dashboard" / "app.py")


@pytest.fixture(scope="module")
def sample_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("gaps") / "analytics.duckdb"
    database = Database(path)
    sample.write(database)
    rollups.refresh(database.cursor())
    database.close()
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("CALLSTATUS_DB", str(path))
        settings_module.get_settings.cache_clear()
        yield path
    settings_module.get_settings.cache_clear()


@pytest.fixture
def rel(sample_db: Path) -> Relations:
    return connection.relations()


def _range(first_min: int, last_min: int) -> Filters:
    return Filters(
        T0 + timedelta(minutes=first_min), T0 + timedelta(minutes=last_min), bucket="5 minutes"
    )


def _previous(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["period"] == comparison.PREVIOUS]


def _chart_rows(figure: Any) -> list[dict[str, Any]]:
    """Every data row a chart's specification carries (Altair keeps them in `datasets`)."""
    return [row for rows in figure.to_dict()["datasets"].values() for row in rows]


def test_no_data_before_the_first_call_is_no_line_and_a_note(rel: Relations) -> None:
    # 08:50-09:00 compared with 08:40-08:50: nothing was stored before 08:58.
    result = comparison.overlay(concurrency.over_time, rel, _range(-10, 0))
    assert _previous(result.frame).empty
    assert set(result.frame["period"]) == {comparison.CURRENT}
    note = result.params[comparison.NOTE]
    assert note.startswith("No data for the previous range (2026-11-02 08:40 to 2026-11-02 08:50)")
    assert "2026-11-02 08:58" in note
    figure = analytics_charts.concurrency_over_time(result.frame, concurrency.A_LEGS, "UTC")
    spec = figure.to_dict()
    assert "strokeDash" not in spec["encoding"]  # no dashed line, no legend entry for it
    assert {row["period"] for row in _chart_rows(figure)} == {comparison.CURRENT}


def test_real_zeros_are_drawn(rel: Relations) -> None:
    # 09:20-09:30 compared with 09:10-09:20: covered by the data, and nobody was on a call.
    result = comparison.overlay(concurrency.over_time, rel, _range(20, 30))
    before = _previous(result.frame)
    buckets = [pd.Timestamp("2026-11-02 09:20"), pd.Timestamp("2026-11-02 09:25")]
    assert list(before["bucket"]) == buckets
    assert list(before["peak"]) == [0, 0] and list(before["mean"]) == [0, 0]
    assert comparison.NOTE not in result.params
    figure = analytics_charts.concurrency_over_time(result.frame, concurrency.A_LEGS, "UTC")
    assert figure.to_dict()["encoding"]["strokeDash"]["field"] == "period"
    drawn = [r for r in _chart_rows(figure) if r["period"] == comparison.PREVIOUS]
    assert len(drawn) == 4 and {r["value"] for r in drawn} == {0}  # peak and mean, 2 buckets


def test_a_partly_covered_previous_range_starts_where_the_data_does(rel: Relations) -> None:
    # 09:00-09:10 compared with 08:50-09:00: 08:50-08:55 has no data, 08:55-09:00 holds i3
    # from 08:58 (2 of its 5 minutes).
    result = comparison.overlay(concurrency.over_time, rel, _range(0, 10))
    before = _previous(result.frame)
    assert list(before["compared_bucket"]) == [pd.Timestamp("2026-11-02 08:55")]
    assert list(before["bucket"]) == [pd.Timestamp("2026-11-02 09:05")]
    assert (before["peak"].iloc[0], before["mean"].iloc[0]) == (1, pytest.approx(0.4))
    assert "only from 2026-11-02 08:58" in result.params[comparison.NOTE]


def test_hangup_causes_and_webhooks_overlaid_with_both_series_in_the_csv(rel: Relations) -> None:
    # 09:05-09:10 against 09:00-09:05, one bucket each.
    f = _range(5, 10)

    def a_causes(r: Relations, g: Filters) -> Any:
        return causes.over_time(r, g, "a")

    for query, value in ((a_causes, "legs"), (health.webhooks_per_kind, "webhooks")):
        result = comparison.overlay(query, rel, f)
        frame = result.frame
        assert set(frame["period"]) == {comparison.CURRENT, comparison.PREVIOUS}
        csv = pd.read_csv(pd.io.common.StringIO(frame.to_csv(index=False)))
        assert set(csv["period"]) == {comparison.CURRENT, comparison.PREVIOUS}
        build = charts.causes_over_time if value == "legs" else charts.webhooks_per_kind
        figure = build(frame, "UTC")
        line = figure.to_dict()["layer"][1]
        assert line["encoding"]["strokeDash"]["field"] == "period"
        # The bars draw this range's rows; the dashed line the previous range's total.
        drawn = [r for r in _chart_rows(figure) if r.get("period") == comparison.PREVIOUS]
        assert [r[value] for r in drawn] == [int(_previous(frame)[value].sum())]
    # 09:00-09:05: o1, o2, o3, o4 and i1 started (A legs); all of them ended.
    legs = comparison.overlay(a_causes, rel, f).frame
    assert int(_previous(legs)["legs"].sum()) == 5


def _page(page: str, **query: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    for key, value in {"range": "All time", "compare": "true", **query}.items():
        at.query_params[key] = value
    at.run()
    at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


@pytest.mark.parametrize(
    "page",
    ["screens/overview.py", "screens/timing.py", "screens/causes.py", "screens/health.py"],
)
def test_pages_say_the_previous_range_has_no_data(sample_db: Path, page: str) -> None:
    # "All time" is 08:58 to 09:06: the 8 minutes before hold nothing.
    at = _page(page)
    notes = [c.value for c in at.caption if c.value.startswith("No data for the previous range")]
    assert notes, [c.value for c in at.caption]


def test_the_previous_total_is_zero_in_its_buckets_without_rows() -> None:
    # Previous rows at 10:00 and 13:00 only (moved onto this range), this range until 14:00:
    # the dashed step line must come down to 0 at 11:00 and 12:00 and 14:00, not hold 3.
    hour = pd.Timedelta(hours=1)
    at = [pd.Timestamp("2026-11-02 10:00"), pd.Timestamp("2026-11-02 13:00")]
    previous = pd.DataFrame(
        {"bucket": at, "bucket_end": [t + hour for t in at], "cause": "x", "legs": [3, 2]}
    ).assign(period=comparison.PREVIOUS)
    now = [pd.Timestamp("2026-11-02 09:00") + i * hour for i in range(6)]
    current = pd.DataFrame(
        {"bucket": now, "bucket_end": [t + hour for t in now], "cause": "x", "legs": 1}
    ).assign(period=comparison.CURRENT)
    figure = charts.causes_over_time(pd.concat([current, previous]), "UTC")
    drawn = [r for r in _chart_rows(figure) if r.get("period") == comparison.PREVIOUS]
    assert [(r["bucket"][11:16], r["legs"]) for r in drawn] == [
        ("10:00", 3),
        ("11:00", 0),
        ("12:00", 0),
        ("13:00", 2),
        ("14:00", 0),
    ]


def test_the_missed_share_per_day_draws_the_previous_days_as_dashed_ticks() -> None:
    # Receiver health's completeness chart: this range's days as bars, the previous range's
    # same days as ticks; without previous rows, bars only.
    days = [pd.Timestamp("2026-11-02"), pd.Timestamp("2026-11-03")]
    current = pd.DataFrame(
        {"day": days, "missed_share": [0.25, 0.5], "added": [1, 2], "calls": [4, 4]}
    ).assign(period=comparison.CURRENT, compared_bucket=days)
    previous = pd.DataFrame(
        {"day": days, "missed_share": [0.1, 0.0], "added": [1, 0], "calls": [10, 3]}
    ).assign(period=comparison.PREVIOUS, compared_bucket=[d - pd.Timedelta(days=2) for d in days])
    figure = charts.missed_share_per_day(pd.concat([current, previous]), "UTC")
    ticks = figure.to_dict()["layer"][1]
    assert ticks["mark"]["type"] == "tick" and ticks["encoding"]["strokeDash"]["field"] == "period"
    drawn = [r for r in _chart_rows(figure) if r.get("period") == comparison.PREVIOUS]
    assert [r["missed_share"] for r in drawn] == [0.1, 0.0]  # a real 0 is drawn
    alone = charts.missed_share_per_day(current.drop(columns=["period"]), "UTC")
    assert "layer" not in alone.to_dict()


def test_receiver_health_compares_its_completeness_chart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.dashboard.completeness_sample import DAY0, store_sample

    path = tmp_path / "records.duckdb"
    database = Database(path)
    store_sample(database, DAY0)
    rollups.refresh(database.cursor())
    database.close()
    monkeypatch.setenv("CALLSTATUS_DB", str(path))
    settings_module.get_settings.cache_clear()
    try:
        at = _page("screens/health.py")
    finally:
        settings_module.get_settings.cache_clear()
    # "All time" is the sample's span (15:00 to 21:01 the next day): the range before it is
    # covered only from its first call, for the webhooks (hour buckets, 30 hours back) and the
    # completeness chart (day buckets: one day back).
    notes = [c.value for c in at.caption if c.value.startswith("The previous range (")]
    assert notes == [
        "The previous range (2026-11-01 15:00 to 2026-11-02 21:01) has data only from "
        "2026-11-02 15:00, the first stored call: its line starts there.",
        "The previous range (2026-11-01 09:00 to 2026-11-02 15:01) has data only from "
        "2026-11-02 15:00, the first stored call: its line starts there.",
    ]
