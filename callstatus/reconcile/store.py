"""Plivo's call records as webhook_events rows: kind `cdr`, signature `api`, stored once each."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

import duckdb

from callstatus.core.numbers import NumberMasker
from callstatus.core.records import EventRecord, Params, make_record
from callstatus.core.storage import insert_events
from callstatus.core.typed import CDR_KIND

SIGNATURE = "api"
METHOD = "GET"


def as_event(
    record: Mapping[str, Any], fetched_at: datetime, masker: NumberMasker | None = None
) -> EventRecord:
    """One record as a row: its fields verbatim (numbers and nulls stay JSON numbers and nulls),
    typed by `callstatus.core.typed.cdr_typed_values` when stored; in masked mode its numbers
    (from_number, to_number, …) masked as the webhooks' are."""
    params = cast(Params, dict(record))
    if masker is not None:
        params = masker.mask_params(CDR_KIND, params)
    return make_record(CDR_KIND, METHOD, params, SIGNATURE, fetched_at)


def stored_uuids(cur: duckdb.DuckDBPyConnection, since: datetime) -> set[str]:
    """call_uuids of the records already stored for calls that ended since `since`."""
    rows = cur.execute(
        "SELECT DISTINCT call_uuid FROM webhook_events"
        " WHERE kind = $kind AND call_uuid IS NOT NULL AND end_time >= $since",
        {"kind": CDR_KIND, "since": since},
    ).fetchall()
    return {row[0] for row in rows}


def select_new(records: Iterable[Mapping[str, Any]], known: set[str]) -> list[Mapping[str, Any]]:
    """The records whose call_uuid is not in `known` (which they then join). A record without a
    call_uuid is left out: nothing could ever match it."""
    new: list[Mapping[str, Any]] = []
    for record in records:
        uuid = record.get("call_uuid")
        if not isinstance(uuid, str) or not uuid.strip() or uuid in known:
            continue
        known.add(uuid)
        new.append(record)
    return new


# Stores call records elsewhere and makes them visible to the run's cursor before returning
# (clustered mode: into PostgreSQL, then copied into the replica; see
# callstatus.cluster.replica_records).
StoreEvents = Callable[[Sequence[EventRecord]], None]


def insert(
    cur: duckdb.DuckDBPyConnection,
    records: Sequence[Mapping[str, Any]],
    plivo_timezone: str,
    fetched_at: datetime,
    masker: NumberMasker | None = None,
    store: StoreEvents | None = None,
) -> None:
    """Store records (one commit: a commit costs milliseconds, so callers batch pages)."""
    if records:
        events = [as_event(r, fetched_at, masker) for r in records]
        if store is not None:
            store(events)
        else:
            insert_events(cur, events, plivo_timezone)


@dataclass
class Effect:
    """What newly stored records changed: calls and B legs by how much the webhooks knew."""

    calls_had: int = 0  # the call's webhooks were all there (hangup included)
    calls_completed: int = 0  # webhooks, but not the hangup: the record ended the call
    calls_added: int = 0  # no webhook at all
    legs_added: int = 0  # B legs with no Dial callback at all


def effect(cur: duckdb.DuckDBPyConnection, new: Sequence[Mapping[str, Any]]) -> Effect:
    """Classify newly stored records through the views (the legs' webhooks arrived at most a
    day before the oldest record's call started)."""
    a_legs = [str(r["call_uuid"]) for r in new if not r.get("parent_call_uuid")]
    b_legs = [str(r["call_uuid"]) for r in new if r.get("parent_call_uuid")]
    result = Effect()
    if not new:
        return result
    (row,) = cur.execute(
        "SELECT min(least(received_at, start_time)) FROM webhook_events"
        " WHERE kind = $kind AND call_uuid IN (SELECT unnest($ids::VARCHAR[]))",
        {"kind": CDR_KIND, "ids": a_legs + b_legs},
    ).fetchall()
    if row[0] is None:
        return result
    since = row[0] - timedelta(days=1)
    if a_legs:
        counts = cur.execute(
            "SELECT count(*) FILTER (WHERE source = 'both' AND end_source = 'webhooks'),"
            " count(*) FILTER (WHERE source = 'both' AND end_source = 'cdr'),"
            " count(*) FILTER (WHERE source = 'cdr')"
            " FROM calls_since($since) WHERE call_uuid IN (SELECT unnest($ids::VARCHAR[]))",
            {"since": since, "ids": a_legs},
        ).fetchall()[0]
        result.calls_had, result.calls_completed, result.calls_added = map(int, counts)
    if b_legs:
        (legs,) = cur.execute(
            "SELECT count(*) FROM dial_legs_since($since)"
            " WHERE source = 'cdr' AND b_leg_uuid IN (SELECT unnest($ids::VARCHAR[]))",
            {"since": since, "ids": b_legs},
        ).fetchall()
        result.legs_added = int(legs[0])
    return result
