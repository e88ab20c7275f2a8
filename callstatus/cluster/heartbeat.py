"""Each receiver's heartbeat in the shared store's `receivers` table, for Receiver health."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from datetime import datetime

import psycopg

# How often a receiver upserts its row: Receiver health calls one silent for a few of these
# gone.
HEARTBEAT_S = 2.0

_BEAT = """
INSERT INTO receivers (receiver, started_at, seen_at, last_webhook_at, spool_depth, stored)
VALUES (%s, %s, now(), %s, %s, %s)
ON CONFLICT (receiver) DO UPDATE SET
    started_at = EXCLUDED.started_at,
    seen_at = EXCLUDED.seen_at,
    last_webhook_at = EXCLUDED.last_webhook_at,
    spool_depth = EXCLUDED.spool_depth,
    stored = EXCLUDED.stored
"""


@dataclass(frozen=True)
class Heartbeat:
    """What a receiver says of itself: `stored` counts the webhooks it stored since it
    started."""

    receiver: str
    started_at: datetime
    last_webhook_at: datetime | None
    spool_depth: int
    stored: int


def beat(con: psycopg.Connection[tuple[object, ...]], heartbeat: Heartbeat) -> None:
    """Upsert the receiver's row, in the caller's transaction."""
    con.execute(
        _BEAT,
        (
            heartbeat.receiver,
            heartbeat.started_at,
            heartbeat.last_webhook_at,
            heartbeat.spool_depth,
            heartbeat.stored,
        ),
    )


def receiver_name(host: str, port: int) -> str:
    """host:port as other machines know this receiver: the machine's name when it listens on
    every address (0.0.0.0 would name every receiver the same)."""
    if host in ("0.0.0.0", "::", ""):
        host = socket.gethostname()
    return f"{host}:{port}"
