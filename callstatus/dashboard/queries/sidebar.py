"""The first-run check and the sidebar's choices: stored webhooks, data span, numbers."""

from __future__ import annotations

from datetime import datetime

import pandas as pd

from callstatus.core.storage import events_count_and_last
from callstatus.dashboard import connection
from callstatus.dashboard.queries.base import run
from callstatus.dashboard.queries.relations import Relations


def event_count() -> int:
    """Webhooks stored so far (0 on a fresh install, or when there is no database yet)."""
    try:
        frame = run(f"SELECT n FROM ({events_count_and_last()})").frame
    except connection.NoDatabase:
        return 0
    return int(frame["n"].iloc[0])


def data_span(rel: Relations) -> tuple[datetime, datetime] | None:
    """When the first and the last stored call started."""
    frame = run(f"SELECT min(started_at) AS first, max(started_at) AS last FROM {rel.calls}").frame
    first, last = frame["first"].iloc[0], frame["last"].iloc[0]
    if pd.isna(first):
        return None
    return first.to_pydatetime(), last.to_pydatetime()


def our_numbers(rel: Relations) -> list[str]:
    """Our numbers, most called first."""
    if rel.aggregates:
        frame = run(
            """
        SELECT our_number AS number, sum(calls) AS calls FROM calls_hourly
        WHERE our_number IS NOT NULL GROUP BY number ORDER BY calls DESC LIMIT 200
        """
        ).frame
        return [str(n) for n in frame["number"]]
    frame = run(
        f"""
        SELECT CASE WHEN direction = 'outbound' THEN from_number ELSE to_number END AS number,
               count(*) AS calls
        FROM {rel.calls} WHERE number IS NOT NULL GROUP BY number ORDER BY calls DESC LIMIT 200
        """
    ).frame
    return [str(n) for n in frame["number"]]


def destinations_list(rel: Relations) -> list[str]:
    """The B numbers dialled, most dialled first."""
    if rel.aggregates:
        frame = run(
            """
        SELECT b_leg_to, sum(legs) AS legs FROM legs_hourly WHERE b_leg_to IS NOT NULL
        GROUP BY b_leg_to ORDER BY legs DESC LIMIT 200
        """
        ).frame
        return [str(n) for n in frame["b_leg_to"]]
    frame = run(
        f"""
        SELECT b_leg_to, count(*) AS legs FROM {rel.dial_legs} WHERE b_leg_to IS NOT NULL
        GROUP BY b_leg_to ORDER BY legs DESC LIMIT 200
        """
    ).frame
    return [str(n) for n in frame["b_leg_to"]]
