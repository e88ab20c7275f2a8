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
from datetime import datetime

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

    event_id: str
    received_at: datetime
    kind: str
    http_method: str
    params_json: str
    signature: str
    params_hash: int
    duplicate: bool = False

    def to_json(self) -> str:
        return json.dumps(
            {
                "event_id": self.event_id,
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
            event_id=data["event_id"],
            received_at=datetime.fromisoformat(data["received_at"]),
            kind=data["kind"],
            http_method=data["http_method"],
            params_json=data["params"],
            signature=data["signature"],
            params_hash=int(data["params_hash"]),
            duplicate=bool(data["duplicate"]),
        )


def params_hash(kind: str, params: Params) -> int:
    """A 64-bit fingerprint of (kind, parameters): key order, method and nonce don't count."""
    canonical = json.dumps(params, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
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
    return EventRecord(
        event_id=event_id or str(uuid.uuid4()),
        received_at=received_at,
        kind=kind,
        http_method=http_method,
        params_json=json.dumps(params, ensure_ascii=False, separators=(",", ":")),
        signature=signature,
        params_hash=params_hash(kind, params),
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
        for record in records:
            if record.params_hash in self._seen:
                record.duplicate = True
                self._seen.move_to_end(record.params_hash)
            else:
                self._remember(record.params_hash)

    def _remember(self, value: int) -> None:
        self._seen[value] = None
        if len(self._seen) > self.capacity:
            self._seen.popitem(last=False)


def _typed_expression(param: str, sql_type: str) -> str:
    # A parameter sent twice arrives as a JSON list: typed copies take its last value.
    key = f"$.{param}"  # names in TYPED_COLUMNS are plain identifiers
    raw = (
        f"CASE WHEN json_type(b.params, '{key}') = 'ARRAY' "
        f"THEN json_extract_string(b.params, '{key}[#-1]') "
        f"ELSE json_extract_string(b.params, '{key}') END"
    )
    text = f"NULLIF(trim({raw}), '')"
    if sql_type == "VARCHAR":
        return text
    if sql_type == "INTEGER":
        return f"TRY_CAST(TRY_CAST({text} AS DOUBLE) AS INTEGER)"
    if sql_type == "BOOLEAN":
        return f"TRY_CAST(lower({text}) AS BOOLEAN)"
    if sql_type == "TIMESTAMPTZ":
        parsed = f"try_strptime({text}, ['%Y-%m-%d %H:%M:%S', '%Y-%m-%d %H:%M:%S.%f'])"
        return f"timezone($tz, {parsed})"
    raise ValueError(sql_type)


INSERT_SQL = (
    "INSERT INTO webhook_events (event_id, received_at, kind, http_method, params, signature, "
    "duplicate, params_hash, "
    + ", ".join(column for column, _, _ in TYPED_COLUMNS)
    + ") SELECT b.event_id::UUID, b.received_at, b.kind, b.http_method, b.params::JSON, "
    "b.signature, b.duplicate, b.params_hash, "
    + ", ".join(_typed_expression(param, sql_type) for _, param, sql_type in TYPED_COLUMNS)
    + " FROM __batch b"
)

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
    ]
)


def records_table(records: Sequence[EventRecord]) -> pa.Table:
    return pa.table(
        [
            [r.event_id for r in records],
            [r.received_at for r in records],
            [r.kind for r in records],
            [r.http_method for r in records],
            [r.params_json for r in records],
            [r.signature for r in records],
            [r.duplicate for r in records],
            [r.params_hash for r in records],
        ],
        schema=_SCHEMA,
    )


def insert_events(
    cur: duckdb.DuckDBPyConnection,
    records: Sequence[EventRecord],
    plivo_timezone: str,
    *,
    skip_existing: bool = False,
) -> None:
    """Insert records in the caller's transaction; with skip_existing, known event_ids are
    left out (spool replay after a crash that happened between commit and acknowledgement)."""
    if not records:
        return
    cur.register("__batch_all", records_table(records))
    try:
        source = "__batch_all"
        if skip_existing:
            source = (
                "(SELECT * FROM __batch_all a WHERE a.event_id::UUID NOT IN "
                "(SELECT event_id FROM webhook_events))"
            )
        cur.execute(
            INSERT_SQL.replace("FROM __batch b", f"FROM {source} b"),
            {"tz": plivo_timezone},
        )
    finally:
        cur.unregister("__batch_all")
