"""The background jobs' loop: runs, final run at stop, retries, and pacing of slow work."""

from __future__ import annotations

import itertools
import threading
import time

from callstatus.core.jobs import PeriodicJob
from tests.factories import wait_until


def test_slow_work_is_spaced_out_to_its_share_of_the_time() -> None:
    starts: list[float] = []

    def work() -> None:
        starts.append(time.monotonic())
        time.sleep(0.1)

    # Every 10 ms if it were quick; at most half the time when a run takes 100 ms.
    job = PeriodicJob("slow", work, interval_s=0.01, max_share=0.5)
    job.start()
    try:
        wait_until(lambda: len(starts) >= 4, timeout=10)
    finally:
        job.stop()
    looped = starts[:-1]  # the last run is stop's
    gaps = [b - a for a, b in itertools.pairwise(looped)]
    assert len(gaps) >= 3
    assert min(gaps) >= 0.19  # 100 ms of work, then at least 100 ms of pause
    assert job.last_pause_s >= 0.09


def test_quick_work_keeps_its_interval() -> None:
    starts: list[float] = []
    job = PeriodicJob("quick", lambda: starts.append(time.monotonic()), interval_s=0.05)
    job.start()
    try:
        wait_until(lambda: len(starts) >= 5, timeout=10)
    finally:
        job.stop()
    looped = starts[:-1]
    # Paced by the interval: neither a busy loop nor slowed down by a share it does not need.
    assert min(b - a for a, b in itertools.pairwise(looped)) >= 0.045
    assert job.last_pause_s == 0.05


def test_stop_runs_once_more_after_the_loop_ended() -> None:
    runs: list[str] = []
    first = threading.Event()

    def work() -> None:
        runs.append(threading.current_thread().name)
        first.set()

    job = PeriodicJob("final", work, interval_s=60)
    job.start()
    assert first.wait(10), "the loop runs once at start"
    job.stop()
    # The loop's run at start, then the final one in the thread that called stop.
    assert runs == ["callstatus-final", threading.current_thread().name]


def test_a_failed_run_is_reported_and_retried() -> None:
    errors_before: list[str | None] = []  # job.last_error as each run begins

    def work() -> None:
        errors_before.append(job.last_error)
        if len(errors_before) == 1:
            raise OSError("disk full")

    job = PeriodicJob("flaky", work, interval_s=0.01)
    job.start()
    try:
        wait_until(lambda: job.last_ok is not None, timeout=10)
    finally:
        job.stop()
    assert errors_before[:2] == [None, "OSError: disk full"], "recorded, then retried"
    assert job.last_error is None
