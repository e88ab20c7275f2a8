"""Simulated webhooks written into the shared PostgreSQL store as the receivers write them, and
the same rows stored by the embedded writer: the truth a replica is compared with."""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime

import psycopg
import pyarrow as pa

from callstatus.core.db import Database
from callstatus.core.duplicates import DuplicateTracker, mark_duplicates
from callstatus.core.records import make_record
from callstatus.core.storage import insert_table, move_inbox, records_table
from callstatus.simulator.traffic import TrafficModel

INBOX_COPY = (
    "COPY webhook_inbox (event_id, received_at, kind, http_method, params, signature, duplicate,"
    " params_hash, typed, receiver) FROM STDIN"
)


def traffic(calls: int, *, seed: int = 7, days: float = 1.0, first_index: int = 0) -> pa.Table:
    """Simulated calls' webhooks as webhook_inbox rows (Arrow), in arrival order, duplicates
    flagged as the receiver flags them, each with its event_id."""
    model = TrafficModel(seed)
    end = time.time() - model.max_span_s
    starts = model.starts(calls, end, days, random.Random(seed))
    records = []
    for index, started_at in enumerate(starts, first_index):
        for hook in model.call(index, started_at).webhooks:
            received_at = datetime.fromtimestamp(hook.delivered_at, UTC)
            record = make_record(hook.kind, hook.method, hook.params(), "valid", received_at)
            record.ensure_id()
            records.append(record)
    table = records_table(records, "UTC").sort_by("received_at")
    return mark_duplicates(table, DuplicateTracker())


def insert_pg(
    con: psycopg.Connection[tuple[object, ...]], table: pa.Table, receiver: str = "test:1"
) -> None:
    """Write rows into PostgreSQL's webhook_inbox in the caller's transaction."""
    with con.cursor() as cur, cur.copy(INBOX_COPY) as copy:
        for row in table.to_pylist():
            copy.write_row(
                (
                    row["event_id"],
                    row["received_at"],
                    row["kind"],
                    row["http_method"],
                    row["params"],
                    row["signature"],
                    row["duplicate"],
                    row["params_hash"],
                    row["typed"],
                    receiver,
                )
            )


def insert_truth(database: Database, table: pa.Table) -> None:
    """The same rows stored by the embedded writer's bulk path, moved into webhook_rows."""
    cur = database.cursor()
    insert_table(cur, table)
    move_inbox(cur)


def insert_rejected_pg(
    con: psycopg.Connection[tuple[object, ...]],
    *,
    reason: str = "bad_signature",
    path: str = "/plivo/hangup",
    checked_url: str | None = "https://calls.example.com/plivo/hangup",
    headers: str = '{"host":"calls.example.com"}',
    params: str = '{"CallUUID":"x"}',
    receiver: str = "test:1",
) -> str:
    """One refused request, as a receiver records it; its rejected_id."""
    row = con.execute(
        "INSERT INTO rejected_webhooks (rejected_id, received_at, reason, path, http_method,"
        " checked_url, headers, params, truncated, receiver) VALUES (gen_random_uuid(), now(),"
        " %s, %s, 'POST', %s, %s, %s, false, %s) RETURNING rejected_id::text",
        (reason, path, checked_url, headers, params, receiver),
    ).fetchone()
    assert row is not None
    return str(row[0])
