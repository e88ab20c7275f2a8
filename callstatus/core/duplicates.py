"""Exact repeats of a webhook (Plivo retries) flagged as duplicates, and repeats past a few
deliveries (replays) counted in `webhook_repeats` instead of stored."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime

import duckdb
import pyarrow as pa

from callstatus.core.records import EventRecord

# Repeats of one webhook (same kind and parameters) beyond the first few are counted, not stored.
# Plivo retries a webhook once when it got no 2xx in time, so a first delivery and a retry or two
# are normal; more within minutes is a replay (a captured, validly signed request sent again and
# again), and storing every copy let one request grow the database without bound. A repeat past
# MAX_STORED_DELIVERIES within REPEAT_WINDOW_S of the webhook's first repeat is acknowledged (a
# stored copy has the same content: nothing is lost) and counted in webhook_repeats instead.
MAX_STORED_DELIVERIES = 3
REPEAT_WINDOW_S = 600.0
# Fingerprints whose repeats are being counted, held at most (about 200 bytes each). Past this
# many repeated webhooks within a window, the oldest windows are forgotten (and restart).
REPEAT_CAPACITY = 50_000


# The start of the newest 5-minute bucket of webhook_counts at and after which at least $n
# webhooks were counted (NULL when fewer were).
_NEWEST_CUT = """
SELECT max(bucket_at) FROM (
    SELECT bucket_at, sum(sum(webhooks)) OVER (ORDER BY bucket_at DESC) AS newer
    FROM webhook_counts GROUP BY bucket_at)
WHERE newer >= $n
"""


class DuplicateTracker:
    """Remembers recent fingerprints to flag exact repeats (Plivo retries), and counts the
    deliveries of repeated ones to tell a retry from a replay.

    Retries arrive within minutes of the first delivery, so a bounded memory of recent
    fingerprints catches them without an index over the whole table. Two generations of sets,
    each up to capacity/2: every fingerprint among the last capacity/2 distinct ones is
    remembered, and at most `capacity` are held (about 80 bytes each, half an LRU's).

    Only fingerprints seen again get a delivery count, in two generations of dicts the same
    way (at most `repeat_capacity` entries): fingerprint -> (start of its window, deliveries).
    """

    def __init__(
        self,
        capacity: int = 1_000_000,
        *,
        max_stored: int = MAX_STORED_DELIVERIES,
        window_s: float = REPEAT_WINDOW_S,
        repeat_capacity: int = REPEAT_CAPACITY,
    ) -> None:
        self.capacity = capacity
        self._generation = max(1, capacity // 2)
        self._current: set[int] = set()
        self._previous: set[int] = set()
        self.max_stored = max_stored
        self.window_s = window_s
        self._repeat_generation = max(1, repeat_capacity // 2)
        self._counts: dict[int, tuple[float, int]] = {}
        self._old_counts: dict[int, tuple[float, int]] = {}

    def warm(self, cur: duckdb.DuckDBPyConnection) -> None:
        """Remember the newest stored fingerprints, and the deliveries of those stored more
        than once within the last window (a restart must not open a replay's window again)."""
        newest = "SELECT params_hash FROM webhook_events{} ORDER BY received_at DESC LIMIT $n"
        rows: list[tuple[int]] = []
        # The 5-minute counts bound where the newest `capacity` begin, so the sort reads those
        # rather than the whole table (at 10 million webhooks: 0.2 s and 60 MB against 0.65 s
        # and 450 MB held by the process long after). Counts that overstate (rows erased since)
        # leave fewer rows than asked: then the whole table is read.
        (cut,) = cur.execute(_NEWEST_CUT, {"n": self.capacity}).fetchall()[0]
        if cut is not None:
            rows = cur.execute(
                newest.format(" WHERE received_at >= $cut"), {"n": self.capacity, "cut": cut}
            ).fetchall()
        if len(rows) < self.capacity:
            rows = cur.execute(newest.format(""), {"n": self.capacity}).fetchall()
        self.flags(value for (value,) in reversed(rows))
        repeated = cur.execute(
            "SELECT params_hash, count(*), epoch(now() - min(received_at)) FROM webhook_events"
            " WHERE received_at >= now() - to_seconds($window)"
            " GROUP BY params_hash HAVING count(*) > 1",
            {"window": self.window_s},
        ).fetchall()
        now = time.monotonic()
        for value, deliveries, age_s in repeated:
            self._count(int(value), (now - float(age_s), int(deliveries)))

    def mark(self, records: Iterable[EventRecord]) -> None:
        records = list(records)
        for record, repeat in zip(records, self.flags(r.params_hash for r in records), strict=True):
            record.duplicate = record.duplicate or repeat

    def admit(
        self, records: Sequence[EventRecord], now: float | None = None
    ) -> tuple[list[EventRecord], list[EventRecord]]:
        """Flag duplicates, and split records (in arrival order) into those to store and the
        repeats past `max_stored` deliveries in their window, which are only counted."""
        now = time.monotonic() if now is None else now
        stored: list[EventRecord] = []
        repeats: list[EventRecord] = []
        seen = self.flags(r.params_hash for r in records)
        for record, before in zip(records, seen, strict=True):
            if not before:
                stored.append(record)
                continue
            record.duplicate = True
            if self._delivered(record.params_hash, now) <= self.max_stored:
                stored.append(record)
            else:
                repeats.append(record)
        return stored, repeats

    def release(self, records: Iterable[EventRecord]) -> None:
        """Take back the deliveries of records that were counted but could not be stored: a
        later repeat is only left unstored while copies of it were stored."""
        for record in records:
            value = record.params_hash
            for generation in (self._counts, self._old_counts):
                entry = generation.get(value)
                if entry is not None:
                    generation[value] = (entry[0], max(1, entry[1] - 1))
                    break

    def _delivered(self, value: int, now: float) -> int:
        """Count one more delivery of a fingerprint seen before; return its window's count."""
        entry = self._counts.get(value)
        if entry is None:
            entry = self._old_counts.pop(value, None)
        if entry is None or now - entry[0] >= self.window_s:
            # This repeat opens a window; the delivery seen before it counts as one.
            entry = (now, 1)
        entry = (entry[0], entry[1] + 1)
        self._count(value, entry)
        return entry[1]

    def _count(self, value: int, entry: tuple[float, int]) -> None:
        self._counts[value] = entry
        if len(self._counts) >= self._repeat_generation:
            self._old_counts, self._counts = self._counts, {}

    def flags(self, hashes: Iterable[int]) -> list[bool]:
        """For each fingerprint in arrival order: was it seen before?"""
        result = []
        for value in hashes:
            if value in self._current:
                result.append(True)
                continue
            result.append(value in self._previous)
            self._current.add(value)
            if len(self._current) >= self._generation:
                self._previous, self._current = self._current, set()
        return result

    @property
    def size(self) -> int:
        """How many fingerprints are held (at most `capacity`)."""
        return len(self._current) + len(self._previous)

    @property
    def counted(self) -> int:
        """How many repeated fingerprints have a delivery count (at most `repeat_capacity`)."""
        return len(self._counts) + len(self._old_counts)


def five_minutes(moment: datetime) -> datetime:
    """The start of moment's 5-minute bucket, in UTC (webhook_repeats.bucket)."""
    moment = moment.astimezone(UTC)
    return moment.replace(minute=moment.minute - moment.minute % 5, second=0, microsecond=0)


def add_repeats(cur: duckdb.DuckDBPyConnection, counts: Mapping[tuple[datetime, str], int]) -> None:
    """Add (bucket, kind) -> repeats to webhook_repeats, in the caller's transaction.

    One DELETE ... RETURNING and one INSERT for the whole batch rather than an upsert: DuckDB
    runs ON CONFLICT DO UPDATE as an UPDATE, and once a transaction with updates commits while
    any older read transaction is open, DuckDB cannot checkpoint until that one ends (measured:
    the WAL then grows without bound). Deletes and inserts leave checkpoints free."""
    if not counts:
        return
    keys = list(counts)
    old = cur.execute(
        "DELETE FROM webhook_repeats USING"
        " (SELECT unnest($buckets::TIMESTAMPTZ[]) AS bucket, unnest($kinds::VARCHAR[]) AS kind) n"
        " WHERE webhook_repeats.bucket = n.bucket AND webhook_repeats.kind = n.kind"
        " RETURNING webhook_repeats.bucket, webhook_repeats.kind, webhook_repeats.repeats",
        {"buckets": [b for b, _ in keys], "kinds": [k for _, k in keys]},
    ).fetchall()
    totals = dict(counts)
    for bucket, kind, repeats in old:
        key = (bucket, kind)
        totals[key] = totals.get(key, 0) + int(repeats)
    cur.execute(
        "INSERT INTO webhook_repeats (bucket, kind, repeats)"
        " SELECT unnest($buckets::TIMESTAMPTZ[]), unnest($kinds::VARCHAR[]),"
        " unnest($repeats::BIGINT[])",
        {
            "buckets": [b for b, _ in totals],
            "kinds": [k for _, k in totals],
            "repeats": list(totals.values()),
        },
    )


def mark_duplicates(table: pa.Table, tracker: DuplicateTracker) -> pa.Table:
    """Set the `duplicate` column of a records table, rows taken in the table's order."""
    hashes = table.column("params_hash").to_pylist()
    index = table.schema.get_field_index("duplicate")
    return table.set_column(index, "duplicate", pa.array(tracker.flags(hashes), pa.bool_()))
