"""The dashboard's warm-up at a server's start: it runs, and what a page then asks is cached."""

from __future__ import annotations

import gc
import importlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from callstatus.app.runtime import Runtime
from callstatus.cli import main as callstatus
from callstatus.dashboard import connection
from callstatus.dashboard.filters import Filters
from callstatus.dashboard.queries import overview, sidebar
from tests.factories import make_settings


@pytest.fixture(scope="module")
def started(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    """A server's runtime on 300 seeded calls, started as serve starts it."""
    path = tmp_path_factory.mktemp("warmup") / "seeded.duckdb"
    seed = ["seed", "--db", str(path), "--calls", "300", "--days", "3", "--seed", "5"]
    assert callstatus(seed) == 0
    runtime = Runtime(make_settings(path.parent, CALLSTATUS_DB=path))
    runtime.start()
    try:
        assert runtime.warmup is not None
        assert runtime.warmup.wait(120), "the warm-up never finished"
        yield runtime
    finally:
        runtime.stop()
        gc.unfreeze()  # the frozen objects of this process: back to the collector's care


def test_the_warm_up_reads_what_every_sidebar_reads(started: Runtime) -> None:
    done = started.warmup
    assert done is not None and done.error is None
    assert done.ran == ["event_count", "data_span", "our_numbers", "destinations_list"]


def test_what_the_server_keeps_is_left_out_of_later_collections(started: Runtime) -> None:
    """Streamlit collects every generation after each page run: objects alive at the warm-up
    (modules, Altair's schema) are frozen, so those collections skip them."""
    assert gc.get_freeze_count() > 0
    kept = vars(importlib.import_module("callstatus.dashboard.leg_charts"))
    assert not any(o is kept for o in gc.get_objects())
    made_later = {"a page run's": ["garbage"]}
    assert any(o is made_later for o in gc.get_objects())


def test_a_page_right_after_the_start_reads_what_the_warm_up_cached(started: Runtime) -> None:
    rel = connection.relations()
    # Emptied behind the cache's back (no webhook arrives, so the data's version stays): a
    # read from the database now finds no call, a read from the warm-up's cache all of them.
    cur = started.database.cursor()
    cur.execute("DELETE FROM calls_rollup")
    cur.execute("DELETE FROM calls_hourly")
    now = datetime.now(UTC)
    unread = Filters(start=now - timedelta(days=30), end=now)
    assert int(overview.kpis(rel, unread).frame["calls"].iloc[0]) == 0
    span = sidebar.data_span(rel)
    assert span is not None and span[0] < span[1]
    assert len(sidebar.our_numbers(rel)) > 0


def test_the_warm_up_stops_with_the_server(tmp_path: Path) -> None:
    runtime = Runtime(make_settings(tmp_path))
    runtime.start()
    runtime.stop()  # waits for the warm-up before the database closes
    assert runtime.warmup is None
