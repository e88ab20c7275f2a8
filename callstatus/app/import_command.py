"""`callstatus import --from FILE`: a single server's database copied into the PostgreSQL store of
clustered mode (CALLSTATUS_POSTGRES_URL), so that every dashboard's replica holds the calls taken
before the switch (callstatus.cluster.importer). The file is read alone: the server that wrote it
must be stopped. It is left as it was; a dashboard then needs a new replica file, since one
holding webhooks that did not come from PostgreSQL is refused (callstatus.cluster.sync)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

import duckdb
import psycopg

from callstatus.core.db import Database, held_by_another_process
from callstatus.core.errors import CommandError
from callstatus.core.progress import Progress
from callstatus.core.settings import Settings, SettingsError


@dataclass(frozen=True)
class ImportOptions:
    source: Path


def run_import(options: ImportOptions, settings: Settings) -> int:
    from callstatus.cluster import importer, pg
    from callstatus.cluster.sync import source_of

    if settings.postgres_url is None:
        raise SettingsError(
            "callstatus import copies a database into clustered mode's PostgreSQL: set "
            "CALLSTATUS_POSTGRES_URL (postgresql://USER:PASSWORD@HOST:5432/DATABASE)"
        )
    source = options.source
    if not source.is_file():
        raise CommandError(f"--from: no database at {source}")
    try:
        database = Database(source)
    except duckdb.Error as exc:
        if held_by_another_process(exc):
            raise CommandError(
                f"{source} is held by another process: stop the `callstatus serve` that uses it "
                "(the import reads the file alone), then run this again"
            ) from exc
        raise CommandError(
            f"--from: {source} cannot be opened as a callstatus database: {exc}"
        ) from exc
    try:
        cur = database.cursor()
        replica = cur.execute("SELECT source FROM replica_state").fetchone()
        if replica is not None:
            raise CommandError(
                f"{source} is a replica of the PostgreSQL at {replica[0]}: its webhooks are "
                "there already (import a single server's file, one that never ran clustered)"
            )
        webhooks, rejected = importer.counts(cur)
        try:
            applied = pg.migrate(settings.postgres_url)
            with pg.connect(settings.postgres_url, autocommit=True) as con:
                print(
                    f"callstatus: copying {webhooks:,} webhooks and {rejected:,} refused requests "
                    f"from {source} into {source_of(con)}"
                    + (f" (migrated: {', '.join(applied)})" if applied else ""),
                    file=sys.stderr,
                )
                progress = Progress(webhooks + rejected, "importing rows")
                try:
                    done = importer.import_file(
                        cur, con, ZoneInfo(settings.plivo_timezone), advance=progress.advance
                    )
                finally:
                    progress.close()
        except psycopg.Error as exc:
            raise CommandError(
                f"PostgreSQL failed during the import ({type(exc).__name__}: "
                f"{' '.join(str(exc).split())}): what was copied stays, and running the same "
                "command again goes on from there"
            ) from exc
    finally:
        database.close()
    print(done.describe())
    print(
        f"\nNext: start the dashboards with a new CALLSTATUS_DB (a replica file of their own; "
        f"{source} is refused as one, since its rows did not come from PostgreSQL): each "
        "copies these calls with the receivers' from PostgreSQL.",
        file=sys.stderr,
    )
    return 0
