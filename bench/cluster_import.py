"""Clustered mode: how fast `callstatus import --from FILE` copies a single server's history into
PostgreSQL, against the replica sync copying the same rows out of PostgreSQL in the same run.

Seeds CALLS simulated calls over 30 days into a DuckDB file (`callstatus seed`'s path), starts a
throwaway PostgreSQL (tests/postgres.py), then:
- the import: every webhook of the file into PostgreSQL in batches of 5,000, typed copies
  computed per row as a receiver computes them (callstatus.cluster.importer), webhooks/s;
- the baseline: one sync step of the same rows into an empty replica file (what a dashboard does
  at its first start after the import), webhooks/s;
- a second import of the same file (every row already there: what resuming costs).

Usage: python bench/cluster_import.py [--calls 50000]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from callstatus.cluster import importer, pg  # noqa: E402
from callstatus.cluster.sync import sync_once  # noqa: E402
from callstatus.core.db import Database  # noqa: E402
from callstatus.core.settings import Settings  # noqa: E402
from callstatus.simulator.seed import seed_database  # noqa: E402
from callstatus.simulator.traffic import TrafficModel  # noqa: E402
from tests.postgres import postgres_server  # noqa: E402


def run_import(path: Path, url: str) -> tuple[importer.Imported, float]:
    database = Database(path)
    try:
        with pg.connect(url, autocommit=True) as con:
            started = time.perf_counter()
            done = importer.import_file(database.cursor(), con, ZoneInfo("UTC"))
            return done, time.perf_counter() - started
    finally:
        database.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=50_000)
    args = parser.parse_args()
    print(
        f"{platform.node()}: {os.cpu_count()} cores, Python {platform.python_version()},"
        f" load average {os.getloadavg()[0]:.1f}"
    )
    with postgres_server() as server, tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        single = folder / "single.duckdb"
        database = Database(single)
        settings = Settings(_env_file=None, CALLSTATUS_DB=single)  # type: ignore[call-arg]
        seeded = seed_database(database, TrafficModel(1), settings, args.calls, 30.0)
        database.close()
        print(f"seeded {args.calls:,} calls: {seeded.events:,} webhooks in {single.name}")
        pg.migrate(server.url)

        done, took = run_import(single, server.url)
        rows = done.webhooks_added
        assert rows == done.webhooks_read == seeded.events, done
        replica = Database(folder / "replica.duckdb")
        try:
            with pg.connect(server.url, autocommit=True) as con:
                started = time.perf_counter()
                result = sync_once(con, replica.cursor(), folder=folder)
                took_sync = time.perf_counter() - started
        finally:
            replica.close()
        assert result.webhooks == rows, (result.webhooks, rows)
        again, took_again = run_import(single, server.url)
        assert again.webhooks_added == 0, again

        print(f"sync into an empty replica (baseline): {rows / took_sync:>9,.0f} webhooks/s")
        print(
            f"import into PostgreSQL:                {rows / took:>9,.0f} webhooks/s"
            f"  ({took:.1f} s, {took_sync / took:.2f}x the baseline)"
        )
        print(
            f"import again, every row there:         {rows / took_again:>9,.0f} webhooks/s"
            f"  ({took_again:.1f} s)"
        )
        print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
