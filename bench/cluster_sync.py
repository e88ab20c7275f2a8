"""Clustered mode: how fast a dashboard's replica takes PostgreSQL's webhooks, and how far behind
it stays under a steady load.

Starts a throwaway PostgreSQL (tests/postgres.py), fills webhook_inbox with ROWS simulated
webhooks (one simulated day's calls, copied with new event_ids until ROWS are there), then:
- the baseline: DuckDB's own bulk insert of the same rows from Arrow (what `callstatus seed`
  does) into an empty file;
- one sync step into an empty replica file (a rebuild: every row copied), webhooks/s;
- the lag at RATE webhooks/s offered for SECONDS: a writer commits RATE/50 rows every 20 ms (a
  receiver's group commit) while the sync job runs every 0.5 s beside the rollup job; a row's lag
  is from its commit in PostgreSQL to the commit of the step that brought it into the replica.

Usage: python bench/cluster_sync.py [--rows 500000] [--rate 500] [--seconds 20]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pyarrow as pa  # noqa: E402

from callstatus.cluster import pg  # noqa: E402
from callstatus.cluster.sync import SYNC_EVERY_S, sync_once  # noqa: E402
from callstatus.core.db import Database  # noqa: E402
from callstatus.core.rollups import RollupJob  # noqa: E402
from callstatus.core.storage import insert_table  # noqa: E402
from tests.cluster.pg_rows import insert_pg, traffic  # noqa: E402
from tests.postgres import postgres_server  # noqa: E402

COLUMNS = (
    "received_at, kind, http_method, params, signature, duplicate, params_hash, typed, receiver"
)


def fill(url: str, base: pa.Table, rows: int) -> int:
    """ROWS rows in PostgreSQL: the base table, then copies of it made by PostgreSQL itself."""
    with pg.connect(url) as con:
        insert_pg(con, base)
        con.commit()
        have = base.num_rows
        while have < rows:
            con.execute(
                f"INSERT INTO webhook_inbox (event_id, {COLUMNS}) SELECT gen_random_uuid(),"
                f" {COLUMNS} FROM webhook_inbox LIMIT %s",
                (min(have, rows - have),),
            )
            con.commit()
            (have,) = con.execute("SELECT count(*) FROM webhook_inbox").fetchone()  # type: ignore[misc]
    with pg.connect(url, autocommit=True) as con:
        con.execute("VACUUM ANALYZE webhook_inbox")
    return int(have)


def baseline(folder: Path, base: pa.Table, rows: int) -> float:
    """Seconds for DuckDB to bulk-insert `rows` rows (copies of base) from Arrow."""
    copies = []
    while sum(t.num_rows for t in copies) < rows:
        fresh = pa.array([str(uuid.uuid4()) for _ in range(base.num_rows)])
        copies.append(base.set_column(0, "event_id", fresh))
    table = pa.concat_tables(copies).slice(0, rows)
    database = Database(folder / "baseline.duckdb")
    try:
        cur = database.cursor()
        started = time.perf_counter()
        cur.execute("BEGIN")
        for start in range(0, rows, 100_000):
            insert_table(cur, table.slice(start, 100_000))
        cur.execute("COMMIT")
        return time.perf_counter() - started
    finally:
        database.close()


def rebuild(url: str, folder: Path) -> tuple[int, float]:
    database = Database(folder / "replica.duckdb")
    try:
        with pg.connect(url, autocommit=True) as con:
            started = time.perf_counter()
            result = sync_once(con, database.cursor())
            return result.webhooks, time.perf_counter() - started
    finally:
        database.close()


def lag(url: str, folder: Path, base: pa.Table, rate: int, seconds: float) -> list[float]:
    """Each offered row's seconds from its PostgreSQL commit to the replica's commit."""
    with pg.connect(url, autocommit=True) as con:
        con.execute("TRUNCATE webhook_inbox")  # the rows of the rebuild are not needed here
    database = Database(folder / "lag.duckdb")
    committed: dict[str, float] = {}
    arrived: dict[str, float] = {}
    stop = threading.Event()
    per_commit = max(1, rate // 50)

    def write() -> None:
        rows = base.to_pylist()
        k = 0
        with pg.connect(url) as con:
            began = time.monotonic()
            sent = 0
            while not stop.is_set():
                due = began + sent / rate
                pause = due - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                batch = []
                for _ in range(per_commit):
                    row = dict(rows[k % len(rows)], event_id=str(uuid.uuid4()))
                    batch.append(row)
                    k += 1
                insert_pg(con, pa.Table.from_pylist(batch, schema=base.schema))
                con.commit()
                now = time.monotonic()
                for row in batch:
                    committed[row["event_id"]] = now
                sent += per_commit

    def replicate() -> None:
        cur = database.cursor()
        with pg.connect(url, autocommit=True) as con:
            while not stop.is_set():
                started = time.monotonic()
                sync_once(con, cur)
                done = time.monotonic()
                fresh = cur.execute("SELECT event_id::VARCHAR FROM webhook_events").fetchall()
                for (event_id,) in fresh:
                    arrived.setdefault(event_id, done)
                stop.wait(max(0.0, SYNC_EVERY_S - (time.monotonic() - started)))

    rollups = RollupJob(database)
    rollups.loop.start()
    threads = [threading.Thread(target=write), threading.Thread(target=replicate)]
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    rollups.stop()
    database.close()
    return [arrived[key] - at for key, at in committed.items() if key in arrived]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("--rate", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    print(
        f"{platform.node()}: {os.cpu_count()} cores, Python {platform.python_version()},"
        f" load average {os.getloadavg()[0]:.1f}"
    )
    base = traffic(2_000, seed=3)
    size = sum(len(v) for v in base.column("params").to_pylist() + base.column("typed").to_pylist())
    print(
        f"rows: {base.num_rows} simulated webhooks, {size / base.num_rows:.0f} bytes of JSON each"
    )
    with postgres_server() as server, tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        pg.migrate(server.url)
        started = time.perf_counter()
        rows = fill(server.url, base, args.rows)
        print(f"filled PostgreSQL with {rows:,} rows in {time.perf_counter() - started:.1f} s")
        took_base = baseline(folder, base, rows)
        copied, took = rebuild(server.url, folder)
        assert copied == rows, (copied, rows)
        print(f"DuckDB bulk insert from Arrow (baseline): {rows / took_base:>9,.0f} webhooks/s")
        print(
            f"sync into an empty replica:               {rows / took:>9,.0f} webhooks/s"
            f"  ({took:.1f} s, {took_base / took:.2f}x the baseline)"
        )
        lags = sorted(lag(server.url, folder, base, args.rate, args.seconds))
        p99 = lags[int(len(lags) * 0.99) - 1]
        print(
            f"lag at {args.rate} webhooks/s offered for {args.seconds:.0f} s ({len(lags):,} rows):"
            f" median {statistics.median(lags):.2f} s, p99 {p99:.2f} s, max {lags[-1]:.2f} s"
        )
        print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
