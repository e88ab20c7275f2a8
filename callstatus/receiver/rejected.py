"""Refused requests, kept in `rejected_webhooks` so a misconfiguration loses nothing."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import duckdb
import pyarrow as pa


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
