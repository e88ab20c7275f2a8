"""Rollup tables: the rows of calls, dials and dial_legs kept in tables, refreshed as data comes.

Each refresh first moves the receiver's inbox into webhook_rows (`move_inbox`, migration 0006).
webhook_rows is append-only and only that move appends to it, giving each row the next `seq`
(migration 0016; a rowid would not do, DuckDB renumbers rows after deletions): a rollup that has
read every row up to a watermark only needs the rows after it. A
refresh finds the legs those rows touch, and in one transaction deletes them from each rollup and
inserts them again from the views' table macros (`calls_since` …), which only read the webhooks
received since a day before the oldest new row: a leg's webhooks all arrive within a day
(docs/data.md, "Rollups"). The refresh writes the rollup tables and webhook_rows, and deletes
from the inbox only the rows it moved, so it never conflicts with the receiver's writer thread.
The server refreshes every REFRESH_EVERY_S in a background thread, which also checkpoints the
WAL once it passed CHECKPOINT_BYTES.

webhook_counts (webhooks per 5-minute bucket of received_at, kind, duplicate and signature)
shares the rollups' watermark; its counts only ever grow, so a refresh adds the new rows' counts.

The hourly aggregates (migration 0015: calls_hourly, dials_hourly, legs_hourly, timings_hourly)
share it too. They are GROUP BYs of the rollups per UTC hour: a refresh notes the hours of every
rollup row it deletes or inserts (and of the Dials and B legs whose A leg it recomputed), and
recomputes those hours only, from the rollups, after them. A full rebuild recomputes every hour
from the oldest the rollups hold: older hours (whose raw rows retention removed) are kept.

A refresh never UPDATEs (nor upserts, which DuckDB runs as updates): rows that change are deleted
and inserted again. Once a transaction with updates commits while an older read transaction is
still open, DuckDB can run no checkpoint, automatic or not, until that reader ends; with the
refresh committing updates every 2 s and a reader somewhere always open, the WAL grew without
bound (measured: 300 MB in two minutes of load, the database file never written). Deletes and
inserts leave checkpoints free.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import duckdb

from callstatus.core import destinations, storage
from callstatus.core.db import Database
from callstatus.core.jobs import PeriodicJob
from callstatus.core.storage import move_inbox

log = logging.getLogger("callstatus.rollups")

# A leg's webhooks all arrive within this span (a call lasts hours at most; Plivo retries for
# minutes): a leg touched by new rows is recomputed from the webhooks of this window only.
WINDOW = timedelta(days=1)
# Past this many new rows, recomputing everything costs less than replacing keys one by one.
FULL_REBUILD_ROWS = 1_000_000
REFRESH_EVERY_S = 2.0
# A refresh reads the last day of webhooks: on a busy day it pauses longer, so that refreshing
# takes at most this share of the time (and of a core) from the receiver.
REFRESH_MAX_SHARE = 0.2
# The dashboard trusts rollups a little behind webhook_events only while a job keeps them fresh.
STALE_AFTER_S = 30.0
# Past this size the job checkpoints the WAL after its refresh, on its own thread, where the
# writer's commits mostly go on meanwhile (one that starts just as the checkpoint starts waits for
# all of it: small checkpoints, about 50 ms at 5 MiB against 0.2-0.4 s at 20 MiB, keep that wait
# short; docs/benchmarks.md). Left to DuckDB (checkpoint_threshold), a checkpoint runs inside
# whichever commit crosses the threshold: the writer's, whose webhooks then wait for all of it, or
# the refresh's, large enough that DuckDB skips the WAL for it and holds every other commit until
# the checkpoint ends. The writer keeps DuckDB's threshold above its own, larger bound
# (callstatus.receiver.writer).
CHECKPOINT_BYTES = 4 * 2**20


# The webhooks a refresh reads: those moved to webhook_rows since the last one (SQL).
NEW_ROWS = "webhook_rows WHERE seq > $mark AND seq <= $top"


@dataclass(frozen=True)
class Rollup:
    """A rollup table, the macro it is computed with, its key, and the keys the new rows touch."""

    table: str
    macro: str
    key: str
    touched: str  # SELECT of the keys of this rollup's rows that new rows change
    order_by: str


CALL_KINDS = "('answer', 'fallback', 'hangup', 'ring', 'machine_detection', 'cdr')"
# Fixed names only: these are the only identifiers ever formatted into SQL here.
ROLLUPS = (
    Rollup(
        "calls_rollup",
        "calls_since",
        "call_uuid",
        f"SELECT call_uuid FROM {NEW_ROWS} AND kind IN {CALL_KINDS} AND call_uuid IS NOT NULL",
        "started_at",
    ),
    Rollup(
        "dial_legs_rollup",
        "dial_legs_since",
        "b_leg_uuid",
        f"SELECT dial_b_leg_uuid FROM {NEW_ROWS}"
        " AND kind IN ('dial_callback', 'cdr') AND dial_b_leg_uuid IS NOT NULL",
        "leg_at",
    ),
    # A Dial action's or PHLO report's row; the Dial inferred from its A leg's B-leg records
    # (migration 0008), which a Dial action, a PHLO report or a B leg's record of the same A leg
    # changes; and the PHLO reports of an A leg whose Dial action just came, which that action
    # outranks (migration 0009). Those are found in the rollup itself: whenever they arrived,
    # their rows are there to delete, and none comes back.
    Rollup(
        "dials_rollup",
        "dials_since",
        "params_hash",
        f"SELECT params_hash FROM {NEW_ROWS} AND kind IN ('dial_action', 'phlo')"
        " UNION ALL SELECT record_dial_key(coalesce(dial_a_leg_uuid, call_uuid))"
        f" FROM {NEW_ROWS} AND (kind IN ('dial_action', 'phlo') OR (kind = 'cdr'"
        " AND dial_a_leg_uuid IS NOT NULL)) AND coalesce(dial_a_leg_uuid, call_uuid) IS NOT NULL"
        " UNION ALL SELECT params_hash FROM dials_rollup WHERE source = 'phlo' AND a_leg_uuid IN"
        f" (SELECT coalesce(dial_a_leg_uuid, call_uuid) FROM {NEW_ROWS} AND kind = 'dial_action')",
        "received_at",
    ),
)
# Webhooks per 5-minute bucket of received_at (migration 0005), refreshed with the rollups.
COUNTS = "webhook_counts"
# Per A leg, what its timed B legs add up to (migration 0017), for the A legs `{keys}` names
# (a subquery, or a condition that is always true).
A_LEGS = "a_legs_rollup"
A_LEGS_SELECT = """
SELECT a_leg_uuid, min(leg_at) AS first_at, max(leg_at) AS last_at, count(*) AS b_legs,
       bool_or(answered) AS any_answered, bool_or(outcome = 'canceled') AS gave_up,
       min(position) AS position, bool_or(outcome = 'lost-race') AS lost_race
FROM dial_legs_rollup
WHERE a_leg_uuid IS NOT NULL AND leg_at IS NOT NULL AND {keys}
GROUP BY a_leg_uuid"""


@dataclass(frozen=True)
class Aggregate:
    """An hourly aggregate (migration 0015): its table, the rollup and time column it groups
    (for the oldest hour a rebuild recomputes), and its rows for the hours in [$lo, $hi)."""

    table: str
    source: str
    time: str
    select: str


# The A leg's our number and far-end country on calls `c` (the sidebar's slices).
OUR_NUMBER = "CASE WHEN c.direction = 'outbound' THEN c.from_number ELSE c.to_number END"
FAR_COUNTRY = "CASE WHEN c.direction = 'outbound' THEN c.to_country ELSE c.from_country END"
HOUR = "time_bucket(INTERVAL 1 HOUR, {})"
# Timing measures (callstatus/dashboard/queries/timing.py defines them; docs/data.md, "Timing").
PDD = "post-dial delay"
RING = "ring time"
B_ANSWER = "B leg: time to answer"
B_GIVE_UP = "B leg: time to give up"
# The A/B legs page's ring times: from the A leg's start to the B leg's answer or hangup.
A_TO_ANSWER = "time to answer"
A_TO_GIVE_UP = "ring time, not answered"
# A histogram bin's lower bound in ms, from a duration in microseconds (clamped at 0): 100 ms
# wide under 10 s, 1 s wide under 10 minutes, 1 minute wide above. Bounds from 10 s are whole
# seconds: a whole number of seconds per bin (the ring times' 5 s) re-bins them exactly.
HISTOGRAM_BIN = """CASE WHEN {us} < 10000000 THEN {us} // 100000 * 100
     WHEN {us} < 600000000 THEN {us} // 1000000 * 1000 ELSE {us} // 60000000 * 60000 END"""
HISTOGRAM_WIDTH_MS = """CASE WHEN {ms} < 10000 THEN 100 WHEN {ms} < 600000 THEN 1000
     ELSE 60000 END"""


def _us(end: str, start: str) -> str:
    """Microseconds from start to end, 0 when negative. greatest() skips NULLs: a missing time
    counts 0, as in the Timing page's queries."""
    return f"greatest(epoch_us({end}) - epoch_us({start}), 0)"


def _timed(measure: str, t: str, destination: str, us: str, source: str, where: str) -> str:
    return (
        f"SELECT {HOUR.format(t)} AS hour, '{measure}' AS measure, {destination} AS destination,"
        f" {HISTOGRAM_BIN.format(us=us)} AS bin_ms FROM {source}"
        f" WHERE {t} >= $lo AND {t} < $hi AND {where}"
    )


_OUTBOUND = "direction = 'outbound' AND (rang_at IS NOT NULL OR answered_at IS NOT NULL)"
_DIAL_AT = "coalesce(a_answered_at, a_started_at)"
_B_TO = "coalesce(b_leg_to, '(unknown)')"
# The A/B legs page's ring times leave out legs without a time (no greatest() there).
_RUNG = (
    "outcome NOT IN ('lost-race', 'in-progress') AND a_started_at IS NOT NULL"
    " AND epoch_us(CASE WHEN answered THEN answered_at ELSE ended_at END) IS NOT NULL"
)
_COUNTRY = "coalesce(to_country, '(unknown)')"
_LEGS = "dial_legs_rollup"
TIMINGS = " UNION ALL ".join(
    [
        _timed(
            PDD,
            "started_at",
            _COUNTRY,
            _us("least(rang_at, answered_at)", "started_at"),
            "calls_rollup",
            _OUTBOUND,
        ),
        _timed(
            RING,
            "started_at",
            _COUNTRY,
            _us("coalesce(answered_at, ended_at)", "coalesce(rang_at, started_at)"),
            "calls_rollup",
            _OUTBOUND,
        ),
        _timed(B_ANSWER, "leg_at", _B_TO, _us("answered_at", _DIAL_AT), _LEGS, "answered"),
        _timed(
            B_GIVE_UP,
            "leg_at",
            _B_TO,
            _us("ended_at", _DIAL_AT),
            _LEGS,
            "NOT answered AND outcome NOT IN ('lost-race', 'in-progress')",
        ),
        _timed(
            A_TO_ANSWER,
            "leg_at",
            _B_TO,
            _us("answered_at", "a_started_at"),
            _LEGS,
            f"answered AND {_RUNG}",
        ),
        _timed(
            A_TO_GIVE_UP,
            "leg_at",
            _B_TO,
            _us("ended_at", "a_started_at"),
            _LEGS,
            f"answered IS NOT TRUE AND {_RUNG}",
        ),
    ]
)
# The far number of a B leg's A leg, whose country legs_hourly shows. Its countries are looked up
# only for the numbers of the legs read: a join with all of number_destinations hashed every
# number ever stored (800,000 at 10 million webhooks, 50 ms) for a range's cut hour of a few
# thousand legs, and twice per page figure (docs/benchmarks.md).
_A_FAR = "CASE WHEN l.a_direction = 'outbound' THEN l.a_to ELSE l.a_from END"
AGGREGATES: tuple[Aggregate, ...] = (
    Aggregate(
        "calls_hourly",
        "calls_rollup",
        "started_at",
        f"""SELECT {HOUR.format("c.started_at")} AS hour, c.direction, {OUR_NUMBER} AS our_number,
       {FAR_COUNTRY} AS country, c.outcome, c.answered, c.source, c.hangup_cause_code,
       c.hangup_cause_name, c.hangup_cause, c.hangup_source, count(*) AS calls,
       sum(c.duration_s) AS duration_sum, count(c.duration_s) AS duration_n
FROM calls_rollup c WHERE c.started_at >= $lo AND c.started_at < $hi GROUP BY ALL""",
    ),
    # Dials join their A leg among the calls started within a day (the rollups' assumption).
    Aggregate(
        "dials_hourly",
        "dials_rollup",
        "received_at",
        f"""SELECT {HOUR.format("d.received_at")} AS hour, c.call_uuid IS NOT NULL AS a_known,
       c.direction, {OUR_NUMBER} AS our_number, {FAR_COUNTRY} AS country,
       coalesce(d.dial_status = 'completed', false) AS completed, count(*) AS dials
FROM dials_rollup d LEFT JOIN (
    SELECT call_uuid, direction, from_number, to_number, to_country, from_country
    FROM calls_rollup
    WHERE started_at >= $lo - INTERVAL 1 DAY AND started_at < $hi + INTERVAL 1 DAY) c
    ON c.call_uuid = d.a_leg_uuid
WHERE d.received_at >= $lo AND d.received_at < $hi GROUP BY ALL""",
    ),
    Aggregate(
        "legs_hourly",
        "dial_legs_rollup",
        "leg_at",
        f"""SELECT {HOUR.format("l.leg_at")} AS hour, l.a_direction AS direction,
       CASE WHEN l.a_direction = 'outbound' THEN l.a_from ELSE l.a_to END AS our_number,
       n.country, l.b_leg_to, l.b_leg_to_country, l.b_leg_to_line_type, l.position, l.outcome,
       l.answered, l.a_outcome, l.hangup_cause_code, l.hangup_cause_name, l.hangup_cause,
       l.hangup_source, count(*) AS legs, sum(l.duration_s) AS duration_sum,
       count(l.duration_s) AS duration_n
FROM dial_legs_rollup l LEFT JOIN (
    SELECT number, country FROM number_destinations
    WHERE number IN (SELECT {_A_FAR} FROM dial_legs_rollup l
                     WHERE l.leg_at >= $lo AND l.leg_at < $hi)) n
    ON n.number = {_A_FAR}
WHERE l.leg_at >= $lo AND l.leg_at < $hi GROUP BY ALL""",
    ),
    Aggregate(
        "timings_hourly",
        "calls_rollup",  # and dial_legs_rollup: the older of the two is taken
        "started_at",
        f"SELECT hour, measure, destination, bin_ms, count(*) AS legs FROM ({TIMINGS})"
        " GROUP BY ALL",
    ),
)
# Concurrent legs (callstatus/dashboard/queries/concurrency.py), per hour and series: the steps
# (+1 at a leg's start, -1 at its end, summed per instant) inside the hour, as `net` (their sum:
# the level at the next hour's start less the level at this one's), `top` (the highest level
# held in the hour less the level at its start, from its first step on, or 0 if the hour starts
# before any step) and `top_at` (the first instant it was held), and `area` (the integral over
# the hour of the level less the level at its start, in leg-microseconds). A legs run from
# started_at to ended_at, B legs from their A leg's answer (its start while unanswered) to their
# hangup, else their A leg's end; a leg with no end counts for 6 hours (MAX_OPEN there). Legs
# that started over a day before the hour are not read (the page's LOOKBACK).
MAX_OPEN = "INTERVAL 6 HOUR"
A_SERIES, B_SERIES = "calls", "B legs"
CONCURRENCY = f"""
WITH a AS (
    SELECT started_at AS s, coalesce(ended_at, started_at + {MAX_OPEN}) AS e FROM calls_rollup
    WHERE started_at >= $lo - INTERVAL 1 DAY AND started_at < $hi
), b AS (
    SELECT coalesce(c.answered_at, c.started_at) AS s,
           coalesce(l.ended_at, c.ended_at,
                    coalesce(c.answered_at, c.started_at) + {MAX_OPEN}) AS e
    FROM dial_legs_rollup l JOIN calls_rollup c ON c.call_uuid = l.a_leg_uuid
    WHERE c.started_at >= $lo - INTERVAL 1 DAY AND c.started_at < $hi
      AND l.a_started_at >= $lo - INTERVAL 1 DAY AND l.a_started_at < $hi
), legs AS (
    SELECT '{A_SERIES}' AS series, s, e FROM a WHERE s < e
    UNION ALL SELECT '{B_SERIES}', s, e FROM b WHERE s < e
), steps AS (
    SELECT series, ts, sum(d) AS d FROM (
        SELECT series, s AS ts, 1 AS d FROM legs WHERE s >= $lo AND s < $hi
        UNION ALL SELECT series, e, -1 FROM legs WHERE e >= $lo AND e < $hi)
    GROUP BY ALL
), levels AS (
    SELECT series, {HOUR.format("ts")} AS hour, ts, d,
           sum(d) OVER (PARTITION BY series, {HOUR.format("ts")} ORDER BY ts
                        ROWS UNBOUNDED PRECEDING) AS rel,
           lead(ts) OVER (PARTITION BY series, {HOUR.format("ts")} ORDER BY ts) AS next_at
    FROM steps
)
SELECT hour, series, CAST(sum(d) AS BIGINT) AS net,
       CAST(CASE WHEN min(ts) > hour THEN greatest(max(rel), 0) ELSE max(rel) END AS BIGINT)
           AS top,
       CASE WHEN min(ts) > hour AND max(rel) <= 0 THEN hour
            ELSE arg_min(ts, (-rel, ts)) END AS top_at,
       sum(rel * (epoch_us(coalesce(next_at, hour + INTERVAL 1 HOUR)) - epoch_us(ts)))
           AS area
FROM levels GROUP BY hour, series"""
AGGREGATES = (
    *AGGREGATES,
    Aggregate("concurrency_hourly", "calls_rollup", "started_at", CONCURRENCY),
)
TABLES = (*(r.table for r in ROLLUPS), COUNTS, A_LEGS, *(a.table for a in AGGREGATES))
# The hours of the rollup rows the new webhooks touch (their calls, Dials, B legs, and the Dials
# and B legs of their calls): the hours whose aggregates a refresh recomputes (SQL).
# For concurrency also the hours where their legs start and end.
TOUCHED_HOURS = f"""
SELECT unnest([{HOUR.format("started_at")}, {HOUR.format("answered_at")},
               {HOUR.format("ended_at")}, {HOUR.format("started_at + {open}")},
               {HOUR.format("answered_at + {open}")}]) AS hour
FROM calls_rollup WHERE call_uuid IN ({{calls}})
UNION SELECT {HOUR.format("received_at")} FROM dials_rollup
    WHERE params_hash IN ({{dials}}) OR a_leg_uuid IN ({{calls}})
UNION SELECT unnest([{HOUR.format("leg_at")}, {HOUR.format("ended_at")},
                     {HOUR.format("coalesce(a_answered_at, a_started_at)")},
                     {HOUR.format("coalesce(a_answered_at, a_started_at) + {open}")}])
    FROM dial_legs_rollup
    WHERE b_leg_uuid IN ({{legs}}) OR a_leg_uuid IN ({{calls}})
UNION SELECT {HOUR.format("ended_at")} FROM calls_rollup
    WHERE call_uuid IN (SELECT a_leg_uuid FROM dial_legs_rollup WHERE b_leg_uuid IN ({{legs}}))"""
# dial_legs_rollup's columns beyond the view's (migrations 0004, 0015): the leg's time as the
# dashboard defines it and its A leg's columns, taken from calls_rollup (refreshed before it).
A_LEG_COLUMNS = """
    coalesce(l.answered_at, l.ended_at, c.started_at) AS leg_at,
    c.started_at AS a_started_at, c.outcome AS a_outcome, c.direction AS a_direction,
    c.from_number AS a_from, c.to_number AS a_to, c.answered_at AS a_answered_at"""
ALL_TIME = "'-infinity'::TIMESTAMPTZ"
EXTRA_COLUMNS = (
    "leg_at",
    "a_started_at",
    "a_outcome",
    "a_direction",
    "a_from",
    "a_to",
    "a_answered_at",
)
VIEWS = {"calls": "calls_rollup", "dials": "dials_rollup", "dial_legs": "dial_legs_rollup"}


def watermark(cur: duckdb.DuckDBPyConnection) -> int | None:
    """The `seq` up to which every rollup has read webhook_rows; None before the first
    refresh (or when a rollup was never built, e.g. a rollup added by a later migration)."""
    names = ", ".join("?" for _ in TABLES)
    # fetchall throughout: a result left unread keeps its read transaction open.
    (row,) = cur.execute(
        f"SELECT min(watermark), count(*) FROM rollup_state WHERE name IN ({names})", list(TABLES)
    ).fetchall()
    if row[1] < len(TABLES):
        return None
    return int(row[0])


def last_seq(cur: duckdb.DuckDBPyConnection) -> int:
    """The `seq` of the newest webhook moved to webhook_rows (-1 when there is none)."""
    return storage.last_seq(cur)


def is_current(cur: duckdb.DuckDBPyConnection) -> bool:
    """True when the rollups hold every stored webhook (they then equal the views)."""
    # One read transaction: read one by one, an inbox move landing between the reads of the
    # watermark, the newest row and the inbox would make stale rollups look current.
    cur.execute("BEGIN")
    try:
        mark = watermark(cur)
        if mark is None or mark != last_seq(cur):
            return False
        (row,) = cur.execute("SELECT count(*) FROM webhook_inbox").fetchall()
    except duckdb.CatalogException:
        # A file from before a migration, opened read-only (no rollup_state, no webhook_rows).
        return False
    finally:
        cur.execute("ROLLBACK")  # nothing was written; also ends a transaction a failure aborted
    return bool(row[0] == 0)


def refresh(cur: duckdb.DuckDBPyConnection, *, full: bool = False) -> int:
    """Move the inbox, then bring the rollups up to the newest webhook; return how many new
    webhooks were read.

    Incremental unless `full`, the rollups were never built, or they are far behind. The
    webhooks the receiver stores meanwhile wait in the inbox for the next refresh; the legs they
    touch may already be recomputed with them (the macros read webhook_events), and are again then.
    """
    move_inbox(cur)
    cur.execute("BEGIN")
    try:
        # One transaction, one snapshot: the rows counted here are exactly the rows read below.
        top = last_seq(cur)
        mark = watermark(cur)
        new = top - (-1 if mark is None else mark)
        # new < 0: rows were removed behind our back (never by callstatus); start over.
        rebuild = full or mark is None or new < 0 or new > FULL_REBUILD_ROWS
        # The views' countries join number_destinations: the new rows' numbers come first.
        destinations.learn(cur, -1 if rebuild or mark is None else mark, top)
        if rebuild:
            _rebuild(cur)
        elif mark is not None and new > 0:
            _replace_touched(cur, mark, top)
            _count_webhooks(cur, mark, top)
        if rebuild or new > 0:
            _set_watermark(cur, top)
        cur.execute("COMMIT")
    except BaseException:
        cur.execute("ROLLBACK")
        raise
    return max(new, 0)


def _rows(r: Rollup, since: str) -> str:
    """The relation of r's rows computed from the webhooks received since `since` (SQL)."""
    if r.table != "dial_legs_rollup":
        return f"{r.macro}({since})"
    return (
        f"(SELECT l.*, {A_LEG_COLUMNS}\n FROM {r.macro}({since}) l"
        " LEFT JOIN calls_rollup c ON c.call_uuid = l.a_leg_uuid)"
    )


def _rebuild(cur: duckdb.DuckDBPyConnection) -> None:
    """Every rollup from scratch, rows in time order so that zone maps on time skip row groups."""
    for r in ROLLUPS:
        cur.execute(f"DELETE FROM {r.table}")
        cur.execute(
            f"INSERT INTO {r.table} BY NAME SELECT * FROM {_rows(r, ALL_TIME)}"
            f" ORDER BY {r.order_by}"
        )
    cur.execute(f"DELETE FROM {COUNTS}")
    _count_webhooks(cur, -1, last_seq(cur))
    cur.execute(f"DELETE FROM {A_LEGS}")
    cur.execute(
        f"INSERT INTO {A_LEGS} BY NAME {A_LEGS_SELECT.format(keys='true')} ORDER BY first_at"
    )
    _rebuild_aggregates(cur)


def _rebuild_aggregates(cur: duckdb.DuckDBPyConnection) -> None:
    """Every hour from the oldest one the rollups hold; older hours are kept (retention removed
    their rollup rows: aggregates stay until CALLSTATUS_AGGREGATE_RETENTION_DAYS)."""
    (row,) = cur.execute(
        "SELECT time_bucket(INTERVAL 1 HOUR, least((SELECT min(started_at) FROM calls_rollup),"
        " (SELECT min(received_at) FROM dials_rollup),"
        " (SELECT min(leg_at) FROM dial_legs_rollup)))"
    ).fetchall()
    if row[0] is None:
        return
    bounds = {"lo": row[0], "hi": datetime.max.replace(tzinfo=UTC)}
    for a in AGGREGATES:
        cur.execute(f"DELETE FROM {a.table} WHERE hour >= $lo", {"lo": bounds["lo"]})
        cur.execute(f"INSERT INTO {a.table} BY NAME {a.select} ORDER BY hour", bounds)


def _touched_hours(cur: duckdb.DuckDBPyConnection, params: dict[str, int]) -> set[datetime]:
    sql = TOUCHED_HOURS.format(
        calls=ROLLUPS[0].touched, legs=ROLLUPS[1].touched, dials=ROLLUPS[2].touched, open=MAX_OPEN
    )
    rows = cur.execute(sql, params).fetchall()
    # In UTC: hours are then added as elapsed time whatever the session's zone.
    return {row[0].astimezone(UTC) for row in rows if row[0] is not None}


def hours_holding(
    cur: duckdb.DuckDBPyConnection, calls: str, legs: str, params: Mapping[str, object]
) -> set[datetime]:
    """The hours whose aggregates count the rollup rows of these calls and B legs (SQL
    subqueries of their keys, with their parameters): what `recompute_hours` must redo after
    those rows are removed."""
    sql = TOUCHED_HOURS.format(calls=calls, legs=legs, dials="SELECT NULL", open=MAX_OPEN)
    return {row[0].astimezone(UTC) for row in cur.execute(sql, dict(params)).fetchall() if row[0]}


def _runs(hours: Iterable[datetime]) -> list[tuple[datetime, datetime]]:
    """Sorted hours as [lo, hi) runs of consecutive hours."""
    runs: list[tuple[datetime, datetime]] = []
    for hour in sorted(hours):
        if runs and runs[-1][1] == hour:
            runs[-1] = (runs[-1][0], hour + timedelta(hours=1))
        else:
            runs.append((hour, hour + timedelta(hours=1)))
    return runs


def recompute_hours(cur: duckdb.DuckDBPyConnection, hours: set[datetime]) -> None:
    """Recompute every aggregate's rows of these hours from the rollups."""
    for lo, hi in _runs(hours):
        for a in AGGREGATES:
            bounds = {"lo": lo, "hi": hi}
            cur.execute(f"DELETE FROM {a.table} WHERE hour >= $lo AND hour < $hi", bounds)
            cur.execute(f"INSERT INTO {a.table} BY NAME {a.select} ORDER BY hour", bounds)


# The A legs whose a_legs_rollup rows a change recomputes, gathered before and after it.
A_LEGS_TOUCHED = "a_legs_touched"


def note_a_legs(cur: duckdb.DuckDBPyConnection, keys: str, params: Mapping[str, object]) -> None:
    """Note the A legs `keys` (a subquery of a_leg_uuid values) for `recompute_a_legs`."""
    cur.execute(f"CREATE TEMP TABLE IF NOT EXISTS {A_LEGS_TOUCHED} (a_leg_uuid VARCHAR)")
    used = {k: v for k, v in params.items() if f"${k}" in keys}
    cur.execute(f"INSERT INTO {A_LEGS_TOUCHED} SELECT * FROM ({keys})", used)


def recompute_a_legs(cur: duckdb.DuckDBPyConnection) -> None:
    """Recompute the a_legs_rollup rows of the A legs noted since the last call, from
    dial_legs_rollup as it is now (an A leg without timed B legs left loses its row)."""
    cur.execute(f"CREATE TEMP TABLE IF NOT EXISTS {A_LEGS_TOUCHED} (a_leg_uuid VARCHAR)")
    keys = f"a_leg_uuid IN (SELECT a_leg_uuid FROM {A_LEGS_TOUCHED})"
    cur.execute(f"DELETE FROM {A_LEGS} WHERE {keys}")
    cur.execute(f"INSERT INTO {A_LEGS} BY NAME {A_LEGS_SELECT.format(keys=keys)} ORDER BY first_at")
    cur.execute(f"DROP TABLE {A_LEGS_TOUCHED}")


def _count_webhooks(cur: duckdb.DuckDBPyConnection, mark: int, top: int) -> None:
    """Add the webhooks mark < seq <= top to webhook_counts, to the rows of their buckets:
    those rows are deleted and inserted again with the sums (no upsert: see above)."""
    new = (
        "SELECT time_bucket(INTERVAL 5 MINUTE, received_at) AS bucket_at, kind, duplicate,"
        "  signature, count(*) AS webhooks"
        " FROM webhook_rows WHERE seq > $mark AND seq <= $top GROUP BY ALL"
    )
    params: dict[str, object] = {"mark": mark, "top": top}
    old = cur.execute(
        f"DELETE FROM {COUNTS} c USING ({new}) n"
        " WHERE c.bucket_at = n.bucket_at AND c.kind = n.kind AND c.duplicate = n.duplicate"
        " AND c.signature = n.signature"
        " RETURNING c.bucket_at, c.kind, c.duplicate, c.signature, c.webhooks",
        params,
    ).fetchall()
    columns: list[tuple[object, ...]] = list(zip(*old, strict=True)) if old else [()] * 5
    cur.execute(
        f"INSERT INTO {COUNTS} BY NAME"
        " SELECT bucket_at, kind, duplicate, signature, sum(webhooks)::BIGINT AS webhooks FROM ("
        f" {new} UNION ALL"
        " SELECT unnest($b::TIMESTAMPTZ[]), unnest($k::VARCHAR[]), unnest($d::BOOLEAN[]),"
        "  unnest($s::VARCHAR[]), unnest($w::BIGINT[]))"
        " GROUP BY ALL ORDER BY bucket_at",
        {
            **params,
            **{name: list(values) for name, values in zip("bkdsw", columns, strict=True)},
        },
    )


def _replace_touched(cur: duckdb.DuckDBPyConnection, mark: int, top: int) -> None:
    """Recompute the legs that webhooks mark < seq <= top belong to."""
    # A call record arrives long after its call (reconciliation): its legs' webhooks are found
    # from the call's start, a webhook's from its arrival.
    (row,) = cur.execute(
        "SELECT min(CASE WHEN kind = 'cdr' THEN least(received_at, start_time)"
        f" ELSE received_at END) FROM {NEW_ROWS}",
        {"mark": mark, "top": top},
    ).fetchall()
    if row[0] is None:
        return
    since = row[0] - WINDOW
    params = {"mark": mark, "top": top}
    hours = _touched_hours(cur, params)
    # The A legs whose a_legs_rollup rows change: those of the B legs replaced (as they were
    # and as they are: a B leg may learn its A leg), and the A legs recomputed (their start
    # times are their B legs' leg_at).
    note_a_legs(cur, ROLLUPS[0].touched, params)
    a_legs: set[str] = set()
    for r in ROLLUPS:
        returning = " RETURNING a_leg_uuid" if r.table == "dial_legs_rollup" else ""
        gone = cur.execute(
            f"DELETE FROM {r.table} WHERE {r.key} IN ({r.touched}){returning}", params
        ).fetchall()
        came = cur.execute(
            f"INSERT INTO {r.table} BY NAME SELECT * FROM {_rows(r, '$since')}"
            f" WHERE {r.key} IN ({r.touched}) ORDER BY {r.order_by}{returning}",
            {**params, "since": since},
        ).fetchall()
        if returning:
            a_legs.update(row[0] for row in (*gone, *came) if row[0] is not None)
    note_a_legs(cur, "SELECT unnest($a_legs)", {"a_legs": sorted(a_legs)})
    # A B leg's A-leg columns change when its A leg's webhooks arrive, maybe after the B leg's
    # own: B legs not touched themselves take them again from the calls just recomputed.
    # Copies with the new values are inserted and the old rows deleted, rather than updated
    # (see above).
    (ids,) = cur.execute(
        "SELECT list(l.rowid) FROM dial_legs_rollup l JOIN calls_rollup c"
        f" ON c.call_uuid = l.a_leg_uuid WHERE c.call_uuid IN ({ROLLUPS[0].touched})",
        params,
    ).fetchall()[0]
    if ids:
        cur.execute(
            "INSERT INTO dial_legs_rollup BY NAME"
            " SELECT l.* REPLACE (coalesce(l.answered_at, l.ended_at, c.started_at) AS leg_at,"
            "  c.started_at AS a_started_at, c.outcome AS a_outcome, c.direction AS a_direction,"
            "  c.from_number AS a_from, c.to_number AS a_to, c.answered_at AS a_answered_at)"
            " FROM dial_legs_rollup l JOIN calls_rollup c ON c.call_uuid = l.a_leg_uuid"
            " WHERE l.rowid IN (SELECT unnest($ids)) ORDER BY leg_at",
            {"ids": ids},
        )
        cur.execute(
            "DELETE FROM dial_legs_rollup WHERE rowid IN (SELECT unnest($ids))", {"ids": ids}
        )
    recompute_a_legs(cur)
    recompute_hours(cur, hours | _touched_hours(cur, params))


def _set_watermark(cur: duckdb.DuckDBPyConnection, top: int) -> None:
    # Deleted and inserted rather than replaced in place (see above).
    cur.execute(
        "DELETE FROM rollup_state WHERE name IN (SELECT unnest($names))", {"names": list(TABLES)}
    )
    cur.execute(
        "INSERT INTO rollup_state (name, watermark, refreshed_at)"
        " SELECT unnest($names), $top, now()",
        {"names": list(TABLES), "top": top},
    )


class RollupJob:
    """Refreshes the rollups every interval in its own thread, with its own cursor."""

    def __init__(
        self,
        database: Database,
        interval_s: float = REFRESH_EVERY_S,
        *,
        checkpoint_bytes: int = CHECKPOINT_BYTES,
    ) -> None:
        self.database = database
        self.checkpoint_bytes = checkpoint_bytes
        self.checkpoints = 0  # run by this job
        self.loop = PeriodicJob("rollups", self.refresh, interval_s, REFRESH_MAX_SHARE)

    def refresh(self) -> None:
        started = time.perf_counter()
        cur = self.database.cursor()
        new = refresh(cur)
        took = time.perf_counter() - started
        if new:
            # Slow refreshes say so: they space themselves out (REFRESH_MAX_SHARE).
            level = logging.INFO if took > 1.0 else logging.DEBUG
            log.log(level, "rollups: %d new webhooks in %.2f s", new, took)
        self.checkpoint_if_large(cur)

    def checkpoint_if_large(self, cur: duckdb.DuckDBPyConnection) -> None:
        """CHECKPOINT once the WAL is past checkpoint_bytes (see CHECKPOINT_BYTES). A failure
        is logged and retried after the next refresh; the writer's bound is the backstop."""
        try:
            size = self.database.wal_path.stat().st_size
        except OSError:
            return
        if size <= self.checkpoint_bytes:
            return
        started = time.perf_counter()
        try:
            cur.execute("CHECKPOINT")
        except duckdb.Error as exc:
            log.warning("the WAL holds %.0f MiB and CHECKPOINT failed: %s", size / 2**20, exc)
            return
        self.checkpoints += 1
        log.debug(
            "the WAL held %.0f MiB: checkpointed in %.2f s",
            size / 2**20,
            time.perf_counter() - started,
        )

    def keeping_up(self) -> bool:
        """True while refreshes succeed: the rollups are then at most a few seconds behind."""
        last = self.loop.last_ok
        # A slow refresh pauses longer (REFRESH_MAX_SHARE): allow for that pause too.
        return last is not None and time.monotonic() - last < STALE_AFTER_S + self.loop.last_pause_s

    def stop(self) -> None:
        """Stop the loop after a final refresh, so the file's rollups hold every webhook."""
        self.loop.stop()
