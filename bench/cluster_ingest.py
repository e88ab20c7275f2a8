"""Clustered ingest benchmark: receivers on PostgreSQL against a bare form-parsing endpoint.

Starts a throwaway PostgreSQL server (fsync on), one or two `callstatus serve --role receiver`
processes on it and the bare endpoint of bench/ingest.py, and drives them with `wrk` on
127.0.0.1 (bench/ingest.py's load generator: distinct, correctly signed hangup webhooks):
- one receiver against the bare endpoint at 64 connections, alternating, --rounds rounds, with
  the embedded server (`callstatus serve`, DuckDB, as bench/ingest.py runs it) in the same
  rounds for reference;
- the two receivers together, 64 connections each, at the same time, --rounds rounds;
then checks that every acknowledged webhook is in webhook_inbox (or counted as a repeat).

Needs `wrk` (Debian: `apt-get install wrk`) and PostgreSQL's server binaries (Debian's
`postgresql`). Usage:
    python bench/cluster_ingest.py [--duration 10] [--rounds 3] [--connections 64]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from ingest import PATH, TOKEN, lua_script, run_wrk, start_bare  # noqa: E402

from tests.postgres import postgres_server  # noqa: E402
from tests.servers import free_port, start_server  # noqa: E402


def start_receiver(folder: Path, postgres_url: str) -> tuple[subprocess.Popen[bytes], str]:
    """A `serve --role receiver` on a free port, returned once /healthz says ok."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DASHBOARD_PASSWORD", "DIAL_NUMBERS", "CALLSTATUS_DB")
    }
    env.update(
        {
            "PLIVO_AUTH_TOKEN": TOKEN,
            "PUBLIC_BASE_URL": base,
            "CALLSTATUS_POSTGRES_URL": postgres_url,
        }
    )
    home = folder / f"receiver-{port}"
    home.mkdir()
    log = (home / "log").open("wb")
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "callstatus.cli", "serve", "--role", "receiver"),
            *("--port", str(port), "--db", str(home / "unused.duckdb")),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=home,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError((home / "log").read_text())
        try:
            if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                return process, base
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    process.kill()
    raise RuntimeError("receiver did not start")


def together(
    targets: list[tuple[str, Path]], connections: int, duration: int
) -> list[dict[str, float]]:
    """wrk against every target at the same time."""
    results: list[dict[str, float]] = [{} for _ in targets]

    def drive(index: int, url: str, script: Path) -> None:
        results[index] = run_wrk(url + PATH, script, connections, duration)

    threads = [
        threading.Thread(target=drive, args=(i, url, script))
        for i, (url, script) in enumerate(targets)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument(
        "--distinct",
        type=int,
        default=20000,
        help="distinct signed requests per round (a webhook is stored at most 3 times in 10 "
        "minutes, later copies only counted)",
    )
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="callstatus-cluster-bench-"))
    os.chmod(folder, 0o755)
    acked = 0
    ok = True
    c = args.connections
    with postgres_server(fsync=True) as pg:
        first, first_url = start_receiver(folder, pg.url)
        second, second_url = start_receiver(folder, pg.url)
        bare, bare_url = start_bare(folder)
        embedded_port = free_port()
        embedded_url = f"http://127.0.0.1:{embedded_port}"
        embedded = start_server(
            folder / "embedded.duckdb",
            {
                "PLIVO_AUTH_TOKEN": TOKEN,
                "PUBLIC_BASE_URL": embedded_url,
                "CALLSTATUS_SNAPSHOT_INTERVAL": "3600",
            },
            port=embedded_port,
        )
        numbers = iter(range(1_000_000))

        def fresh(base: str) -> Path:
            return lua_script(base, args.distinct, folder / f"r{next(numbers)}.lua")

        bare_script = lua_script(bare_url, 500, folder / "bare.lua")
        print(f"machine: {os.cpu_count()} cores; load average {os.getloadavg()[0]:.2f}")
        one: list[dict[str, float]] = []
        bare_runs: list[dict[str, float]] = []
        embedded_runs: list[dict[str, float]] = []
        both: list[list[dict[str, float]]] = []
        try:
            run_wrk(first_url + PATH, fresh(first_url), 16, 2)  # warm-up, not counted
            run_wrk(second_url + PATH, fresh(second_url), 16, 2)
            run_wrk(bare_url + PATH, bare_script, 16, 2)
            run_wrk(embedded_url + PATH, fresh(embedded_url), 16, 2)
            for _ in range(args.rounds):
                r = run_wrk(first_url + PATH, fresh(first_url), c, args.duration)
                b = run_wrk(bare_url + PATH, bare_script, c, args.duration)
                e = run_wrk(embedded_url + PATH, fresh(embedded_url), c, args.duration)
                one.append(r)
                bare_runs.append(b)
                embedded_runs.append(e)
                acked += int(r["requests"] - r["non2xx"])
                print(
                    f"  one receiver c={c} {r['rps']:7.0f} req/s p50 {r['p50_ms']:.1f} ms "
                    f"p99 {r['p99_ms']:.1f} ms non2xx {r['non2xx']:.0f} | bare {b['rps']:7.0f} "
                    f"req/s p99 {b['p99_ms']:.1f} ms | embedded {e['rps']:7.0f} req/s p99 "
                    f"{e['p99_ms']:.1f} ms"
                )
            for _ in range(args.rounds):
                pair = together(
                    [(first_url, fresh(first_url)), (second_url, fresh(second_url))],
                    c,
                    args.duration,
                )
                both.append(pair)
                acked += sum(int(r["requests"] - r["non2xx"]) for r in pair)
                print(
                    f"  two receivers c={c} each: "
                    + " + ".join(f"{r['rps']:.0f}" for r in pair)
                    + f" = {sum(r['rps'] for r in pair):.0f} req/s, p99 "
                    + " / ".join(f"{r['p99_ms']:.1f}" for r in pair)
                    + " ms"
                )
        finally:
            bare.send_signal(signal.SIGTERM)
            bare.wait(timeout=30)
            embedded.stop(signal.SIGTERM, timeout=60)
            statuses = []
            for process in (first, second):
                process.send_signal(signal.SIGTERM)
                statuses.append(process.wait(timeout=60))
        with psycopg.connect(pg.url) as con:
            ((stored, repeats, spooled),) = con.execute(
                "SELECT (SELECT count(*) FROM webhook_inbox),"
                " (SELECT coalesce(sum(repeats), 0) FROM webhook_repeats),"
                " (SELECT coalesce(sum(spool_depth), 0) FROM receivers)"
            ).fetchall()
    ours = statistics.median(r["rps"] for r in one)
    bare_rps = statistics.median(r["rps"] for r in bare_runs)
    pair_rps = statistics.median(sum(r["rps"] for r in pair) for pair in both)
    embedded_rps = statistics.median(r["rps"] for r in embedded_runs)
    print("\nsummary (medians over rounds)")
    print(
        f"  one receiver c={c}: {ours:.0f} req/s (p99 "
        f"{statistics.median(r['p99_ms'] for r in one):.1f} ms) | bare {bare_rps:.0f} req/s "
        f"(p99 {statistics.median(r['p99_ms'] for r in bare_runs):.1f} ms) | "
        f"ratio {ours / bare_rps:.2f}"
    )
    print(
        f"  embedded server (DuckDB) c={c}: {embedded_rps:.0f} req/s (p99 "
        f"{statistics.median(r['p99_ms'] for r in embedded_runs):.1f} ms) | ratio "
        f"{embedded_rps / bare_rps:.2f}"
    )
    print(
        f"  two receivers together: {pair_rps:.0f} req/s ({pair_rps / ours:.2f}x one receiver, "
        f"{pair_rps / bare_rps:.2f}x one bare endpoint)"
    )
    print(
        f"  acknowledged (excluding warm-up): {acked}; rows in webhook_inbox: {stored}; repeats "
        f"counted: {repeats}; left in spools: {spooled}; exit statuses {statuses}"
    )
    if stored + int(repeats) < acked:  # type: ignore[call-overload]
        print("  LOST WEBHOOKS: fewer rows and counted repeats than acknowledgements")
        ok = False
    if ours / bare_rps < 0.7:
        ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
