"""Dashboard benchmark at 10 million webhooks: every page in Chromium, the queries, RSS.

Seeds a file with 2,320,000 calls over 30 days (about 10 million webhooks: the seed's model
sends about 4.3 webhooks a call; the file is reused when it already has them, and its path can
be given with --db or CALLSTATUS_BENCH_DB), brings its rollups up to date, then:
- in headless Chromium on a real `callstatus serve` (bench/browser_pages.py): every page the
  dashboard registers, from navigation until its last chart is drawn, for "Last 30 days", warm
  and right after a fresh start of the server (median of --runs), with the server's RSS
  sampled throughout and the time of a trivial page in the same browser as the baseline;
- times every query function of the dashboard's queries (median of 5) on the rollup tables and,
  as the in-run baseline, on the views (overview queries, fewer runs: each takes seconds);
- times an incremental rollup refresh after a burst of new calls (what the server pays);
- times each page's first render with `streamlit.testing.v1.AppTest` (median of 3, data cache
  cleared before each).

Usage: python bench/dashboard.py [--calls 2320000] [--db PATH] [--runs 3] [--browser-only]
       [--skip-browser] [--view-runs 3] [--small]
--small: 20,000 calls in their own file, one run of each: a quick check of the script.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
OUT = ROOT / "bench" / "out"
DB = Path(os.environ.get("CALLSTATUS_BENCH_DB") or OUT / "dashboard.duckdb")
SMALL_DB = OUT / "dashboard-small.duckdb"
CALLS = 2_320_000  # about 10 million webhooks
SMALL_CALLS = 20_000
# AppTest runs pages without a Streamlit server: silence its "bare mode" warnings.
os.environ.setdefault("STREAMLIT_LOGGER_LEVEL", "error")

import duckdb  # noqa: E402
import streamlit as st  # noqa: E402

from callstatus.core import rollups  # noqa: E402
from callstatus.core.db import Database  # noqa: E402
from callstatus.core.settings import Settings, get_settings  # noqa: E402
from callstatus.dashboard.filters import DEFAULT_PRESET, Filters, auto_bucket, resolve_range  # noqa: E402
from callstatus.dashboard.queries import (  # noqa: E402
    base,
    calls,
    causes,
    health,
    legs,
    overview,
    sidebar,
)
from callstatus.dashboard.queries.relations import ROLLUPS, VIEWS, Relations  # noqa: E402
from callstatus.simulator.seed import seed_calls, seed_database  # noqa: E402
from callstatus.simulator.traffic import TrafficModel  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
import browser_pages  # noqa: E402

APP = ROOT / "callstatus" / "dashboard" / "app.py"
PAGES = {
    "Overview": None,
    "Hangup causes": "screens/causes.py",
    "A/B legs": "screens/legs.py",
    "Calls": "screens/calls.py",
    "Receiver health": "screens/health.py",
}
SEED = 1
WIDE_PRESET = "Last 30 days"  # every seeded call
BURST_CALLS = 1000


# --- the database -----------------------------------------------------------------------------


def use_database(path: Path) -> None:
    global DB
    DB = path.resolve()
    os.environ["CALLSTATUS_DB"] = str(DB)  # what the dashboard under AppTest opens
    get_settings.cache_clear()


def ensure_seeded(calls: int) -> None:
    """Seed the file unless it holds `calls` calls already; then bring the rollups up to date."""
    db = Database(DB)
    try:
        cur = db.cursor()
        began = time.perf_counter()
        new = rollups.refresh(cur)
        if new:
            print(f"rollups refreshed over {new:,} webhooks in {time.perf_counter() - began:.1f} s")
        have = _one(cur, "SELECT count(*) FROM calls_rollup")
        if have >= calls:
            print(f"reusing {DB} ({have:,} calls)")
            return
        if have:
            raise SystemExit(f"{DB} holds {have:,} calls, fewer than {calls:,}: delete it first")
        settings = Settings(_env_file=None, CALLSTATUS_DB=DB)  # type: ignore[call-arg]
        print(f"seeding {calls:,} calls into {DB} (several minutes)")
        seed_database(db, TrafficModel(SEED), settings, calls, 30.0)
    finally:
        db.close()


def time_full_rebuild() -> float:
    db = Database(DB)
    try:
        began = time.perf_counter()
        rollups.refresh(db.cursor(), full=True)
        return time.perf_counter() - began
    finally:
        db.close()


def time_incremental_refresh() -> tuple[int, float]:
    """A burst of new calls (as a live server stores them), then one incremental refresh."""
    db = Database(DB)
    try:
        cur = db.cursor()
        first = _one(cur, "SELECT count(*) FROM calls_rollup")
        now = time.time() - 600
        starts = [now + 0.3 * i for i in range(BURST_CALLS)]
        seed_calls(
            db,
            TrafficModel(SEED + first),
            starts,
            signature="unchecked",
            plivo_timezone="UTC",
            first_index=first,
            workers=1,
        )
        began = time.perf_counter()
        new = rollups.refresh(cur)
        return new, time.perf_counter() - began
    finally:
        db.close()


def _one(cur: duckdb.DuckDBPyConnection, sql: str) -> int:
    row = cur.execute(sql).fetchone()
    return int(row[0]) if row else 0


# --- queries ----------------------------------------------------------------------------------


class Captured(Exception):
    """Raised instead of running a query: the bench only wants its SQL and parameters."""

    def __init__(self, sql: str, params: tuple[tuple[str, Any], ...]) -> None:
        self.sql, self.params = sql, params


def _capture(sql: str, params: tuple[tuple[str, Any], ...], source: str) -> Any:
    raise Captured(sql, params)


@dataclass
class Query:
    name: str
    call: Callable[[Relations], object]
    overview: bool = False


def query_list(f: Filters, call_uuid: str, cause: str) -> list[Query]:
    return [
        Query("event_count", lambda r: sidebar.event_count(), True),
        Query("data_span", sidebar.data_span, True),
        Query("kpis", lambda r: overview.kpis(r, f), True),
        Query("kpis (previous range)", lambda r: overview.kpis(r, f.previous()), True),
        Query("rates_over_time", lambda r: overview.rates_over_time(r, f), True),
        Query("outcomes_over_time", lambda r: overview.outcomes_over_time(r, f), True),
        Query("answer_heatmap dial", lambda r: overview.answer_heatmap(r, f, "dial"), True),
        Query("answer_heatmap call", lambda r: overview.answer_heatmap(r, f, "call"), True),
        Query("our_numbers", sidebar.our_numbers),
        Query("destinations_list", sidebar.destinations_list),
        Query("causes a", lambda r: causes.by_cause(r, f, "a")),
        Query("causes b", lambda r: causes.by_cause(r, f, "b")),
        Query("causes_by_source a", lambda r: causes.by_source(r, f, "a")),
        Query("causes_over_time a", lambda r: causes.over_time(r, f, "a")),
        Query("causes_over_time b", lambda r: causes.over_time(r, f, "b")),
        Query("cause_legs a", lambda r: causes.legs_with_cause(r, f, "a", cause)),
        Query("fanout", lambda r: legs.fanout(r, f)),
        Query("winners_by_position", lambda r: legs.winners_by_position(r, f)),
        Query("destinations", lambda r: legs.destinations(r, f)),
        Query("outcome_matrix", lambda r: legs.outcome_matrix(r, f)),
        Query("ring_times", lambda r: legs.ring_times(r, f)),
        Query("abandoned", lambda r: legs.abandoned(r, f)),
        Query("pairings", lambda r: legs.pairings(r, f)),
        Query("search_calls ''", lambda r: calls.search_calls(r, "", "UTC")),
        Query("search_calls prefix", lambda r: calls.search_calls(r, call_uuid[:8], "UTC")),
        Query("call_summary", lambda r: calls.call_summary(r, call_uuid, "UTC")),
        Query("call_b_legs", lambda r: calls.call_b_legs(r, call_uuid, "UTC")),
        Query("call_timeline", lambda r: calls.call_timeline(r, call_uuid, "UTC")),
        Query("webhooks_per_kind", lambda r: health.webhooks_per_kind(r, f)),
        Query("receiver_totals", lambda r: health.receiver_totals(r, f)),
        Query("rejections", lambda r: health.rejections(f)),
    ]


def captured_sql(query: Query, on_rollups: bool) -> tuple[str, dict[str, Any]]:
    """The SQL and parameters a query function runs, on the rollups or on the views (the two
    may bind different parameters)."""
    real_fetch = base._fetch
    base._fetch = _capture  # type: ignore[assignment]
    try:
        query.call(ROLLUPS if on_rollups else VIEWS)
    except Captured as got:
        return got.sql, {k: list(v) if isinstance(v, tuple) else v for k, v in got.params}
    finally:
        base._fetch = real_fetch
    raise RuntimeError(f"{query.name} ran no query")


def median_s(cur: duckdb.DuckDBPyConnection, sql: str, params: dict[str, Any], runs: int) -> float:
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        cur.execute(sql, params).fetchall()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def filters_for(preset: str) -> Filters:
    """The Filters the dashboard builds for a range preset, in UTC, no slices."""
    start, end = resolve_range(preset, datetime.now(UTC), None, "UTC", None)
    return Filters(start=start, end=end, bucket=auto_bucket(end - start))


def bench_queries(
    preset: str, view_runs: int, all_views: bool
) -> list[tuple[str, float, float | None]]:
    con = duckdb.connect(str(DB), read_only=True)
    con.execute("SET TimeZone = 'UTC'")
    try:
        f = filters_for(preset)
        # A call that dialled two B legs, and the most frequent cause: what a user drills into.
        call_uuid = _text(con, "SELECT a_leg_uuid FROM dial_legs_rollup WHERE position = 2")
        cause = _text(
            con,
            f"SELECT {causes.CAUSE_LABEL} FROM calls_rollup GROUP BY ALL ORDER BY count(*) DESC",
        )
        rows = []
        for query in query_list(f, call_uuid, cause):
            rollup_sql, rollup_params = captured_sql(query, on_rollups=True)
            sql, params = captured_sql(query, on_rollups=False)
            rollup_s = median_s(con, rollup_sql, rollup_params, 5)
            view_s = None
            if view_runs and rollup_sql != sql and (query.overview or all_views):
                view_s = median_s(con, sql, params, view_runs)
            rows.append((query.name, rollup_s, view_s))
            ratio = f"{view_s / rollup_s:,.0f}x" if view_s else ""
            print(
                f"| {query.name:<24} | {_ms(rollup_s):>9} | {_ms(view_s):>10} | {ratio:>6} |",
                flush=True,
            )
        return rows
    finally:
        con.close()


def _text(con: duckdb.DuckDBPyConnection, sql: str) -> str:
    row = con.execute(sql + " LIMIT 1").fetchone()
    assert row is not None, sql
    return str(row[0])


def _ms(seconds: float | None) -> str:
    return "" if seconds is None else f"{seconds * 1000:,.0f} ms"


# --- pages ------------------------------------------------------------------------------------


def bench_pages(preset: str, runs: int) -> list[tuple[str, float]]:
    from streamlit.testing.v1 import AppTest

    get_settings.cache_clear()
    results = []
    for title, page in PAGES.items():
        times = []
        for _ in range(runs):
            at = AppTest.from_file(str(APP), default_timeout=300)
            at.query_params["range"] = preset
            if page is not None:
                at.run()  # lands on the overview first, as a visitor does
            st.cache_data.clear()
            began = time.perf_counter()
            (at.switch_page(page) if page else at).run()
            times.append(time.perf_counter() - began)
            assert not at.exception, [e.value for e in at.exception]
        results.append((title, statistics.median(times)))
        runs_s = ", ".join(f"{t:.2f}" for t in times)
        print(f"| {title:<18} | {statistics.median(times):.2f} s | {runs_s} |", flush=True)
    return results


# --- the report -------------------------------------------------------------------------------


def machine() -> str:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    mem_kib = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal")
    )
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{os.cpu_count()} cores (nproc), {mem_kib / 1024**2:.1f} GiB RAM, {model}; "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; load average {load} (1, 5, 15 min)"
    )


def webhook_count() -> int:
    con = duckdb.connect(str(DB), read_only=True)
    try:
        return _one(con, "SELECT count(*) FROM webhook_events")
    finally:
        con.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=CALLS)
    parser.add_argument("--db", type=Path, default=None, help="database file (seeded if short)")
    parser.add_argument("--runs", type=int, default=3, help="browser loads per page and state")
    parser.add_argument("--browser-only", action="store_true", help="only the browser figures")
    parser.add_argument("--skip-browser", action="store_true")
    parser.add_argument("--view-runs", type=int, default=3, help="runs per query on the views")
    parser.add_argument("--all-views", action="store_true", help="views for every query too")
    parser.add_argument("--small", action="store_true", help="20,000 calls, one run of each")
    args = parser.parse_args()
    if args.small:
        args.calls, args.runs, args.view_runs = SMALL_CALLS, 1, 0
    use_database(args.db or (SMALL_DB if args.small else DB))
    print(machine())
    ensure_seeded(args.calls)
    print(f"{webhook_count():,} webhooks in {DB}")
    if not args.browser_only:
        bench_data(args)
    if not args.skip_browser:
        print(f"every page in Chromium, {WIDE_PRESET} (median of {args.runs}):", flush=True)
        query = urlencode({"range": WIDE_PRESET})
        spacing = base.CACHE_TTL_S + 1.0
        report = browser_pages.bench_browser(DB, args.runs, query, spacing_s=spacing)
        print(browser_pages.table(report, args.runs))
    print(machine())
    return 0


def bench_data(args: argparse.Namespace) -> None:
    rebuild = time_full_rebuild()
    print(f"full rollup rebuild: {rebuild:.1f} s")
    new, incremental = time_incremental_refresh()
    print(
        f"incremental refresh after {BURST_CALLS} new calls ({new:,} webhooks): "
        f"{incremental * 1000:.0f} ms"
    )
    for preset in (DEFAULT_PRESET, WIDE_PRESET):
        # The views aggregate everything whatever the range: one baseline is enough.
        view_runs = args.view_runs if preset == DEFAULT_PRESET else 0
        print(f"queries, {preset} (median of 5 on rollups, of {view_runs} on views):")
        print(f"| {'query':<24} | {'rollups':>9} | {'views':>10} | {'ratio':>6} |")
        print(f"|{'-' * 26}|{'-' * 11}:|{'-' * 11}:|{'-' * 7}:|")
        bench_queries(preset, view_runs, args.all_views)
    for preset in (DEFAULT_PRESET, WIDE_PRESET):
        print(f"first render per page, {preset} (median of 3, data cache cleared):")
        print("| page | median | runs (s) |\n|---|---:|---|")
        bench_pages(preset, 3)


if __name__ == "__main__":
    sys.exit(main())
