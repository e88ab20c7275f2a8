"""Reconciliation speed: a history import against reading the same records alone.

Builds CALLS simulated calls over the last DAYS days (the traffic model, with their Plivo call
records: the A leg and every B leg), serves the records from the local Call API
(callstatus.simulator.call_api, 20 a page as Plivo does), and times, median of RUNS each:
- the baseline: the client reading every record, page by page, storing nothing;
- `reconcile` into an empty database (the history import: every call added from its record);
- `reconcile` into a database holding the calls' webhooks (every record matched to its call);
- `reconcile` again over the same window (nothing new: what every background run costs).
Each figure is printed beside the baseline as a ratio, with records per second.

Usage: python bench/reconcile.py [--calls 5000] [--days 30] [--runs 3]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import duckdb  # noqa: E402

from callstatus.core.db import Database  # noqa: E402
from callstatus.core.duplicates import DuplicateTracker  # noqa: E402
from callstatus.core.records import make_record  # noqa: E402
from callstatus.core.settings import Settings  # noqa: E402
from callstatus.core.storage import insert_events  # noqa: E402
from callstatus.reconcile.client import CallApi  # noqa: E402
from callstatus.reconcile.run import Window, reconcile  # noqa: E402
from callstatus.simulator.call_api import CallApiServer  # noqa: E402
from callstatus.simulator.traffic import Call, TrafficModel  # noqa: E402

AUTH_ID = "MABENCH0000000000001"
TOKEN = "bench-token"


def _calls(n: int, days: float) -> list[Call]:
    model = TrafficModel(seed=3)
    end = (datetime.now(UTC) - timedelta(hours=2)).timestamp()
    starts = model.starts(n, end, days, model.rng(-1))
    return [model.call(i, at) for i, at in enumerate(starts)]


def _store_webhooks(path: Path, calls: list[Call]) -> None:
    db = Database(path)
    records = [
        make_record(
            h.kind, h.method, h.params(), "unchecked", datetime.fromtimestamp(h.delivered_at, UTC)
        )
        for c in calls
        for h in c.webhooks
    ]
    DuplicateTracker().mark(records)
    cur = db.cursor()
    cur.execute("BEGIN")
    insert_events(cur, records, "UTC")
    cur.execute("COMMIT")
    db.close()


def _median(runs: int, prepare: Callable[[], object], work: Callable[[], object]) -> float:
    times = []
    for _ in range(runs):
        prepare()
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--days", type=float, default=30.0)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    calls = _calls(args.calls, args.days)
    records = [r for c in calls for r in c.records]
    now = datetime.now(UTC)
    window = Window(now - timedelta(days=args.days + 1), now)
    folder = Path(tempfile.mkdtemp(prefix="callstatus-bench-reconcile-"))
    with CallApiServer(records, auth_id=AUTH_ID, token=TOKEN) as server:
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            PLIVO_AUTH_ID=AUTH_ID, PLIVO_API_TOKEN=TOKEN, PLIVO_API_URL=server.url,
        )  # fmt: skip
        api = CallApi.from_settings(settings)

        def read_only() -> None:
            count = sum(len(page.records) for page in api.pages(window.start, window.end))
            assert count == len(records), count

        def fresh(path: Path, webhooks: bool) -> Callable[[], None]:
            def prepare() -> None:
                for stale in folder.glob(path.name + "*"):
                    stale.unlink()
                if webhooks:
                    _store_webhooks(path, calls)
                else:
                    Database(path).close()  # created and migrated outside the timing

            return prepare

        def run_on(path: Path, expect_new: bool) -> Callable[[], None]:
            def work() -> None:
                db = Database(path)
                summary = reconcile(db.cursor(), api, window, settings, trigger="command")
                db.close()
                assert summary.status == "ok", summary.error
                assert summary.records_new == (len(records) if expect_new else 0)

            return work

        empty, matched = folder / "empty.duckdb", folder / "matched.duckdb"
        baseline = _median(args.runs, lambda: None, read_only)
        imported = _median(args.runs, fresh(empty, False), run_on(empty, True))
        reconciled = _median(args.runs, fresh(matched, True), run_on(matched, True))
        again = _median(args.runs, lambda: None, run_on(matched, False))
        api.close()

    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()
    print(
        f"{len(records):,} records of {len(calls):,} calls over {args.days:g} days, "
        f"median of {args.runs}; {platform.python_version()}, DuckDB {duckdb.__version__}, "
        f"commit {commit}"
    )
    print(f"{'run':<44} {'seconds':>8} {'records/s':>10} {'vs reading':>11}")
    for name, seconds in (
        ("reading the records only (baseline)", baseline),
        ("history import into an empty database", imported),
        ("reconcile, the calls' webhooks stored", reconciled),
        ("reconcile again, nothing new", again),
    ):
        rate = len(records) / seconds
        print(f"{name:<44} {seconds:>8.2f} {rate:>10,.0f} {seconds / baseline:>10.2f}x")


if __name__ == "__main__":
    main()
