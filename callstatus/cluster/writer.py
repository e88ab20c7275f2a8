"""A receiver's writer into the shared PostgreSQL store: group commit, the 200 only after the
commit, an fsynced local spool while PostgreSQL cannot take writes, replayed when it can.

The same interface as callstatus.receiver.writer.Writer (the endpoints await `store`): a thread
takes whatever is waiting and writes it in one transaction (callstatus.cluster.inbox), then
settles every waiting request at once. When PostgreSQL is unreachable or a commit fails, the
batch goes to the spool and is acknowledged; the connection is opened again with backoff (a
batch meanwhile goes straight to the spool instead of waiting for a connect timeout), and the
spool is replayed REPLAY_ROWS webhooks at a time between batches of new ones. A replayed
webhook already in PostgreSQL (its commit succeeded though its reply was lost) is skipped by
event_id, before its fingerprint is counted again. Between batches the writer also upserts the
receiver's heartbeat (callstatus.cluster.heartbeat). At start it adopts the spool files the
embedded writer left (`adopt`, the embedded spool folder): webhooks spooled before clustered
mode was switched on reach PostgreSQL, once each (replayed like its own, skipped by event_id).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from prometheus_client import Gauge

from callstatus.cluster import inbox
from callstatus.cluster.heartbeat import HEARTBEAT_S, Heartbeat, beat
from callstatus.cluster.pg import connect, migrate
from callstatus.core.duplicates import MAX_STORED_DELIVERIES, REPEAT_WINDOW_S
from callstatus.core.errors import exception_line
from callstatus.core.records import EventRecord
from callstatus.receiver import metrics
from callstatus.receiver.rejected import RejectedRecord
from callstatus.receiver.spool import Spool
from callstatus.receiver.writer import (
    REPLAY_ROWS,
    STOP,
    Item,
    WriteFailed,
    settle,
    take_batch,
)

log = logging.getLogger("callstatus.cluster.writer")

# Between turns of an idle writer: the heartbeat and reconnection are checked this often.
HOUSEKEEPING_S = 0.5
# Reconnection backoff: the first retry after RECONNECT_MIN_S, doubling up to RECONNECT_MAX_S.
RECONNECT_MIN_S = 0.25
RECONNECT_MAX_S = 5.0
# Writer threads, each with its connection: while one waits for its commit to reach the disk,
# another sends the next batch (measured: a commit costs a few milliseconds of fsync here).
CONNECTIONS = 2
# Fingerprints (webhook_fingerprints) are kept this long after their last window opened: a copy
# arriving later is taken as a first copy. Plivo retries within minutes; a day-old copy is a
# replay, and a week covers any of them while keeping the table to a week of distinct webhooks.
FINGERPRINT_KEEP_S = 7 * 86400.0
# How often the first lane prunes them, and how many rows one DELETE removes at most.
PRUNE_EVERY_S = 60.0
PRUNE_ROWS = 10_000
# A statement that hangs (a server that stopped answering) fails the batch into the spool.
STATEMENT_TIMEOUT_MS = 10_000

POSTGRES_UP = Gauge(
    "callstatus_postgres_up",
    "1 while the receiver's connection to the shared PostgreSQL store takes writes, else 0",
    registry=metrics.REGISTRY,
)


class _Lane:
    """One writer thread's connection, opened again with backoff when it fails."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.con: inbox.Connection | None = None
        self.connect_at = 0.0
        self.backoff = RECONNECT_MIN_S

    def close(self) -> None:
        con, self.con = self.con, None
        if con is not None:
            with contextlib.suppress(Exception):
                con.close()

    def retry_later(self) -> None:
        self.connect_at = time.monotonic() + self.backoff
        self.backoff = min(self.backoff * 2, RECONNECT_MAX_S)


class PgWriter:
    def __init__(
        self,
        url: str,
        spool: Spool,
        plivo_timezone: str,
        receiver: str,
        *,
        max_stored: int = MAX_STORED_DELIVERIES,
        window_s: float = REPEAT_WINDOW_S,
        heartbeat_s: float = HEARTBEAT_S,
        connections: int = CONNECTIONS,
        fingerprint_keep_s: float = FINGERPRINT_KEEP_S,
        adopt: Path | None = None,
    ) -> None:
        self.url = url
        self.spool = spool
        # The embedded writer's spool folder: its files are moved into `spool` at start.
        self.adopt = adopt
        self.zone = ZoneInfo(plivo_timezone)
        self.receiver = receiver
        self.max_stored = max_stored
        self.window_s = window_s
        self.heartbeat_s = heartbeat_s
        self.fingerprint_keep_s = fingerprint_keep_s
        self.started_at = datetime.now(UTC)
        self.last_event_at: datetime | None = None
        # Why PostgreSQL does not take writes now (None while it does).
        self.last_error: str | None = "not connected yet"
        # Webhooks this process stored in PostgreSQL (repeats only counted are not).
        self.stored = 0
        self._lanes = [_Lane(index) for index in range(max(1, connections))]
        # The first lane also replays the spool and sends the heartbeat.
        self._main = self._lanes[0]
        self._lock = threading.Lock()
        # Apart from _lock: a migration may wait seconds for an unreachable server, while the
        # other lane spools.
        self._migrate_lock = threading.Lock()
        self._migrated = False
        self._spool_depth = 0
        self._spool_pending = False
        self._replay_at = 0.0
        self._beat_at = 0.0
        self._prune_at = 0.0
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(
                target=self._run,
                args=(lane,),
                name=f"callstatus-pg-writer-{lane.index}",
                daemon=True,
            )
            for lane in self._lanes
        ]

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        """Open the connections (or go on without: webhooks are spooled until they open) and
        start the threads."""
        self.spool.clean_partials()
        if self.adopt is not None:
            adopted = self.spool.adopt(self.adopt)
            if adopted:
                log.warning(
                    "%d spool files left in %s before clustered mode took over: replaying them"
                    " into PostgreSQL",
                    adopted,
                    self.adopt,
                )
        self._spool_depth = self.spool.depth()
        self._spool_pending = self._spool_depth > 0
        metrics.SPOOL_DEPTH.set(self._spool_depth)
        for lane in self._lanes:
            if not self._connect(lane):
                break  # the others try again from their threads, with backoff
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Drain what is queued, send a last heartbeat, close the connections."""
        for _ in self._threads:
            self._queue.put(STOP)
        for thread in self._threads:
            if thread.is_alive():
                thread.join()
        if self._main.con is not None:
            self._beat()
        for lane in self._lanes:
            lane.close()
        POSTGRES_UP.set(0)

    def queue_depth(self) -> int:
        return self._queue.qsize()

    def spool_depth(self) -> int:
        """Webhooks in this receiver's spool, waiting for PostgreSQL."""
        return self._spool_depth

    @property
    def postgres_ok(self) -> bool:
        return self._main.con is not None and self.last_error is None

    # -- request side -------------------------------------------------------------------------
    async def store(self, record: EventRecord) -> str:
        """Return 'stored' or 'spooled' once the record (or, for a repeat counted instead of
        stored, an identical delivery) is durable; raise WriteFailed if not."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[str] = loop.create_future()
        self._queue.put((record, (loop, future)))
        return await future

    def store_rejected(self, record: RejectedRecord) -> None:
        """Best effort: a refused request is recorded without making anyone wait (and dropped
        while PostgreSQL is unreachable)."""
        self._queue.put((record, None))

    # -- writer threads -----------------------------------------------------------------------
    def _run(self, lane: _Lane) -> None:
        main = lane is self._main
        while True:
            try:
                if main and self._replay_due():
                    first = self._queue.get_nowait()
                else:
                    first = self._queue.get(timeout=HOUSEKEEPING_S)
            except queue.Empty:
                first = None
            if first is STOP:
                return
            if first is not None:
                batch, stopping = take_batch(self._queue, first)
                self._write(lane, batch)
                if stopping:
                    return
            if lane.con is None:
                self._connect(lane)
            if main:
                if lane.con is not None and time.monotonic() >= self._beat_at:
                    self._beat()
                if lane.con is not None and time.monotonic() >= self._prune_at:
                    self._prune()
                if self._replay_due():
                    self._replay_step()

    def _write(self, lane: _Lane, batch: Sequence[Item]) -> None:
        events = [record for record, _ in batch if isinstance(record, EventRecord)]
        rejected = [record for record, _ in batch if isinstance(record, RejectedRecord)]
        waiters = [waiter for _, waiter in batch if waiter is not None]
        started = time.perf_counter()
        done: inbox.Stored | None = None
        if lane.con is not None or self._connect(lane):
            try:
                done = self._commit(lane, events)
            except Exception as exc:
                self._failed(lane, exc)
                log.error("PostgreSQL write failed, spooling %d webhooks: %s", len(events), exc)
        if done is None:
            outcome, error = self._spool(events)
            for kind, count in Counter(record.kind for record in events).items():
                metrics.WEBHOOKS.labels(kind, outcome if error is None else "failed").inc(count)
        else:
            metrics.COMMIT_SECONDS.observe(time.perf_counter() - started)
            metrics.BATCH_SIZE.observe(len(batch))
            outcome, error = "stored", None
            self._count(done)
            self._store_rejected(lane, rejected)
        if events and error is None:
            newest = max(r.received_at for r in events)
            with self._lock:
                if self.last_event_at is None or newest > self.last_event_at:
                    self.last_event_at = newest
        settle(waiters, outcome, error)

    def _commit(
        self, lane: _Lane, records: Sequence[EventRecord], *, replay: bool = False
    ) -> inbox.Stored:
        """Store a batch in one statement, its own transaction (the lanes' connections are in
        autocommit); with `replay`, skip event_ids already stored."""
        con = lane.con
        if con is None:
            raise WriteFailed(self.last_error or "not connected to PostgreSQL")
        stored = inbox.store(
            con,
            records,
            self.zone,
            self.receiver,
            max_stored=self.max_stored,
            window_s=self.window_s,
            replay=replay,
        )
        with self._lock:
            self.stored += stored.stored.total()
            self.last_error = None
        return stored

    def _count(self, stored: inbox.Stored) -> None:
        for kind, count in stored.stored.items():
            metrics.WEBHOOKS.labels(kind, "stored").inc(count)
        for kind, count in stored.repeats.items():
            metrics.WEBHOOKS.labels(kind, "repeat").inc(count)
            metrics.REPEATS_NOT_STORED.labels(kind).inc(count)

    def _store_rejected(self, lane: _Lane, rejected: Sequence[RejectedRecord]) -> None:
        if not rejected or lane.con is None:
            return
        try:
            inbox.insert_rejected(lane.con, rejected, self.receiver)
        except Exception as exc:  # losing a refused request's record must not fail the batch
            log.warning("could not record %d refused requests: %s", len(rejected), exc)

    def _spool(self, events: Sequence[EventRecord]) -> tuple[str, Exception | None]:
        if not events:
            return "spooled", None
        try:
            self.spool.write(events)
        except Exception as exc:
            log.critical("spool write failed too, %d webhooks not stored: %s", len(events), exc)
            return "failed", WriteFailed(str(exc))
        with self._lock:
            self._spool_pending = True
            self._spool_depth += len(events)
            metrics.SPOOL_DEPTH.set(self._spool_depth)
        return "spooled", None

    # -- the connections ----------------------------------------------------------------------
    def _connect(self, lane: _Lane) -> bool:
        """Open the lane's connection (migrating the store first, once) unless its backoff
        says not yet; True when connected."""
        if time.monotonic() < lane.connect_at:
            return False
        try:
            with self._migrate_lock:
                if not self._migrated:
                    applied = migrate(self.url)
                    if applied:
                        log.info("PostgreSQL store migrated: %s", ", ".join(applied))
                    self._migrated = True
            # Autocommit: a batch is one statement, its own transaction (inbox.store).
            con = connect(self.url, autocommit=True)
            con.execute(f"SET statement_timeout = {STATEMENT_TIMEOUT_MS}")
            if self.last_event_at is None:
                row = con.execute(
                    "SELECT max(received_at) FROM webhook_inbox WHERE receiver = %s",
                    (self.receiver,),
                ).fetchone()
                self.last_event_at = row[0] if row else None  # type: ignore[assignment]
        except Exception as exc:
            lane.retry_later()
            error = f"PostgreSQL unreachable: {exception_line(exc)}"
            if error != self.last_error:
                log.warning("%s (retrying with backoff up to %.0f s)", error, RECONNECT_MAX_S)
            self.last_error = error
            POSTGRES_UP.set(0)
            return False
        lane.con = con
        lane.backoff = RECONNECT_MIN_S
        if lane is self._main:
            if self.last_error is not None:
                log.info("connected to PostgreSQL")
            self.last_error = None
            self._replay_at = 0.0  # replay the spool now, if there is one
            self._beat_at = 0.0
            POSTGRES_UP.set(1)
        return True

    def _failed(self, lane: _Lane, exc: BaseException) -> None:
        lane.close()
        lane.retry_later()
        self.last_error = f"PostgreSQL write failed: {exception_line(exc)}"
        POSTGRES_UP.set(0)

    # -- between batches (the first lane) ----------------------------------------------------
    def _beat(self) -> None:
        self._beat_at = time.monotonic() + self.heartbeat_s
        con = self._main.con
        if con is None:
            return
        try:
            beat(
                con,
                Heartbeat(
                    self.receiver,
                    self.started_at,
                    self.last_event_at,
                    self._spool_depth,
                    self.stored,
                ),
            )
        except Exception as exc:
            log.warning("heartbeat failed: %s", exc)
            self._failed(self._main, exc)

    def _prune(self) -> None:
        """One bounded DELETE of old fingerprints; again at once while it found a full step."""
        con = self._main.con
        if con is None:
            return
        try:
            pruned = inbox.prune_fingerprints(con, self.fingerprint_keep_s, PRUNE_ROWS)
        except Exception as exc:
            log.warning("pruning old fingerprints failed, will retry: %s", exc)
            self._prune_at = time.monotonic() + PRUNE_EVERY_S
            if con.closed or con.broken:
                self._failed(self._main, exc)
            return
        self._prune_at = 0.0 if pruned >= PRUNE_ROWS else time.monotonic() + PRUNE_EVERY_S
        if pruned:
            log.info(
                "pruned %d fingerprints older than %.0f days",
                pruned,
                self.fingerprint_keep_s / 86400,
            )

    def _replay_due(self) -> bool:
        return (
            self._spool_pending
            and self._main.con is not None
            and time.monotonic() >= self._replay_at
        )

    def _replay_step(self) -> None:
        read = 0

        def store(records: Sequence[EventRecord]) -> None:
            nonlocal read
            self._count(self._commit(self._main, records, replay=True))
            read = len(records)

        try:
            moved = self.spool.replay_with(store, REPLAY_ROWS)
        except Exception as exc:
            log.warning("spool replay failed, will retry: %s", exc)
            self._failed(self._main, exc)
            return
        with self._lock:
            # Another lane may have spooled a batch since the step looked: keep it pending.
            if moved == 0 and not self.spool.files():
                self._spool_pending = False
                self._spool_depth = 0
                log.info("spool replayed into PostgreSQL")
            elif moved:
                self._spool_depth = max(0, self._spool_depth - read)
            metrics.SPOOL_DEPTH.set(self._spool_depth)
