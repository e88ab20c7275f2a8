"""Live compaction through a real `callstatus serve` that is never restarted: signed webhooks
arrive steadily over 30 simulated days with CALLSTATUS_RETENTION_DAYS=15 (a simulated day is
CALLSTATUS_RETENTION_DAY_SECONDS long), the retention job removes a day's calls every day and
compacts the file while serving. Before it, a second server without retention takes the same
traffic for 15 days: its file is "the kept days' file" (named thirty below, as in the issue's 60
days with 30 kept, which bench/retention.py runs). Meanwhile a reader asks /api/v1/ the whole
time, and at the end the dashboard's pages are drawn in Chromium.

Checked: the file ends no larger than the 30-day file (margin below), every acknowledged webhook
is stored exactly once (in the table, or in the archive once retention removed it), webhooks
acknowledged during a copy went to the spool and were stored after the swap, no read failed.
"""

from __future__ import annotations

import json
import re
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest

from callstatus.privacy.compaction import compact
from tests.dashboard.chromium import assert_clean
from tests.factories import signed_request
from tests.privacy.growth import live_call
from tests.servers import CHROMIUM, CHROMIUM_ARGS, ServerProcess, start_server

pytestmark = pytest.mark.slow

TOKEN = "live-compaction-auth-token"
DAY_S = 2.5  # one simulated day, in seconds
DAYS, KEPT = 30, 15  # the suite's scale; bench/retention.py runs 60 and 30
SENDERS = 4
CALLS_PER_S = 25.0  # two webhooks a call; well within what one server takes here
# At the end of each day (its retention run and the copy that follows it) the file holds 30 days
# like the 30-day file's data alone (a copy of that file, without a live file's slack), but for
# blocks (256 KiB): the retention_runs rows that file lacks, and block granularity.
MARGIN_BLOCKS = 2
BLOCK = 256 * 1024
# Within a day the file grows for a while: at this scale every table is one row group (122,880
# rows), so a retention run's checkpoint writes each table anew before the old blocks are free,
# and the file about doubles until the copy that follows (measured: 5.5 MiB, 9 to 11.5 MiB
# after the run's delete, 5.5 MiB after the copy); the stop's checkpoints likewise (a file of
# 4.8 MiB after the last copy was 7.8 MiB after the stop). The 30-day file as its server left
# it varied from 5.0 to 11.0 MiB over runs for the same reason. Over the last third, and at the
# stop, the file must stay within this many times the 30-day data.
WITHIN_DAY = 2.5
SWAP = re.compile(
    r"^(\S+ \S+) INFO callstatus\.compaction: compacted the database from [\d.]+ MiB to "
    r"([\d.]+) MiB in [\d.]+ s while serving \(webhooks spooled meanwhile; swap ([\d.]+) s\)",
    re.MULTILINE,
)


@dataclass
class Target:
    server: ServerProcess
    acked: list[tuple[str, str]] = field(default_factory=list)
    refused: list[tuple[str, str, int]] = field(default_factory=list)
    on: bool = True


class Traffic:
    """SENDERS threads sending calls to every target still on, CALLS_PER_S a second in all."""

    def __init__(self, targets: list[Target]) -> None:
        self.targets = targets
        self.stop = threading.Event()
        self.count = 0
        self._lock = threading.Lock()
        self.threads = [threading.Thread(target=self._send) for _ in range(SENDERS)]

    def __enter__(self) -> Traffic:
        self.started = time.monotonic()
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(60)

    def _next(self) -> int:
        with self._lock:
            self.count += 1
            return self.count

    def _send(self) -> None:
        clients = {id(t): httpx.Client(base_url=t.server.url, timeout=60) for t in self.targets}
        try:
            while not self.stop.is_set():
                n = self._next()
                due = self.started + n / CALLS_PER_S
                if (wait := due - time.monotonic()) > 0:
                    time.sleep(wait)
                call = str(uuid.uuid4())
                for path, kind, pairs in live_call(call, n, datetime.now(UTC)):
                    for target in [t for t in self.targets if t.on]:
                        client = clients[id(target)]
                        reply = signed_request(
                            client, "POST", path, pairs, base=target.server.url, token=TOKEN
                        )
                        if reply.status_code == 200:
                            target.acked.append((call, kind))
                        else:
                            target.refused.append((call, kind, reply.status_code))
        finally:
            for client in clients.values():
                client.close()


class Reader:
    """Asks /api/v1/ for the overview's figures and the calls list, one after the other."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.ok = 0
        self.failed: list[str] = []
        self.spans: list[tuple[float, float]] = []  # wall-clock start and end of each read
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._read)

    def __enter__(self) -> Reader:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(120)

    def _read(self) -> None:
        with httpx.Client(base_url=self.server.url, timeout=120) as client:
            while not self.stop.is_set():
                for path in ("/api/v1/kpis", "/api/v1/calls"):
                    began = time.time()
                    try:
                        reply = client.get(path, params={"range": "Last 24 hours"})
                    except httpx.HTTPError as exc:
                        self.failed.append(f"{path}: {exc!r}")
                        continue
                    self.spans.append((began, time.time()))
                    if reply.status_code == 200:
                        self.ok += 1
                    else:
                        self.failed.append(f"{path}: {reply.status_code} {reply.text[:300]}")


def stored(db: Path, archive: Path) -> Counter[tuple[str, str]]:
    """(CallUUID, kind) of every webhook in the file, its archive and its spool."""
    con = duckdb.connect()
    try:
        con.execute(f"ATTACH '{db}' AS live (READ_ONLY)")
        found = Counter(
            (str(call), str(kind))
            for call, kind in con.execute(
                "SELECT params->>'CallUUID', kind FROM live.webhook_events"
            ).fetchall()
        )
        files = sorted(archive.glob("webhook_events/*/*.parquet"))
        if files:
            found.update(
                (str(call), str(kind))
                for call, kind in con.execute(
                    "SELECT params->>'CallUUID', kind FROM read_parquet(?)",
                    [[str(f) for f in files]],
                ).fetchall()
            )
    finally:
        con.close()
    for spooled in sorted((db.parent / "spool").glob("spool-*.jsonl")):
        for line in spooled.read_text().splitlines():
            record = json.loads(line)
            params = json.loads(record["params"])
            found[(params["CallUUID"], record["kind"])] += 1
    return found


def read(db: Path, sql: str) -> list[tuple[Any, ...]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def pages_render(server: ServerProcess) -> None:
    from playwright import sync_api

    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            for path in ("/", "/calls", "/health"):
                page.goto(f"{server.url}{path}?range=Last+24+hours", timeout=120_000)
                assert_clean(page, path)
        finally:
            browser.close()


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[tuple[ServerProcess, ServerProcess, Path]]:
    archive = tmp_path / "main" / "archive"
    (tmp_path / "main").mkdir()
    (tmp_path / "thirty").mkdir()
    signed = {"PLIVO_AUTH_TOKEN": TOKEN, "CALLSTATUS_SNAPSHOT_INTERVAL": "5"}
    main = start_server(
        tmp_path / "main" / "callstatus.duckdb",
        {
            **signed,
            "CALLSTATUS_RETENTION_DAYS": str(KEPT),
            "CALLSTATUS_RETENTION_DAY_SECONDS": str(DAY_S),
            "CALLSTATUS_ARCHIVE_DIR": str(archive),
        },
        timeout=120,
    )
    thirty = start_server(tmp_path / "thirty" / "callstatus.duckdb", signed, timeout=120)
    try:
        yield main, thirty, archive
    finally:
        for server in (main, thirty):
            if server.process.poll() is None:
                server.stop()


def test_a_server_never_restarted_keeps_its_file_to_thirty_days(
    servers: tuple[ServerProcess, ServerProcess, Path],
) -> None:
    main, thirty, archive = servers
    # First the 30-day file: the same traffic for 30 days, one server at a time (two at once
    # would halve the rate each takes on two busy cores).
    targets = [Target(main), Target(thirty)]
    with Traffic([targets[1]]):
        time.sleep(KEPT * DAY_S)
    assert thirty.stop() == 0
    # As the server left it (with a checkpoint's slack), and its data alone (a copy of it).
    thirty_live = thirty.db.stat().st_size
    copied = compact(thirty.db, force=True)
    assert copied is not None
    thirty_bytes = copied.bytes_after
    sizes: list[int] = []  # the live file every half second over the last third
    with Reader(main) as reader, Traffic([targets[0]]) as traffic:
        time.sleep((DAYS - KEPT) * DAY_S + KEPT * DAY_S * 2 / 3)
        end = time.monotonic() + KEPT * DAY_S / 3
        while time.monotonic() < end:
            sizes.append(main.db.stat().st_size)
            time.sleep(0.5)
        # The dashboard draws its pages on the file swapped many times, still swapping it.
        pages_render(main)
        metrics = httpx.get(f"{main.url}/metrics").text
        # The end of the last day: its run and copy done (the next run starts a day later).
        seen = len(re.findall("compacted the database", main.log.read_text()))
        deadline = time.monotonic() + 4 * DAY_S + 60
        while len(re.findall("compacted the database", main.log.read_text())) == seen:
            assert time.monotonic() < deadline, "no compaction at the end"
            time.sleep(0.05)
        traffic.stop.set()
    assert main.stop() == 0
    final_bytes = main.db.stat().st_size

    log = main.log.read_text()
    compactions = re.findall(r"compacted the database from [\d.]+ MiB to [\d.]+ MiB.*", log)
    swaps = SWAP.findall(log)
    print(f"{len(compactions)} compactions; {len(targets[0].acked)} webhooks acknowledged")
    print(
        f"30-day file {thirty_live / 2**20:.2f} MiB, its data {thirty_bytes / 2**20:.2f} MiB, "
        f"final {final_bytes / 2**20:.2f} MiB, "
        f"compacted to {[float(s[1]) for s in swaps]} MiB, last third up to "
        f"{max(sizes) / 2**20:.2f} MiB"
    )
    print(f"{reader.ok} reads; calls sent {traffic.count}")
    assert len(compactions) >= 5, log[-5000:]
    assert len(swaps) == len(compactions), compactions
    assert "given up" not in log and "compaction failed" not in log, log[-5000:]

    # Every acknowledged webhook stored once, none refused.
    for target in targets:
        assert target.refused == []
    acked = Counter(targets[0].acked)
    assert max(acked.values()) == 1
    found = stored(main.db, archive)
    missing = [key for key in acked if found[key] == 0]
    assert missing == [], f"{len(missing)} acknowledged webhooks not stored"
    twice = [key for key, n in found.items() if n > 1]
    assert twice == []
    assert set(found) == set(acked)
    # Some were acknowledged from the spool, during a copy.
    spooled = re.findall(
        r'callstatus_webhooks_total\{kind="\w+",result="spooled"\} ([\d.e+]+)', metrics
    )
    assert sum(float(n) for n in spooled) > 0, metrics

    # Reads during the swaps: none failed, and some were in flight while one happened.
    assert reader.failed == [] and reader.ok > 50
    windows = []
    for stamp, _, seconds in swaps:
        done = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()
        windows.append((done - float(seconds), done))
    during = [s for s in reader.spans if any(s[0] < b and s[1] > a for a, b in windows)]
    print(f"{len(during)} reads in flight during a swap")
    assert during

    # Nothing older than the last run's horizon (30 simulated days) in the raw tables.
    (horizon,) = read(
        main.db,
        "SELECT max(horizon) FROM retention_runs WHERE trigger <> 'compaction' AND status = 'ok'",
    )[0]
    (oldest,) = read(main.db, "SELECT min(received_at) FROM webhook_events")[0]
    assert oldest >= horizon

    # The two files hold as many calls (the rate was kept), else the sizes say little.
    (kept,) = read(main.db, "SELECT count(*) FROM webhook_events")[0]
    (held,) = read(thirty.db, "SELECT count(*) FROM webhook_events")[0]
    print(f"webhooks: {kept} kept at the end, {held} in the 30-day file")
    assert 0.9 <= kept / held <= 1.1
    scale = max(1.0, kept / held)
    # Each copy holds 30 days: no larger than the 30-day file (the log rounds to 0.1 MiB).
    for _, after, _ in swaps:
        assert float(after) * 2**20 <= thirty_bytes * scale + MARGIN_BLOCKS * BLOCK + 0.05 * 2**20
    # Within a day and at the stop (its checkpoints), bounded: the file stopped growing.
    bound = WITHIN_DAY * thirty_bytes * scale
    assert final_bytes <= bound, (final_bytes, thirty_bytes)
    assert max(sizes) <= bound, (max(sizes), thirty_bytes)


def test_kill_9_during_live_compactions_loses_nothing_acknowledged(tmp_path: Path) -> None:
    """Killed at moments that fall before, during and after copies and swaps (a day is a second:
    a copy about every other second), restarted on the same file: every webhook acknowledged is
    stored once (or waits in the spool, or went to the archive)."""
    db, archive = tmp_path / "callstatus.duckdb", tmp_path / "archive"
    env = {
        "PLIVO_AUTH_TOKEN": TOKEN,
        "CALLSTATUS_RETENTION_DAYS": "10",
        "CALLSTATUS_RETENTION_DAY_SECONDS": "1",
        "CALLSTATUS_ARCHIVE_DIR": str(archive),
    }
    acked: list[tuple[str, str]] = []
    current: list[ServerProcess] = [start_server(db, env, timeout=120)]
    stop = threading.Event()

    def send() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            call, server = str(uuid.uuid4()), current[0]
            for path, kind, pairs in live_call(call, n, datetime.now(UTC)):
                try:
                    with httpx.Client(base_url=server.url, timeout=30) as client:
                        reply = signed_request(
                            client, "POST", path, pairs, base=server.url, token=TOKEN
                        )
                except httpx.HTTPError:
                    time.sleep(0.05)  # killed: this webhook was never acknowledged
                    continue
                if reply.status_code == 200:
                    acked.append((call, kind))
            time.sleep(0.02)

    sender = threading.Thread(target=send)
    sender.start()
    kills = 0
    try:
        time.sleep(13)  # removals begin after 10 simulated days
        for pause in (2.3, 3.1, 1.7, 2.9, 3.7):
            compactions = len(re.findall("compacted the database", current[0].log.read_text()))
            time.sleep(pause)
            current[0].stop(signal.SIGKILL)
            kills += 1
            print(f"killed after {compactions} compactions")
            current[0] = start_server(db, env, timeout=120, healthy=False)
        time.sleep(3)
    finally:
        stop.set()
        sender.join(60)
    assert current[0].stop() == 0
    log = "".join(p.read_text() for p in tmp_path.glob("*.log"))
    found = stored(db, archive)
    assert [key for key in acked if found[key] == 0] == []
    assert [key for key, n in found.items() if n > 1] == []
    # Copies happened in between (how many before each kill depends on the machine's speed).
    assert kills == 5 and len(re.findall("while serving", log)) >= 1, log[-3000:]
