"""Retention: raw rows older than CALLSTATUS_RETENTION_DAYS removed (archived first when
CALLSTATUS_ARCHIVE_DIR is set), aggregates older than CALLSTATUS_AGGREGATE_RETENTION_DAYS too.

A call goes whole, decided by its start: every webhook of a call (its A leg, its Dials, its B
legs, their call records and PHLO reports) that started before the horizon is removed, with its
rows in the rollups, even a hangup or a call record received after the horizon; a call that
started after it keeps all its rows. So the rollups still equal the views after a run, and no
call is left half there. Refused requests and repeat counts go by their own time; webhook_counts
(webhooks per 5 minutes) and the hourly aggregates (calls_hourly … concurrency_hourly, migration
0015) are kept until the aggregate horizon (forever without one), so the dashboard's long ranges
still have their totals.

One run: refresh the rollups (with their job paused), record the run as 'running', then in one
transaction archive and delete, and record it 'ok'; then checkpoint, so that the freed blocks are
reused (callstatus/privacy/maintenance.py).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

from callstatus.core import rollups
from callstatus.core.db import Database
from callstatus.core.jobs import PeriodicJob
from callstatus.core.rollups import RollupJob
from callstatus.core.settings import Settings
from callstatus.privacy import archive
from callstatus.privacy.compaction import LiveCompactor
from callstatus.privacy.maintenance import rollups_paused, settle

log = logging.getLogger("callstatus.retention")

# The keys (A-leg UUIDs) of the calls a run removes, in a temporary table of the run's cursor.
KEYS = "retention_keys"
# A webhook row goes when it came before the horizon or belongs to a call that started before
# it: by its A leg (a Dial's callbacks and a B leg's call record carry DialALegUUID).
ROW_KEY = "coalesce(dial_a_leg_uuid, call_uuid)"
DOOMED_ROWS = f"received_at < $h OR {ROW_KEY} IN (SELECT k FROM {KEYS})"
# number_destinations (a country and line type per number ever stored) keeps the numbers that
# webhooks still hold: a number no row mentions any more is personal data with no use.
UNUSED_NUMBERS = (
    "number_destinations WHERE number NOT IN (SELECT n FROM (SELECT unnest([from_number,"
    " to_number, dial_b_leg_from, dial_b_leg_to]) AS n FROM webhook_events) WHERE n IS NOT NULL)"
)


@dataclass(frozen=True)
class Horizons:
    """Raw rows received (calls started) before `raw` go; aggregate rows before `aggregates`
    (None: aggregates are kept)."""

    raw: datetime
    aggregates: datetime | None

    @classmethod
    def of(cls, settings: Settings, now: datetime) -> Horizons | None:
        """None when CALLSTATUS_RETENTION_DAYS is not set: everything is kept."""
        if settings.retention_days is None:
            return None
        days = settings.aggregate_retention_days
        day = settings.retention_day_s
        return cls(
            now - timedelta(seconds=settings.retention_days * day),
            now - timedelta(seconds=days * day) if days is not None else None,
        )


@dataclass
class RetentionRun:
    """A retention_runs row."""

    run_id: int
    started_at: datetime
    trigger: str
    horizon: datetime
    aggregate_horizon: datetime | None
    archive_dir: str | None
    status: str = "running"
    finished_at: datetime | None = None
    removed: dict[str, int] = field(default_factory=dict)
    archived: dict[str, int] = field(default_factory=dict)
    file_bytes: int | None = None
    error: str | None = None

    def describe(self) -> str:
        removed = ", ".join(f"{n:,} from {t}" for t, n in self.removed.items() if n) or "nothing"
        text = f"retention run {self.run_id} ({self.status}): removed {removed}"
        if self.archived:
            text += f"; archived {sum(self.archived.values()):,} rows to {self.archive_dir}"
        return text + (f"; error: {self.error}" if self.error else "")


def _save(cur: duckdb.DuckDBPyConnection, run: RetentionRun) -> None:
    """`_record` in a transaction of its own."""
    cur.execute("BEGIN")
    try:
        _record(cur, run)
        cur.execute("COMMIT")
    except BaseException:
        cur.execute("ROLLBACK")
        raise


def _record(cur: duckdb.DuckDBPyConnection, run: RetentionRun) -> None:
    """Write the run's row in the caller's transaction: deleted and inserted again, never
    updated (see callstatus/core/rollups.py)."""
    cur.execute("DELETE FROM retention_runs WHERE run_id = ?", [run.run_id])
    cur.execute(
        "INSERT INTO retention_runs (run_id, started_at, finished_at, trigger, horizon,"
        " aggregate_horizon, status, removed, archived, archive_dir, file_bytes, error)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            run.run_id,
            run.started_at,
            run.finished_at,
            run.trigger,
            run.horizon,
            run.aggregate_horizon,
            run.status,
            json.dumps(run.removed),
            json.dumps(run.archived),
            run.archive_dir,
            run.file_bytes,
            run.error,
        ],
    )


def discard_interrupted(cur: duckdb.DuckDBPyConnection, archive_dir: Path | None) -> int:
    """Runs left 'running' by a crash: their archive files hold rows that were never removed,
    so the files go (the rows will be archived again) and the run is recorded as an error."""
    rows = cur.execute(
        "SELECT run_id, archive_dir FROM retention_runs WHERE status = 'running'"
    ).fetchall()
    for run_id, folder in rows:
        # Where that run wrote, and where runs write now (the setting may have changed).
        for path in {Path(f) for f in (folder, archive_dir) if f is not None}:
            archive.discard_run(path, int(run_id))
        cur.execute(
            "INSERT INTO retention_runs SELECT * REPLACE ('error' AS status, now() AS finished_at,"
            " 'interrupted: its archive files were removed, its rows kept' AS error)"
            " FROM retention_runs WHERE run_id = ?",
            [run_id],
        )
        cur.execute("DELETE FROM retention_runs WHERE run_id = ? AND status = 'running'", [run_id])
    return len(rows)


def run_retention(
    cur: duckdb.DuckDBPyConnection,
    settings: Settings,
    *,
    db_path: Path | None = None,
    now: datetime | None = None,
    trigger: str = "job",
) -> RetentionRun | None:
    """One run on this cursor's database; None when retention is off. The caller pauses the
    rollup job (`rollups_paused`) when one runs. A failure is recorded in the run and raised."""
    horizons = Horizons.of(settings, now or datetime.now(UTC))
    if horizons is None:
        return None
    rollups.refresh(cur)
    archive_dir = settings.archive_dir
    discard_interrupted(cur, archive_dir)
    (row,) = cur.execute("SELECT coalesce(max(run_id), 0) + 1 FROM retention_runs").fetchall()
    run = RetentionRun(
        run_id=int(row[0]),
        started_at=datetime.now(UTC),
        trigger=trigger,
        horizon=horizons.raw,
        aggregate_horizon=horizons.aggregates,
        archive_dir=str(archive_dir) if archive_dir is not None else None,
    )
    # Committed before any file is written: a crash from here on is found by the next run.
    _save(cur, run)
    try:
        _remove(cur, run, horizons, archive_dir)
    except Exception as exc:
        if archive_dir is not None:
            archive.discard_run(archive_dir, run.run_id)
        run.status, run.error = "error", f"{type(exc).__name__}: {exc}"
        run.finished_at = datetime.now(UTC)
        run.removed, run.archived = {}, {}
        _save(cur, run)
        raise
    if any(run.removed.values()):
        settle(cur)
    if db_path is not None and db_path.exists():
        run.file_bytes = db_path.stat().st_size
        _save(cur, run)
    return run


def _remove(
    cur: duckdb.DuckDBPyConnection,
    run: RetentionRun,
    horizons: Horizons,
    archive_dir: Path | None,
) -> None:
    """Archive, delete and record the run as done, in one transaction."""
    h: dict[str, Any] = {"h": horizons.raw}
    cur.execute("BEGIN")
    try:
        cur.execute(
            f"CREATE OR REPLACE TEMP TABLE {KEYS} AS"
            " SELECT call_uuid AS k FROM calls_rollup WHERE started_at < $h"
            f" UNION SELECT {ROW_KEY} FROM webhook_rows WHERE received_at < $h"
            f" AND {ROW_KEY} IS NOT NULL",
            h,
        )
        if archive_dir is not None:
            run.archived = {
                "webhook_events": archive.write_days(
                    cur,
                    archive_dir,
                    "webhook_events",
                    f"SELECT * EXCLUDE (seq) FROM webhook_rows WHERE {DOOMED_ROWS}",
                    h,
                    run.run_id,
                ),
                "rejected_webhooks": archive.write_days(
                    cur,
                    archive_dir,
                    "rejected_webhooks",
                    "SELECT * FROM rejected_webhooks WHERE received_at < $h",
                    h,
                    run.run_id,
                ),
            }
        in_keys = f"IN (SELECT k FROM {KEYS})"
        # Whole A legs go: their per-A-leg rows with them (recomputed from no B legs).
        rollups.note_a_legs(cur, f"SELECT k FROM {KEYS}", {})
        removed = {
            "webhook_events": _delete(cur, f"webhook_rows WHERE {DOOMED_ROWS}", h),
            "calls_rollup": _delete(cur, f"calls_rollup WHERE call_uuid {in_keys}", h),
            "dials_rollup": _delete(
                cur,
                f"dials_rollup WHERE a_leg_uuid {in_keys}"
                " OR (a_leg_uuid IS NULL AND received_at < $h)",
                h,
            ),
            "dial_legs_rollup": _delete(
                cur,
                f"dial_legs_rollup WHERE a_leg_uuid {in_keys}"
                " OR (a_leg_uuid IS NULL AND leg_at < $h)",
                h,
            ),
            "rejected_webhooks": _delete(cur, "rejected_webhooks WHERE received_at < $h", h),
            "webhook_repeats": _delete(cur, "webhook_repeats WHERE bucket < $h", h),
        }
        rollups.recompute_a_legs(cur)
        if _exists(cur, "number_destinations"):
            removed["number_destinations"] = _delete(cur, UNUSED_NUMBERS, {})
        if horizons.aggregates is not None:
            a = {"a": horizons.aggregates}
            removed["webhook_counts"] = _delete(cur, "webhook_counts WHERE bucket_at < $a", a)
            removed.update(_delete_hourly(cur, horizons.aggregates))
        cur.execute(f"DROP TABLE {KEYS}")
        run.removed = removed
        run.status, run.finished_at = "ok", datetime.now(UTC)
        _record(cur, run)
        cur.execute("COMMIT")
    except BaseException:
        cur.execute("ROLLBACK")
        raise


def _delete_hourly(cur: duckdb.DuckDBPyConnection, horizon: datetime) -> dict[str, int]:
    """The hourly aggregates' hours before the aggregate horizon removed. concurrency_hourly's
    level at an hour is the sum of every earlier hour's steps (`net`): the removed hours' sum is
    kept as one carry row (no peak, no area) in the hour before the first kept one, so a leg up
    across the horizon still ends at the level it started from."""
    removed: dict[str, int] = {}
    for aggregate in rollups.AGGREGATES:
        table = aggregate.table
        if not _exists(cur, table):
            continue
        if table == "concurrency_hourly":
            cur.execute(
                "CREATE OR REPLACE TEMP TABLE retention_carry AS SELECT series, sum(net) AS net"
                " FROM concurrency_hourly WHERE hour < $a GROUP BY series",
                {"a": horizon},
            )
        removed[table] = _delete(cur, f"{table} WHERE hour < $a", {"a": horizon})
        if table == "concurrency_hourly":
            cur.execute(
                "INSERT INTO concurrency_hourly (hour, series, net, top, top_at, area)"
                " SELECT h, series, net, 0, h, 0 FROM retention_carry,"
                " (SELECT time_bucket(INTERVAL 1 HOUR, $a::TIMESTAMPTZ) - INTERVAL 1 HOUR AS h)"
                " WHERE net <> 0",
                {"a": horizon},
            )
            cur.execute("DROP TABLE retention_carry")
    return removed


def _exists(cur: duckdb.DuckDBPyConnection, table: str) -> bool:
    rows = cur.execute(
        "SELECT 1 FROM duckdb_tables() WHERE table_name = ? AND NOT temporary", [table]
    ).fetchall()
    return bool(rows)


def _delete(cur: duckdb.DuckDBPyConnection, target: str, params: dict[str, Any]) -> int:
    """DELETE FROM `target` (a table and its WHERE, fixed SQL); how many rows went."""
    used = {name: value for name, value in params.items() if f"${name}" in target}
    (row,) = cur.execute(f"DELETE FROM {target}", used).fetchall()
    return int(row[0])


def last_run(cur: duckdb.DuckDBPyConnection) -> tuple[datetime, datetime] | None:
    """(finished_at, horizon) of the last successful run, or None."""
    rows = cur.execute(
        "SELECT finished_at, horizon FROM retention_runs WHERE status = 'ok'"
        " ORDER BY finished_at DESC LIMIT 1"
    ).fetchall()
    return (rows[0][0], rows[0][1]) if rows else None


class RetentionJob:
    """Runs retention at start (within a minute of `serve` starting) and then daily, in its own
    thread, pausing the rollup job while it deletes; then, given a compactor, compacts the file
    when retention removed enough since the last compaction (callstatus/privacy/compaction.py)."""

    def __init__(
        self,
        database: Database,
        settings: Settings,
        rollup_job: RollupJob | None,
        interval_s: float | None = None,
        compactor: LiveCompactor | None = None,
    ) -> None:
        self.database = database
        self.settings = settings
        self.rollup_job = rollup_job
        self.compactor = compactor
        self.last: RetentionRun | None = None
        # A day (CALLSTATUS_RETENTION_DAY_SECONDS shortens it for tests and benchmarks).
        every = settings.retention_day_s if interval_s is None else interval_s
        self.loop = PeriodicJob("retention", self.run, every, run_at_stop=False)

    def run(self) -> RetentionRun | None:
        started = time.perf_counter()
        cur = self.database.cursor()
        with rollups_paused(self.rollup_job):
            run = run_retention(cur, self.settings, db_path=self.database.absolute_path)
        self.last = run
        if run is not None:
            log.info("%s in %.1f s", run.describe(), time.perf_counter() - started)
            # Outside the pause above: the compactor takes the rollup job's lock itself.
            if self.compactor is not None and run.removed.get("webhook_events"):
                self.compactor.run()
        return run

    def start(self) -> None:
        self.loop.start()

    def stop(self) -> None:
        if self.compactor is not None:
            self.compactor.cancel()
        self.loop.stop()
