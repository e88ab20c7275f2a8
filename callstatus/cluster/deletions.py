"""Erasure and retention in clustered mode: what a dashboard removes from its replica is removed
from PostgreSQL too, so that a rebuilt replica does not bring it back.

The rules of what goes stay where they are (callstatus.privacy.erase and .retention, on the
replica's DuckDB). Around one run, with the replica's sync held (a step first, so that the
replica holds what PostgreSQL had): the keys of the replica's rows are noted before, and the
keys no longer there after are deleted in PostgreSQL, in one transaction: webhooks (by
event_id) with their fingerprints, refused requests (by rejected_id), repeat counts (by bucket
and kind). The sync only reads transactions it has not seen, so it never adds them back.

The keys are written to a file beside the replica before PostgreSQL is asked (`PENDING`): when
PostgreSQL cannot take the deletion, the sync job tries again at each step until it does.
Other dashboards' replicas keep the rows they already copied until they are rebuilt.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import psycopg

from callstatus.cluster import pg

log = logging.getLogger("callstatus.replica")

# The file of keys waiting to be deleted in PostgreSQL, beside the replica (CALLSTATUS_DB).
PENDING_SUFFIX = ".postgres-deletions.json"
# Keys sent per statement: one transaction for the whole deletion, in steps of this many.
CHUNK = 10_000

# (name in PostgreSQL, DuckDB query of the replica's keys): the tables whose rows are mirrored.
_KEYS = {
    "webhook_inbox": "SELECT event_id FROM webhook_events",
    "rejected_webhooks": "SELECT rejected_id FROM rejected_webhooks",
    "webhook_repeats": "SELECT bucket, kind FROM webhook_repeats",
}
_BEFORE = "cluster_keys_before_"

_DELETE = {
    # A webhook's fingerprint goes with it: a later copy of an erased webhook is a first copy.
    "webhook_inbox": (
        "WITH gone AS (DELETE FROM webhook_inbox WHERE event_id = ANY(%s::uuid[])"
        " RETURNING params_hash, kind),"
        " prints AS (DELETE FROM webhook_fingerprints f USING (SELECT DISTINCT params_hash, kind"
        " FROM gone) g WHERE f.params_hash = g.params_hash AND f.kind = g.kind)"
        " SELECT count(*) FROM gone"
    ),
    "rejected_webhooks": (
        "WITH gone AS (DELETE FROM rejected_webhooks WHERE rejected_id = ANY(%s::uuid[])"
        " RETURNING 1) SELECT count(*) FROM gone"
    ),
    "webhook_repeats": (
        "WITH gone AS (DELETE FROM webhook_repeats WHERE (bucket, kind) IN"
        " (SELECT * FROM unnest(%s::timestamptz[], %s::text[])) RETURNING 1)"
        " SELECT count(*) FROM gone"
    ),
}


class PostgresUnreachable(RuntimeError):
    """PostgreSQL could not be read before a deletion: nothing was removed anywhere."""


@dataclass
class Mirrored:
    """Rows deleted in PostgreSQL per table, once the run is over (or None: left pending)."""

    counts: dict[str, int] | None = None
    pending: Path | None = None
    error: str | None = None
    keys: dict[str, list[Any]] = field(default_factory=dict)

    def as_counts(self) -> dict[str, int]:
        """For an erasure's counts: rows deleted in PostgreSQL, or keys still waiting."""
        if self.counts is None:
            return {"postgres/waiting": sum(len(v) for v in self.keys.values())}
        return {
            "postgres/webhook_events": self.counts.get("webhook_inbox", 0),
            "postgres/rejected_webhooks": self.counts.get("rejected_webhooks", 0),
        }


def pending_path(database_path: Path) -> Path:
    return database_path.with_name(database_path.name + PENDING_SUFFIX)


@contextlib.contextmanager
def mirrored(
    cur: duckdb.DuckDBPyConnection,
    url: str,
    database_path: Path,
    hold: Callable[[], contextlib.AbstractContextManager[None]] | None = None,
) -> Iterator[Mirrored]:
    """Run the body (an erasure or a retention run on the replica, on other cursors) with the
    sync held by `hold` (which syncs first), then delete in PostgreSQL what the body removed
    from the replica. `cur` is this function's own cursor (its temporary tables)."""
    done = Mirrored()
    with hold() if hold is not None else contextlib.nullcontext():
        for table, query in _KEYS.items():
            cur.execute(f"CREATE OR REPLACE TEMP TABLE {_BEFORE}{table} AS {query}")
        try:
            yield done
            for table, query in _KEYS.items():
                rows = cur.execute(f"SELECT * FROM {_BEFORE}{table} EXCEPT {query}").fetchall()
                if rows:
                    done.keys[table] = [_plain(row) for row in rows]
        finally:
            for table in _KEYS:
                cur.execute(f"DROP TABLE IF EXISTS {_BEFORE}{table}")
        if not done.keys:
            done.counts = {}
            return
        path = pending_path(database_path)
        _add_pending(path, done.keys)
        try:
            done.counts = flush_pending(url, path)
        except psycopg.Error as exc:
            done.pending = path
            done.error = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
            log.error(
                "removed from the replica but not yet from PostgreSQL (%s): the keys wait in %s"
                " and the sync deletes them there once PostgreSQL takes it",
                done.error,
                path,
            )


def _plain(row: tuple[Any, ...]) -> Any:
    """A key as JSON can hold it: a UUID as text, (bucket, kind) as [ISO time, kind]."""
    if len(row) == 1:
        return str(row[0])
    bucket, kind = row
    return [bucket.isoformat() if isinstance(bucket, datetime) else str(bucket), str(kind)]


def _add_pending(path: Path, keys: dict[str, list[Any]]) -> None:
    """Merge `keys` into the pending file, written anew and fsynced, then renamed over it."""
    merged: dict[str, list[Any]] = {}
    if path.exists():
        merged = json.loads(path.read_text(encoding="utf-8"))
    for table, values in keys.items():
        merged.setdefault(table, []).extend(values)
    partial = path.with_name(path.name + ".partial")
    with partial.open("w", encoding="utf-8") as out:
        json.dump(merged, out)
        out.flush()
        os.fsync(out.fileno())
    os.replace(partial, path)


def flush_pending(url: str, path: Path) -> dict[str, int]:
    """Delete the keys of the pending file in PostgreSQL in one transaction, then remove the
    file; the rows deleted per table. Raises psycopg.Error when PostgreSQL cannot."""
    if not path.exists():
        return {}
    keys: dict[str, list[Any]] = json.loads(path.read_text(encoding="utf-8"))
    counts = dict.fromkeys(keys, 0)
    with pg.connect(url) as con:
        for table, values in keys.items():
            for start in range(0, len(values), CHUNK):
                step = values[start : start + CHUNK]
                if table == "webhook_repeats":
                    params: tuple[Any, ...] = (
                        [datetime.fromisoformat(b) for b, _ in step],
                        [k for _, k in step],
                    )
                else:
                    params = (step,)
                row = con.execute(_DELETE[table], params).fetchone()
                counts[table] += int(str(row[0])) if row is not None else 0
        con.commit()
    path.unlink()
    return counts
