"""What a receiver writes into the shared PostgreSQL store, one transaction per batch: the
fingerprints that decide `duplicate` and repeats, the webhooks, the repeats counted, refusals."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

import psycopg

from callstatus.core.duplicates import MAX_STORED_DELIVERIES, REPEAT_WINDOW_S, five_minutes
from callstatus.core.records import EventRecord
from callstatus.core.typed import typed_json
from callstatus.receiver.rejected import RejectedRecord

Connection = psycopg.Connection[tuple[object, ...]]

# One upsert per batch decides every copy: a fingerprint seen for the first time is inserted
# (xmax = 0 on the returned row), a known one counts its deliveries. A concurrent batch of
# another receiver holding the same fingerprint waits on the row until this one commits, so
# `duplicate` comes out the same whichever receivers took the copies. The window of repeats
# opens at the first repeat, as core.duplicates.DuplicateTracker's does: a fingerprint with
# one delivery, or whose window is over, opens a new one holding its first delivery and this.
# Rows are taken in key order, so two batches lock shared fingerprints in the same order and
# cannot deadlock on them.
_ADMIT = """
INSERT INTO webhook_fingerprints AS f (params_hash, kind, first_seen, window_start, deliveries)
SELECT h, k, t, t, n
FROM unnest(%(hashes)b::bigint[], %(kinds)b::text[], %(times)b::timestamptz[], %(counts)b::int[])
    AS u(h, k, t, n)
ORDER BY h, k
ON CONFLICT (params_hash, kind) DO UPDATE SET
    window_start = CASE
        WHEN f.deliveries <= 1 OR EXCLUDED.first_seen - f.window_start >= %(window)s::interval
        THEN EXCLUDED.first_seen ELSE f.window_start END,
    deliveries = CASE
        WHEN f.deliveries <= 1 OR EXCLUDED.first_seen - f.window_start >= %(window)s::interval
        THEN 1 + EXCLUDED.deliveries ELSE f.deliveries + EXCLUDED.deliveries END
RETURNING params_hash, kind, deliveries, xmax = 0
"""

_INSERT = """
INSERT INTO webhook_inbox (event_id, received_at, kind, http_method, params, signature,
    duplicate, params_hash, typed, receiver)
SELECT * FROM unnest(%b::uuid[], %b::timestamptz[], %b::text[], %b::text[], %b::text[],
    %b::text[], %b::boolean[], %b::bigint[], %b::text[], %b::text[])
ON CONFLICT (event_id) DO NOTHING
"""

_REPEATS = """
INSERT INTO webhook_repeats AS r (bucket, kind, repeats)
SELECT * FROM unnest(%b::timestamptz[], %b::text[], %b::bigint[]) ORDER BY 1, 2
ON CONFLICT (bucket, kind) DO UPDATE SET repeats = r.repeats + EXCLUDED.repeats
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
class Admitted:
    """A batch after its fingerprints were counted: the webhooks to store (their `duplicate`
    set) and the repeats past the stored limit, only counted."""

    stored: list[EventRecord] = field(default_factory=list)
    repeats: list[EventRecord] = field(default_factory=list)


def admit(
    con: Connection,
    records: Sequence[EventRecord],
    *,
    max_stored: int = MAX_STORED_DELIVERIES,
    window_s: float = REPEAT_WINDOW_S,
) -> Admitted:
    """Count each record's delivery in webhook_fingerprints (in the caller's transaction) and
    split the batch, in arrival order, as DuplicateTracker.admit does for one process."""
    result = Admitted()
    if not records:
        return result
    copies: dict[tuple[int, str], list[EventRecord]] = {}
    for record in records:
        copies.setdefault((record.params_hash, record.kind), []).append(record)
    keys = list(copies)
    rows = con.execute(
        _ADMIT,
        {
            "hashes": [h for h, _ in keys],
            "kinds": [k for _, k in keys],
            "times": [copies[key][0].received_at for key in keys],
            "counts": [len(copies[key]) for key in keys],
            "window": f"{window_s} seconds",
        },
    ).fetchall()
    # deliveries after this batch, and whether the fingerprint was new
    counted = {(int(h), str(k)): (int(d), bool(new)) for h, k, d, new in rows}  # type: ignore[call-overload]
    deliveries: dict[int, int] = {}  # id(record) -> its delivery's number in the window
    for key, group in copies.items():
        total, new = counted[key]
        first = total - len(group) + 1
        for index, record in enumerate(group):
            record.duplicate = not (new and index == 0)
            deliveries[id(record)] = first + index
    for record in records:
        if not record.duplicate or deliveries[id(record)] <= max_stored:
            result.stored.append(record)
        else:
            result.repeats.append(record)
    return result


def existing_ids(con: Connection, records: Sequence[EventRecord]) -> set[str]:
    """The event_ids of `records` already in webhook_inbox: a spooled batch whose first commit
    succeeded though its reply was lost."""
    if not records:
        return set()
    rows = con.execute(
        "SELECT event_id::text FROM webhook_inbox WHERE event_id = ANY(%s::uuid[])",
        ([r.ensure_id() for r in records],),
    ).fetchall()
    return {str(row[0]) for row in rows}


def insert_events(
    con: Connection, records: Sequence[EventRecord], zone: ZoneInfo, receiver: str
) -> None:
    """One INSERT for the batch, typed copies computed here; an event_id already stored is
    skipped."""
    if not records:
        return
    con.execute(
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
    )


def add_repeats(con: Connection, repeats: Counter[tuple[datetime, str]]) -> None:
    """Add (5-minute bucket, kind) -> repeats to webhook_repeats."""
    if not repeats:
        return
    keys = list(repeats)
    con.execute(
        _REPEATS,
        ([b for b, _ in keys], [k for _, k in keys], [repeats[key] for key in keys]),
    )


def repeat_counts(records: Sequence[EventRecord]) -> Counter[tuple[datetime, str]]:
    return Counter((five_minutes(r.received_at), r.kind) for r in records)


def insert_rejected(con: Connection, records: Sequence[RejectedRecord], receiver: str) -> None:
    if not records:
        return
    con.execute(
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
    )


def prune_fingerprints(con: Connection, keep_s: float, limit: int) -> int:
    """Delete up to `limit` fingerprints whose window started more than `keep_s` ago (a later
    copy of one is then taken as a first copy); return how many went."""
    cursor = con.execute(_PRUNE, (f"{keep_s} seconds", limit))
    return max(cursor.rowcount, 0)
