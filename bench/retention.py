"""Retention and the database file's size, in a server that is never restarted, and offline.

Live (the default): a real `callstatus serve` with CALLSTATUS_RETENTION_DAYS=RETENTION takes
steady signed webhooks (an answer and a hangup a call, CALLS_PER_S calls a second) for DAYS
simulated days of DAY_S seconds each (CALLSTATUS_RETENTION_DAY_SECONDS), so its retention job
removes a day's calls every simulated day and compacts the file while serving. Prints the file's
size at the end of each simulated day beside the same file's size at day RETENTION (before any
row was removed: the file "for RETENTION days of data"), and the receiver's webhook latency (as
the client measures it, median and p99) during a compaction (from the writer's turn to the spool
to the end of the swap, read from the server's log) against outside one, in the same run.

Offline (--offline): does the file stop growing with DELETE + CHECKPOINT alone? Simulates DAYS
days of steady traffic (CALLS calls a day through the traffic model, written as
`callstatus seed` writes them, the rollups refreshed after each day), and at the end of each day
runs retention (CALLSTATUS_RETENTION_DAYS=RETENTION) as the server's job does. Prints the file's
size after each day beside the baseline measured in the same run: the size after RETENTION days,
when nothing had been removed yet (the file "for RETENTION days of data"), and the size after
the compaction `serve` runs at start. With --kept, a second file that keeps everything shows
what retention saves.

Usage: python bench/retention.py [--days 60] [--retention 30] [--day-seconds 4] [--rate 40]
       python bench/retention.py --offline [--days 60] [--retention 30] [--calls 1000] [--kept]
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import re
import statistics
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import duckdb  # noqa: E402
import httpx  # noqa: E402

from callstatus.core import rollups  # noqa: E402
from callstatus.core.db import Database  # noqa: E402
from callstatus.core.settings import Settings  # noqa: E402
from callstatus.privacy.compaction import compact  # noqa: E402
from callstatus.privacy.retention import run_retention  # noqa: E402
from callstatus.simulator.seed import seed_calls  # noqa: E402
from callstatus.simulator.traffic import TrafficModel  # noqa: E402
from tests.factories import signed_request  # noqa: E402
from tests.privacy.growth import live_call  # noqa: E402
from tests.servers import start_server  # noqa: E402

DAY = 86_400.0


def size(db: Database) -> int:
    return db.absolute_path.stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--retention", type=int, default=30)
    parser.add_argument("--offline", action="store_true", help="no server: files only")
    parser.add_argument("--calls", type=int, default=1000, help="offline: calls a day")
    parser.add_argument("--kept", action="store_true", help="offline: a file keeping everything")
    parser.add_argument("--day-seconds", type=float, default=4.0, help="live: a simulated day")
    parser.add_argument("--rate", type=float, default=40.0, help="live: calls a second")
    parser.add_argument("--senders", type=int, default=4, help="live: client threads")
    args = parser.parse_args()
    print(f"{platform.machine()}, {platform.python_version()}, DuckDB {duckdb.__version__}")
    print(f"load average {os.getloadavg()[0]:.2f} at start")
    if args.offline:
        offline(args)
    else:
        live(args)
    print(f"load average {os.getloadavg()[0]:.2f} at the end")


TOKEN = "bench-retention-auth-token"
LOG_TIME = r"^(\S+ \S+) "
DIVERTED = re.compile(LOG_TIME + r"INFO callstatus\.writer: webhooks go to the spool", re.M)
ENDED = re.compile(
    LOG_TIME + r"\S+ callstatus\.compaction: (compacted the database from .*|compaction .*)", re.M
)


def _at(stamp: str) -> float:
    return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def _quantiles(values: list[float]) -> str:
    if len(values) < 2:
        return f"{len(values)} webhooks"
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return (
        f"median {statistics.median(ordered) * 1000:6.1f} ms, p99 {p99 * 1000:6.1f} ms "
        f"({len(ordered):,} webhooks)"
    )


def live(args: argparse.Namespace) -> None:
    day_s = args.day_seconds
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "callstatus.duckdb"
        env = {
            "PLIVO_AUTH_TOKEN": TOKEN,
            "CALLSTATUS_RETENTION_DAYS": str(args.retention),
            "CALLSTATUS_RETENTION_DAY_SECONDS": str(day_s),
        }
        server = start_server(db, env, timeout=120)
        stop = threading.Event()
        latencies: list[tuple[float, float]] = []  # (sent at, seconds)
        refused = [0]
        counter = iter(range(10**9))
        lock = threading.Lock()
        began = time.monotonic()

        def send() -> None:
            with httpx.Client(base_url=server.url, timeout=60) as client:
                while not stop.is_set():
                    with lock:
                        n = next(counter)
                    wait = began + n / args.rate - time.monotonic()
                    if wait > 0:
                        time.sleep(wait)
                    for path, _, pairs in live_call(str(uuid.uuid4()), n, datetime.now(UTC)):
                        sent = time.time()
                        t0 = time.perf_counter()
                        reply = signed_request(
                            client, "POST", path, pairs, base=server.url, token=TOKEN
                        )
                        took = time.perf_counter() - t0
                        if reply.status_code == 200:
                            latencies.append((sent, took))
                        else:
                            refused[0] += 1

        senders = [threading.Thread(target=send) for _ in range(args.senders)]
        for thread in senders:
            thread.start()
        sizes: list[int] = []
        try:
            print(" day   file+WAL MiB   x day-30   webhooks acknowledged")
            for day in range(1, args.days + 1):
                time.sleep(max(0.0, began + day * day_s - time.monotonic()))
                wal = db.with_name(db.name + ".wal")
                sizes.append(db.stat().st_size + (wal.stat().st_size if wal.exists() else 0))
                base = sizes[args.retention - 1] if day >= args.retention else None
                ratio = f"{sizes[-1] / base:13.2f}x" if base else " " * 14
                print(f"{day:4d} {sizes[-1] / 2**20:10.2f} {ratio} {len(latencies):12,d}")
        finally:
            stop.set()
            for thread in senders:
                thread.join(60)
            server.stop()
        log = server.log.read_text()
    starts = [_at(m) for m in DIVERTED.findall(log)]
    ends = [(_at(m[0]), m[1]) for m in ENDED.findall(log)]
    windows = []
    for start in starts:
        end = next((e for e in ends if e[0] >= start), None)
        if end is not None:
            windows.append((start, end[0]))
    during = [t for at, t in latencies if any(a <= at <= b for a, b in windows)]
    outside = [t for at, t in latencies if not any(a <= at <= b for a, b in windows)]
    done = [e for e in ends if e[1].startswith("compacted")]
    base = sizes[args.retention - 1]
    print(f"{len(done)} compactions while serving, {len(ends) - len(done)} given up or stopped:")
    for _, line in done:
        print(f"  {line}")
    print(
        f"file at day {args.days}: {sizes[-1] / 2**20:.2f} MiB, {sizes[-1] / base:.2f}x the "
        f"day-{args.retention} file ({base / 2**20:.2f} MiB); largest after day "
        f"{args.retention}: {max(sizes[args.retention :]) / base:.2f}x"
    )
    print(f"webhook latency during a compaction: {_quantiles(during)}")
    print(f"webhook latency outside one:        {_quantiles(outside)}")
    print(f"refused: {refused[0]}")


def offline(args: argparse.Namespace) -> None:
    model = TrafficModel(7)
    settings = Settings(CALLSTATUS_RETENTION_DAYS=args.retention)
    start = time.time() - args.days * DAY
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
