"""Webhook records and the one batch insert that turns them into `webhook_events` rows.

The receiver, the spool replay and `callstatus seed` all store events through `insert_events`,
so seeded data and received data are the same rows.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Sequence
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

    event_id: str | None  # None: DuckDB assigns one at insert (uuid4 costs the event loop)
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


def canonical_json(params: Params) -> str:
    """The parameters as stored in `params`: keys sorted, so the text is also the fingerprint's
    canonical form and a webhook is encoded once."""
    return json.dumps(params, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def params_hash(kind: str, params: Params, canonical: str | None = None) -> int:
    """A 64-bit fingerprint of (kind, parameters): key order, method and nonce don't count."""
    if canonical is None:
        canonical = canonical_json(params)
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
        params_hash=params_hash(kind, params, params_json),
        params=params,
    )


class DuplicateTracker:
    """Remembers the most recent fingerprints to flag exact repeats (Plivo retries).

    Retries arrive within a minute of the first delivery, so a bounded memory of recent
    fingerprints catches them without an index over the whole table.
    """

    def __init__(self, capacity: int = 1_000_000) -> None:
        self.capacity = capacity
        self._seen: OrderedDict[int, None] = OrderedDict()

    def warm(self, cur: duckdb.DuckDBPyConnection) -> None:
        rows = cur.execute(
            "SELECT params_hash FROM webhook_events ORDER BY received_at DESC LIMIT ?",
            [self.capacity],
        ).fetchall()
        for (value,) in reversed(rows):
            self._remember(value)

    def mark(self, records: Iterable[EventRecord]) -> None:
        records = list(records)
        for record, repeat in zip(records, self.flags(r.params_hash for r in records), strict=True):
            record.duplicate = record.duplicate or repeat

    def flags(self, hashes: Iterable[int]) -> list[bool]:
        """For each fingerprint in arrival order: was it seen before?"""
        result = []
        for value in hashes:
            repeat = value in self._seen
            if repeat:
                self._seen.move_to_end(value)
            else:
                self._remember(value)
            result.append(repeat)
        return result

    def _remember(self, value: int) -> None:
        self._seen[value] = None
        if len(self._seen) > self.capacity:
            self._seen.popitem(last=False)


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


# Plivo parameter -> (position in TYPED_COLUMNS, SQL type)
_TYPED_SLOTS = {param: (i, sql_type) for i, (_, param, sql_type) in enumerate(TYPED_COLUMNS)}


def typed_columns(params_list: Sequence[Params], zone: ZoneInfo) -> list[list[object]]:
    """The typed copies of many webhooks, one list per TYPED_COLUMNS entry; unusable values
    become NULL. Walks each webhook's own parameters, most of which are typed."""
    count = len(params_list)
    columns: list[list[object]] = [[None] * count for _ in TYPED_COLUMNS]
    for row, params in enumerate(params_list):
        for param, value in params.items():
            slot = _TYPED_SLOTS.get(param)
            if slot is None:
                continue
            text = _text(value)
            if text is not None:
                columns[slot[0]][row] = _typed(text, slot[1], zone)
    return columns


_ARROW_TYPES = {
    "VARCHAR": pa.string(),
    "INTEGER": pa.int32(),
    "BOOLEAN": pa.bool_(),
    "TIMESTAMPTZ": pa.timestamp("us", tz="UTC"),
}
_BASE_FIELDS = [
    ("event_id", pa.string()),
    ("received_at", pa.timestamp("us", tz="UTC")),
    ("kind", pa.string()),
    ("http_method", pa.string()),
    ("params", pa.string()),
    ("signature", pa.string()),
    ("duplicate", pa.bool_()),
    ("params_hash", pa.int64()),
]
_SCHEMA = pa.schema(
    _BASE_FIELDS + [(column, _ARROW_TYPES[sql_type]) for column, _, sql_type in TYPED_COLUMNS]
)
_CASTS = {
    "event_id": "coalesce(b.event_id::UUID, gen_random_uuid())",
    "params": "b.params::JSON",
}
INSERT_SQL = (
    f"INSERT INTO webhook_events ({', '.join(_SCHEMA.names)}) SELECT "
    + ", ".join(_CASTS.get(name, f"b.{name}") for name in _SCHEMA.names)
    + " FROM {source} b"
)


def records_table(records: Sequence[EventRecord], plivo_timezone: str) -> pa.Table:
    columns: list[list[Any]] = [
        [r.event_id for r in records],
        [r.received_at for r in records],
        [r.kind for r in records],
        [r.http_method for r in records],
        [r.params_json for r in records],
        [r.signature for r in records],
        [r.duplicate for r in records],
        [r.params_hash for r in records],
    ]
    columns.extend(typed_columns([r.params for r in records], ZoneInfo(plivo_timezone)))
    return pa.table(columns, schema=_SCHEMA)


def insert_events(
    cur: duckdb.DuckDBPyConnection,
    records: Sequence[EventRecord],
    plivo_timezone: str,
    *,
    skip_existing: bool = False,
) -> None:
    """Insert records, in the caller's transaction or as one of their own.

    With skip_existing, known event_ids are left out (spool replay after a crash between
    commit and acknowledgement)."""
    if records:
        insert_table(cur, records_table(records, plivo_timezone), skip_existing=skip_existing)


def insert_table(
    cur: duckdb.DuckDBPyConnection, table: pa.Table, *, skip_existing: bool = False
) -> None:
    """Insert a table built by `records_table` (possibly in another process)."""
    # One execute() per batch: DuckDB finds `batch` among this frame's locals (a replacement
    # scan), and every extra call would wait again for the GIL held by the event loop.
    batch = table  # noqa: F841
    source = "batch"
    if skip_existing:
        source = (
            "(SELECT * FROM batch a WHERE a.event_id::UUID NOT IN "
            "(SELECT event_id FROM webhook_events))"
        )
    cur.execute(INSERT_SQL.format(source=source))


def mark_duplicates(table: pa.Table, tracker: DuplicateTracker) -> pa.Table:
    """Set the `duplicate` column of a records table, rows taken in the table's order."""
    hashes = table.column("params_hash").to_pylist()
    index = table.schema.get_field_index("duplicate")
    return table.set_column(index, "duplicate", pa.array(tracker.flags(hashes), pa.bool_()))
