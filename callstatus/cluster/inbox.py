"""What a receiver writes into the shared PostgreSQL store, one statement per batch: the
fingerprints that decide `duplicate` and repeats, the webhooks, the repeats counted; refusals."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

import psycopg

from callstatus.core.duplicates import MAX_STORED_DELIVERIES, REPEAT_WINDOW_S
from callstatus.core.records import EventRecord, assign_ids
from callstatus.core.typed import typed_json
from callstatus.receiver.rejected import RejectedRecord

Connection = psycopg.Connection[tuple[object, ...]]

# A batch is one statement, run in autocommit: its own transaction, durable when the result comes
# back (synchronous_commit), so a batch costs one round trip and little Python (measured:
# docs/benchmarks.md, "Clustered mode: ingest"). Its rows arrive as one text (_FROM_TEXT) or,
# when a short field holds a separator, as arrays (_FROM_ARRAYS), numbered in arrival order.
#
# One upsert decides every copy: a fingerprint seen for the first time is inserted (xmax = 0 on
# the returned row), a known one counts its deliveries. A concurrent batch of another receiver
# holding the same fingerprint waits on the row until this one commits, so `duplicate` comes out
# the same whichever receivers took the copies. The window of repeats opens at the first repeat,
# as core.duplicates.DuplicateTracker's does: a fingerprint with one delivery, or whose window is
# over, opens a new one holding its first delivery and this. Rows are taken in key order, so two
# batches lock shared fingerprints in the same order and cannot deadlock on them. A copy is then
# the first (duplicate = false) when its fingerprint was new and it came first in the batch, and
# is stored while its delivery's number in the window is within %(max_stored)s; later ones are
# only counted in webhook_repeats, per 5-minute bucket. With %(replay)s, event_ids already stored
# (a spooled batch whose first commit succeeded though its reply was lost) are left out before
# their fingerprints are counted again.
_FROM_ARRAYS = """
    SELECT * FROM unnest(%(ids)b::uuid[], %(times)b::timestamptz[], %(kinds)b::text[],
        %(methods)b::text[], %(params)b::text[], %(signatures)b::text[], %(hashes)b::bigint[],
        %(typed)b::text[]) WITH ORDINALITY
        AS b(event_id, received_at, kind, http_method, params, signature, params_hash, typed, ord)
"""
_FROM_TEXT = """
    SELECT f[1]::uuid AS event_id, f[2]::timestamptz AS received_at, f[3] AS kind,
        f[4] AS http_method, f[5] AS params, f[6] AS signature, f[7]::bigint AS params_hash,
        f[8] AS typed, ord
    FROM unnest(string_to_array(%(rows)b::text, E'\\x1e')) WITH ORDINALITY AS r(line, ord),
        LATERAL string_to_array(line, E'\\x1f') AS f
"""
_STORE = """
WITH given AS ({source}),
batch AS (
    SELECT * FROM given b WHERE NOT %(replay)b::boolean
        OR NOT EXISTS (SELECT 1 FROM webhook_inbox w WHERE w.event_id = b.event_id)
),
numbered AS (
    SELECT b.*, row_number() OVER w AS copy, count(*) OVER w AS copies,
        first_value(received_at) OVER w AS first_at
    FROM batch b
    WINDOW w AS (PARTITION BY params_hash, kind ORDER BY ord
        ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)
),
counted AS (
    INSERT INTO webhook_fingerprints AS f (params_hash, kind, first_seen, window_start, deliveries)
    SELECT params_hash, kind, first_at, first_at, copies FROM numbered WHERE copy = 1
    ORDER BY params_hash, kind
    ON CONFLICT (params_hash, kind) DO UPDATE SET
        window_start = CASE
            WHEN f.deliveries <= 1 OR EXCLUDED.first_seen - f.window_start >= %(window)s::interval
            THEN EXCLUDED.first_seen ELSE f.window_start END,
        deliveries = CASE
            WHEN f.deliveries <= 1 OR EXCLUDED.first_seen - f.window_start >= %(window)s::interval
            THEN 1 + EXCLUDED.deliveries ELSE f.deliveries + EXCLUDED.deliveries END
    RETURNING params_hash, kind, deliveries, xmax = 0 AS new
),
decided AS (
    SELECT n.*, NOT (c.new AND n.copy = 1) AS duplicate,
        c.deliveries - n.copies + n.copy <= %(max_stored)b::int AS within_limit
    FROM numbered n JOIN counted c USING (params_hash, kind)
),
stored AS (
    INSERT INTO webhook_inbox (event_id, received_at, kind, http_method, params, signature,
        duplicate, params_hash, typed, receiver)
    SELECT event_id, received_at, kind, http_method, params, signature, duplicate, params_hash,
        typed, %(receiver)b::text
    FROM decided WHERE NOT duplicate OR within_limit ORDER BY ord
    ON CONFLICT (event_id) DO NOTHING
    RETURNING kind
),
repeats AS (
    INSERT INTO webhook_repeats AS r (bucket, kind, repeats)
    SELECT to_timestamp(floor(extract(epoch FROM received_at) / 300) * 300), kind, count(*)
    FROM decided WHERE duplicate AND NOT within_limit GROUP BY 1, 2 ORDER BY 1, 2
    ON CONFLICT (bucket, kind) DO UPDATE SET repeats = r.repeats + EXCLUDED.repeats
)
SELECT true, kind, count(*) FROM stored GROUP BY kind
UNION ALL
SELECT false, kind, count(*) FROM decided WHERE duplicate AND NOT within_limit GROUP BY kind
"""

_STORE_TEXT = _STORE.replace("{source}", _FROM_TEXT)
_STORE_ARRAYS = _STORE.replace("{source}", _FROM_ARRAYS)
_US, _RS = "\x1f", "\x1e"

_INSERT = """
INSERT INTO webhook_inbox (event_id, received_at, kind, http_method, params, signature,
    duplicate, params_hash, typed, receiver)
SELECT * FROM unnest(%b::uuid[], %b::timestamptz[], %b::text[], %b::text[], %b::text[],
    %b::text[], %b::boolean[], %b::bigint[], %b::text[], %b::text[])
ON CONFLICT (event_id) DO NOTHING
"""

_PRUNE = """
DELETE FROM webhook_fingerprints WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM webhook_fingerprints WHERE window_start < now() - %s::interval LIMIT %s))
"""

_REJECTED = """
INSERT INTO rejected_webhooks (rejected_id, received_at, reason, path, http_method, checked_url,
    headers, params, truncated, receiver)
SELECT * FROM unnest(%s::uuid[], %s::timestamptz[], %s::text[], %s::text[], %s::text[],
    %s::text[], %s::text[], %s::text[], %s::boolean[], %s::text[])
ON CONFLICT (rejected_id) DO NOTHING
"""


@dataclass
class Stored:
    """What one batch's statement did, per kind: webhooks stored, repeats only counted."""

    stored: Counter[str] = field(default_factory=Counter)
    repeats: Counter[str] = field(default_factory=Counter)


def store(
    con: Connection,
    records: Sequence[EventRecord],
    zone: ZoneInfo,
    receiver: str,
    *,
    max_stored: int = MAX_STORED_DELIVERIES,
    window_s: float = REPEAT_WINDOW_S,
    replay: bool = False,
) -> Stored:
    """Count the batch's fingerprints, store its webhooks (`duplicate` decided across
    receivers) and count its repeats past `max_stored` deliveries, in one statement: on a
    connection in autocommit, one transaction, durable when this returns. With `replay`,
    event_ids already stored are skipped."""
    result = Stored()
    if not records:
        return result
    typed = [typed_json(r.params, zone, r.kind) for r in records]
    assign_ids(records)
    settings = {
        "replay": replay,
        "window": f"{window_s} seconds",
        "max_stored": max_stored,
        "receiver": receiver,
    }
    # One text for the whole batch, fields and rows cut by ASCII's unit and record separators:
    # JSON text escapes every control character, so they can only appear in the short fields,
    # and then the count of separators tells (the batch then travels as arrays instead).
    rows_text = _RS.join(
        _US.join(
            (
                r.ensure_id(),
                r.received_at.isoformat(),
                r.kind,
                r.http_method,
                r.params_json,
                r.signature,
                str(r.params_hash),
                t,
            )
        )
        for r, t in zip(records, typed, strict=True)
    )
    n = len(records)
    if rows_text.count(_US) == 7 * n and rows_text.count(_RS) == n - 1:
        rows = con.execute(_STORE_TEXT, {"rows": rows_text, **settings}).fetchall()
    else:
        arrays = {
            "ids": [r.ensure_id() for r in records],
            "times": [r.received_at for r in records],
            "kinds": [r.kind for r in records],
            "methods": [r.http_method for r in records],
            "params": [r.params_json for r in records],
            "signatures": [r.signature for r in records],
            "hashes": [r.params_hash for r in records],
            "typed": typed,
        }
        rows = con.execute(_STORE_ARRAYS, {**arrays, **settings}).fetchall()
    for was_stored, kind, count in rows:
        (result.stored if was_stored else result.repeats)[str(kind)] += int(str(count))
    return result


def insert_events(
    con: Connection, records: Sequence[EventRecord], zone: ZoneInfo, receiver: str
) -> int:
    """One INSERT for the batch, typed copies computed here; an event_id already stored is
    skipped. Returns the rows inserted."""
    if not records:
        return 0
    return con.execute(
        _INSERT,
        (
            [r.ensure_id() for r in records],
            [r.received_at for r in records],
            [r.kind for r in records],
            [r.http_method for r in records],
            [r.params_json for r in records],
            [r.signature for r in records],
            [r.duplicate for r in records],
            [r.params_hash for r in records],
            [typed_json(r.params, zone, r.kind) for r in records],
            [receiver] * len(records),
        ),
    ).rowcount


def insert_rejected(con: Connection, records: Sequence[RejectedRecord], receiver: str) -> int:
    """One INSERT for the batch; a rejected_id already stored is skipped. Returns the rows
    inserted."""
    if not records:
        return 0
    return con.execute(
        _REJECTED,
        (
            [r.rejected_id for r in records],
            [r.received_at for r in records],
            [r.reason for r in records],
            [r.path for r in records],
            [r.http_method for r in records],
            [r.checked_url for r in records],
            [r.headers_json for r in records],
            [r.params_json for r in records],
            [r.truncated for r in records],
            [receiver] * len(records),
        ),
    ).rowcount


def prune_fingerprints(con: Connection, keep_s: float, limit: int) -> int:
    """Delete up to `limit` fingerprints whose window started more than `keep_s` ago (a later
    copy of one is then taken as a first copy); return how many went."""
    cursor = con.execute(_PRUNE, (f"{keep_s} seconds", limit))
    return max(cursor.rowcount, 0)
