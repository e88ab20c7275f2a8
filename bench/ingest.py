"""Ingest benchmark: durable, signed webhooks against a bare form-parsing endpoint.

Starts `callstatus serve` (token set) and a bare FastAPI app on the same uvicorn settings whose
endpoint only parses the form body and returns 200, drives both with `wrk` on 127.0.0.1 in
alternating rounds, and prints requests/s, p50/p99 and the ratio to the bare endpoint. Then it
checks that every acknowledged webhook is in webhook_events, and measures latency at a fixed
offered load (many connections with random think times: Poisson arrivals), in several rounds.

Each round sends webhooks no earlier round sent (--distinct of them, signed anew), so that they
are stored: a webhook delivered more than 3 times in 10 minutes is only counted (webhook_repeats),
and a round cycling through too few would measure that cheaper path instead.

Needs `wrk` (Debian: `apt-get install wrk`). Usage:
    python bench/ingest.py [--duration 10] [--rounds 3] [--rate 500] [--rate-rounds 3]
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from urllib.parse import urlencode

import duckdb
import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from callstatus.receiver.signatures import sign  # noqa: E402
from tests.servers import free_port, start_server  # noqa: E402

TOKEN = "bench-token-0123456789"
WRK_THREADS = 2
# Requests sent so far with each script: the next run starts after them.
_sent: dict[Path, int] = {}
PATH = "/plivo/hangup"
BARE_APP = textwrap.dedent(
    """
    from fastapi import FastAPI, Request, Response

    app = FastAPI()

    @app.post("/plivo/hangup")
    async def hangup(request: Request) -> Response:
        await request.form()
        return Response(status_code=200)
    """
)


def hangup_params(i: int) -> dict[str, str]:
    uuid = f"{i:08d}-bench-4000-8000-{secrets.token_hex(6)}"
    return {
        "CallUUID": uuid,
        "ALegUUID": uuid,
        "Direction": "inbound",
        "From": "+14155550100",
        "To": "+14155550199",
        "CallStatus": "completed",
        "Event": "Hangup",
        "HangupCause": "NORMAL_CLEARING",
        "HangupCauseCode": "4000",
        "HangupCauseName": "Normal Hangup",
        "HangupSource": "Caller",
        "Duration": "42",
        "BillDuration": "60",
        "BillRate": "0.0085",
        "TotalCost": "0.00850",
        "StartTime": "2026-11-26 10:00:00",
        "AnswerTime": "2026-11-26 10:00:04",
        "EndTime": "2026-11-26 10:00:46",
        "SessionStart": "2026-11-26 10:00:00.123456",
        "ParentAuthID": "MAXXXXXXXXXXXXXXXXXX",
        "RequestUUID": uuid,
        "STIRVerification": "Not Applicable",
    }


def lua_script(base_url: str, count: int, out: Path, delay_ms: float | None = None) -> Path:
    """A wrk script cycling through `count` distinct, correctly signed POSTs.

    With delay_ms, each connection waits a random time between requests, exponentially
    distributed with that mean: with C connections the offered load is about C * 1000 / delay_ms
    requests/s, arriving as a Poisson stream (wrk has no open-loop mode; with think times far
    longer than the replies, this comes close to one)."""
    lines = ["local reqs = {}"]
    if delay_ms is not None:
        # Exponential think times (Poisson arrivals): a fixed delay would keep connections in
        # step, and group commit answers a whole step at once, so it would measure bursts.
        lines.append("math.randomseed(os.time())")
        exponential = f"math.floor(-math.log(1 - math.random()) * {delay_ms:.1f})"
        lines.append(f"delay = function() return {exponential} end")
    for i in range(count):
        params = hangup_params(i)
        nonce = secrets.token_hex(10)
        signature = sign("POST", base_url + PATH, {k: [v] for k, v in params.items()}, nonce, TOKEN)
        body = urlencode(params)
        lines.append(
            f'reqs[{i + 1}] = wrk.format("POST", "{PATH}", '
            '{["Content-Type"]="application/x-www-form-urlencoded", '
            f'["X-Plivo-Signature-V3"]="{signature}", ["X-Plivo-Signature-V3-Nonce"]="{nonce}"}}, '
            f'"{body}")'
        )
    # Each wrk thread takes every WRK_THREADS-th request, and each run goes on where the last
    # run of this script stopped (its first argument): a request is sent again only once all
    # `count` were, so (with enough of them) every request is stored rather than counted as a
    # repeat of one already stored three times.
    lines += [
        "local ids = 0",
        "setup = function(thread) thread:set('id', ids); ids = ids + 1 end",
        "init = function(args) i = tonumber(args[1] or '0') + id end",
        f"request = function() local r = reqs[i % #reqs + 1]; i = i + {WRK_THREADS}; return r end",
        "done = function(summary, latency, requests)",
        '  io.write(string.format("BENCH requests=%d non2xx=%d errors=%d p50=%d p99=%d\\n",',
        "    summary.requests, summary.errors.status, summary.errors.connect + summary.errors.read"
        " + summary.errors.write + summary.errors.timeout,",
        "    latency:percentile(50), latency:percentile(99)))",
        "end",
    ]
    out.write_text("\n".join(lines) + "\n")
    return out


def run_wrk(url: str, script: Path, connections: int, duration: int) -> dict[str, float]:
    output = subprocess.run(
        [
            "wrk",
            "-t",
            str(WRK_THREADS),
            "-c",
            str(connections),
            "-d",
            f"{duration}s",
            "--latency",
            "-s",
            str(script),
            url,
            "--",
            str(_sent.get(script, 0)),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=duration + 60,
    ).stdout
    match = re.search(r"BENCH requests=(\d+) non2xx=(\d+) errors=(\d+) p50=(\d+) p99=(\d+)", output)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if not match or not rps:
        raise RuntimeError(f"could not read wrk output:\n{output}")
    requests, non2xx, errors, p50, p99 = (int(g) for g in match.groups())
    _sent[script] = _sent.get(script, 0) + requests
    return {
        "rps": float(rps.group(1)),
        "requests": requests,
        "non2xx": non2xx,
        "errors": errors,
        "p50_ms": p50 / 1000,
        "p99_ms": p99 / 1000,
    }


def start_bare(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    (folder / "bare_app.py").write_text(BARE_APP)
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "bare_app:app",
            "--port",
            str(port),
            "--host",
            "127.0.0.1",
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--workers",
            "1",
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        cwd=folder,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.post(url + PATH, data={"a": "b"}, timeout=1)
            return process, url
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("bare app did not start")


def _load() -> str:
    """The host's load average (1, 5, 15 minutes): the server shares two cores with it."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def writer_checkpoints(base: str) -> str:
    """The writer's own checkpoints so far (its WAL backstop; the rollup job's are not counted)
    and the WAL's size, from /metrics."""
    try:
        text = httpx.get(base + "/metrics", timeout=5).text
    except httpx.HTTPError as exc:
        return f"/metrics unavailable ({exc})"
    found = dict(
        re.findall(r"^(callstatus_wal_checkpoints_total|callstatus_wal_bytes) (\S+)$", text, re.M)
    )
    count = float(found.get("callstatus_wal_checkpoints_total", "nan"))
    wal = float(found.get("callstatus_wal_bytes", "nan")) / 2**20
    return f"writer checkpoints {count:.0f}, WAL {wal:.0f} MiB"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def soak(url: str, script: Path, total: int, pid: int) -> list[tuple[int, float]]:
    """Drive `total` more webhooks at 64 connections in 20 s steps; (acknowledged, RSS) each."""
    steps: list[tuple[int, float]] = []
    done = 0
    while done < total:
        r = run_wrk(url, script, 64, 20)
        acknowledged = int(r["requests"] - r["non2xx"])
        done += acknowledged
        steps.append((acknowledged, rss_mb(pid)))
        print(f"  soak: {done:,} webhooks, {r['rps']:.0f} req/s, RSS {steps[-1][1]:.0f} MiB")
    return steps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk round")
    parser.add_argument("--rounds", type=int, default=3, help="A/B rounds per connection count")
    parser.add_argument("--connections", default="16,64")
    parser.add_argument("--rate", type=float, default=500.0, help="fixed offered load, req/s")
    parser.add_argument("--rate-seconds", type=float, default=10.0)
    parser.add_argument(
        "--rate-rounds",
        type=int,
        default=3,
        help="fixed-load rounds (the median p99 is checked against the target)",
    )
    parser.add_argument(
        "--distinct",
        type=int,
        default=20000,
        help="distinct signed requests per round; one is stored at most 3 times in 10 minutes "
        "and its later copies only counted (webhook_repeats), so to measure storing a round "
        "must send fewer than 3 times this many (about 4,000/s at 64 connections here)",
    )
    parser.add_argument(
        "--soak",
        type=int,
        default=0,
        help="then keep 64 connections busy until this many more webhooks were acknowledged, "
        "printing the server's RSS as it goes (1000000 for the memory check)",
    )
    args = parser.parse_args()
    if not shutil.which("wrk"):
        print("wrk is not installed: apt-get install wrk", file=sys.stderr)
        return 2

    folder = Path(tempfile.mkdtemp(prefix="callstatus-bench-"))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        "PLIVO_AUTH_TOKEN": TOKEN,
        "PUBLIC_BASE_URL": base,
        "CALLSTATUS_SNAPSHOT_INTERVAL": "3600",
    }
    server = start_server(folder / "bench.duckdb", env, port=port)
    bare, bare_url = start_bare(folder)
    script_numbers = iter(range(1_000_000))

    def fresh(delay_ms: float | None = None) -> Path:
        """A script of webhooks no earlier round sent (new call UUIDs, signed anew)."""
        return lua_script(base, args.distinct, folder / f"r{next(script_numbers)}.lua", delay_ms)

    script = fresh()
    bare_script = lua_script(bare_url, 500, folder / "bare.lua")
    acked = 0
    results: dict[tuple[str, int], list[dict[str, float]]] = {}
    fixed_runs: list[dict[str, float]] = []
    print(
        f"machine: {os.cpu_count()} cores; {args.rounds} rounds of {args.duration}s each; "
        f"load average {_load()}"
    )
    try:
        # Warm both up (caches, JIT-free but allocator and page cache).
        run_wrk(base + PATH, script, 16, 2)
        run_wrk(bare_url + PATH, bare_script, 16, 2)
        rss_start = rss_mb(server.process.pid)
        for connections in (int(c) for c in args.connections.split(",")):
            for _ in range(args.rounds):
                signed = fresh()
                for name, url, s in (("callstatus", base, signed), ("bare", bare_url, bare_script)):
                    r = run_wrk(url + PATH, s, connections, args.duration)
                    results.setdefault((name, connections), []).append(r)
                    print(
                        f"  {name:10s} c={connections:3d} {r['rps']:8.0f} req/s "
                        f"p50 {r['p50_ms']:6.2f} ms p99 {r['p99_ms']:7.2f} ms "
                        f"non2xx {r['non2xx']} errors {r['errors']}"
                    )
        print(f"  after the rounds: {writer_checkpoints(base)}")
        for key, rounds in results.items():
            if key[0] == "callstatus":
                acked += sum(int(r["requests"] - r["non2xx"]) for r in rounds)
        # Think times far longer than replies: a stalled server still sees most of the offer.
        connections = 256
        for _ in range(args.rate_rounds):
            paced = fresh(connections * 1000 / args.rate)
            fixed = run_wrk(base + PATH, paced, connections, int(args.rate_seconds))
            fixed_runs.append(fixed)
            acked += int(fixed["requests"] - fixed["non2xx"])
            print(
                f"  fixed load {fixed['rps']:6.0f}/s p50 {fixed['p50_ms']:6.2f} ms "
                f"p99 {fixed['p99_ms']:7.2f} ms non2xx {fixed['non2xx']} "
                f"errors {fixed['errors']}; load average {_load()}; {writer_checkpoints(base)}"
            )
        rss_end = rss_mb(server.process.pid)
        soak_rss = soak(base + PATH, script, args.soak, server.process.pid) if args.soak else []
        acked += sum(n for n, _ in soak_rss)
        rss_end = rss_mb(server.process.pid)
    finally:
        bare.send_signal(signal.SIGTERM)
        bare.wait(timeout=30)
        status = server.stop(signal.SIGTERM, timeout=60)

    print("\nsummary (medians over rounds)")
    ok = True
    for connections in (int(c) for c in args.connections.split(",")):
        ours = statistics.median(r["rps"] for r in results[("callstatus", connections)])
        bare_rps = statistics.median(r["rps"] for r in results[("bare", connections)])
        ours_p99 = statistics.median(r["p99_ms"] for r in results[("callstatus", connections)])
        bare_p99 = statistics.median(r["p99_ms"] for r in results[("bare", connections)])
        ratio = ours / bare_rps
        print(
            f"  c={connections:3d}: callstatus {ours:7.0f} req/s (p99 {ours_p99:.1f} ms) | "
            f"bare {bare_rps:7.0f} req/s (p99 {bare_p99:.1f} ms) | ratio {ratio:.2f}"
        )
        if connections == 64 and ratio < 0.75:
            ok = False
    fixed_p99 = statistics.median(r["p99_ms"] for r in fixed_runs)
    each = ", ".join(f"{r['p99_ms']:.1f}" for r in fixed_runs)
    print(
        f"  offered {args.rate:.0f}/s, {len(fixed_runs)} rounds of {args.rate_seconds:.0f}s: "
        f"got {statistics.median(r['rps'] for r in fixed_runs):.0f}/s, "
        f"p50 {statistics.median(r['p50_ms'] for r in fixed_runs):.1f} ms, "
        f"p99 {fixed_p99:.1f} ms (rounds: {each})"
    )
    if fixed_p99 >= 25:
        ok = False
    print(f"  server RSS: {rss_start:.0f} MiB after warm-up, {rss_end:.0f} MiB at the end")
    if soak_rss:
        done = 0
        series = []
        for n, rss in soak_rss:
            done += n
            series.append(f"{done // 1000}k: {rss:.0f}")
        print(f"  soak, RSS (MiB) after each step's acknowledged webhooks: {', '.join(series)}")

    con = duckdb.connect(str(folder / "bench.duckdb"), read_only=True)
    stored = con.execute("SELECT count(*) FROM webhook_events").fetchone()[0]  # type: ignore[index]
    # Copies of one webhook past its third are acknowledged but counted, not stored.
    (repeats,) = con.execute("SELECT coalesce(sum(repeats), 0) FROM webhook_repeats").fetchall()[0]
    con.close()
    expected = acked
    print(
        f"  acknowledged (excluding warm-up): {expected}; rows stored: {stored}; "
        f"repeats counted, not stored: {repeats}; server exit status {status}"
    )
    if stored + repeats < expected:
        print("  LOST WEBHOOKS: fewer rows and counted repeats than acknowledgements")
        ok = False
    shutil.rmtree(folder, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
