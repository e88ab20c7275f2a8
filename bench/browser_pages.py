"""Every dashboard page timed in headless Chromium on a real `callstatus serve`, warm and right
after the server starts, with the server's resident memory sampled throughout.

"Drawn" is when all of these hold, first seen on a poll every POLL_S and still true on the
STABLE_POLLS polls that follow (the time reported is the first of them):
- Streamlit's script (and any fragment) has finished: `stApp`'s data-test-script-state is
  `notRunning`, so the running indicator is gone, and no element is marked stale;
- the page has content: a title (h1 or h2) in the main area, and no placeholder left
  (`stSkeleton`, shown while the browser loads a chart's code);
- every visible Vega chart in the main area has its canvas or svg, and every visible table
  (`stDataFrame`) its canvas: each chart's data arrived and Vega rendered it (a chart in a tab
  not shown is drawn when its tab opens, so it is not waited for);
- at least as many charts and tables as the page showed when it was first loaded and left to
  settle for SETTLE_S (the script can finish a little before its last elements reach the DOM);
- no exception box shows (one is reported as an error, not a time).

Each load is a new tab (a new Streamlit session, the script run in full) in one browser, so
Streamlit's static files come from the browser's cache as they do for a returning user.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
VIEWPORT = {"width": 1440, "height": 1000}
POLL_S = 0.03
STABLE_POLLS = 5
SETTLE_S = 3.0
LOAD_TIMEOUT_S = 120.0
START_TIMEOUT_S = 600.0
STOP_TIMEOUT_S = 600.0

# What the page shows right now: "drawn:<charts>:<tables>" once drawn, else what is missing.
DRAWN_JS = """() => {
  const app = document.querySelector('[data-testid="stApp"]');
  if (!app) return 'no app';
  if (document.querySelector('[data-testid="stException"]')) return 'exception';
  const state = app.getAttribute('data-test-script-state');
  if (state !== 'notRunning') return 'script ' + state;
  if (document.querySelector('[data-stale="true"]')) return 'stale';
  const main = document.querySelector('[data-testid="stMain"]');
  if (!main || !main.querySelector('h1, h2')) return 'no title';
  if (main.querySelector('[data-testid="stSkeleton"]')) return 'placeholder';
  const shown = (e) => e.offsetParent !== null;
  const charts = Array.from(main.querySelectorAll('[data-testid="stVegaLiteChart"]')).filter(shown);
  for (const c of charts) if (!c.querySelector('canvas, svg')) return 'chart not drawn';
  const tables = Array.from(main.querySelectorAll('[data-testid="stDataFrame"]')).filter(shown);
  for (const t of tables) if (!t.querySelector('canvas')) return 'table not drawn';
  return 'drawn:' + charts.length + ':' + tables.length;
}"""
NAV_JS = """() => Array.from(
  document.querySelectorAll('[data-testid="stSidebarNav"] a')).map(a => a.href)"""


class NotDrawn(RuntimeError):
    """A page showed an exception or never finished drawing."""


@dataclass
class Load:
    seconds: float
    charts: int
    tables: int
    server_cpu_s: float = 0.0  # CPU the server process used meanwhile (user + system)


@dataclass
class RssSampler:
    """The server's VmRSS every `every_s` on a thread, and its VmHWM (the kernel's own peak)."""

    pid: int
    every_s: float = 0.05
    peak_mib: float = 0.0
    hwm_mib: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.every_s)

    def sample(self) -> None:
        try:
            rss, hwm = rss_mib(self.pid)
        except (OSError, KeyError):
            return  # the process is gone
        self.peak_mib = max(self.peak_mib, rss)
        self.hwm_mib = max(self.hwm_mib, hwm)

    def stop(self) -> None:
        self.sample()
        self._stop.set()
        self._thread.join()


def cpu_s(pid: int) -> float:
    """CPU time (user + system) a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> tuple[float, float]:
    """(current, peak) resident set size of a process, in MiB."""
    fields = dict(
        line.split(":", 1)
        for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        if ":" in line
    )
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


@dataclass
class Server:
    url: str
    started_s: float  # from the process's start until /healthz answered 200
    rss: RssSampler


@contextmanager
def serving(db: Path, env: dict[str, str] | None = None) -> Iterator[Server]:
    """A fresh `callstatus serve` on `db`, its memory sampled from its first moment."""
    from tests.servers import start_server

    began = time.perf_counter()
    server = start_server(db, env, timeout=START_TIMEOUT_S)
    started = time.perf_counter() - began
    rss = RssSampler(server.process.pid)
    try:
        yield Server(server.url, started, rss)
    finally:
        rss.stop()
        server.stop(timeout=STOP_TIMEOUT_S)


def drawn(page: Any, url: str, expect: tuple[int, int] = (0, 0)) -> Load:
    """Open `url` in `page` and time it until drawn (module docstring) with at least `expect`
    (charts, tables)."""
    began = time.perf_counter()
    page.goto(url, wait_until="commit", timeout=LOAD_TIMEOUT_S * 1000)
    first: float | None = None
    seen, streak = "", 0
    while time.perf_counter() - began < LOAD_TIMEOUT_S:
        now = time.perf_counter()
        state = str(page.evaluate(DRAWN_JS))
        if state == "exception":
            raise NotDrawn(f"{url}: {page.locator('[data-testid=stException]').all_inner_texts()}")
        if _enough(state, expect) and state == seen:
            streak += 1
        elif _enough(state, expect):
            first, seen, streak = now, state, 1
        else:
            first, seen, streak = None, state, 0
        if first is not None and streak >= STABLE_POLLS:
            _, charts, tables = seen.split(":")
            return Load(first - began, int(charts), int(tables))
        time.sleep(POLL_S)
    raise NotDrawn(f"{url}: not drawn after {LOAD_TIMEOUT_S:.0f} s (last state: {seen})")


def _enough(state: str, expect: tuple[int, int]) -> bool:
    if not state.startswith("drawn:"):
        return False
    _, charts, tables = state.split(":")
    return int(charts) >= expect[0] and int(tables) >= expect[1]


def settled(page: Any, url: str) -> tuple[int, int]:
    """The charts and tables `url` shows once drawn and left alone for SETTLE_S."""
    drawn(page, url)
    time.sleep(SETTLE_S)
    load = drawn(page, url)  # reloaded: the page's own caches are warm by now
    time.sleep(SETTLE_S)
    state = str(page.evaluate(DRAWN_JS))
    if not state.startswith("drawn:"):
        raise NotDrawn(f"{url}: {state} after settling")
    _, charts, tables = state.split(":")
    return max(load.charts, int(charts)), max(load.tables, int(tables))


def shell_s(page: Any, url: str) -> float:
    """Baseline: navigation until Streamlit's app frame exists (its JavaScript loaded and
    mounted), before any script of ours has run."""
    began = time.perf_counter()
    page.goto(url, wait_until="commit", timeout=LOAD_TIMEOUT_S * 1000)
    page.locator('[data-testid="stApp"]').wait_for(timeout=LOAD_TIMEOUT_S * 1000)
    return time.perf_counter() - began


def plain_s(page: Any, url: str) -> float:
    """Baseline: a trivial page (/healthz's JSON) loaded in the same browser."""
    began = time.perf_counter()
    page.goto(url, wait_until="load", timeout=LOAD_TIMEOUT_S * 1000)
    return time.perf_counter() - began


def in_new_tab(context: Any, measure: Any, url: str, pid: int | None = None) -> Any:
    """`measure(page, url)` in a new tab; with the server's `pid`, a Load gets the server's
    CPU time meanwhile."""
    page = context.new_page()
    try:
        before = cpu_s(pid) if pid else 0.0
        result = measure(page, url)
        if pid and isinstance(result, Load):
            result.server_cpu_s = cpu_s(pid) - before
        return result
    finally:
        page.close()


def page_paths(context: Any, base: str, query: str) -> dict[str, tuple[int, int]]:
    """The pages the dashboard registers, as its sidebar links them (the overview as /), each
    with the charts and tables it shows once settled."""
    page = context.new_page()
    try:
        drawn(page, f"{base}/?{query}")
        hrefs = [str(h) for h in page.evaluate(NAV_JS)]
        paths = ["/" + urlsplit(h).path.strip("/") for h in hrefs]
        paths = list(dict.fromkeys(["/", *(p for p in paths if p != "/overview")]))
        return {path: settled(page, f"{base}{path}?{query}") for path in paths}
    finally:
        page.close()


@dataclass
class Report:
    pages: dict[str, tuple[int, int]]  # path: (charts, tables) shown once settled
    warm: dict[str, list[Load]] = field(default_factory=dict)
    after_start: dict[str, list[Load]] = field(default_factory=dict)
    start_s: list[float] = field(default_factory=list)
    rss_peak_mib: float = 0.0  # sampled VmRSS, over every server of the run
    hwm_mib: float = 0.0  # VmHWM, over every server of the run
    plain_s: list[float] = field(default_factory=list)
    shell_s: list[float] = field(default_factory=list)

    def note(self, server: Server) -> None:
        server.rss.sample()
        self.rss_peak_mib = max(self.rss_peak_mib, server.rss.peak_mib)
        self.hwm_mib = max(self.hwm_mib, server.rss.hwm_mib)


def median_s(loads: list[Load]) -> float:
    return statistics.median(load.seconds for load in loads)


def bench_browser(
    db: Path,
    runs: int,
    query: str,
    *,
    spacing_s: float,
    env: dict[str, str] | None = None,
    log: Any = print,
) -> Report:
    """Warm and after-start loads of every page, `runs` each, and the baselines. Warm loads
    come `spacing_s` apart: more than the query cache's lifetime, so each runs its queries."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport=VIEWPORT)
            # A first start: migrations, the analysts' snapshot if it is missing or stale,
            # Streamlit's static files into the browser's cache; the pages as registered.
            with serving(db, env) as server:
                log(f"first start: /healthz after {server.started_s:.1f} s")
                _wait_for_snapshot(db)
                pages = page_paths(context, server.url, query)
                log("pages (charts, tables): " + ", ".join(f"{p} {n}" for p, n in pages.items()))
            report = Report(pages)
            for run in range(runs):
                for path, expect in pages.items():
                    with serving(db, env) as server:
                        url = f"{server.url}{path}?{query}"
                        measure = partial(drawn, expect=expect)
                        load = in_new_tab(context, measure, url, server.rss.pid)
                        report.note(server)
                    report.start_s.append(server.started_s)
                    report.after_start.setdefault(path, []).append(load)
                    log(
                        f"after start, run {run + 1}: {path} {load.seconds:.2f} s "
                        f"(server CPU {load.server_cpu_s:.2f} s; {load.charts} charts, "
                        f"{load.tables} tables; /healthz after "
                        f"{server.started_s:.1f} s; RSS peak {server.rss.peak_mib:.0f} MiB)"
                    )
            with serving(db, env) as server:
                for path, expect in pages.items():
                    url = f"{server.url}{path}?{query}"
                    measure = partial(drawn, expect=expect)
                    in_new_tab(context, measure, url)  # the page once: its code loaded
                    loads = []
                    for _ in range(runs):
                        time.sleep(spacing_s)
                        loads.append(in_new_tab(context, measure, url, server.rss.pid))
                    report.warm[path] = loads
                    log(
                        f"warm: {path} "
                        + ", ".join(f"{x.seconds:.2f}" for x in loads)
                        + " s (server CPU "
                        + ", ".join(f"{x.server_cpu_s:.2f}" for x in loads)
                        + " s)"
                    )
                for _ in range(runs):
                    report.plain_s.append(in_new_tab(context, plain_s, f"{server.url}/healthz"))
                    report.shell_s.append(in_new_tab(context, shell_s, f"{server.url}/?{query}"))
                report.note(server)
        finally:
            browser.close()
    return report


def _wait_for_snapshot(db: Path) -> None:
    """Until the analysts' snapshot exists and no copy is under way (a first start copies the
    whole file: minutes at 10 million webhooks)."""
    snapshot = db.with_name(f"{db.stem}-snapshot{db.suffix}")
    tmp = snapshot.with_name(f".{snapshot.name}.tmp")
    began = time.monotonic()
    time.sleep(1)
    while time.monotonic() - began < STOP_TIMEOUT_S and (tmp.exists() or not snapshot.exists()):
        time.sleep(0.5)


def table(report: Report, runs: int) -> str:
    """The figures as a Markdown table, one row per page."""
    lines = [
        f"| page | charts | tables | warm, median of {runs} | after a start, median of {runs} "
        "| runs after a start (s) | server CPU, warm / after a start (s) |",
        "|---|---:|---:|---:|---:|---|---:|",
    ]
    for path in report.pages:
        warm, cold = report.warm[path], report.after_start[path]
        lines.append(
            f"| `{path}` | {warm[0].charts} | {warm[0].tables} | {median_s(warm):.2f} s "
            f"| {median_s(cold):.2f} s | {', '.join(f'{x.seconds:.2f}' for x in cold)} "
            f"| {_cpu(warm):.2f} / {_cpu(cold):.2f} |"
        )
    lines.append(
        f"| baseline `/healthz` | | | {statistics.median(report.plain_s):.2f} s | | | |\n"
        f"| baseline Streamlit's frame | | | {statistics.median(report.shell_s):.2f} s | | | |"
    )
    lines.append(
        f"\nserver start until /healthz: median {statistics.median(report.start_s):.1f} s; "
        f"RSS sampled every 50 ms: peak {report.rss_peak_mib:.0f} MiB (VmHWM "
        f"{report.hwm_mib:.0f} MiB)"
    )
    return "\n".join(lines)


def _cpu(loads: list[Load]) -> float:
    return statistics.median(load.server_cpu_s for load in loads)
