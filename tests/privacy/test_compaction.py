"""Compaction: a file with retention's free blocks shrinks to its data, keeps every row and keeps
its rollups refreshing; killed at any point, the file is either the old one or the new one."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest

from callstatus.core import rollups
from callstatus.core.db import Database
from callstatus.privacy.compaction import compact, copy_path
from callstatus.privacy.retention import run_retention
from tests.factories import assert_rollups_equal_views, make_settings
from tests.privacy.growth import NOW, add_day, day_start

TABLES = ("webhook_rows", "calls_rollup", "dial_legs_rollup", "webhook_counts", "erasures")


def counts(path: Path) -> dict[str, int]:
    db = Database(path)
    try:
        return {
            t: db.cursor().execute(f"SELECT count(*) FROM {t}").fetchall()[0][0] for t in TABLES
        }
    finally:
        db.close()


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A file that held 10 days and keeps 3: most of what it held was removed."""
    folder = tmp_path_factory.mktemp("compaction")
    path = folder / "template.duckdb"
    db = Database(path)
    for day in range(10):
        add_day(db, day, 10, calls=500)
    run_retention(db.cursor(), make_settings(folder, CALLSTATUS_RETENTION_DAYS=3), now=NOW)
    db.close()
    return path


def purged_file(template: Path, tmp_path: Path) -> Path:
    path = tmp_path / "compact.duckdb"
    shutil.copyfile(template, path)
    return path


def test_compaction_shrinks_the_file_and_keeps_every_row(template: Path, tmp_path: Path) -> None:
    path = purged_file(template, tmp_path)
    before, rows = path.stat().st_size, counts(path)
    done = compact(path)
    assert done is not None and done.bytes_after < before
    assert path.stat().st_size == done.bytes_after
    assert counts(path) == rows
    assert not copy_path(path).exists()
    assert compact(path) is None  # nothing removed since: no copy
    # New webhooks after the copy are read by the next refresh: the watermark follows the copy.
    db = Database(path)
    try:
        add_day(db, 0, 0, at=day_start(0, 0) + timedelta(hours=1))
        assert_rollups_equal_views(db)
        # The counts of the removed days survived the copy and the refresh after it.
        first = db.cursor().execute("SELECT min(bucket_at) FROM webhook_counts").fetchall()[0][0]
        assert first == day_start(0, 10)
    finally:
        db.close()


KILL = """
import sys
from pathlib import Path
from callstatus.privacy.compaction import compact
compact(Path(sys.argv[1]), force=True)
"""


@pytest.mark.parametrize("after_s", [0.05, 0.3, 0.8, 1.5])
def test_kill_9_during_compaction_leaves_a_whole_file(
    template: Path, tmp_path: Path, after_s: float
) -> None:
    path = purged_file(template, tmp_path)
    rows = counts(path)
    process = subprocess.Popen(
        [sys.executable, "-c", KILL, str(path)], cwd=Path(__file__).resolve().parents[2]
    )
    time.sleep(after_s)
    if process.poll() is None:
        os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=60)
    # Whichever file is there now (old or compacted) opens and holds every row.
    assert counts(path) == rows
    compact(path, force=True)  # removes an interrupted copy, then compacts
    assert counts(path) == rows
    assert not copy_path(path).exists()


DAYS, KEEP = 20, 7


def test_under_daily_retention_the_compacted_file_is_no_larger_than_its_days_of_data(
    tmp_path: Path,
) -> None:
    """The done-when, scaled down: 20 days of steady traffic, 7 kept, a run every day;
    compacted (as `serve` does at start), the file is no larger than it was holding 7 days, and
    holds nothing older."""
    path = tmp_path / "steady.duckdb"
    db = Database(path)
    settings = make_settings(tmp_path, CALLSTATUS_RETENTION_DAYS=KEEP)
    sizes = []
    for day in range(DAYS):
        add_day(db, day, DAYS, calls=400)
        run = run_retention(db.cursor(), settings, now=day_start(day + 1, DAYS))
        assert run is not None and run.status == "ok"
        db.cursor().execute("CHECKPOINT")
        sizes.append(path.stat().st_size)
    oldest = db.cursor().execute("SELECT min(received_at) FROM webhook_events").fetchall()[0][0]
    db.close()
    assert oldest >= day_start(DAYS - KEEP, DAYS)
    done = compact(path)
    assert done is not None
    assert path.stat().st_size <= sizes[KEEP - 1]  # the file of KEEP days, before any purge
    assert path.stat().st_size < sizes[-1]


def test_rollups_are_refreshed_before_the_copy(template: Path, tmp_path: Path) -> None:
    path = purged_file(template, tmp_path)
    db = Database(path)
    add_day(db, 9, 10, calls=200, refresh=False)  # webhooks left in the inbox
    inbox = db.cursor().execute("SELECT count(*) FROM webhook_inbox").fetchall()[0][0]
    db.close()
    assert inbox > 0
    compact(path, force=True)
    db = Database(path)
    try:
        assert db.cursor().execute("SELECT count(*) FROM webhook_inbox").fetchall() == [(0,)]
        assert rollups.is_current(db.cursor())
        assert_rollups_equal_views(db)
    finally:
        db.close()
