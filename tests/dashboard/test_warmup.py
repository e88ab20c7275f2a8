"""The dashboard's warm-up at a server's start: it runs, and what a page then asks is cached."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from callstatus.app.runtime import Runtime
from callstatus.cli import main as callstatus
from callstatus.dashboard import connection, warmup
from callstatus.dashboard.queries import overview
from tests.factories import make_settings


@pytest.fixture(scope="module")
def started(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    """A server's runtime on 300 seeded calls, started as serve starts it."""
    path = tmp_path_factory.mktemp("warmup") / "seeded.duckdb"
    assert (
        callstatus(["seed", "--db", str(path), "--calls", "300", "--days", "3", "--seed", "5"]) == 0
    )
    runtime = Runtime(make_settings(path.parent, CALLSTATUS_DB=path))
    runtime.start()
    try:
        assert runtime.warmup is not None
        assert runtime.warmup.wait(120), "the warm-up never finished"
        yield runtime
    finally:
        runtime.stop()


def test_the_warm_up_reads_the_sidebar_and_the_overview_for_both_ranges(started: Runtime) -> None:
    done = started.warmup
    assert done is not None and done.error is None
    assert done.ran[:4] == ["event_count", "data_span", "our_numbers", "destinations_list"]
    for preset in warmup.PRESETS:
        for name in ("kpis", "kpis before", "rates", "outcomes", "heatmap dial", "heatmap call"):
            assert f"{name} {preset} UTC" in done.ran


def test_a_page_right_after_the_start_reads_what_the_warm_up_cached(started: Runtime) -> None:
    done = started.warmup
    assert done is not None and done.now is not None
    # Emptied behind the cache's back (no webhook arrives, so the data's version stays): a
    # read from the database now counts no call, a read from the warm-up's cache all of them.
    started.database.cursor().execute("DELETE FROM calls_rollup")
    rel = connection.relations()
    f = warmup.filters("Last 30 days", "UTC", done.now)
    assert int(overview.kpis(rel, f).frame["calls"].iloc[0]) == 300
    unread = replace(f, end=f.end - timedelta(minutes=1))
    assert int(overview.kpis(rel, unread).frame["calls"].iloc[0]) == 0


def test_the_warm_up_stops_with_the_server(tmp_path: Path) -> None:
    runtime = Runtime(make_settings(tmp_path))
    runtime.start()
    runtime.stop()  # waits for the warm-up before the database closes
    assert runtime.warmup is None
