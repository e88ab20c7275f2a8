"""A periodic background job beside the server: its own thread, a final run at stop."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger("callstatus.jobs")

STOP_WAIT_S = 120.0


class PeriodicJob:
    """Runs `work` now and then every `interval_s` in its own thread, and once more at stop so
    that what the server stored last is included. A failure is logged and retried next time:
    a full disk must not end the loop.

    With `max_share`, the pause after a run is also at least long enough that the job takes at
    most that share of the time: work that grows with the data (a refresh over a busy day) then
    runs less often instead of taking a core from the receiver."""

    def __init__(
        self,
        name: str,
        work: Callable[[], object],
        interval_s: float,
        max_share: float = 1.0,
        *,
        run_at_stop: bool = True,
    ) -> None:
        self.name = name
        self.work = work
        self.interval_s = interval_s
        self.max_share = max_share
        self.run_at_stop = run_at_stop
        self.last_error: str | None = None
        self.last_ok: float | None = None  # time.monotonic() of the last successful run
        self.last_pause_s = interval_s  # the pause after the last run
        self._lock = threading.Lock()  # the loop and the final run at stop
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"callstatus-{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def run_once(self) -> None:
        with self._lock:
            try:
                self.work()
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.error("%s failed, will retry: %s", self.name, exc)
            else:
                self.last_error = None
                self.last_ok = time.monotonic()

    def _loop(self) -> None:
        while True:
            started = time.monotonic()
            self.run_once()
            took = time.monotonic() - started
            self.last_pause_s = max(self.interval_s, took * (1 / self.max_share - 1))
            if self._stop.wait(self.last_pause_s):
                return

    def stop(self) -> None:
        """Stop the loop, then run a final time (unless run_at_stop is False)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(STOP_WAIT_S)
        if self._thread.is_alive():
            log.warning("%s still busy after %.0f s; no final run", self.name, STOP_WAIT_S)
            return
        if self.run_at_stop:
            self.run_once()
