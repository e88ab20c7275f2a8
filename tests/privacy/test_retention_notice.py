"""The dashboard says when the chosen range reaches past the retained data, naming the horizon."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from callstatus.cli import main as callstatus
from callstatus.core import settings as settings_module
from callstatus.dashboard.controls import retention_note
from callstatus.dashboard.filters import Filters
from tests.factories import make_settings

APP = str(Path(__file__).resolve().parents[2] / "callstatus" / "dashboard" / "app.py")
NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def test_the_note_names_the_horizon_only_past_it(tmp_path: Path) -> None:
    kept = make_settings(tmp_path, CALLSTATUS_RETENTION_DAYS=30)
    inside = Filters(NOW - timedelta(days=7), NOW)
    past = Filters(NOW - timedelta(days=90), NOW, tz="Asia/Kolkata")
    assert retention_note(inside, kept, NOW) is None
    assert retention_note(past, make_settings(tmp_path), NOW) is None  # everything kept
    note = retention_note(past, kept, NOW)
    assert note is not None
    # The horizon in the chosen zone: 2026-10-21 12:00 UTC is 17:30 in Kolkata.
    assert "2026-10-21 17:30" in note and "30 days" in note and "for good" in note
    both = make_settings(
        tmp_path, CALLSTATUS_RETENTION_DAYS=30, CALLSTATUS_AGGREGATE_RETENTION_DAYS=400
    )
    within = str(retention_note(past, both, NOW))
    assert "hourly totals 400 days" in within and "only hourly totals remain" in within
    # Past the aggregate horizon too: nothing at all is left there.
    short = make_settings(
        tmp_path, CALLSTATUS_RETENTION_DAYS=30, CALLSTATUS_AGGREGATE_RETENTION_DAYS=60
    )
    beyond = str(retention_note(past, short, NOW))
    assert "hourly totals 60 days" in beyond and "missing, not zero" in beyond


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("notice") / "seeded.duckdb"
    assert callstatus(["seed", "--db", str(path), "--calls", "50", "--days", "2"]) == 0
    return path


@pytest.fixture
def retained(seeded: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("CALLSTATUS_DB", str(seeded))
    monkeypatch.setenv("CALLSTATUS_RETENTION_DAYS", "30")
    settings_module.get_settings.cache_clear()
    yield
    settings_module.get_settings.cache_clear()


@pytest.mark.parametrize(("preset", "shown"), [("Last 90 days", True), ("Last 7 days", False)])
def test_the_overview_says_so(retained: None, preset: str, shown: bool) -> None:
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["range"] = preset
    at.run()
    assert not at.exception
    captions = " ".join(str(c.value) for c in at.caption)
    assert ("are no longer stored" in captions) is shown
