"""`callstatus demo`: a few days of seeded history, then the server with live simulated traffic."""

from __future__ import annotations

import logging
import random
import secrets
import sys
import threading

from callstatus.app.server import serve
from callstatus.core.settings import Settings
from callstatus.simulator.call_api import CallApiServer
from callstatus.simulator.seed import DatabaseBusy
from callstatus.simulator.simulate import DEMO_LOSE_CALLS, backfill, demo_traffic

# The demo's own Plivo account, served by a local Call API: reconciliation runs every minute.
DEMO_AUTH_ID = "MADEMO00000000000001"
DEMO_RECONCILE = {"reconcile_interval_s": 60.0, "reconcile_grace_s": 30.0}


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
    # Simulated calls are reconciled against a local Call API that lists their records, never
    # against the Plivo account the environment may name.
    token = secrets.token_urlsafe(16)
    with CallApiServer([], auth_id=DEMO_AUTH_ID, token=token) as api:
        settings = settings.model_copy(
            update={
                "plivo_auth_id": DEMO_AUTH_ID,
                "plivo_api_token": token,
                "plivo_api_url": api.url,
                **DEMO_RECONCILE,
            }
        )
        traffic = threading.Thread(
            target=demo_traffic, args=(url, settings, rate, seed, stop, api.add), daemon=True
        )
        traffic.start()
        print(
            f"callstatus demo: dashboard at {url}/ with {rate:g} simulated calls/s; about "
            f"{DEMO_LOSE_CALLS:.0%} of them lose their webhooks on purpose and come back from "
            f"Plivo's call records (a local Call API at {api.url}); Ctrl-C stops",
            file=sys.stderr,
        )
        try:
            serve(settings, host, port)
        finally:
            stop.set()
            traffic.join(timeout=5.0)
    return 0
