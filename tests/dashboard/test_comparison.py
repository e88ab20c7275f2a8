"""Period comparison: the previous range overlaid bucket on bucket, across a DST change."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pandas as pd
import pytest

from callstatus.core import rollups
from callstatus.core import settings as settings_module
from callstatus.core.db import Database
from callstatus.core.duplicates import DuplicateTracker
from callstatus.core.records import make_record
from callstatus.core.storage import insert_events
from callstatus.dashboard import comparison, connection
from callstatus.dashboard.filters import Filters, resolve_range
from callstatus.dashboard.queries import overview
from callstatus.dashboard.queries.relations import Relations

BERLIN = ZoneInfo("Europe/Berlin")  # clocks went back on Sunday 25 October 2026, 03:00 -> 02:00


def _local(day: int, hour: int, minute: int = 0, month: int = 10) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=BERLIN).astimezone(UTC)


def _calls() -> list[datetime]:
    """One call at noon on each day of the week before (19-25 October), two on each day of the
    week after (26 October - 1 November); the 25-hour Sunday also has calls at 00:30 and 23:30."""
    starts = [_local(day, 12) for day in range(19, 26)]
    starts += [_local(25, 0, 30), _local(25, 23, 30)]
    for day in [*range(26, 32), 1]:
        month = 11 if day == 1 else 10
        starts += [_local(day, 12, month=month), _local(day, 13, month=month)]
    return starts


@pytest.fixture(scope="module")
def dst_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("dst") / "dst.duckdb"
    database = Database(path)
    records = []
    for i, start in enumerate(_calls()):
        params = {
            "CallUUID": f"call-{i:03d}",
            "Direction": "outbound",
            "From": "18005550199",
            "To": "442071838750",
            "CallStatus": "completed",
            "HangupCauseCode": "4000",
            "StartTime": start.strftime("%Y-%m-%d %H:%M:%S"),
            "AnswerTime": (start + timedelta(seconds=5)).strftime("%Y-%m-%d %H:%M:%S"),
            "EndTime": (start + timedelta(seconds=65)).strftime("%Y-%m-%d %H:%M:%S"),
            "Duration": "60",
            "BillDuration": "60",
        }
        records.append(make_record("hangup", "POST", params, "unchecked", start))
    DuplicateTracker().mark(records)
    cur = database.cursor()
    cur.execute("BEGIN")
    insert_events(cur, records, "UTC")
    cur.execute("COMMIT")
    rollups.refresh(cur)
    database.close()
    return path


@pytest.fixture
def rel(dst_db: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Relations]:
    monkeypatch.setenv("CALLSTATUS_DB", str(dst_db))
    settings_module.get_settings.cache_clear()
    yield connection.relations()
    settings_module.get_settings.cache_clear()


def _week_after() -> Filters:
    start, end = resolve_range(
        "Custom", datetime.now(UTC), (datetime(2026, 10, 26).date(), datetime(2026, 11, 1).date()),
        "Europe/Berlin", None,
    )  # fmt: skip
    return Filters(start, end, bucket="1 day", tz="Europe/Berlin")


def test_the_previous_range_is_the_same_local_days_before() -> None:
    f = _week_after()
    before = comparison.previous(f)
    # Seven local days before: 19 October 00:00 CEST to 26 October 00:00 CET, 169 hours.
    assert before.start == _local(19, 0) and before.end == f.start
    assert before.end - before.start == timedelta(days=7, hours=1)
    assert comparison.shift(f) == timedelta(days=7)


def test_day_buckets_meet_across_the_dst_change(rel: Relations) -> None:
    result = comparison.overlay(overview.rates_over_time, rel, _week_after())
    frame = result.frame
    now = frame[frame["period"] == comparison.CURRENT].set_index("bucket")["calls"]
    before = frame[frame["period"] == comparison.PREVIOUS].set_index("bucket")
    days = pd.date_range("2026-10-26", "2026-11-01", freq="D")
    assert list(now.index) == list(days) and list(now) == [2] * 7
    # Last week's buckets lie on this week's local midnights, the 25-hour Sunday included
    # (its three calls, at 00:30 CEST, noon and 23:30 CET, all on 1 November).
    assert list(before.index) == list(days)
    assert list(before["calls"]) == [1, 1, 1, 1, 1, 1, 3]
    assert before.loc[pd.Timestamp("2026-11-01"), "compared_bucket"] == pd.Timestamp("2026-10-25")
    # The CSV keeps both series, and the SQL shown names the previous range's bounds.
    assert set(frame["period"]) == {comparison.CURRENT, comparison.PREVIOUS}
    assert result.params["previous_start"] == _local(19, 0)


def test_hour_buckets_keep_elapsed_time() -> None:
    # "Last 24 hours" over the change: 23 hours on the local clock, a whole number of hour
    # buckets, so the previous range lies 23 local hours back and hours meet hours.
    end = _local(25, 12)
    f = Filters(end - timedelta(days=1), end, bucket="1 hour", tz="Europe/Berlin")
    assert comparison.shift(f) == timedelta(hours=23)  # 24 h elapsed, 23 h of local clock
    assert comparison.bucket_step("5 minutes") == timedelta(minutes=5)
    assert comparison.bucket_step("7 days") == timedelta(days=7)
    with pytest.raises(ValueError):
        comparison.bucket_step("1 fortnight")
