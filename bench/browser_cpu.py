"""Where a page's time goes in the browser: warm loads of dashboard pages in headless Chromium,
each with the server's CPU and Chromium's renderer CPU beside the time until drawn, and
optionally the renderer's JavaScript CPU profile grouped by script.

    python bench/browser_cpu.py --db FILE [--pages /,/legs] [--runs 3] [--spacing 11]
                                [--profile /causes]

Drawn is bench/browser_pages.py's `drawn`. Each page is first loaded and left to settle (its
charts and tables counted), then loaded `--runs` times in new tabs, `--spacing` seconds apart
(past the dashboard's 10 s query cache, so every load runs its queries). The renderer CPU is
the user + system time of Chromium's renderer processes meanwhile (from /proc); on two cores
shared with the server it says how much of a load the browser itself needs. `--profile` takes
one more warm load of that page with the DevTools protocol's sampling profiler on and prints
the renderer's CPU by script file (self time), and Chromium's own task, script, layout and
style-recalculation totals.

The figures are medians; compare pages and commits within one sitting (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.browser_pages import (  # noqa: E402
    CHROMIUM,
    CHROMIUM_ARGS,
    VIEWPORT,
    cpu_s,
    drawn,
    serving,
    settled,
)

QUERY = "range=Last+30+days"


def renderer_cpu_s() -> float:
    """CPU time (user + system) used so far by every Chromium renderer process."""
    total = 0.0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if b"--type=renderer" in Path(f"/proc/{pid}/cmdline").read_bytes():
                total += cpu_s(int(pid))
        except OSError:
            continue  # gone meanwhile
    return total


def warm_loads(context: Any, url: str, pid: int, runs: int, spacing_s: float) -> str:
    """`runs` warm loads of `url`: one line of medians."""
    page = context.new_page()
    expect = settled(page, url)
    page.close()
    loads = []
    for _ in range(runs):
        time.sleep(spacing_s)
        page = context.new_page()
        server, renderer = cpu_s(pid), renderer_cpu_s()
        load = drawn(page, url, expect)
        loads.append((load.seconds, cpu_s(pid) - server, renderer_cpu_s() - renderer))
        page.close()
    wall, server_s, renderer_s = (statistics.median(x[i] for x in loads) for i in range(3))
    each = ", ".join(f"{x[0]:.2f}" for x in loads)
    return (
        f"drawn {wall:.2f} s ({each}); server CPU {server_s:.2f} s; "
        f"renderer CPU {renderer_s:.2f} s; {expect[0]} charts, {expect[1]} tables"
    )


def profile(context: Any, url: str, spacing_s: float, top: int = 20) -> str:
    """One warm load of `url` under the sampling profiler: the renderer's CPU by script."""
    page = context.new_page()
    expect = settled(page, url)
    page.close()
    time.sleep(spacing_s)
    page = context.new_page()
    cdp = context.new_cdp_session(page)
    cdp.send("Performance.enable")
    cdp.send("Profiler.enable")
    cdp.send("Profiler.setSamplingInterval", {"interval": 200})
    cdp.send("Profiler.start")
    load = drawn(page, url, expect)
    samples = cdp.send("Profiler.stop")["profile"]
    metrics = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
    page.close()
    nodes = {node["id"]: node["callFrame"] for node in samples["nodes"]}
    by_file: collections.Counter[str] = collections.Counter()
    for node, delta in zip(samples["samples"], samples["timeDeltas"], strict=False):
        frame = nodes[node]
        name = frame["url"].rsplit("/", 1)[-1] or frame["functionName"] or "(native)"
        by_file[name] += delta
    lines = [
        f"drawn {load.seconds:.2f} s; Chromium: tasks {metrics['TaskDuration']:.2f} s, "
        f"script {metrics['ScriptDuration']:.2f} s, layout {metrics['LayoutDuration']:.3f} s, "
        f"style {metrics['RecalcStyleDuration']:.3f} s, {int(metrics['Nodes'])} DOM nodes",
        "renderer CPU by script (self time; '(program)' is native work, '(idle)' waiting):",
    ]
    lines += [f"  {us / 1000:8.1f} ms  {name}" for name, us in by_file.most_common(top)]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", type=Path, required=True, help="a seeded database file")
    parser.add_argument("--pages", default="/,/causes,/legs,/timing,/destinations,/calls,/health")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--spacing", type=float, default=11.0, help="seconds between loads")
    parser.add_argument("--profile", default="", help="a page to profile (e.g. /causes)")
    args = parser.parse_args()
    if not args.db.exists():
        parser.error(f"no database at {args.db}: seed one with `callstatus seed --db FILE`")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport=VIEWPORT)
            with serving(args.db) as server:
                measure = partial(warm_loads, runs=args.runs, spacing_s=args.spacing)
                for path in filter(None, args.pages.split(",")):
                    url = f"{server.url}{path}?{QUERY}"
                    print(f"{path}: {measure(context, url, server.rss.pid)}", flush=True)
                if args.profile:
                    url = f"{server.url}{args.profile}?{QUERY}"
                    print(f"{args.profile}, profiled:\n{profile(context, url, args.spacing)}")
        finally:
            browser.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
