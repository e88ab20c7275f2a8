"""`callstatus seed`: simulated calls written straight into a database, as if received over HTTP.

Rows go through the receiver's own path (`make_record`, `DuplicateTracker`, `insert_events`), so
seeded and received calls read the same in every view; `received_at` is the webhook's call time
plus the model's delivery delay. In masked mode (CALLSTATUS_NUMBERS=masked) the numbers are
masked as the receiver masks them (`NumberMasker.mask_params`) before anything is written, so a
seeded file, like the demo's history, holds pseudonyms only.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import random
import sys
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing.pool import AsyncResult
from pathlib import Path

import duckdb
import pyarrow as pa

from callstatus.core import rollups
from callstatus.core.db import Database, held_by_another_process
from callstatus.core.duplicates import DuplicateTracker, mark_duplicates
from callstatus.core.numbers import NumberMasker
from callstatus.core.progress import Progress
from callstatus.core.records import make_record
from callstatus.core.settings import Settings
from callstatus.core.storage import insert_table, move_inbox, records_table
from callstatus.simulator.config import TrafficConfig
from callstatus.simulator.traffic import TrafficModel

BATCH_RECORDS = 50_000
CHUNK_CALLS = 2_000
PARALLEL_FROM_CALLS = 20_000


# What builds the masker of masked mode (CALLSTATUS_NUMBER_KEY, our own numbers): a masker
# itself, with its caches, does not travel to worker processes.
MaskWith = tuple[str, tuple[str, ...]]


def mask_with(settings: Settings) -> MaskWith | None:
    """The masking of these settings; None when numbers are kept in clear."""
    if not settings.masked or not settings.number_key:
        return None
    return settings.number_key, tuple(settings.own_numbers)


class DatabaseBusy(Exception):
    """Another process (a running server, usually) holds the database file."""


@dataclass(slots=True)
class SeedResult:
    calls: int = 0
    events: int = 0
    first: float | None = None
    last: float | None = None


def signature_for(settings: Settings) -> str:
    """What the receiver with these settings would have stored for a genuine webhook."""
    return "valid" if settings.auth_tokens else "unchecked"


def open_database(path: Path) -> Database:
    try:
        return Database(path)
    except duckdb.IOException as exc:
        if held_by_another_process(exc):
            raise DatabaseBusy(
                f"cannot open {path}: another process holds it (is `callstatus serve` running "
                "on it?). Stop that process, or seed another file with --db."
            ) from exc
        raise


def seed_calls(
    db: Database,
    model: TrafficModel,
    starts: Sequence[float],
    *,
    signature: str,
    plivo_timezone: str,
    progress: Progress | None = None,
    first_index: int = 0,
    workers: int | None = None,
    mask: MaskWith | None = None,
) -> SeedResult:
    """Store one simulated call per start time, in batches of one transaction each; with
    `mask` (`mask_with(settings)`), their numbers masked."""
    cur = db.cursor()
    tracker = DuplicateTracker()
    tracker.warm(cur)
    result = SeedResult(
        calls=len(starts),
        first=min(starts, default=None),
        last=max(starts, default=None),
    )
    batch: list[pa.Table] = []
    pending_calls = pending_rows = 0
    chunks = _table_chunks(model, starts, signature, plivo_timezone, first_index, workers, mask)
    for calls, table in chunks:
        batch.append(table)
        pending_calls += calls
        pending_rows += table.num_rows
        if pending_rows >= BATCH_RECORDS:
            result.events += _write(cur, tracker, batch)
            if progress is not None:
                progress.advance(pending_calls)
            batch, pending_calls, pending_rows = [], 0, 0
    result.events += _write(cur, tracker, batch)
    if progress is not None:
        progress.advance(pending_calls)
    return result


def _table(
    model: TrafficModel,
    first_index: int,
    starts: Sequence[float],
    signature: str,
    plivo_timezone: str,
    masker: NumberMasker | None = None,
) -> pa.Table:
    """The finished rows of these calls, as the receiver's writer would build them."""
    records = []
    for index, started_at in enumerate(starts, first_index):
        for hook in model.call(index, started_at).webhooks:
            received_at = datetime.fromtimestamp(hook.delivered_at, UTC)
            params = hook.params()
            if masker is not None:  # as the receiver does, after the signature check
                params = masker.mask_params(hook.kind, params)
            records.append(make_record(hook.kind, hook.method, params, signature, received_at))
    return records_table(records, plivo_timezone)


def _masker(mask: MaskWith | None) -> NumberMasker | None:
    return NumberMasker(mask[0], mask[1]) if mask is not None else None


_Chunk = tuple[int, Sequence[float]]
_worker_state: tuple[TrafficModel, str, str, NumberMasker | None] | None = None


def _init_worker(
    model: TrafficModel, signature: str, plivo_timezone: str, mask: MaskWith | None
) -> None:
    global _worker_state
    _worker_state = (model, signature, plivo_timezone, _masker(mask))


def _worker_chunk(chunk: _Chunk) -> pa.Table:
    assert _worker_state is not None
    model, signature, plivo_timezone, masker = _worker_state
    return _table(model, chunk[0], chunk[1], signature, plivo_timezone, masker)


def _table_chunks(
    model: TrafficModel,
    starts: Sequence[float],
    signature: str,
    plivo_timezone: str,
    first_index: int,
    workers: int | None,
    mask: MaskWith | None = None,
) -> Iterator[tuple[int, pa.Table]]:
    """(calls, their rows) chunk by chunk, in call order. Building rows is most of the work,
    so large seeds build them in worker processes while this one inserts."""
    chunks = [
        (first_index + k, starts[k : k + CHUNK_CALLS]) for k in range(0, len(starts), CHUNK_CALLS)
    ]
    workers = (os.cpu_count() or 1) if workers is None else workers
    if workers <= 1 or len(starts) < PARALLEL_FROM_CALLS:
        masker = _masker(mask)
        for first, part in chunks:
            yield len(part), _table(model, first, part, signature, plivo_timezone, masker)
        return
    # spawn, not fork: this process has DuckDB's threads running, and a fork copies their locks.
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers, _init_worker, (model, signature, plivo_timezone, mask)) as pool:
        todo = iter(chunks)
        # A bounded window of chunks in flight: memory stays flat however many calls.
        window: deque[tuple[int, AsyncResult[pa.Table]]] = deque()
        for chunk in itertools.islice(todo, 2 * workers):
            window.append((len(chunk[1]), pool.apply_async(_worker_chunk, (chunk,))))
        while window:
            calls, pending = window.popleft()
            following = next(todo, None)
            if following is not None:
                job = pool.apply_async(_worker_chunk, (following,))
                window.append((len(following[1]), job))
            yield calls, pending.get()


def _write(
    cur: duckdb.DuckDBPyConnection, tracker: DuplicateTracker, tables: list[pa.Table]
) -> int:
    if not tables:
        return 0
    # In arrival order, as the receiver's writer sees them: a retry is the later copy.
    batch = pa.concat_tables(tables).sort_by("received_at")
    batch = mark_duplicates(batch, tracker)
    cur.execute("BEGIN")
    try:
        insert_table(cur, batch)
        cur.execute("COMMIT")
    except Exception:
        cur.execute("ROLLBACK")
        raise
    # Typed in bulk, as the server's rollup job does with what the receiver stored.
    move_inbox(cur)
    return int(batch.num_rows)


def load_config(path: Path | None) -> TrafficConfig:
    return TrafficConfig.from_file(path) if path is not None else TrafficConfig()


@dataclass(frozen=True, slots=True)
class SeedOptions:
    """What `callstatus seed` was asked for."""

    calls: int = 10_000
    days: float = 30.0
    seed: int | None = None  # None: a random one, printed in the summary
    traffic: Path | None = None  # JSON file overriding the traffic model's settings


def run_seed(options: SeedOptions, settings: Settings) -> int:
    if options.calls < 0 or options.days <= 0:
        print("callstatus seed: --calls must be >= 0 and --days > 0", file=sys.stderr)
        return 2
    seed = options.seed if options.seed is not None else random.SystemRandom().randrange(2**31)
    model = TrafficModel(seed, load_config(options.traffic), settings.plivo_timezone)
    try:
        db = open_database(settings.db)
    except DatabaseBusy as exc:
        print(f"callstatus seed: {exc}", file=sys.stderr)
        return 1
    began = time.monotonic()
    try:
        result = seed_database(db, model, settings, options.calls, options.days)
    finally:
        db.close()
    elapsed = time.monotonic() - began
    print(summary(result, settings.db, seed, elapsed))
    return 0


def seed_database(
    db: Database, model: TrafficModel, settings: Settings, calls: int, days: float
) -> SeedResult:
    """`calls` calls spread over the `days` before now, all ended by now."""
    end = time.time() - model.max_span_s
    starts = model.starts(calls, end, days, random.Random(model.seed))
    progress = Progress(calls, "seeding calls")
    result = seed_calls(
        db,
        model,
        starts,
        signature=signature_for(settings),
        plivo_timezone=settings.plivo_timezone,
        progress=progress,
        mask=mask_with(settings),
    )
    progress.close()
    # Built once here, so the dashboard reads the seeded file from its rollups at once.
    rollups.refresh(db.cursor(), full=True)
    return result


def summary(result: SeedResult, path: Path, seed: int, elapsed: float) -> str:
    span = ""
    if result.first is not None and result.last is not None:
        first = datetime.fromtimestamp(result.first, UTC).strftime("%Y-%m-%d %H:%M")
        last = datetime.fromtimestamp(result.last, UTC).strftime("%Y-%m-%d %H:%M")
        span = f", calls from {first} to {last} UTC"
    rate = result.calls / elapsed if elapsed > 0 else 0.0
    return (
        f"seeded {result.calls:,} calls ({result.events:,} webhooks) into {path} in "
        f"{elapsed:.1f} s ({rate:,.0f} calls/s), random seed {seed}{span}"
    )
