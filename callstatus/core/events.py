"""Webhook records, and how they become `webhook_events` rows.

Every webhook enters `webhook_inbox` (migration 0006) with its typed copies as one JSON column,
computed here by `typed_json`: the receiver's writer through a kept `InboxAppender`, the spool
replay through `insert_events`, `callstatus seed` through Arrow tables (`records_table`,
`insert_table`). `move_inbox` then makes them columns of `webhook_rows` in bulk. One path for
all, so seeded data and received data are the same rows.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import duckdb
import pyarrow as pa

Params = dict[str, str | list[str]]

# (column, Plivo parameter, SQL type) for every typed copy in webhook_events.
TYPED_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("call_uuid", "CallUUID", "VARCHAR"),
    ("event", "Event", "VARCHAR"),
    ("direction", "Direction", "VARCHAR"),
    ("from_number", "From", "VARCHAR"),
    ("to_number", "To", "VARCHAR"),
    ("call_status", "CallStatus", "VARCHAR"),
    ("dial_status", "DialStatus", "VARCHAR"),
    ("dial_ring_status", "DialRingStatus", "BOOLEAN"),
    ("dial_hangup_cause", "DialHangupCause", "VARCHAR"),
    ("dial_a_leg_uuid", "DialALegUUID", "VARCHAR"),
    ("dial_b_leg_uuid", "DialBLegUUID", "VARCHAR"),
    ("dial_action", "DialAction", "VARCHAR"),
    ("dial_b_leg_status", "DialBLegStatus", "VARCHAR"),
    ("dial_b_leg_from", "DialBLegFrom", "VARCHAR"),
    ("dial_b_leg_to", "DialBLegTo", "VARCHAR"),
    ("dial_b_leg_position", "DialBLegPosition", "INTEGER"),
    ("dial_b_leg_duration", "DialBLegDuration", "INTEGER"),
    ("dial_b_leg_bill_duration", "DialBLegBillDuration", "INTEGER"),
    ("dial_b_leg_hangup_cause", "DialBLegHangupCause", "VARCHAR"),
    ("dial_b_leg_hangup_cause_code", "DialBLegHangupCauseCode", "INTEGER"),
    ("dial_b_leg_hangup_cause_name", "DialBLegHangupCauseName", "VARCHAR"),
    ("dial_b_leg_hangup_source", "DialBLegHangupSource", "VARCHAR"),
    ("hangup_cause", "HangupCause", "VARCHAR"),
    ("hangup_cause_code", "HangupCauseCode", "INTEGER"),
    ("hangup_cause_name", "HangupCauseName", "VARCHAR"),
    ("hangup_source", "HangupSource", "VARCHAR"),
    ("duration", "Duration", "INTEGER"),
    ("bill_duration", "BillDuration", "INTEGER"),
    ("start_time", "StartTime", "TIMESTAMPTZ"),
    ("answer_time", "AnswerTime", "TIMESTAMPTZ"),
    ("end_time", "EndTime", "TIMESTAMPTZ"),
    ("machine", "Machine", "BOOLEAN"),
)

KINDS = (
    "answer",
    "fallback",
    "dial_action",
    "dial_callback",
    "hangup",
    "ring",
    "machine_detection",
)


@dataclass(slots=True)
class EventRecord:
    """One received webhook before it is stored."""

    event_id: str | None  # None: the writer assigns one when it stores the record
    received_at: datetime
    kind: str
    http_method: str
    params_json: str
    signature: str
    params_hash: int
    params: Params
    duplicate: bool = False

    def ensure_id(self) -> str:
        if self.event_id is None:
            self.event_id = str(uuid.uuid4())
        return self.event_id

    def to_json(self) -> str:
        return json.dumps(
            {
                "event_id": self.ensure_id(),
                "received_at": self.received_at.isoformat(),
                "kind": self.kind,
                "http_method": self.http_method,
                "params": self.params_json,
                "signature": self.signature,
                "params_hash": self.params_hash,
                "duplicate": self.duplicate,
            }
        )

    @classmethod
    def from_json(cls, line: str) -> EventRecord:
        data = json.loads(line)
        return cls(
            params=json.loads(data["params"]),
            event_id=data["event_id"],
            received_at=datetime.fromisoformat(data["received_at"]),
            kind=data["kind"],
            http_method=data["http_method"],
            params_json=data["params"],
            signature=data["signature"],
            params_hash=int(data["params_hash"]),
            duplicate=bool(data["duplicate"]),
        )


# Built once: json.dumps with options builds a new encoder on every call.
_CANONICAL = json.JSONEncoder(sort_keys=True, ensure_ascii=False, separators=(",", ":"))
_COMPACT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def canonical_json(params: Params) -> str:
    """The parameters as stored in `params`: keys sorted, so the text is also the fingerprint's
    canonical form and a webhook is encoded once."""
    return _CANONICAL.encode(params)


def params_hash(kind: str, canonical: str) -> int:
    """A 64-bit fingerprint of (kind, parameters as `canonical_json` writes them): key order,
    method and nonce don't count."""
    digest = hashlib.blake2b(f"{kind}\n{canonical}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def make_record(
    kind: str,
    http_method: str,
    params: Params,
    signature: str,
    received_at: datetime,
    event_id: str | None = None,
) -> EventRecord:
    params_json = canonical_json(params)
    return EventRecord(
        event_id=event_id,
        received_at=received_at,
        kind=kind,
        http_method=http_method,
        params_json=params_json,
        signature=signature,
        params_hash=params_hash(kind, params_json),
        params=params,
    )


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
        rows = cur.execute(
            "SELECT params_hash FROM webhook_events ORDER BY received_at DESC LIMIT ?",
            [self.capacity],
        ).fetchall()
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


_TRUE = frozenset({"true", "t", "1", "yes", "y"})
_FALSE = frozenset({"false", "f", "0", "no", "n"})
_INT32 = (-(2**31), 2**31 - 1)


def _text(value: str | list[str] | None) -> str | None:
    # A parameter sent twice arrives as a list: typed copies take its last value.
    if isinstance(value, list):
        value = value[-1] if value else None
    if value is None:
        return None
    value = value.strip()
    return value or None


def _integer(text: str) -> int | None:
    try:
        number = int(text)
    except ValueError:
        try:
            number = int(float(text))
        except (ValueError, OverflowError):
            return None
    return number if _INT32[0] <= number <= _INT32[1] else None


def _boolean(text: str) -> bool | None:
    lowered = text.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    return None


def _timestamp(text: str, zone: ZoneInfo) -> datetime | None:
    """Plivo's 'YYYY-MM-DD HH:MM:SS' (no offset) in PLIVO_TIMEZONE, as UTC."""
    try:
        naive = datetime.fromisoformat(text)
    except ValueError:
        return None
    local = naive.replace(tzinfo=zone) if naive.tzinfo is None else naive
    try:
        return local.astimezone(UTC)
    except OverflowError:  # year 1 or 9999 pushed out of range: one bad row must not fail a batch
        return None


def _typed(text: str, sql_type: str, zone: ZoneInfo) -> object:
    if sql_type == "VARCHAR":
        return text
    if sql_type == "INTEGER":
        return _integer(text)
    if sql_type == "BOOLEAN":
        return _boolean(text)
    return _timestamp(text, zone)


# Plivo parameter -> (typed column, SQL type)
_TYPED_SLOTS = {param: (column, sql_type) for column, param, sql_type in TYPED_COLUMNS}


def typed_values(params: Params, zone: ZoneInfo) -> dict[str, object]:
    """The typed copies of one webhook's parameters that have a value, ready for JSON
    (timestamps as ISO 8601 in UTC); unusable values are left out (NULL). Walks the webhook's
    own parameters, most of which are typed."""
    values: dict[str, object] = {}
    for param, value in params.items():
        slot = _TYPED_SLOTS.get(param)
        if slot is None:
            continue
        text = _text(value)
        if text is not None:
            typed = _typed(text, slot[1], zone)
            if typed is not None:
                values[slot[0]] = typed.isoformat() if isinstance(typed, datetime) else typed
    return values


def typed_json(params: Params, zone: ZoneInfo) -> str:
    """`typed_values` as the JSON object stored in webhook_inbox.typed."""
    return _COMPACT.encode(typed_values(params, zone))


# The relations webhook_events reads (migration 0006): storage details, not shown to analysts.
STORAGE_RELATIONS = frozenset({"webhook_rows", "webhook_inbox", "webhook_inbox_typed"})

# The columns the receiver writes: webhook_inbox's (migration 0006). An INSERT costs DuckDB about
# 45 us per column, so the typed copies travel as one JSON column and become columns in bulk.
_SCHEMA = pa.schema(
    [
        ("event_id", pa.string()),
        ("received_at", pa.timestamp("us", tz="UTC")),
        ("kind", pa.string()),
        ("http_method", pa.string()),
        ("params", pa.string()),
        ("signature", pa.string()),
        ("duplicate", pa.bool_()),
        ("params_hash", pa.int64()),
        ("typed", pa.string()),
    ]
)
INBOX_COLUMNS = tuple(_SCHEMA.names)
_CASTS = {
    "event_id": "coalesce(b.event_id::UUID, gen_random_uuid())",
    "params": "b.params::JSON",
    "typed": "b.typed::JSON",
}
INSERT_SQL = (
    f"INSERT INTO webhook_inbox ({', '.join(INBOX_COLUMNS)}) SELECT "
    + ", ".join(_CASTS.get(name, f"b.{name}") for name in INBOX_COLUMNS)
    + " FROM batch b"
)


def records_table(records: Sequence[EventRecord], plivo_timezone: str) -> pa.Table:
    """Records as an Arrow table of webhook_inbox's columns (for bulk loads: `insert_table`)."""
    zone = ZoneInfo(plivo_timezone)
    columns: list[list[Any]] = [
        [r.event_id for r in records],
        [r.received_at for r in records],
        [r.kind for r in records],
        [r.http_method for r in records],
        [r.params_json for r in records],
        [r.signature for r in records],
        [r.duplicate for r in records],
        [r.params_hash for r in records],
        [typed_json(r.params, zone) for r in records],
    ]
    return pa.table(columns, schema=_SCHEMA)


def insert_events(
    cur: duckdb.DuckDBPyConnection,
    records: Sequence[EventRecord],
    plivo_timezone: str,
    *,
    skip_existing: bool = False,
) -> None:
    """Append records to webhook_inbox, in the caller's transaction or as one of their own.

    With skip_existing, known event_ids are left out (spool replay after a crash between commit
    and acknowledgement)."""
    if skip_existing:
        records = _not_stored(cur, records)
    InboxAppender(cur, plivo_timezone).append(records)


class InboxAppender:
    """Appends records to webhook_inbox through one DuckDB appender, which skips parsing,
    binding and planning an INSERT: with nine columns a commit costs about a third of the
    40-column INSERT it replaced. Creating an appender costs about 0.5 ms: the receiver's writer
    keeps one for its thread's cursor."""

    def __init__(self, cur: duckdb.DuckDBPyConnection, plivo_timezone: str) -> None:
        self.cur = cur
        self.zone = ZoneInfo(plivo_timezone)
        self._appender: Any = None

    def append(self, records: Sequence[EventRecord]) -> None:
        """Append and flush: one statement, committed on return unless a transaction is open."""
        if not records:
            return
        if self._appender is None:
            self._appender = self.cur.appender("webhook_inbox", columns=list(INBOX_COLUMNS))
        zone = self.zone
        try:
            self._appender.append_rows(
                [
                    (
                        r.ensure_id(),
                        r.received_at,
                        r.kind,
                        r.http_method,
                        r.params_json,
                        r.signature,
                        r.duplicate,
                        r.params_hash,
                        typed_json(r.params, zone),
                    )
                    for r in records
                ]
            )
            self._appender.flush()
        except BaseException:
            # Nothing half-appended may reach the next flush: start the next batch afresh.
            self._appender = None
            raise


def _not_stored(
    cur: duckdb.DuckDBPyConnection, records: Sequence[EventRecord]
) -> list[EventRecord]:
    ids = [r.event_id for r in records if r.event_id is not None]
    if not ids:
        return list(records)
    # Bounded by the records' receipt times: rows are stored in about that order, so the scan
    # skips every row group outside it instead of reading every event_id.
    times = [r.received_at for r in records if r.event_id is not None]
    rows = cur.execute(
        "SELECT event_id::VARCHAR FROM webhook_events"
        " WHERE received_at BETWEEN $first AND $last"
        " AND event_id IN (SELECT unnest($ids::VARCHAR[])::UUID)",
        {"ids": ids, "first": min(times), "last": max(times)},
    ).fetchall()
    stored = {row[0] for row in rows}
    return [r for r in records if r.event_id is None or r.event_id not in stored]


def insert_table(cur: duckdb.DuckDBPyConnection, table: pa.Table) -> None:
    """Insert a table built by `records_table` (possibly in another process) into the inbox."""
    # One execute(): DuckDB finds `batch` among this frame's locals (a replacement scan).
    batch = table  # noqa: F841
    cur.execute(INSERT_SQL)


def move_inbox(cur: duckdb.DuckDBPyConnection) -> int:
    """Move every webhook in webhook_inbox to webhook_rows, typed, in arrival order; return how
    many. One transaction: rows the receiver appends meanwhile stay for the next move."""
    cur.execute("BEGIN")
    try:
        row = cur.execute(
            "INSERT INTO webhook_rows BY NAME SELECT * FROM webhook_inbox_typed"
        ).fetchone()
        moved = int(row[0]) if row else 0
        if moved:
            # Deletes exactly the rows this transaction saw, i.e. the rows just copied.
            cur.execute("DELETE FROM webhook_inbox")
        cur.execute("COMMIT")
    except BaseException:
        cur.execute("ROLLBACK")
        raise
    return moved


def mark_duplicates(table: pa.Table, tracker: DuplicateTracker) -> pa.Table:
    """Set the `duplicate` column of a records table, rows taken in the table's order."""
    hashes = table.column("params_hash").to_pylist()
    index = table.schema.get_field_index("duplicate")
    return table.set_column(index, "duplicate", pa.array(tracker.flags(hashes), pa.bool_()))
