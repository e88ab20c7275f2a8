"""The overview's and the concurrency's figures for a range, read by the dashboard's own query
functions on a file."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from callstatus.core import settings as settings_module
from callstatus.dashboard import connection
from callstatus.dashboard.filters import Filters
from callstatus.dashboard.queries import base, concurrency, overview


def charts(db: Path, f: Filters, monkeypatch: pytest.MonkeyPatch) -> list[pd.DataFrame]:
    monkeypatch.setenv("CALLSTATUS_DB", str(db))
    settings_module.get_settings.cache_clear()
    base._fetch.clear()
    try:
        rel = connection.relations()
        return [
            overview.kpis(rel, f).frame,
            overview.rates_over_time(rel, f).frame,
            overview.outcomes_over_time(rel, f).frame,
            concurrency.over_time(rel, f, concurrency.A_LEGS).frame,
            concurrency.over_time(rel, f, concurrency.B_LEGS).frame,
        ]
    finally:
        settings_module.get_settings.cache_clear()


def assert_same(before: list[pd.DataFrame], after: list[pd.DataFrame]) -> None:
    for b, a in zip(before, after, strict=True):
        pd.testing.assert_frame_equal(b, a)
