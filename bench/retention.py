"""Retention and the database file's size: does it stop growing with DELETE + CHECKPOINT alone?

Simulates DAYS days of steady traffic (CALLS calls a day through the traffic model, written as
`callstatus seed` writes them, the rollups refreshed after each day), and at the end of each day
runs retention (CALLSTATUS_RETENTION_DAYS=RETENTION) as the server's job does. Prints the file's
size after each day beside the baseline measured in the same run: the size after RETENTION days,
when nothing had been removed yet (the file "for RETENTION days of data"), and the size after
the compaction `serve` runs at start. With --kept, a second file that keeps everything shows
what retention saves.

Usage: python bench/retention.py [--days 60] [--retention 30] [--calls 1000] [--kept]
"""

from __future__ import annotations

import argparse
import platform
import random
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import duckdb  # noqa: E402

from callstatus.core import rollups  # noqa: E402
from callstatus.core.db import Database  # noqa: E402
from callstatus.core.settings import Settings  # noqa: E402
from callstatus.privacy.compaction import compact  # noqa: E402
from callstatus.privacy.retention import run_retention  # noqa: E402
from callstatus.simulator.seed import seed_calls  # noqa: E402
from callstatus.simulator.traffic import TrafficModel  # noqa: E402

DAY = 86_400.0


def size(db: Database) -> int:
    return db.absolute_path.stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--retention", type=int, default=30)
    parser.add_argument("--calls", type=int, default=1000, help="calls a day")
    parser.add_argument("--kept", action="store_true", help="also a file that keeps everything")
    args = parser.parse_args()
    model = TrafficModel(7)
    settings = Settings(CALLSTATUS_RETENTION_DAYS=args.retention)
    start = time.time() - args.days * DAY
    print(f"{platform.machine()}, {platform.python_version()}, DuckDB {duckdb.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        purged = Database(Path(tmp) / "purged.duckdb")
        kept = Database(Path(tmp) / "kept.duckdb") if args.kept else None
        files = [db for db in (purged, kept) if db is not None]
        baseline = None
        began = time.monotonic()
        print(" day   webhooks   purged file   kept file   purge s")
        for day in range(args.days):
            begin = start + day * DAY
            starts = model.starts(args.calls, begin + DAY, 1.0, random.Random(day))
            events = 0
            for db in files:
                result = seed_calls(
                    db,
                    model,
                    starts,
                    signature="valid",
                    plivo_timezone="UTC",
                    first_index=day * args.calls,
                    workers=1,
                )
                events = result.events
                rollups.refresh(db.cursor())
            if kept is not None:
                kept.cursor().execute("CHECKPOINT")
            t0 = time.perf_counter()
            now = datetime.fromtimestamp(begin + DAY + model.max_span_s, UTC)
            run_retention(purged.cursor(), settings, now=now, db_path=purged.absolute_path)
            took = time.perf_counter() - t0
            purged.cursor().execute("CHECKPOINT")
            if day + 1 == args.retention:
                baseline = size(purged)
            print(
                f"{day + 1:4d} {events:10,d} {size(purged) / 2**20:10.1f} MiB"
                f" {size(kept) / 2**20 if kept else 0:9.1f} MiB {took:8.2f}"
            )
        for db in files:
            db.close()
        final = (Path(tmp) / "purged.duckdb").stat().st_size
        print(f"elapsed {time.monotonic() - began:.0f} s")
        done = compact(Path(tmp) / "purged.duckdb")
        compacted = done.bytes_after if done else final
        if done:
            print(done.describe())
        if baseline:
            print(
                f"after {args.days} days: {final / 2**20:.1f} MiB against "
                f"{baseline / 2**20:.1f} MiB for {args.retention} days of data "
                f"({final / baseline:.2f}x); compacted {compacted / 2**20:.1f} MiB "
                f"({compacted / baseline:.2f}x)"
            )


if __name__ == "__main__":
    main()
