"""The single database writer: group commit, spool on failure, replies only after durability.

Request handlers hand records to `Writer.store` and await it; the writer thread takes whatever
is waiting, writes it in one transaction, and settles every waiting request at once.

Around that, between batches:
- repeats of one webhook past a few deliveries (core.duplicates.MAX_STORED_DELIVERIES) are
  acknowledged once the batch commits but only counted, in webhook_repeats;
- the spool is replayed REPLAY_ROWS webhooks at a time, so new webhooks wait at most one step;
- rejected_webhooks is kept within its bounds (callstatus.receiver.rejected);
- the WAL is checkpointed once it grows past WAL_CHECKPOINT_BYTES (a backstop: the rollup job
  checkpoints it past 4 MiB, on its own thread, while commits go on);
- if the database file is removed or replaced under the running server (checked after every
  commit and every HOUSEKEEPING_S), whatever is written from then on would vanish at stop: the
  writer stops acknowledging, every webhook gets 503 and /healthz says why, until a restart.

While the database file is compacted (callstatus/privacy/compaction.py) the writer is diverted
(`divert`, `undivert`): it touches the database no more, every webhook goes to the spool (fsynced,
acknowledged as 'spooled'), refused requests wait in memory; once the file is swapped for its
copy, it drops its appender (a cursor of the old instance) and replays the spool into the new
file.
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
from datetime import datetime

import duckdb

from callstatus.core.db import Database
from callstatus.core.duplicates import DuplicateTracker, add_repeats, five_minutes
from callstatus.core.records import EventRecord
from callstatus.core.storage import InboxAppender, events_count_and_last
from callstatus.receiver import metrics
from callstatus.receiver.rejected import RejectedRecord, RejectedStore
from callstatus.receiver.spool import Spool

log = logging.getLogger("callstatus.writer")

MAX_BATCH = 5000
SPOOL_RETRY_S = 5.0
# Spooled webhooks replayed per writer turn, between batches of new ones: a step takes tens of
# milliseconds, so a long spool delays new webhooks by that much, not by the whole replay.
REPLAY_ROWS = 500
# How often an idle writer looks at the database file and the WAL (two or three stat calls).
HOUSEKEEPING_S = 0.5
# The rollup job checkpoints the WAL past 4 MiB (callstatus.core.rollups.CHECKPOINT_BYTES) on its
# own thread, where commits go on meanwhile. Past this bound (the job stopped or failing) the
# writer runs CHECKPOINT itself, between batches, and retries every CHECKPOINT_RETRY_S while one
# cannot run. DuckDB's own automatic checkpoint (checkpoint_threshold, 16 MiB by default) would
# run inside whichever commit crossed it, the writer's holding up its webhooks: the writer moves
# it to CHECKPOINT_THRESHOLD_FACTOR times its bound, a last resort.
WAL_CHECKPOINT_BYTES = 64 * 1024 * 1024
CHECKPOINT_THRESHOLD_FACTOR = 2
CHECKPOINT_RETRY_S = 5.0
CHECKPOINT_WARN_EVERY_S = 60.0

# Refused requests kept in memory while the writer is diverted, written once it is back.
MAX_HELD_REJECTED = 10_000

# What a refused webhook is told once the database file is gone (no paths: anyone may ask).
LOST_REPLY = (
    "the database file was removed or replaced while the server ran; webhooks are refused "
    "until callstatus serve is restarted"
)


class WriteFailed(Exception):
    """Neither the database nor the spool could take a webhook."""


# A request waiting for its webhook's commit: the loop it runs on and the future it awaits.
Waiter = tuple[asyncio.AbstractEventLoop, "asyncio.Future[str]"]
Item = tuple[EventRecord | RejectedRecord, Waiter | None]
# Put on a writer's queue to end its thread once what is queued before it is written.
STOP = object()
# Put on the embedded writer's queue to wake it when it is diverted or brought back.
WAKE = object()


class Writer:
    def __init__(
        self,
        database: Database,
        spool: Spool,
        plivo_timezone: str,
        *,
        rejected_max_rows: int | None = None,
        rejected_max_bytes: int | None = None,
        wal_checkpoint_bytes: int | None = None,
    ) -> None:
        self.database = database
        self.spool = spool
        self.plivo_timezone = plivo_timezone
        self.duplicates = DuplicateTracker()
        self.rejected = RejectedStore(rejected_max_rows, rejected_max_bytes)
        self.wal_checkpoint_bytes = (
            WAL_CHECKPOINT_BYTES if wal_checkpoint_bytes is None else wal_checkpoint_bytes
        )
        self.last_event_at: datetime | None = None
        self.last_error: str | None = None
        # Set once the database file is removed or replaced: from then on nothing is stored.
        self.lost: str | None = None
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="callstatus-writer", daemon=True)
        self._spool_pending = False
        self._inbox: InboxAppender | None = None
        # Repeats acknowledged while the database refused writes (their copies were spooled):
        # added to webhook_repeats with the next batch that commits.
        self._pending_repeats: Counter[tuple[datetime, str]] = Counter()
        self._replay_at = 0.0
        self._housekeeping_at = 0.0
        self._checkpoint_at = 0.0
        self._checkpoint_warned_at = float("-inf")
        # Asked by a compaction (set) and done by the writer thread (set once it is diverted).
        self._divert = threading.Event()
        self._diverted = threading.Event()
        self._held_rejected: list[RejectedRecord] = []

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        self.spool.clean_partials()
        cur = self.database.cursor()
        self.duplicates.warm(cur)
        # fetchall, not fetchone: a result left unread keeps its read transaction open, and
        # DuckDB cannot checkpoint past a transaction with updates that began after it.
        (row,) = cur.execute(events_count_and_last()).fetchall()
        self.last_event_at = row[1]
        # Spooled webhooks are replayed by the writer thread, a step at a time; the duplicate
        # tracker must know them before the first new webhook.
        spooled = 0
        for value, received_at in self.spool.hashes():
            self.duplicates.flags((value,))
            received = datetime.fromisoformat(received_at)
            if self.last_event_at is None or received > self.last_event_at:
                self.last_event_at = received
            spooled += 1
        self._spool_pending = spooled > 0
        metrics.SPOOL_DEPTH.set(spooled)
        self.rejected.load(cur)
        # A setting of the database instance, for every cursor.
        threshold = CHECKPOINT_THRESHOLD_FACTOR * self.wal_checkpoint_bytes
        cur.execute(f"SET checkpoint_threshold = '{int(threshold)}B'")
        self._thread.start()

    def stop(self) -> None:
        """Drain what is queued, checkpoint, and stop the thread."""
        if self._thread.is_alive():
            self._queue.put(STOP)
            self._thread.join()
        if self._pending_repeats:
            log.warning(
                "%d repeats acknowledged while the database refused writes were not counted "
                "in webhook_repeats (their stored copies are in the spool)",
                sum(self._pending_repeats.values()),
            )
        try:
            self.database.cursor().execute("CHECKPOINT")
        except Exception as exc:  # a failing disk must not block shutdown
            log.warning("checkpoint at shutdown failed: %s", exc)

    def queue_depth(self) -> int:
        return self._queue.qsize()

    # -- compaction ---------------------------------------------------------------------------
    def divert(self, timeout_s: float) -> bool:
        """Send every webhook to the spool and touch the database no more, from the end of the
        batch being written; True once the writer thread says so (False after `timeout_s`:
        call `undivert` all the same)."""
        if not self._thread.is_alive():
            return False
        self._divert.set()
        self._queue.put(WAKE)
        return self._diverted.wait(timeout_s)

    def undivert(self) -> None:
        """Back to the database (a new generation of it, after a swap): the spool is replayed."""
        self._divert.clear()
        self._queue.put(WAKE)

    @property
    def diverted(self) -> bool:
        return self._diverted.is_set()

    def _follow_divert(self) -> None:
        """In the writer thread, between batches: become diverted or come back as asked."""
        if self._divert.is_set() == self._diverted.is_set():
            return
        if self._divert.is_set():
            # The appender belongs to a cursor of the instance about to be closed.
            self._inbox = None
            self._diverted.set()
            log.info("webhooks go to the spool while the database file is compacted")
            return
        self._diverted.clear()
        held, self._held_rejected = self._held_rejected, []
        self._store_rejected(held)
        if self._spool_pending:
            self._replay_at = 0.0

    # -- request side -------------------------------------------------------------------------
    async def store(self, record: EventRecord) -> str:
        """Return 'stored' or 'spooled' once the record (or, for a repeat counted instead of
        stored, an identical delivery) is durable; raise WriteFailed if not."""
        if self.lost is not None:
            raise WriteFailed(LOST_REPLY)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[str] = loop.create_future()
        self._queue.put((record, (loop, future)))
        return await future

    def store_rejected(self, record: RejectedRecord) -> None:
        """Best effort: a refused request is recorded without making anyone wait."""
        if self.lost is None:
            self._queue.put((record, None))

    # -- writer thread ------------------------------------------------------------------------
    def _run(self) -> None:
        stopping = False
        while not stopping:
            self._follow_divert()
            try:
                if self._replay_due():
                    first = self._queue.get_nowait()
                else:
                    first = self._queue.get(timeout=HOUSEKEEPING_S)
            except queue.Empty:
                first = None
            if first is STOP:
                break
            if first is not None and first is not WAKE:
                batch, stopping = take_batch(self._queue, first)
                batch = [item for item in batch if item is not WAKE]
                if batch:
                    self._write(batch)
            if self._diverted.is_set():
                continue  # no housekeeping, no replay: the database is being swapped
            self._housekeeping()
            if not stopping and self._replay_due():
                self._replay_step()

    def _write(self, batch: Sequence[Item]) -> None:
        events = [record for record, _ in batch if isinstance(record, EventRecord)]
        rejected = [record for record, _ in batch if isinstance(record, RejectedRecord)]
        waiters = [waiter for _, waiter in batch if waiter is not None]
        if self._diverted.is_set():
            self._write_diverted(events, rejected, waiters)
            return
        if self.lost is not None:
            self._refuse(events, waiters)
            return
        stored, repeats = self.duplicates.admit(events)
        counts = self._pending_repeats.copy()
        counts.update((five_minutes(r.received_at), r.kind) for r in repeats)
        started = time.perf_counter()
        try:
            self._commit(stored, counts)
        except Exception as exc:
            if self._file_lost():
                self._refuse(events, waiters)
                return
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.error("database write failed, spooling %d webhooks: %s", len(stored), exc)
            outcome, error = self._spool(stored)
            if error is None:
                self._pending_repeats = counts
            else:
                self.duplicates.release(stored)
        else:
            if self._file_lost():  # committed, but to a file that is gone
                self._refuse(events, waiters)
                return
            metrics.COMMIT_SECONDS.observe(time.perf_counter() - started)
            metrics.BATCH_SIZE.observe(len(batch))
            self._pending_repeats.clear()
            if self.last_error is not None and self._spool_pending:
                self._replay_at = 0.0  # the database takes writes again: replay now
            self.last_error = None
            outcome, error = "stored", None
            self._store_rejected(rejected)
        if events and error is None:
            self.last_event_at = max((r.received_at for r in events), default=self.last_event_at)
        result = outcome if error is None else "failed"
        for kind, count in Counter(record.kind for record in stored).items():
            metrics.WEBHOOKS.labels(kind, result).inc(count)
        for kind, count in Counter(record.kind for record in repeats).items():
            metrics.WEBHOOKS.labels(kind, "repeat" if error is None else "failed").inc(count)
            if error is None:
                metrics.REPEATS_NOT_STORED.labels(kind).inc(count)
        settle(waiters, outcome, error)

    def _write_diverted(
        self,
        events: Sequence[EventRecord],
        rejected: Sequence[RejectedRecord],
        waiters: Sequence[Waiter],
    ) -> None:
        """While the file is compacted: webhooks to the spool, refused requests kept."""
        stored, repeats = self.duplicates.admit(events)
        counts = self._pending_repeats.copy()
        counts.update((five_minutes(r.received_at), r.kind) for r in repeats)
        outcome, error = self._spool(stored)
        if error is None:
            self._pending_repeats = counts
            if events:
                self.last_event_at = max(
                    (r.received_at for r in events), default=self.last_event_at
                )
        else:
            self.duplicates.release(stored)
        self._held_rejected.extend(rejected[: MAX_HELD_REJECTED - len(self._held_rejected)])
        result = outcome if error is None else "failed"
        for kind, count in Counter(record.kind for record in stored).items():
            metrics.WEBHOOKS.labels(kind, result).inc(count)
        for kind, count in Counter(record.kind for record in repeats).items():
            metrics.WEBHOOKS.labels(kind, "repeat" if error is None else "failed").inc(count)
        settle(waiters, outcome, error)

    def _commit(
        self, events: Sequence[EventRecord], repeats: Counter[tuple[datetime, str]]
    ) -> None:
        cur = self.database.cursor()
        if self._inbox is None:  # created in the writer thread, for the writer thread's cursor
            self._inbox = InboxAppender(cur, self.plivo_timezone)
        if not repeats:
            # Without BEGIN the append is its own transaction: committed when it returns.
            self._inbox.append(events)
            return
        cur.execute("BEGIN")
        try:
            self._inbox.append(events)
            add_repeats(cur, repeats)
            cur.execute("COMMIT")
        except BaseException:
            _rollback(cur)
            raise

    def _store_rejected(self, rejected: Sequence[RejectedRecord]) -> None:
        if not rejected:
            return
        cur = self.database.cursor()
        try:
            self.rejected.insert(cur, rejected)
            if self.rejected.over():
                metrics.REJECTED_PRUNED.inc(self.rejected.prune(cur))
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
        self._replay_at = time.monotonic() + SPOOL_RETRY_S
        metrics.SPOOL_DEPTH.inc(len(events))
        return "spooled", None

    def _refuse(self, events: Sequence[EventRecord], waiters: Sequence[Waiter]) -> None:
        for kind, count in Counter(record.kind for record in events).items():
            metrics.WEBHOOKS.labels(kind, "failed").inc(count)
        settle(waiters, "failed", WriteFailed(LOST_REPLY))

    # -- between batches ----------------------------------------------------------------------
    def _file_lost(self) -> bool:
        """True once the database file was removed or replaced (checked now if not yet)."""
        if self.lost is None and self.database.replaced():
            path = self.database.absolute_path
            self.lost = (
                f"the database file {path} was removed or replaced while the server ran: "
                "anything written to it from then on would be gone at stop, so webhooks are "
                "refused with 503 and nothing is spooled. To recover, restart callstatus serve "
                f"(it opens {path} again; restore the file first if it was removed by mistake)"
            )
            self.last_error = self.lost
            log.critical(self.lost)
        return self.lost is not None

    def _housekeeping(self) -> None:
        now = time.monotonic()
        if now < self._housekeeping_at:
            return
        self._housekeeping_at = now + HOUSEKEEPING_S
        if self._file_lost():
            return
        self._checkpoint_if_large(now)
        if self.rejected.over():  # e.g. a table from before the bounds: a step per turn
            try:
                metrics.REJECTED_PRUNED.inc(self.rejected.prune(self.database.cursor()))
            except Exception as exc:
                log.warning("could not prune rejected_webhooks: %s", exc)

    def _checkpoint_if_large(self, now: float) -> None:
        try:
            size = self.database.wal_path.stat().st_size
        except OSError:
            size = 0
        metrics.WAL_BYTES.set(size)
        if size <= self.wal_checkpoint_bytes or now < self._checkpoint_at:
            return
        started = time.perf_counter()
        try:
            self.database.cursor().execute("CHECKPOINT")
        except duckdb.Error as exc:
            self._checkpoint_at = now + CHECKPOINT_RETRY_S
            if now - self._checkpoint_warned_at >= CHECKPOINT_WARN_EVERY_S:
                self._checkpoint_warned_at = now
                log.warning(
                    "the WAL holds %.0f MiB (bound %.0f MiB) and CHECKPOINT failed, retrying "
                    "every %.0f s: %s",
                    size / 2**20,
                    self.wal_checkpoint_bytes / 2**20,
                    CHECKPOINT_RETRY_S,
                    exc,
                )
            return
        metrics.CHECKPOINTS.inc()
        log.info(
            "the WAL held %.0f MiB, past its bound: checkpointed in %.2f s",
            size / 2**20,
            time.perf_counter() - started,
        )

    def _replay_due(self) -> bool:
        return self._spool_pending and self.lost is None and time.monotonic() >= self._replay_at

    def _replay_step(self) -> None:
        def still_there() -> None:
            # Spool files are only removed once their webhooks are in the file at our path.
            if self._file_lost():
                raise WriteFailed(LOST_REPLY)

        try:
            moved = self.spool.replay_some(
                self.database.cursor(), self.plivo_timezone, REPLAY_ROWS, committed=still_there
            )
        except Exception as exc:
            self._replay_at = time.monotonic() + SPOOL_RETRY_S
            if self.lost is None:
                log.warning("spool replay failed, will retry in %.0f s: %s", SPOOL_RETRY_S, exc)
            return
        if moved == 0:
            self._spool_pending = False
            metrics.SPOOL_DEPTH.set(0)
            log.info("spool replayed")
        else:
            metrics.SPOOL_DEPTH.dec(moved)


def _rollback(cur: duckdb.DuckDBPyConnection) -> None:
    with contextlib.suppress(duckdb.Error):  # a failed COMMIT has rolled back already
        cur.execute("ROLLBACK")


def take_batch(waiting: queue.SimpleQueue[object], first: object) -> tuple[list[Item], bool]:
    """`first` and whatever else is waiting, up to MAX_BATCH items: one group commit's worth;
    True when STOP came after them (the thread ends once they are written)."""
    batch: list[Item] = [first]  # type: ignore[list-item]
    stopping = False
    while len(batch) < MAX_BATCH:
        try:
            item = waiting.get_nowait()
        except queue.Empty:
            break
        if item is STOP:
            stopping = True
            break
        batch.append(item)  # type: ignore[arg-type]
    metrics.QUEUE_DEPTH.set(waiting.qsize())
    return batch, stopping


def settle(waiters: Sequence[Waiter], outcome: str, error: Exception | None) -> None:
    """Wake each waiting request on its own loop with the batch's outcome (from the writer's
    thread: futures are resolved on their loops, never here)."""
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
