"""The outbox: every message for every channel kept in alert_deliveries until a channel takes it.

A message is enqueued once per channel (in the caller's transaction, beside the state change
that caused it) and delivered by `deliver_due`: a failed attempt is tried again after 1 minute,
then 2, 4 … up to an hour between attempts, and given up (status 'failed') once the next
attempt would come more than a day after the message was made. Nothing here raises into the
alert job: a failure is logged and kept in the row, where the Alerts page shows it.

Rows that change are deleted and inserted again, never updated (callstatus/core/rollups.py
says why: updates hold DuckDB's checkpoints back while any reader is open).
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import duckdb

from callstatus.alerts import channels, messages
from callstatus.alerts.model import AlertsConfig, Message
from callstatus.core.settings import Settings

log = logging.getLogger("callstatus.alerts")

FIRST_RETRY = timedelta(minutes=1)
MAX_RETRY = timedelta(hours=1)
GIVE_UP_AFTER = timedelta(days=1)
# Delivered and given-up rows are kept this long for the Alerts page, then deleted.
KEEP = timedelta(days=30)

COLUMNS = (
    "id, created_at, channel, kind, title, message, images, status, attempts, last_error, "
    "next_attempt_at, sent_at"
)
_INSERT = f"INSERT INTO alert_deliveries ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
# One delivery pass at a time in this process: the alert job and the page's test button would
# otherwise both send the same due row.
_PASS = threading.Lock()
_ID_LOCK = threading.Lock()
_last_ms = 0
_counter = 0


@dataclass(frozen=True)
class Delivery:
    """One row of alert_deliveries."""

    id: str
    created_at: datetime
    channel: str
    message: Message
    status: str
    attempts: int
    last_error: str | None
    next_attempt_at: datetime | None
    sent_at: datetime | None


def enqueue(
    cur: duckdb.DuckDBPyConnection,
    channel_names: Iterable[str],
    message: Message,
    now: datetime | None = None,
) -> list[str]:
    """Queue `message` for each channel, due at once; returns the rows' ids. It runs in the
    caller's transaction, if one is open: the message is queued exactly when the change that
    caused it commits."""
    created = _utc(now)
    ids = []
    for name in dict.fromkeys(channel_names):
        row_id = str(new_id())
        cur.execute(
            _INSERT,
            [
                row_id,
                created,
                name,
                message.kind,
                message.title,
                to_json(message),
                [png for _, png in message.images] or None,
                "pending",
                0,
                None,
                created,
                None,
            ],
        )
        ids.append(row_id)
    return ids


def new_id() -> uuid.UUID:
    """A UUIDv7 (RFC 9562): milliseconds since the epoch, then a counter and random bits, so
    ids sort in the order they were made, in this process and across restarts."""
    global _last_ms, _counter
    with _ID_LOCK:
        ms = time.time_ns() // 1_000_000
        if ms <= _last_ms:  # the same millisecond (or a clock step back): count on
            _counter += 1
            if _counter > 0xFFF:
                _last_ms, _counter = _last_ms + 1, 0
        else:
            _last_ms, _counter = ms, 0
        ms = _last_ms
        counter = _counter
    value = (ms << 80) | (0x7 << 76) | (counter << 64) | (0b10 << 62) | secrets.randbits(62)
    return uuid.UUID(int=value)


def deliver_due(
    cur: duckdb.DuckDBPyConnection,
    config: AlertsConfig,
    settings: Settings,
    now: datetime | None = None,
) -> int:
    """Send every pending row that is due, oldest first; return how many were sent. Once a
    channel fails in a pass its other rows wait for the next pass, so a dead server costs one
    timeout per pass, not one per message. Never raises; call it outside a transaction."""
    moment = _utc(now)
    with _PASS:
        try:
            due = _due(cur, moment)
        except Exception:
            log.exception("alert deliveries could not be read")
            return 0
        sent = 0
        failing: set[str] = set()
        for row in due:
            if row.channel in failing:
                continue
            try:
                outcome = _attempt(cur, config, settings, row, moment)
                if outcome == "sent":
                    sent += 1
                elif outcome == "retry":
                    failing.add(row.channel)
            except Exception:
                log.exception("delivery %s to %s could not be recorded", row.id, row.channel)
                failing.add(row.channel)
        try:
            _prune(cur, moment)
        except Exception:
            log.exception("old alert deliveries could not be deleted")
        return sent


def send_test(
    cur: duckdb.DuckDBPyConnection,
    config: AlertsConfig,
    settings: Settings,
    channel_name: str,
    now: datetime | None = None,
) -> str:
    """Queue a test message for one channel and try it at once; one line saying what
    happened (a failed test stays queued and is retried like any message)."""
    channel = config.channels.get(channel_name)
    if channel is None:
        return f"no channel named {channel_name!r} in {config.path}"
    moment = _utc(now)
    (row_id,) = enqueue(cur, [channel_name], messages.test(channel, settings), moment)
    with _PASS:
        row = get(cur, row_id)
        if row is not None and row.status == "pending":
            _attempt(cur, config, settings, row, moment)
    row = get(cur, row_id)
    if row is None or row.status == "sent":
        return f"test message sent to {channel_name}"
    return f"test message to {channel_name} failed: {row.last_error} (retried with backoff)"


def get(cur: duckdb.DuckDBPyConnection, row_id: str) -> Delivery | None:
    found = cur.execute(f"SELECT {COLUMNS} FROM alert_deliveries WHERE id = ?", [row_id]).fetchall()
    return _delivery(found[0]) if found else None


def retry_delay(attempts: int) -> timedelta:
    """The wait after the `attempts`-th failed attempt: 1 min, doubling, at most an hour."""
    return min(FIRST_RETRY * (1 << min(max(attempts - 1, 0), 32)), MAX_RETRY)


def to_json(message: Message) -> str:
    """The message without its PNGs (stored apart, in `images`), names kept in order."""
    return json.dumps(
        {
            "kind": message.kind,
            "title": message.title,
            "text": message.text,
            "fields": [list(pair) for pair in message.fields],
            "link": message.link,
            "html": message.html,
            "images": [name for name, _ in message.images],
        },
        ensure_ascii=False,
    )


def from_json(text: str, images: list[bytes] | None) -> Message:
    data: dict[str, Any] = json.loads(text)
    names: list[str] = data.get("images") or []
    pngs = images or []
    return Message(
        kind=data["kind"],
        title=data["title"],
        text=data["text"],
        fields=tuple((str(label), str(value)) for label, value in data.get("fields") or ()),
        link=data.get("link"),
        html=data.get("html"),
        images=tuple(zip(names, pngs, strict=False)),
    )


def _attempt(
    cur: duckdb.DuckDBPyConnection,
    config: AlertsConfig,
    settings: Settings,
    row: Delivery,
    now: datetime,
) -> Literal["sent", "retry", "gone"]:
    """Try one row and record the outcome: sent, to be retried, or no such channel."""
    channel = config.channels.get(row.channel)
    if channel is None:  # the rules file changed since: nowhere to send it
        _record(cur, row, "failed", f"no channel named {row.channel!r} in {config.path}", now)
        return "gone"
    try:
        channels.send(channel, row.message, settings, delivery_id=row.id)
    except Exception as exc:
        error = str(exc) if isinstance(exc, channels.DeliveryError) else repr(exc)
        log.warning(
            "alert delivery to %s failed (attempt %d): %s", row.channel, row.attempts + 1, error
        )
        _record(cur, row, "pending", error, now)
        return "retry"
    _record(cur, row, "sent", None, now)
    return "sent"


def _record(
    cur: duckdb.DuckDBPyConnection, row: Delivery, status: str, error: str | None, now: datetime
) -> None:
    """Replace the row with its state after one more attempt."""
    attempts = row.attempts + 1
    next_at: datetime | None = None
    if status == "pending":
        next_at = now + retry_delay(attempts)
        if next_at > row.created_at + GIVE_UP_AFTER:
            status, next_at = "failed", None
    keep_images = status == "pending" and row.message.images
    message = row.message
    cur.execute("BEGIN")
    try:
        cur.execute("DELETE FROM alert_deliveries WHERE id = ?", [row.id])
        cur.execute(
            _INSERT,
            [
                row.id,
                row.created_at,
                row.channel,
                message.kind,
                message.title,
                to_json(message),
                [png for _, png in message.images] if keep_images else None,
                status,
                attempts,
                error,
                next_at,
                now if status == "sent" else None,
            ],
        )
        cur.execute("COMMIT")
    except Exception:
        cur.execute("ROLLBACK")
        raise


def _due(cur: duckdb.DuckDBPyConnection, now: datetime) -> list[Delivery]:
    rows = cur.execute(
        f"SELECT {COLUMNS} FROM alert_deliveries "
        "WHERE status = 'pending' AND next_attempt_at <= ? ORDER BY created_at, id",
        [now],
    ).fetchall()
    return [_delivery(row) for row in rows]


def _prune(cur: duckdb.DuckDBPyConnection, now: datetime) -> None:
    cur.execute(
        "DELETE FROM alert_deliveries WHERE status <> 'pending' AND created_at < ?", [now - KEEP]
    )


def _delivery(row: tuple[Any, ...]) -> Delivery:
    (row_id, created, channel, _kind, _title, message, images, status, attempts, error, next_at,
     sent_at) = row  # fmt: skip
    return Delivery(
        id=str(row_id),
        created_at=_utc(created),
        channel=channel,
        message=from_json(message, images),
        status=status,
        attempts=int(attempts),
        last_error=error,
        next_attempt_at=_utc(next_at) if next_at is not None else None,
        sent_at=_utc(sent_at) if sent_at is not None else None,
    )


def _utc(moment: datetime | None) -> datetime:
    if moment is None:
        return datetime.now(UTC)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
