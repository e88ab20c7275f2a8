"""Calls: find a call, its summary, its B legs, and the timeline of its webhooks."""

from __future__ import annotations

from typing import Any

import pandas as pd

from callstatus.core.numbers import NumberMasker, normalise
from callstatus.dashboard.queries.base import Result, run
from callstatus.dashboard.queries.relations import Relations


def search_calls(
    rel: Relations, text: str, tz: str, limit: int = 200, masker: NumberMasker | None = None
) -> Result:
    """Calls (over all time) whose UUID starts with, or whose numbers contain, the text (a phone
    number in any common form as its digits). In masked mode (`masker`) a clear number is looked
    up as its pseudonym, which the numbers (a SIP URI's user too) contain."""
    if not text.strip():
        # The newest calls: a plain top-N, which DuckDB answers from the newest row groups.
        sql = f"""
        SELECT timezone($tz, started_at) AS started, call_uuid, direction, from_number,
               to_number, outcome, duration_s, hangup_cause_name
        FROM {rel.calls} ORDER BY started_at DESC LIMIT $limit
        """
        return run(sql, {"tz": tz, "limit": limit})
    text = text.strip()
    if masker is None:
        # A number typed in any common form ("+1 415 555 0107") as its digits, which the stored
        # forms ("14155550107", "+14155550107", a SIP URI's user) contain.
        e164 = normalise(text)
        forms = list(dict.fromkeys([text, *([e164[1:]] if e164 else [])]))
    else:
        forms = list(dict.fromkeys([text, *masker.lookup_forms(text)]))
    params: dict[str, Any] = {"text": text, "tz": tz, "limit": limit}
    params.update({f"n{i}": form for i, form in enumerate(forms)})

    def any_contains(column: str) -> str:
        return " OR ".join(f"contains({column}, $n{i})" for i in range(len(forms)))

    sql = f"""
    SELECT timezone($tz, started_at) AS started, call_uuid, direction, from_number, to_number,
           outcome, duration_s, hangup_cause_name
    FROM {rel.calls}
    WHERE $text = '' OR starts_with(call_uuid, $text) OR {any_contains("from_number")}
       OR {any_contains("to_number")}
       OR call_uuid IN (SELECT a_leg_uuid FROM {rel.dial_legs}
                        WHERE starts_with(b_leg_uuid, $text) OR {any_contains("b_leg_to")})
    ORDER BY started_at DESC LIMIT $limit
    """
    return run(sql, params)


def call_summary(rel: Relations, call_uuid: str, tz: str) -> Result:
    sql = f"""
    SELECT call_uuid, direction, from_number, to_number, timezone($tz, started_at) AS started,
           timezone($tz, answered_at) AS answered_at, timezone($tz, ended_at) AS ended,
           duration_s, bill_duration_s, call_status, answered, outcome, hangup_cause_code,
           hangup_cause_name, hangup_cause, hangup_source
    FROM {rel.calls} WHERE call_uuid = $uuid
    """
    return run(sql, {"uuid": call_uuid, "tz": tz})


def call_b_legs(rel: Relations, call_uuid: str, tz: str) -> Result:
    sql = f"""
    SELECT position, b_leg_to, b_leg_from, b_leg_uuid, outcome, answered,
           timezone($tz, answered_at) AS answered_at, timezone($tz, ended_at) AS ended,
           duration_s, hangup_cause_code, hangup_cause_name, hangup_cause, hangup_source
    FROM {rel.dial_legs} WHERE a_leg_uuid = $uuid ORDER BY position, b_leg_uuid
    """
    return run(sql, {"uuid": call_uuid, "tz": tz})


TIMELINE_ENTRIES = 200


def call_timeline(rel: Relations, call_uuid: str, tz: str, limit: int = TIMELINE_ENTRIES) -> Result:
    """The webhooks about this call (its own, its Dial's, its B legs'), raw parameters too, one
    entry per distinct delivery: repeats of a webhook (same kind and parameters, the
    `duplicate` rule) collapse into their first one, with `deliveries`, `last_received` and
    `duplicate` (some delivery was a repeat). At most `limit` entries, oldest first;
    `entries` is how many there are in all, `webhooks` how many webhooks they stand for.

    On the rollups, the call's time span (its start and end, its B legs' answers and hangups)
    bounds the scan of webhook_events to one day either side, so zone maps skip nearly all of
    it (the rollups' one-day assumption, docs/data.md). A call not in the rollups yet, or the
    views, get the full scan.
    """
    params: dict[str, Any] = {"uuid": call_uuid, "tz": tz, "limit": limit}
    bound = ""
    if rel.stored:
        span = run(
            f"""
            SELECT min(lo) AS lo, max(hi) AS hi FROM (
                SELECT started_at AS lo, coalesce(ended_at, answered_at, started_at) AS hi
                FROM {rel.calls} WHERE call_uuid = $uuid
                UNION ALL
                SELECT coalesce(answered_at, ended_at), coalesce(ended_at, answered_at)
                FROM {rel.dial_legs} WHERE a_leg_uuid = $uuid)
            """,
            params,
        ).frame.iloc[0]
        if not (pd.isna(span["lo"]) or pd.isna(span["hi"])):
            params.update(lo=span["lo"].to_pydatetime(), hi=span["hi"].to_pydatetime())
            bound = """received_at >= $lo - INTERVAL 1 DAY AND received_at <= $hi + INTERVAL 1 DAY
          AND """
    sql = f"""
    WITH hooks AS (
        SELECT * FROM webhook_events
        WHERE {bound}(call_uuid = $uuid OR dial_a_leg_uuid = $uuid
           OR dial_b_leg_uuid IN (SELECT b_leg_uuid FROM {rel.dial_legs} WHERE a_leg_uuid = $uuid))
    ),
    entries AS (
        SELECT min(received_at) AS first_at, max(received_at) AS last_at,
               count(*) AS deliveries, bool_or(duplicate) AS duplicate, kind,
               CAST(params AS VARCHAR) AS params,
               arg_min(event, (received_at, event_id)) AS event,
               arg_min(dial_action, (received_at, event_id)) AS dial_action,
               arg_min(call_status, (received_at, event_id)) AS call_status,
               arg_min(dial_status, (received_at, event_id)) AS dial_status,
               arg_min(dial_b_leg_uuid, (received_at, event_id)) AS dial_b_leg_uuid,
               arg_min(signature, (received_at, event_id)) AS signature,
               arg_min(http_method, (received_at, event_id)) AS http_method,
               arg_min(event_id, (received_at, event_id)) AS first_id
        FROM hooks GROUP BY kind, CAST(params AS VARCHAR)
    )
    SELECT timezone($tz, first_at) AS received, kind, event, dial_action, call_status,
           dial_status, dial_b_leg_uuid, duplicate, deliveries,
           timezone($tz, last_at) AS last_received, signature, http_method, params,
           CAST(first_id AS VARCHAR) AS event_id,
           count(*) OVER () AS entries, CAST(sum(deliveries) OVER () AS BIGINT) AS webhooks
    FROM entries
    ORDER BY first_at, event_id
    LIMIT $limit
    """
    return run(sql, params)
