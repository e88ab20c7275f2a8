"""The single database writer: group commit, spool on failure, replies only after durability.

Request handlers hand records to `Writer.store` and await it; the writer thread takes whatever
is waiting, writes it in one transaction, and settles every waiting request at once.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Sequence
from datetime import datetime

from callstatus.core.db import Database
from callstatus.core.events import DuplicateTracker, EventRecord, InboxAppender
from callstatus.receiver import metrics
from callstatus.receiver.rejected import RejectedRecord, insert_rejected
from callstatus.receiver.spool import Spool

log = logging.getLogger("callstatus.writer")

MAX_BATCH = 5000
SPOOL_RETRY_S = 5.0


class WriteFailed(Exception):
    """Neither the database nor the spool could take a webhook."""


_Waiter = tuple[asyncio.AbstractEventLoop, "asyncio.Future[str]"]
_Item = tuple[EventRecord | RejectedRecord, _Waiter | None]
_STOP = object()


class Writer:
    def __init__(self, database: Database, spool: Spool, plivo_timezone: str) -> None:
        self.database = database
        self.spool = spool
        self.plivo_timezone = plivo_timezone
        self.duplicates = DuplicateTracker()
        self.last_event_at: datetime | None = None
        self.last_error: str | None = None
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="callstatus-writer", daemon=True)
        self._spool_pending = False
        self._inbox: InboxAppender | None = None

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        # Replay first: the duplicate tracker and last_event_at must know the spooled webhooks.
        self._replay_spool()
        cur = self.database.cursor()
        self.duplicates.warm(cur)
        row = cur.execute("SELECT max(received_at) FROM webhook_events").fetchone()
        self.last_event_at = row[0] if row else None
        self._thread.start()

    def stop(self) -> None:
        """Drain what is queued, checkpoint, and stop the thread."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join()
        try:
            self.database.cursor().execute("CHECKPOINT")
        except Exception as exc:  # a failing disk must not block shutdown
            log.warning("checkpoint at shutdown failed: %s", exc)

    def queue_depth(self) -> int:
        return self._queue.qsize()

    # -- request side -------------------------------------------------------------------------
    async def store(self, record: EventRecord) -> str:
        """Return 'stored' or 'spooled' once the record is durable; raise WriteFailed if not."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[str] = loop.create_future()
        self._queue.put((record, (loop, future)))
        return await future

    def store_rejected(self, record: RejectedRecord) -> None:
        """Best effort: a refused request is recorded without making anyone wait."""
        self._queue.put((record, None))

    # -- writer thread ------------------------------------------------------------------------
    def _run(self) -> None:
        stopping = False
        while not stopping:
            timeout = SPOOL_RETRY_S if self._spool_pending else None
            try:
                first = self._queue.get(timeout=timeout)
            except queue.Empty:
                self._replay_spool()
                continue
            if first is _STOP:
                break
            batch: list[_Item] = [first]  # type: ignore[list-item]
            while len(batch) < MAX_BATCH:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stopping = True
                    break
                batch.append(item)  # type: ignore[arg-type]
            metrics.QUEUE_DEPTH.set(self._queue.qsize())
            self._write(batch)

    def _write(self, batch: Sequence[_Item]) -> None:
        events = [record for record, _ in batch if isinstance(record, EventRecord)]
        rejected = [record for record, _ in batch if isinstance(record, RejectedRecord)]
        self.duplicates.mark(events)
        outcome, error = "stored", None
        started = time.perf_counter()
        try:
            self._commit(events, rejected)
            metrics.COMMIT_SECONDS.observe(time.perf_counter() - started)
            metrics.BATCH_SIZE.observe(len(batch))
            self.last_error = None
        except Exception as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.error("database write failed, spooling %d webhooks: %s", len(events), exc)
            outcome, error = self._spool(events)
        if events and outcome == "stored":
            self.last_event_at = max((r.received_at for r in events), default=self.last_event_at)
            if self._spool_pending:
                self._replay_spool()
        result = outcome if error is None else "failed"
        for kind, count in Counter(record.kind for record in events).items():
            metrics.WEBHOOKS.labels(kind, result).inc(count)
        _settle([waiter for _, waiter in batch if waiter is not None], outcome, error)

    def _commit(self, events: Sequence[EventRecord], rejected: Sequence[RejectedRecord]) -> None:
        cur = self.database.cursor()
        if self._inbox is None:  # created in the writer thread, for the writer thread's cursor
            self._inbox = InboxAppender(cur, self.plivo_timezone)
        # Without BEGIN the append is its own transaction: committed when it returns.
        self._inbox.append(events)
        if rejected:
            try:
                insert_rejected(cur, rejected)
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
        self._spool_pending = True
        metrics.SPOOL_DEPTH.inc(len(events))
        return "spooled", None

    def _replay_spool(self) -> None:
        try:
            moved = self.spool.replay(self.database.cursor(), self.plivo_timezone)
        except Exception as exc:
            self._spool_pending = True
            log.warning("spool replay failed, will retry: %s", exc)
            return
        self._spool_pending = False
        metrics.SPOOL_DEPTH.set(0)
        if moved:
            log.info("spool replayed: %d webhooks", moved)


def _settle(waiters: Sequence[_Waiter], outcome: str, error: Exception | None) -> None:
    by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[str]]] = {}
    for loop, future in waiters:
        by_loop.setdefault(loop, []).append(future)
    for loop, futures in by_loop.items():
        loop.call_soon_threadsafe(_resolve, futures, outcome, error)


def _resolve(futures: Sequence[asyncio.Future[str]], outcome: str, error: Exception | None) -> None:
    for future in futures:
        if future.done():  # the client went away and the request was cancelled
            continue
        if error is None:
            future.set_result(outcome)
        else:
            future.set_exception(error)
