"""The running server's parts: the database, the receiver's intake (writer and spool), the rollup
and snapshot jobs, and the handle through which the dashboard in this process sees them.

Built with the app (`build_app`), so the endpoints are handed its intake then; the database is
opened only by `start()`, which the app's lifespan runs, and everything stops in order: webhooks
refused first, the writer drained, the rollups' final refresh, the final snapshot (holding every
acknowledged webhook), then the database closed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from callstatus.core import server
from callstatus.core.db import Database
from callstatus.core.rollups import RollupJob
from callstatus.core.server import ReceiverStatus, ServerHandle
from callstatus.core.settings import Settings
from callstatus.core.snapshot import SnapshotJob, age_s
from callstatus.receiver.intake import Intake
from callstatus.receiver.writer import Writer

log = logging.getLogger("callstatus")


def open_database(settings: Settings) -> Database:
    """The server's database, migrated, within CALLSTATUS_MEMORY_LIMIT."""
    return Database(settings.db, memory_limit=settings.memory_limit)


class NotStarted(RuntimeError):
    """A part that only exists while the server runs was asked for before `start()`."""


class Runtime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.intake = Intake(settings)
        self._database: Database | None = None
        self.rollups: RollupJob | None = None
        self.snapshot: SnapshotJob | None = None

    @property
    def database(self) -> Database:
        if self._database is None:
            raise NotStarted("the server's database is open only while it runs")
        return self._database

    @property
    def writer(self) -> Writer:
        writer = self.intake.writer
        if writer is None:
            raise NotStarted("the writer runs only while the server runs")
        return writer

    def start(self) -> None:
        database = self._database = open_database(self.settings)
        self.intake.start(database)
        # The rollups first, so that at stop their final refresh lands in the final snapshot.
        self.rollups = RollupJob(database)
        self.rollups.loop.start()
        self.snapshot = SnapshotJob(
            database, self.settings.snapshot_path, self.settings.snapshot_interval_s
        )
        self.snapshot.loop.start()
        server.install(ServerHandle(self.settings, database, self.rollups, self.status))

    def stop(self) -> None:
        server.install(None)
        self.intake.stop()
        # After the writer drained, before the database closes: the final refresh and the final
        # snapshot then hold every webhook that was acknowledged.
        if self.rollups is not None:
            _stop("rollups", self.rollups.stop)
        if self.snapshot is not None:
            _stop("snapshot", self.snapshot.loop.stop)
        if self._database is not None:
            self._database.close()
        self.rollups = self.snapshot = self._database = None

    def status(self) -> ReceiverStatus:
        """What the receiver says about itself (Receiver health, /healthz)."""
        writer = self.intake.writer
        return ReceiverStatus(
            spool_depth=self.intake.spool.depth(),
            writer_queue=writer.queue_depth() if writer is not None else 0,
            last_error=writer.last_error if writer is not None else "the server is stopping",
            snapshot_age_s=age_s(self.snapshot.target) if self.snapshot is not None else None,
        )


def _stop(name: str, stop: Callable[[], None]) -> None:
    try:
        stop()
    except Exception as exc:
        log.warning("stopping the %s job failed: %s", name, exc)
