"""A single server's history copied into the shared PostgreSQL store, for switching to clustered
mode without leaving the earlier calls behind (`callstatus import --from FILE`).

What is copied, from the file's tables into PostgreSQL's of the same names: every stored webhook
and call record (webhook_events, with their event_ids and `duplicate` as the file decided it, the
typed copies computed as a receiver computes them), the refused requests (rejected_webhooks), the
repeat counts (webhook_repeats; a 5-minute bucket PostgreSQL already counts is left as it is), and
the fingerprints of the last week's first copies, so that a retry of a webhook the single server
took that reaches a receiver after the switch is still flagged `duplicate`.

Every batch is its own transaction and rows already in PostgreSQL (by event_id, rejected_id) are
skipped: an interrupted import is run again and goes on where it stopped; a second run copies
nothing. Replicas copy the rows like any receiver's, by the transaction that wrote them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import duckdb

from callstatus.cluster import inbox
from callstatus.cluster.inbox import Connection
from callstatus.cluster.writer import FINGERPRINT_KEEP_S
from callstatus.core.records import EventRecord
from callstatus.receiver.rejected import RejectedRecord

BATCH = 5_000
# The receiver column of the imported rows in PostgreSQL.
IMPORTED_BY = "import"

_WEBHOOKS = """
SELECT event_id::VARCHAR, received_at, kind, http_method, params::VARCHAR, signature, duplicate,
    params_hash
FROM webhook_events
"""
_REJECTED = """
SELECT rejected_id::VARCHAR, received_at, reason, path, http_method, checked_url,
    headers::VARCHAR, params::VARCHAR, truncated
FROM rejected_webhooks
"""
_REPEATS = """
INSERT INTO webhook_repeats (bucket, kind, repeats)
SELECT * FROM unnest(%s::timestamptz[], %s::text[], %s::bigint[])
ON CONFLICT (bucket, kind) DO NOTHING
"""
# One delivery seen: the next copy of the same webhook is a duplicate and opens a window of
# repeats, as a receiver's own first copy would have it.
_FINGERPRINTS = """
INSERT INTO webhook_fingerprints (params_hash, kind, first_seen, window_start, deliveries)
SELECT h, k, f, w, 1 FROM unnest(%s::bigint[], %s::text[], %s::timestamptz[], %s::timestamptz[])
    AS t(h, k, f, w)
ON CONFLICT (params_hash, kind) DO NOTHING
"""


@dataclass
class Imported:
    """What an import found in the file and what it added to PostgreSQL (the rest was there)."""

    webhooks_read: int = 0
    webhooks_added: int = 0
    rejected_read: int = 0
    rejected_added: int = 0
    repeat_buckets_added: int = 0
    fingerprints_added: int = 0

    def describe(self) -> str:
        return "\n".join(
            (
                f"webhooks and call records  {self.webhooks_added:>12,} added"
                f"  ({self.webhooks_read - self.webhooks_added:,} already in PostgreSQL)",
                f"refused requests           {self.rejected_added:>12,} added"
                f"  ({self.rejected_read - self.rejected_added:,} already in PostgreSQL)",
                f"repeat counts (5 minutes)  {self.repeat_buckets_added:>12,} added",
                f"fingerprints (last week)   {self.fingerprints_added:>12,} added",
            )
        )


def counts(cur: duckdb.DuckDBPyConnection) -> tuple[int, int]:
    """The file's webhooks and refused requests: what an import reads."""
    row = cur.execute(
        "SELECT (SELECT count(*) FROM webhook_events), (SELECT count(*) FROM rejected_webhooks)"
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def import_file(
    cur: duckdb.DuckDBPyConnection,
    con: Connection,
    zone: ZoneInfo,
    *,
    advance: Callable[[int], None] = lambda _: None,
    batch: int = BATCH,
) -> Imported:
    """Copy the file behind `cur` into the store behind `con` (not in a transaction: each batch
    commits). `advance` is told of every batch of webhooks and refused requests read."""
    done = Imported()
    for rows in _batches(cur, _WEBHOOKS, batch):
        # Rows already there (a run going on after an interruption) skipped before their typed
        # copies are computed, most of an import's time.
        there = _stored(con, [row[0] for row in rows])
        records = [
            EventRecord(
                event_id=event_id,
                received_at=received_at,
                kind=kind,
                http_method=method,
                params_json=params,
                signature=signature,
                params_hash=params_hash,
                params=json.loads(params),
                duplicate=duplicate,
            )
            for event_id, received_at, kind, method, params, signature, duplicate, params_hash in (
                rows
            )
            if event_id not in there
        ]
        with con.transaction():
            done.webhooks_added += inbox.insert_events(con, records, zone, IMPORTED_BY)
        done.webhooks_read += len(rows)
        advance(len(rows))
    for rows in _batches(cur, _REJECTED, batch):
        refused = [RejectedRecord(*row) for row in rows]
        with con.transaction():
            done.rejected_added += inbox.insert_rejected(con, refused, IMPORTED_BY)
        done.rejected_read += len(rows)
        advance(len(rows))
    with con.transaction():
        done.repeat_buckets_added = _repeats(cur, con)
        done.fingerprints_added = _fingerprints(cur, con, datetime.now(UTC))
    return done


def _stored(con: Connection, event_ids: list[str]) -> set[str]:
    found = con.execute(
        "SELECT event_id::text FROM webhook_inbox WHERE event_id = ANY(%s::uuid[])", (event_ids,)
    ).fetchall()
    return {str(row[0]) for row in found}


def _batches(cur: duckdb.DuckDBPyConnection, sql: str, size: int) -> Iterator[list[tuple]]:  # type: ignore[type-arg]
    result = cur.execute(sql)
    while rows := result.fetchmany(size):
        yield rows


def _repeats(cur: duckdb.DuckDBPyConnection, con: Connection) -> int:
    rows = cur.execute("SELECT bucket, kind, repeats FROM webhook_repeats").fetchall()
    if not rows:
        return 0
    buckets, kinds, repeats = (list(column) for column in zip(*rows, strict=True))
    return con.execute(_REPEATS, (buckets, kinds, repeats)).rowcount


def _fingerprints(cur: duckdb.DuckDBPyConnection, con: Connection, now: datetime) -> int:
    rows = cur.execute(
        "SELECT params_hash, kind, min(received_at), max(received_at) FROM webhook_events"
        " WHERE NOT duplicate AND received_at >= $since GROUP BY ALL",
        {"since": now - timedelta(seconds=FINGERPRINT_KEEP_S)},
    ).fetchall()
    if not rows:
        return 0
    hashes, kinds, first, last = (list(column) for column in zip(*rows, strict=True))
    return con.execute(_FINGERPRINTS, (hashes, kinds, first, last)).rowcount
