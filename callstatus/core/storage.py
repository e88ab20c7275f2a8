"""How webhook records become `webhook_events` rows.

Every webhook enters `webhook_inbox` (migration 0006) with its typed copies as one JSON column,
computed by `callstatus.core.typed.typed_json`: the receiver's writer through a kept
`InboxAppender`, the spool replay through `insert_events`, `callstatus seed` through Arrow tables
(`records_table`, `insert_table`). `move_inbox` then makes them columns of `webhook_rows` in bulk.
One path for all, so seeded data and received data are the same rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from zoneinfo import ZoneInfo

import duckdb
import pyarrow as pa

from callstatus.core.records import EventRecord
from callstatus.core.typed import typed_json

# The relations webhook_events reads (migration 0006): storage details, not shown to analysts.
STORAGE_RELATIONS = frozenset({"webhook_rows", "webhook_inbox", "webhook_inbox_typed"})


def events_count_and_last(catalog: str = "", where: str = "") -> str:
    """SQL giving one row: webhook_events' row count `n` and newest received_at `last` (NULL
    when empty), read from the two tables behind the view. Through the view DuckDB reads every
    column of webhook_rows for a count (its UNION BY NAME keeps them all): 165 MB of buffers at
    10 million webhooks against 2 MB. `catalog` names another attached database (its `main` schema);
    `where` narrows both tables the same way."""
    prefix = f"{catalog}.main." if catalog else ""
    cond = f" WHERE {where}" if where else ""
    rows, inbox = f"{prefix}webhook_rows{cond}", f"{prefix}webhook_inbox{cond}"
    return (
        f"SELECT (SELECT count(*) FROM {rows}) + (SELECT count(*) FROM {inbox}) AS n,"
        f" greatest((SELECT max(received_at) FROM {rows}),"
        f" (SELECT max(received_at) FROM {inbox})) AS last"
    )


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
        [typed_json(r.params, zone, r.kind) for r in records],
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
                        typed_json(r.params, zone, r.kind),
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


# rollup_state's row holding the last `seq` given to a webhook_rows row (migration 0016).
SEQ_NAME = "webhook_rows"


def last_seq(cur: duckdb.DuckDBPyConnection) -> int:
    """The `seq` of the newest webhook moved to webhook_rows, whether or not it was deleted
    since (-1 before the first): numbers are never given twice."""
    (row,) = cur.execute(
        f"SELECT coalesce((SELECT watermark FROM rollup_state WHERE name = '{SEQ_NAME}'), -1)"
    ).fetchall()
    return int(row[0])


def move_inbox(cur: duckdb.DuckDBPyConnection) -> int:
    """Move every webhook in webhook_inbox to webhook_rows, typed, each with the next `seq`;
    return how many. One transaction: rows the receiver appends meanwhile stay for the next
    move."""
    cur.execute("BEGIN")
    try:
        base = last_seq(cur)
        row = cur.execute(
            "INSERT INTO webhook_rows BY NAME SELECT *, $base + row_number() OVER () AS seq"
            " FROM webhook_inbox_typed",
            {"base": base},
        ).fetchone()
        moved = int(row[0]) if row else 0
        if moved:
            # Deletes exactly the rows this transaction saw, i.e. the rows just copied.
            cur.execute("DELETE FROM webhook_inbox")
            # Deleted and inserted, never updated (callstatus/core/rollups.py says why).
            cur.execute(f"DELETE FROM rollup_state WHERE name = '{SEQ_NAME}'")
            cur.execute(
                f"INSERT INTO rollup_state VALUES ('{SEQ_NAME}', $top, now())",
                {"top": base + moved},
            )
        cur.execute("COMMIT")
    except BaseException:
        cur.execute("ROLLBACK")
        raise
    return moved
