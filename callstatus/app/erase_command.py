"""`callstatus erase --number N [--dry-run]`: every call mentioning one number removed. Through
the running server when one holds the database (POST /api/erase), else on the file itself: in
clustered mode (CALLSTATUS_POSTGRES_URL) the file is a replica, synced first, and what goes
from it goes from PostgreSQL too, as the server's erasure does (callstatus.cluster.deletions);
when PostgreSQL cannot be read, nothing is removed."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

import duckdb

from callstatus.app import held_server
from callstatus.app.replica_sync import replica_sync
from callstatus.core import rollups
from callstatus.core.db import Database, held_by_another_process
from callstatus.core.errors import CommandError, UsageError
from callstatus.core.settings import Settings
from callstatus.core.snapshot import write_snapshot
from callstatus.privacy.erase import Erasure, NotANumber, Target, erase, target_for
from callstatus.receiver.spool import Spool

if TYPE_CHECKING:
    from callstatus.cluster.sync import SyncJob

REMOVES_FROM_POSTGRES = "clustered mode removes the rows from PostgreSQL too"


@dataclass(frozen=True)
class EraseOptions:
    number: str
    dry_run: bool = False


def run_erase(options: EraseOptions, settings: Settings) -> int:
    try:
        target = target_for(options.number, settings)
    except NotANumber as exc:
        raise UsageError(f"--number: {exc}") from exc
    try:
        database = Database(settings.db, memory_limit=settings.memory_limit)
    except duckdb.Error as exc:
        if not held_by_another_process(exc):
            raise
        done = _through_server(settings, options)
    else:
        try:
            done = _here(database, settings, target, options.dry_run)
        finally:
            database.close()
    print(done.describe())
    return 0


def _here(database: Database, settings: Settings, target: Target, dry_run: bool) -> Erasure:
    """No server holds the file: erase in this process, then rewrite the snapshot if any."""
    cur = database.cursor()
    spool = Spool(settings.spool_dir)
    with replica_sync(database, settings, REMOVES_FROM_POSTGRES, "nothing was removed") as replica:
        if replica is None:
            rollups.refresh(cur)
            done = erase(cur, settings, target, dry_run=dry_run, trigger="file", spool=spool)
        else:
            done = _mirrored(replica, settings, target, dry_run, spool)
    if not dry_run and settings.snapshot_path.exists():
        write_snapshot(cur, settings.snapshot_path)
        done.snapshot = "rewritten"
    return done


def _mirrored(
    replica: SyncJob, settings: Settings, target: Target, dry_run: bool, spool: Spool
) -> Erasure:
    """Clustered mode: as the server's erasure (callstatus.app.erase_api), with the replica's
    sync held; a dry run counts on the replica as synced."""
    from callstatus.cluster.deletions import PostgresUnreachable

    cur = replica.database.cursor()
    try:
        if dry_run:
            with replica.held():
                rollups.refresh(cur)
                return erase(cur, settings, target, dry_run=True, trigger="file", spool=spool)
        with replica.mirrored() as mirrored:
            rollups.refresh(cur)
            done = erase(cur, settings, target, dry_run=False, trigger="file", spool=spool)
    except PostgresUnreachable as exc:
        raise CommandError(str(exc)) from exc
    done.counts.update(mirrored.as_counts())
    if mirrored.pending is not None:
        print(
            f"callstatus: removed from the replica, not yet from PostgreSQL ({mirrored.error}):"
            f" the keys wait in {mirrored.pending}; the next sync of this file (this command"
            " again, or `callstatus serve` on it) deletes them there",
            file=sys.stderr,
        )
    return done


def _through_server(settings: Settings, options: EraseOptions) -> Erasure:
    response = held_server.ask(
        settings, "/api/erase", json={"number": options.number, "dry_run": options.dry_run}
    )
    return Erasure.from_json(response.json())
