"""Clustered mode's commands without a server (`reconcile`, `erase`): the local DuckDB file is a
replica of PostgreSQL, synced here before the command reads it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from callstatus.core.db import Database
from callstatus.core.errors import CommandError, exception_line
from callstatus.core.settings import Settings

if TYPE_CHECKING:
    from callstatus.cluster.sync import SyncJob


@contextlib.contextmanager
def replica_sync(
    database: Database, settings: Settings, why: str, nothing_done: str
) -> Iterator[SyncJob | None]:
    """Clustered mode without a server: the local file is a replica of PostgreSQL, brought up
    to date here (PostgreSQL migrated first, then deletions left waiting for it done) before
    the command reads it; the sync job given (its loop not started) does the command's later
    steps. Refuses (CommandError) when PostgreSQL cannot be read. None in embedded mode."""
    url = settings.postgres_url
    if url is None:
        yield None
        return
    # Clustered mode's modules (and psycopg) are imported only with CALLSTATUS_POSTGRES_URL.
    import psycopg

    from callstatus.cluster import deletions, pg
    from callstatus.cluster.sync import ReplicaMismatch, SyncJob, sync_once

    try:
        pg.migrate(url)
        with pg.connect(url, autocommit=True) as con:
            sync_once(con, database.cursor())
        # Deletions an earlier erasure left waiting for PostgreSQL, as a sync step does them.
        deletions.flush_pending(url, deletions.pending_path(database.absolute_path))
    except ReplicaMismatch as exc:
        raise CommandError(f"{exc} ({nothing_done})") from exc
    except psycopg.Error as exc:
        raise CommandError(
            f"{why}, and it cannot be read now ({exception_line(exc)}): {nothing_done}; try again "
            "once PostgreSQL (CALLSTATUS_POSTGRES_URL) is reachable"
        ) from exc
    job = SyncJob(database, url)
    job.loop.run_at_stop = False  # never started: stop() only closes its connection
    try:
        yield job
    finally:
        job.stop()
