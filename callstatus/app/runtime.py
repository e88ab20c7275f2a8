"""The process-wide objects a running server shares: database, writer, spool, snapshots."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from callstatus.core.db import Database
from callstatus.core.settings import Settings
from callstatus.receiver.rejected import count_since
from callstatus.receiver.spool import Spool
from callstatus.receiver.writer import Writer

log = logging.getLogger("callstatus")

REJECTED_ROWS_PER_HOUR = 10_000


@dataclass
class RejectionBudget:
    """At most REJECTED_ROWS_PER_HOUR refused requests are stored each clock hour; a restart
    goes on from the rows this hour already holds (`resume`)."""

    limit: int = REJECTED_ROWS_PER_HOUR
    _hour: int = -1
    _used: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @staticmethod
    def hour_now() -> int:
        return int(time.time() // 3600)

    def resume(self, used: int, hour: int) -> None:
        """Count `used` rows already stored in clock hour `hour` (hours since the epoch)."""
        with self._lock:
            self._hour, self._used = hour, used

    def take(self) -> bool:
        hour = self.hour_now()
        with self._lock:
            if hour != self._hour:
                self._hour, self._used = hour, 0
            if self._used >= self.limit:
                return False
            self._used += 1
            return True


class Runtime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.database = Database(settings.db, memory_limit=settings.memory_limit)
        self.spool = Spool(settings.spool_dir)
        self.writer = Writer(self.database, self.spool, settings.plivo_timezone)
        self.rejections = RejectionBudget(limit=REJECTED_ROWS_PER_HOUR)
        self.started_at = time.time()
        # Background jobs (the snapshot writer) register here to be stopped with the server.
        self.on_stop: list[Callable[[], None]] = []
        self.snapshot_age_s: Callable[[], float | None] = lambda: None

    def start(self) -> None:
        self.writer.start()
        # The hourly budget survives a restart: this hour's kept rows count against it.
        hour = self.rejections.hour_now()
        since = datetime.fromtimestamp(hour * 3600, UTC)
        self.rejections.resume(count_since(self.database.cursor(), since), hour)

    def stop(self) -> None:
        self.writer.stop()
        # After the writer drained, before the database closes: the final snapshot then holds
        # every webhook that was acknowledged.
        for callback in self.on_stop:
            try:
                callback()
            except Exception as exc:
                log.warning("stopping a background job failed: %s", exc)
        self.database.close()


_current: Runtime | None = None


def current() -> Runtime | None:
    """The runtime of the server running in this process, if any."""
    return _current


def install(runtime: Runtime | None) -> None:
    global _current
    _current = runtime
