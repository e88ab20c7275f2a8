"""Timing and load, Destinations and the overview's peak headless (AppTest) on the hand-timed
sample: the figures on the page equal the hand computations of analytics_sample."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from callstatus.core import rollups
from callstatus.core import settings as settings_module
from callstatus.core.db import Database
from tests.dashboard import analytics_sample as sample

APP = str(Path(__file__).resolve().parents[2] / "callstatus" / "dashboard" / "app.py")


@pytest.fixture(scope="module")
def analytics_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("pages") / "analytics.duckdb"
    database = Database(path)
    sample.write(database)
    rollups.refresh(database.cursor())
    database.close()
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("CALLSTATUS_DB", str(path))
        settings_module.get_settings.cache_clear()
        yield path
    settings_module.get_settings.cache_clear()


def _page(page: str, **query: str) -> AppTest:
    # "All time" is the sample's own span: 08:58 (i3's start) to 09:06 (after i2's start).
    at = AppTest.from_file(APP, default_timeout=60)
    for key, value in {"range": "All time", **query}.items():
        at.query_params[key] = value
    at.run()
    at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _metric(at: AppTest, label: str) -> str:
    values = [m.value for m in at.metric if m.label == label]
    assert values, f"no {label!r} tile among {[m.label for m in at.metric]}"
    return str(values[0])


def _frame(at: AppTest, column: str) -> pd.DataFrame:
    for frame in at.dataframe:
        if column in frame.value.columns:
            return frame.value
    raise AssertionError(f"no table with {column!r}")


def test_timing_tiles(analytics_db: Path) -> None:
    at = _page("screens/timing.py")
    assert at.title[0].value == "Timing and load"
    assert _metric(at, "Post-dial delay (median)") == "4s"  # o1 2 s, o2 4 s, o4 5 s
    assert _metric(at, "Ring time (median)") == "8s"  # 8, 30, 5
    assert _metric(at, "B-leg answer (median)") == "10s"
    assert _metric(at, "Peak concurrent calls") == "4"  # o1, o2, i1 and i3 at 09:00:30
    per_destination = _frame(at, "measure")
    assert set(per_destination["destination"]) == {"GB", "US", sample.AGENT}


def test_timing_compares_with_the_previous_range(analytics_db: Path) -> None:
    at = _page("screens/timing.py", compare="true")
    # The previous range holds nothing: the page still draws, and says which range it compared.
    assert _metric(at, "Peak concurrent calls") == "4"
    # The SQL and its parameters are drawn only once asked for.
    assert not at.json and not at.code
    switches = [t for t in at.toggle if t.label == "Show SQL"]
    assert switches
    for switch in switches:
        switch.set_value(True)
    at.run()
    assert not at.exception
    assert len(at.code) == len(switches)
    assert any("previous_start" in str(j.value) for j in at.json)


def test_destinations_page(analytics_db: Path) -> None:
    at = _page("screens/destinations.py")
    assert at.title[0].value == "Destinations"
    by_country = _frame(at, "call_answer_rate")
    gb = by_country[(by_country["country"] == "GB") & (by_country["direction"] == "outbound")]
    assert gb[["calls", "answered"]].values.tolist() == [[2, 2]]
    rows = _frame(at, "dialled").set_index("destination")
    agent = rows.loc[sample.AGENT]
    assert (agent["dialled"], agent["answered"], agent["talk_s"]) == (2, 1, 108)
    assert agent["country"] == "US · United States"
    link = urlsplit(agent["calls"])
    assert link.path == "calls"
    # The sidebar picks the destination, and the search lists its calls (the list ignores the
    # sidebar).
    assert parse_qs(link.query) == {
        "range": ["All time"],
        "dest": [sample.AGENT],
        "q": [sample.AGENT],
    }
    assert rows.loc[sample.SIP_AGENT, "lost_races"] == 1


def test_the_country_filter_from_the_query_string(analytics_db: Path) -> None:
    at = _page("screens/destinations.py", country="GB")
    by_country = _frame(at, "call_answer_rate")
    assert set(by_country["country"]) == {"GB"}
    assert by_country["calls"].sum() == 3  # o1, o4 and i2
    assert any("countries GB" in c.value for c in at.caption)


def test_the_overview_shows_todays_peak(analytics_db: Path) -> None:
    at = _page("screens/overview.py", compare="true")
    # The sample lies in the past: nothing is up today.
    assert _metric(at, "Peak concurrent calls today") == "0"
