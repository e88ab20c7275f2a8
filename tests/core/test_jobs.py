"""The background jobs' loop: runs, final run at stop, and pacing of slow work."""

from __future__ import annotations

import itertools
import time

from callstatus.core.jobs import PeriodicJob


def test_slow_work_is_spaced_out_to_its_share_of_the_time() -> None:
    starts: list[float] = []

    def work() -> None:
        starts.append(time.monotonic())
        time.sleep(0.1)

    # Every 10 ms if it were quick; at most half the time when a run takes 100 ms.
    job = PeriodicJob("slow", work, interval_s=0.01, max_share=0.5)
    job.start()
    time.sleep(0.75)
    job.stop()
    gaps = [b - a for a, b in itertools.pairwise(starts[:-1])]  # the last run is stop's
    assert len(gaps) >= 2
    assert min(gaps) >= 0.19  # 100 ms of work, then at least 100 ms of pause
    assert job.last_pause_s >= 0.09


def test_quick_work_keeps_its_interval() -> None:
    starts: list[float] = []
    job = PeriodicJob("quick", lambda: starts.append(time.monotonic()), interval_s=0.05)
    job.start()
    time.sleep(0.3)
    job.stop()
    assert len(starts) >= 5  # about six runs in 0.3 s, plus the final one
    assert job.last_pause_s == 0.05
