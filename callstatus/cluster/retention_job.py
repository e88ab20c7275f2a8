"""Retention in clustered mode: each run on a dashboard's replica also deletes in PostgreSQL
what it removed (callstatus.cluster.deletions), so that a rebuilt replica has nothing past the
horizon."""

from __future__ import annotations

import logging

from callstatus.cluster.sync import SyncJob
from callstatus.core.db import Database
from callstatus.core.rollups import RollupJob
from callstatus.core.settings import Settings
from callstatus.privacy.retention import RetentionJob, RetentionRun

log = logging.getLogger("callstatus.retention")


class MirroredRetentionJob(RetentionJob):
    """RetentionJob whose runs hold the replica's sync and mirror their deletions. A run while
    PostgreSQL cannot be read removes nothing (logged) and is tried again at the next."""

    def __init__(
        self,
        database: Database,
        settings: Settings,
        rollup_job: RollupJob | None,
        replica: SyncJob,
    ) -> None:
        super().__init__(database, settings, rollup_job)
        self.replica = replica

    def run(self) -> RetentionRun | None:
        with self.replica.mirrored() as mirrored:
            run = super().run()
        if mirrored.counts:
            log.info("retention: deleted in PostgreSQL too: %s", _describe(mirrored.counts))
        return run


def _describe(counts: dict[str, int]) -> str:
    return ", ".join(f"{n:,} from {table}" for table, n in counts.items()) or "nothing"
