"""Completeness on Receiver health: calls with webhooks against Plivo's call records, checked
against plain SQL counts over a database holding every kind of call; the last reconcile run as
text; webhook figures that leave records out; the overview's notice."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from callstatus.core import rollups
from callstatus.core import settings as settings_module
from callstatus.core.db import Database
from callstatus.core.typed import CDR_KIND
from callstatus.dashboard import connection
from callstatus.dashboard.filters import Filters
from callstatus.dashboard.queries import completeness, health, overview
from callstatus.dashboard.queries.relations import ROLLUPS, VIEWS
from callstatus.dashboard.screens.completeness import duration, next_run, run_summary
from callstatus.dashboard.text import code
from tests.dashboard.completeness_sample import (
    DAY0,
    EXPECTED,
    EXPECTED_NEW_YORK,
    EXPECTED_UTC,
    FETCHED_AFTER,
    HAND_PER_DAY,
    HAND_TOTALS,
    add_run,
    hand_counts,
    store_sample,
)
from tests.factories import make_settings


@pytest.fixture(params=["rollups", "views"])
def sample(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    path = tmp_path / "records.duckdb"
    database = Database(path)
    store_sample(database, DAY0)
    if request.param == "rollups":
        rollups.refresh(database.cursor())
    database.close()
    monkeypatch.setenv("CALLSTATUS_DB", str(path))
    settings_module.get_settings.cache_clear()
    yield path
    settings_module.get_settings.cache_clear()


RANGE = Filters(
    start=DAY0 - timedelta(hours=1),
    end=DAY0 + timedelta(days=2),
    bucket="1 day",
    tz="America/New_York",
)
FIGURES = ["calls", "reported", "with_webhooks", "completed", "added"]


def test_totals_equal_plain_counts_and_the_sample(
    sample: Path, request: pytest.FixtureRequest
) -> None:
    rel = connection.relations()
    assert rel is (ROLLUPS if request.node.callspec.params["sample"] == "rollups" else VIEWS)
    result = completeness.totals(rel, RANGE)
    assert ("calls_rollup" in result.sql) == rel.stored
    row = result.frame.iloc[0]
    [hand] = hand_counts(sample, HAND_TOTALS, {"start": RANGE.start, "end": RANGE.end})
    assert tuple(int(row[name]) for name in FIGURES) == hand
    assert {name: int(row[name]) for name in FIGURES} == EXPECTED
    assert row["missed_share"] == pytest.approx(4 / 14)


@pytest.mark.parametrize(
    ("tz", "expected"), [("America/New_York", EXPECTED_NEW_YORK), ("UTC", EXPECTED_UTC)]
)
def test_per_day_equals_plain_counts_in_the_zone(
    sample: Path, tz: str, expected: list[tuple[int, ...]]
) -> None:
    f = Filters(start=RANGE.start, end=RANGE.end, bucket="1 day", tz=tz)
    frame = completeness.per_day(connection.relations(), f).frame
    hand = hand_counts(sample, HAND_PER_DAY, {"start": f.start, "end": f.end, "tz": tz})
    got = [
        (row.day.date(), *(int(getattr(row, name)) for name in FIGURES))
        for row in frame.itertuples()
    ]
    assert got == [tuple(row) for row in hand]
    assert [row[1:] for row in got] == expected
    shares = list(frame["missed_share"])
    assert shares == pytest.approx([added / calls for calls, *_, added in expected])


def test_a_range_cuts_calls_by_their_start(sample: Path) -> None:
    # From 02:30 UTC on day two: n1 (04:30 UTC) and the second day's calls, not the first's.
    f = Filters(start=DAY0 + timedelta(hours=11, minutes=30), end=RANGE.end, tz="UTC")
    row = completeness.totals(connection.relations(), f).frame.iloc[0]
    [hand] = hand_counts(sample, HAND_TOTALS, {"start": f.start, "end": f.end})
    assert tuple(int(row[name]) for name in FIGURES) == hand == (8, 6, 6, 2, 2)
    empty = Filters(start=DAY0 - timedelta(days=9), end=DAY0 - timedelta(days=8))
    none = completeness.totals(connection.relations(), empty).frame.iloc[0]
    assert int(none["calls"]) == 0 and pd.isna(none["missed_share"])
    assert completeness.per_day(connection.relations(), empty).frame.empty


def test_the_last_run_is_the_newest(sample: Path) -> None:
    database = Database(sample)
    cur = database.cursor()
    later = DAY0 + FETCHED_AFTER + timedelta(hours=1)
    add_run(cur, later, status="error", trigger="command", error="401 from Plivo")
    database.close()
    settings_module.get_settings.cache_clear()
    frame = completeness.last_run().frame
    assert len(frame) == 1
    run = frame.iloc[0]
    assert (run["status"], run["trigger"], run["error"]) == ("error", "command", "401 from Plivo")
    # The job's newest run ended 4 s after it started; the command's does not count.
    assert pd.Timestamp(run["last_job_end"]) == pd.Timestamp(
        DAY0 + FETCHED_AFTER + timedelta(seconds=4)
    )


def test_no_run_gives_no_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "none.duckdb"
    Database(path).close()
    monkeypatch.setenv("CALLSTATUS_DB", str(path))
    settings_module.get_settings.cache_clear()
    try:
        assert completeness.last_run().frame.empty
    finally:
        settings_module.get_settings.cache_clear()


def test_webhook_figures_leave_records_out(sample: Path) -> None:
    f = Filters(start=RANGE.start, end=DAY0 + timedelta(days=3), bucket="1 hour")
    rel = connection.relations()
    counts = hand_counts(
        sample,
        "SELECT count(*) FILTER (WHERE kind <> 'cdr'), count(*) FILTER (WHERE kind = 'cdr'), "
        "max(received_at) FILTER (WHERE kind <> 'cdr') FROM webhook_events",
        {},
    )
    webhooks, records, last = counts[0]
    assert records == 12 and webhooks == 16  # else this test proves nothing
    per_kind = health.webhooks_per_kind(rel, f).frame
    assert CDR_KIND not in set(per_kind["kind"])
    assert int(per_kind["webhooks"].sum()) == webhooks
    totals = health.receiver_totals(rel, f).frame.iloc[0]
    assert int(totals["webhooks"]) == webhooks
    # The records were fetched after the last webhook: "since last webhook" ignores them.
    assert pd.Timestamp(totals["last_event_at"]) == pd.Timestamp(last)


def test_overview_counts_calls_known_only_from_records(sample: Path) -> None:
    rel = connection.relations()
    row = overview.kpis(rel, RANGE).frame.iloc[0]
    assert (int(row["records_only_calls"]), int(row["calls"])) == (4, 14)
    assert row["records_only_share"] == pytest.approx(4 / 14)
    # The overview's slices apply: a2 is the one outbound call added from records.
    inbound = overview.kpis(rel, Filters(RANGE.start, RANGE.end, direction="inbound")).frame
    assert int(inbound.iloc[0]["records_only_calls"]) == 3


# -- the last run as text ----------------------------------------------------------------------


def _run(**changes: object) -> pd.Series:
    started = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
    row: dict[str, object] = {
        "started_at": pd.Timestamp(started),
        "finished_at": pd.Timestamp(started + timedelta(seconds=42)),
        "trigger": "job",
        "window_start": pd.Timestamp(started - timedelta(minutes=15)),
        "window_end": pd.Timestamp(started - timedelta(minutes=5)),
        "records_read": 1204,
        "records_new": 17,
        "calls_had": 1187,
        "calls_completed": 9,
        "calls_added": 8,
        "legs_added": 1,
        "status": "ok",
        "error": None,
        "last_job_end": pd.Timestamp(started + timedelta(seconds=42)),
    }
    row.update(changes)
    return pd.Series(row)


def test_an_ok_run_says_what_it_found_in_the_chosen_zone() -> None:
    kind, text = run_summary(_run(), "Asia/Kolkata")
    assert kind == "ok"
    assert text == (
        "Last reconcile run **ok** at 2026-12-01 15:30 (by the background job, records that "
        "ended 2026-12-01 15:15 → 2026-12-01 15:25): 1,204 records read, 17 new; 1,187 calls "
        "had every webhook, 9 completed and 8 added from records, 1 B leg added."
    )


def test_a_failed_run_quotes_its_error_as_code() -> None:
    planted = "HTTP 401 [login](http://evil.example) `x`"
    kind, text = run_summary(_run(status="error", error=planted, trigger="command"), "UTC")
    assert kind == "error"
    assert "**failed**" in text and "by `callstatus reconcile`" in text
    assert code(planted) in text and "[login](http" not in text.replace(code(planted), "")


def test_a_running_run_says_since_when() -> None:
    kind, text = run_summary(_run(status="running", finished_at=None), "UTC")
    assert kind == "running"
    assert text.startswith("A reconcile run is **running** since 2026-12-01 10:00")


def test_the_next_background_run(tmp_path: Path) -> None:
    configured = make_settings(tmp_path, PLIVO_AUTH_ID="MA0001", PLIVO_API_TOKEN="t")
    run = _run()
    soon = datetime(2026, 12, 1, 10, 5, tzinfo=UTC)
    assert next_run(configured, True, run, "UTC", soon) == (
        "Next background run due about 2026-12-01 10:10 (every 10 min)."
    )
    late = soon + timedelta(hours=1)
    assert (
        next_run(configured, True, run, "UTC", late)
        == "Next background run due now (every 10 min)."
    )
    assert next_run(configured, False, run, "UTC", soon) == "Background runs every 10 min."
    off = make_settings(
        tmp_path, PLIVO_AUTH_ID="MA0001", PLIVO_API_TOKEN="t", CALLSTATUS_RECONCILE_INTERVAL=0
    )
    assert next_run(off, True, run, "UTC", soon) == (
        "Background runs are off (`CALLSTATUS_RECONCILE_INTERVAL=0`)."
    )
    unset = make_settings(tmp_path, PLIVO_AUTH_ID=None)
    assert "`PLIVO_AUTH_ID`" in next_run(unset, True, run, "UTC", soon)
    assert duration(600) == "10 min" and duration(7200) == "2 h" and duration(45) == "45 s"
