"""Refused requests, kept in `rejected_webhooks` so a misconfiguration loses nothing.

Everything about them lives here: which headers are kept, the row built with its clipping
(`refusal`), the hourly budget (`RejectionBudget`: at most ROWS_PER_HOUR stored each clock hour,
the rest only counted), the insert, the count since a time, and the pruning. The table is
bounded: at most MAX_ROWS rows and MAX_BYTES of headers and parameters (their JSON text); past
either bound the oldest rows are pruned.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import duckdb
import pyarrow as pa

from callstatus.core.records import Params

log = logging.getLogger("callstatus.rejected")

# Enough to diagnose a misconfiguration (a few hours of refusals at the hourly budget) without
# letting unsigned requests grow the database: 10,000 refused 49 KB bodies an hour used to add
# 379 MB an hour, forever. A row is at most 64 KiB, so the bytes bound holds 1,024 full rows.
MAX_ROWS = 50_000
MAX_BYTES = 64 * 1024 * 1024
# Past a bound, prune down to this share of it: pruning then runs once per tenth of the bound,
# not after every batch.
PRUNE_TO = 0.9
# Rows one DELETE removes at most (more than a writer batch inserts, so pruning keeps up).
PRUNE_STEP_ROWS = 10_000
# Refused requests stored per clock hour; past it they are only counted in /metrics.
ROWS_PER_HOUR = 10_000
# A row's URL, headers and parameters together; past it they are clipped.
MAX_ROW_BYTES = 64 * 1024

# Headers kept with a refused request: enough to tell a proxy or URL mismatch from a forgery.
KEPT_HEADERS = (
    "host",
    "user-agent",
    "content-type",
    "content-length",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-plivo-signature-v3",
    "x-plivo-signature-ma-v3",
    "x-plivo-signature-v3-nonce",
)


@dataclass(slots=True)
class RejectedRecord:
    rejected_id: str
    received_at: datetime
    reason: str
    path: str
    http_method: str
    checked_url: str | None
    headers_json: str
    params_json: str
    truncated: bool


def refusal(
    reason: str,
    method: str,
    path: str,
    url: str,
    headers: Mapping[str, str],
    params: Params,
    received_at: datetime,
) -> RejectedRecord:
    """The row for a refused request (`headers` by lower-case name), clipped to MAX_ROW_BYTES."""
    kept = {name: headers[name] for name in KEPT_HEADERS if name in headers}
    headers_json = json.dumps(kept, ensure_ascii=False)
    params_json = json.dumps(params, ensure_ascii=False)
    truncated = _utf8_len(headers_json) + _utf8_len(params_json) + _utf8_len(url) > MAX_ROW_BYTES
    if truncated:
        # Shares of the 64 KiB row; quoting a JSON text again at most doubles it.
        url = _clip(url, MAX_ROW_BYTES // 8)
        headers_json = _clip_json(headers_json, MAX_ROW_BYTES // 8)
        params_json = _clip_json(params_json, MAX_ROW_BYTES // 4)
    return RejectedRecord(
        rejected_id=str(uuid.uuid4()),
        received_at=received_at,
        reason=reason,
        path=path,
        http_method=method,
        checked_url=url,
        headers_json=headers_json,
        params_json=params_json,
        truncated=truncated,
    )


def _utf8_len(text: str) -> int:
    return len(text.encode("utf-8"))


def _clip(text: str, limit: int) -> str:
    """At most `limit` UTF-8 bytes of `text`, cut on a character boundary."""
    data = text.encode("utf-8")
    return text if len(data) <= limit else data[:limit].decode("utf-8", "ignore")


def _clip_json(text: str, limit: int) -> str:
    if _utf8_len(text) <= limit:
        return text
    return json.dumps({"_truncated": _clip(text, limit)}, ensure_ascii=False)


@dataclass
class RejectionBudget:
    """At most `limit` refused requests are stored each clock hour; a restart goes on from the
    rows this hour already holds (`resume`)."""

    limit: int = ROWS_PER_HOUR
    _hour: int = -1
    _used: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @staticmethod
    def hour_now() -> int:
        return int(time.time() // 3600)

    def resume(self, cur: duckdb.DuckDBPyConnection) -> None:
        """Count the rows already stored this clock hour (by an earlier run of the server)."""
        hour = self.hour_now()
        used = count_since(cur, datetime.fromtimestamp(hour * 3600, UTC))
        with self._lock:
            self._hour, self._used = hour, used

    def take(self) -> bool:
        hour = self.hour_now()
        with self._lock:
            if hour != self._hour:
                self._hour, self._used = hour, 0
            if self._used >= self.limit:
                return False
            self._used += 1
            return True


_SCHEMA = pa.schema(
    [
        ("rejected_id", pa.string()),
        ("received_at", pa.timestamp("us", tz="UTC")),
        ("reason", pa.string()),
        ("path", pa.string()),
        ("http_method", pa.string()),
        ("checked_url", pa.string()),
        ("headers", pa.string()),
        ("params", pa.string()),
        ("truncated", pa.bool_()),
    ]
)


def insert_rejected(cur: duckdb.DuckDBPyConnection, records: Sequence[RejectedRecord]) -> None:
    """One INSERT for the whole batch (executemany costs milliseconds a row in DuckDB)."""
    rows = pa.table(  # noqa: F841 (read by DuckDB's replacement scan)
        [
            [r.rejected_id for r in records],
            [r.received_at for r in records],
            [r.reason for r in records],
            [r.path for r in records],
            [r.http_method for r in records],
            [r.checked_url for r in records],
            [r.headers_json for r in records],
            [r.params_json for r in records],
            [r.truncated for r in records],
        ],
        schema=_SCHEMA,
    )
    cur.execute(
        "INSERT INTO rejected_webhooks SELECT rejected_id::UUID, received_at, reason, path, "
        "http_method, checked_url, headers::JSON, params::JSON, truncated FROM rows"
    )


def row_bytes(record: RejectedRecord) -> int:
    """What a row counts against MAX_BYTES: its headers and parameters as JSON text."""
    return len(record.headers_json.encode("utf-8")) + len(record.params_json.encode("utf-8"))


_SIZE = "strlen(headers::VARCHAR) + strlen(params::VARCHAR)"


def count_since(cur: duckdb.DuckDBPyConnection, since: datetime) -> int:
    """Refused requests kept that arrived at or after `since`."""
    rows = cur.execute(
        "SELECT count(*) FROM rejected_webhooks WHERE received_at >= $since", {"since": since}
    ).fetchall()
    return int(rows[0][0])


class RejectedStore:
    """Inserts refused requests and keeps rejected_webhooks within its bounds, oldest pruned
    first, in DELETEs of at most PRUNE_STEP_ROWS rows. Used by the writer thread only; the
    totals are read once, then kept up to date as rows are inserted and pruned."""

    def __init__(self, max_rows: int | None = None, max_bytes: int | None = None) -> None:
        self.max_rows = MAX_ROWS if max_rows is None else max_rows
        self.max_bytes = MAX_BYTES if max_bytes is None else max_bytes
        self.rows = 0
        self.bytes = 0

    def load(self, cur: duckdb.DuckDBPyConnection) -> None:
        row = cur.execute(
            f"SELECT count(*), coalesce(sum({_SIZE}), 0) FROM rejected_webhooks"
        ).fetchall()[0]
        self.rows, self.bytes = int(row[0]), int(row[1])

    def over(self) -> bool:
        return self.rows > self.max_rows or self.bytes > self.max_bytes

    def insert(self, cur: duckdb.DuckDBPyConnection, records: Sequence[RejectedRecord]) -> None:
        if not records:
            return
        insert_rejected(cur, records)
        self.rows += len(records)
        self.bytes += sum(row_bytes(r) for r in records)

    def prune(self, cur: duckdb.DuckDBPyConnection) -> int:
        """One bounded DELETE of the oldest rows beyond PRUNE_TO of the bounds, when a bound is
        exceeded; return how many rows went. Call again while `over()`."""
        if not self.over():
            return 0
        deleted = cur.execute(
            "DELETE FROM rejected_webhooks WHERE rowid IN ("
            " SELECT rid FROM ("
            f"  SELECT rowid AS rid, count(*) OVER newest AS newer_rows,"
            f"   sum({_SIZE}) OVER newest AS newer_bytes"
            "   FROM rejected_webhooks"
            "   WINDOW newest AS (ORDER BY received_at DESC, rowid DESC"
            "    ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW))"
            " WHERE newer_rows > $rows OR newer_bytes > $bytes"
            " ORDER BY newer_rows DESC LIMIT $step)",
            {
                "rows": int(self.max_rows * PRUNE_TO),
                "bytes": int(self.max_bytes * PRUNE_TO),
                "step": PRUNE_STEP_ROWS,
            },
        ).fetchall()
        pruned = int(deleted[0][0]) if deleted else 0
        self.load(cur)
        if pruned:
            log.info(
                "rejected_webhooks pruned: %d oldest rows removed, %d rows (%.1f MiB) kept",
                pruned,
                self.rows,
                self.bytes / 2**20,
            )
        return pruned
