"""`callstatus demo`: a few days of seeded history, then the server with live simulated traffic."""

from __future__ import annotations

import logging
import random
import sys
import threading

from callstatus.app.server import serve
from callstatus.core.settings import Settings
from callstatus.simulator.seed import DatabaseBusy
from callstatus.simulator.simulate import backfill, demo_traffic


def run_demo(settings: Settings, *, host: str, port: int, rate: float) -> int:
    # The server logs at INFO; one httpx line per simulated webhook would drown its own lines.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    seed = random.SystemRandom().randrange(2**31)
    try:
        seeded = backfill(settings, seed)
    except DatabaseBusy as exc:
        print(f"callstatus demo: {exc}", file=sys.stderr)
        return 1
    if seeded:
        print(
            f"callstatus demo: seeded {seeded:,} calls of history into {settings.db}",
            file=sys.stderr,
        )
    local = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    url = f"http://{local}:{port}"
    stop = threading.Event()
    traffic = threading.Thread(
        target=demo_traffic, args=(url, settings, rate, seed, stop), daemon=True
    )
    traffic.start()
    print(
        f"callstatus demo: dashboard at {url}/ with {rate:g} simulated calls/s; Ctrl-C stops",
        file=sys.stderr,
    )
    try:
        serve(settings, host, port)
    finally:
        stop.set()
        traffic.join(timeout=5.0)
    return 0
