"""Masking benchmark: what CALLSTATUS_NUMBERS=masked adds to each webhook, against building the
record the receiver stores anyway (canonical JSON and fingerprint), on simulated traffic.

Each round masks the webhooks of --calls simulated calls with a new masker (its cache empty, as
after a start), then the same webhooks again (the cache warm, as for the later webhooks of calls
in progress), and builds their records; it prints microseconds per webhook, median of --rounds.

Usage:
    python bench/masking.py [--calls 2000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from callstatus.core.numbers import NumberMasker  # noqa: E402
from callstatus.core.records import make_record  # noqa: E402
from callstatus.simulator.config import DEFAULT_OUR_NUMBERS  # noqa: E402
from callstatus.simulator.traffic import TrafficModel  # noqa: E402

KEY = "bench-number-key-0123456789abcdef"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    model = TrafficModel(7)
    hooks = [
        (hook.kind, hook.params())
        for i in range(args.calls)
        for hook in model.call(i, 1_780_000_000.0 + 30 * i).webhooks
    ]
    ours = [number.number for number in DEFAULT_OUR_NUMBERS]
    now = datetime.now(UTC)
    cold, warm, record = [], [], []
    for _ in range(args.rounds):
        masker = NumberMasker(KEY, ours)
        started = time.perf_counter()
        for kind, params in hooks:
            masker.mask_params(kind, params)
        cold.append(time.perf_counter() - started)
        started = time.perf_counter()
        for kind, params in hooks:
            masker.mask_params(kind, params)
        warm.append(time.perf_counter() - started)
        started = time.perf_counter()
        for kind, params in hooks:
            make_record(kind, "POST", params, "valid", now)
        record.append(time.perf_counter() - started)
    per = 1e6 / len(hooks)
    print(f"{len(hooks):,} webhooks of {args.calls:,} calls, median of {args.rounds} rounds")
    print(f"  mask_params, cache empty : {statistics.median(cold) * per:6.1f} us/webhook")
    print(f"  mask_params, cache warm  : {statistics.median(warm) * per:6.1f} us/webhook")
    print(f"  make_record (baseline)   : {statistics.median(record) * per:6.1f} us/webhook")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
