"""Refused requests, kept in `rejected_webhooks` so a misconfiguration loses nothing.

The table is bounded: at most MAX_ROWS rows and MAX_BYTES of headers and parameters (their JSON
text); past either bound the oldest rows are pruned. Refusals are rate-limited before they get
here too (callstatus.app.runtime.RejectionBudget, per clock hour).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import duckdb
import pyarrow as pa

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
