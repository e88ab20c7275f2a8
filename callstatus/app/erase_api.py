"""POST /api/erase: an erasure in the server, for `callstatus erase` while the server holds the
database. The number travels in the JSON body, never in the URL (access logs keep URLs)."""

from __future__ import annotations

import asyncio
import contextlib
import threading

from fastapi import FastAPI
from pydantic import BaseModel, Field
from starlette.responses import JSONResponse, Response

from callstatus.app.runtime import NotStarted, Runtime
from callstatus.core import rollups
from callstatus.core.snapshot import SnapshotJob
from callstatus.privacy.erase import Erasure, NotANumber, Target, erase, target_for
from callstatus.privacy.maintenance import rollups_paused
from callstatus.receiver.errors import error_response

NO_DATABASE = (
    "this server holds no database (serve --role receiver): run callstatus erase where the "
    "database is (--role all or dashboard)"
)
# One erasure at a time: each pauses the rollups and rewrites archive files.
_ONE_AT_A_TIME = threading.Lock()


class EraseRequest(BaseModel):
    number: str = Field(description="the number in any form Plivo sends it, e.g. +14155550107")
    dry_run: bool = Field(default=False, description="count what would go, remove nothing")


def add_erase_route(api: FastAPI, rt: Runtime) -> None:
    @api.post("/api/erase", tags=["Personal data"])
    async def erase_now(request: EraseRequest) -> Response:
        """Remove every call mentioning the number (webhooks, rollups, refused requests, the
        archive), write a new snapshot, and record the erasure by a pseudonym in `erasures`.
        Answers the counts per table. API tokens may not call it (403): the dashboard's
        password or the server's local token only."""
        try:
            target = target_for(request.number, rt.settings)
        except NotANumber as exc:
            return error_response(400, "not_a_number", str(exc))
        try:
            done = await asyncio.to_thread(erase_in_server, rt, target, request.dry_run)
        except NotStarted:
            return error_response(409, "no_database", NO_DATABASE)
        except RuntimeError as exc:
            # Clustered mode (callstatus.cluster.deletions.PostgresUnreachable): nothing removed.
            if type(exc).__name__ != "PostgresUnreachable":
                raise
            return error_response(503, "postgres_unreachable", str(exc))
        return JSONResponse(done.as_json())


def erase_in_server(rt: Runtime, target: Target, dry_run: bool) -> Erasure:
    """The rollups refreshed and paused, the erasure, then the snapshot written anew. In
    clustered mode the rows go from PostgreSQL too (callstatus.cluster.deletions)."""
    with _ONE_AT_A_TIME:
        cur = rt.database.cursor()
        mirror = rt.replica.mirrored() if rt.replica is not None and not dry_run else None
        with (
            mirror if mirror is not None else contextlib.nullcontext() as mirrored,
            rollups_paused(rt.rollups),
        ):
            rollups.refresh(cur)
            done = erase(
                cur, rt.settings, target, dry_run=dry_run, trigger="server", spool=rt.intake.spool
            )
        if mirrored is not None:
            done.counts.update(mirrored.as_counts())
        if not dry_run and rt.snapshot is not None:
            renew_snapshot(rt.snapshot)
            done.snapshot = "rewritten"
    return done


def renew_snapshot(job: SnapshotJob) -> None:
    """A snapshot without the erased rows, whatever its fingerprint says: a copy already under
    way finishes first, then the old file goes and a new one is written."""
    job.refresh()
    job.target.unlink(missing_ok=True)
    job.refresh()
