"""Read-only SQL for a shared dashboard: one query on the snapshot, sandboxed, time and row limits.

Layers, each enough on its own for the common case: only SELECT-like statements pass the check;
the snapshot is opened read-only; external access (files, network), extension loading and
Python-variable scans are off, and the configuration is locked so that a query cannot turn them
back on; a timer interrupts queries that run too long; results stop at a row limit.
"""

from __future__ import annotations

import io
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from callstatus.core.events import STORAGE_RELATIONS

DEFAULT_TIME_LIMIT_S = 10.0
DEFAULT_ROW_LIMIT = 10_000
DEFAULT_MEMORY_LIMIT = "2GB"

ALLOWED = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}

SANDBOX: dict[str, str | bool | int | float | list[str]] = {
    "enable_external_access": False,  # no read_csv('/etc/passwd'), COPY, ATTACH of files
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    # DuckDB's Python client otherwise resolves unknown table names to Python variables of the
    # calling frames: a query could read objects of the dashboard process.
    "python_enable_replacements": False,
}


class Refused(Exception):
    """A query the SQL page will not run, with a message meant for the person who typed it."""


@dataclass(frozen=True)
class QueryResult:
    table: pa.Table
    truncated: bool  # more rows existed than the row limit
    elapsed_s: float


def check_statement(sql: str) -> str:
    """The one read-only statement in `sql`, or Refused saying why not."""
    if not sql.strip():
        raise Refused("Type a query first.")
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise Refused(f"SQL error: {exc}") from None
    if len(statements) != 1:
        raise Refused(
            f"Run exactly one statement at a time (found {len(statements)}); "
            "remove the extra ones or the semicolons between them."
        )
    statement = statements[0]
    if statement.type not in ALLOWED:
        kind = statement.type.name
        raise Refused(
            f"Only read-only queries (SELECT, WITH, FROM, DESCRIBE, SUMMARIZE, EXPLAIN) run here; "
            f"this statement is {kind}. The data is a read-only snapshot."
        )
    return str(statement.query)


def connect_sandboxed(
    snapshot: Path, memory_limit: str = DEFAULT_MEMORY_LIMIT
) -> duckdb.DuckDBPyConnection:
    """A read-only connection to the snapshot that can read nothing else and change nothing."""
    if not snapshot.exists():
        raise Refused(
            f"No snapshot yet at {snapshot}: the server writes one shortly after it starts."
        )
    config = {"memory_limit": memory_limit, **SANDBOX}
    try:
        con = duckdb.connect(str(snapshot), read_only=True, config=config)
    except duckdb.Error as exc:
        raise Refused(f"Cannot open the snapshot {snapshot}: {exc}") from None
    # TimeZone belongs to the ICU extension, unknown at connect time: set it, then lock.
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET lock_configuration = true")
    return con


def run_query(
    snapshot: Path,
    sql: str,
    *,
    time_limit_s: float = DEFAULT_TIME_LIMIT_S,
    row_limit: int = DEFAULT_ROW_LIMIT,
) -> QueryResult:
    """Run one read-only query on the snapshot within the limits; Refused explains any refusal."""
    statement = check_statement(sql)
    con = connect_sandboxed(snapshot)
    # interrupt() is the one call DuckDB allows from another thread while a query runs.
    timer = threading.Timer(time_limit_s, con.interrupt)
    started = time.perf_counter()
    timer.start()
    try:
        relation = con.sql(statement)
        if relation is None:
            raise Refused("That statement returns no rows.")
        # LIMIT on top of the query lets DuckDB stop early; one extra row tells us it was cut.
        table = relation.limit(row_limit + 1).to_arrow_table()
    except duckdb.InterruptException:
        raise Refused(
            f"Stopped after {time_limit_s:g} s, the time limit: narrow the query "
            "(a WHERE on a time column, fewer joins) or aggregate more."
        ) from None
    except duckdb.PermissionException:
        raise Refused(
            "Reading files, URLs or other databases is disabled here; query the tables and "
            "views listed beside the editor."
        ) from None
    except duckdb.Error as exc:
        raise Refused(f"SQL error: {exc}") from None
    finally:
        timer.cancel()
        con.close()
    elapsed = time.perf_counter() - started
    truncated = table.num_rows > row_limit
    return QueryResult(table.slice(0, row_limit) if truncated else table, truncated, elapsed)


def schema(snapshot: Path) -> dict[str, list[tuple[str, str]]]:
    """{'table name' or 'view name (view)': [(column, type), ...]} of the snapshot, for the
    list beside the editor."""
    con = connect_sandboxed(snapshot)
    try:
        rows = con.execute(
            "SELECT c.table_name, t.table_type, c.column_name, c.data_type "
            "FROM information_schema.columns c JOIN information_schema.tables t "
            "USING (table_catalog, table_schema, table_name) "
            "WHERE c.table_schema = 'main' AND c.table_name <> 'schema_migrations' "
            "ORDER BY t.table_type, c.table_name, c.ordinal_position"
        ).fetchall()
    finally:
        con.close()
    relations: dict[str, list[tuple[str, str]]] = {}
    for name, kind, column, data_type in rows:
        if name in STORAGE_RELATIONS:
            continue
        label = f"{name} (view)" if kind == "VIEW" else str(name)
        relations.setdefault(label, []).append((str(column), str(data_type)))
    return relations


def to_csv_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pa_csv.write_csv(table, sink)
    return sink.getvalue()


def to_parquet_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


EXAMPLES: dict[str, str] = {
    "Dial answer rate by hour (did an agent pick up)": """\
-- Dial answer rate = dials with dial_status 'completed' / all dials.
SELECT date_trunc('hour', received_at) AS hour,
       count(*) AS all_dials,
       count(*) FILTER (WHERE dial_status = 'completed') AS answered_dials,
       round(100.0 * answered_dials / all_dials, 1) AS answer_rate_pct
FROM dials
GROUP BY hour
ORDER BY hour DESC
LIMIT 48""",
    "Call answer rate by hour and direction": """\
-- Call answer rate = answered calls / calls that ended.
SELECT date_trunc('hour', started_at) AS hour,
       direction,
       count(*) AS calls_ended,
       count(*) FILTER (WHERE answered) AS answered_calls,
       round(100.0 * answered_calls / calls_ended, 1) AS answer_rate_pct
FROM calls
WHERE outcome <> 'in-progress'
GROUP BY ALL
ORDER BY hour DESC, direction
LIMIT 96""",
    "Top hangup causes": """\
SELECT outcome,
       hangup_cause_code,
       hangup_cause_name,
       count(*) AS ended_calls,
       round(100.0 * ended_calls / sum(ended_calls) OVER (), 1) AS pct
FROM calls
WHERE outcome <> 'in-progress'
GROUP BY ALL
ORDER BY ended_calls DESC
LIMIT 20""",
    "B numbers that never answer": """\
-- Lost-race legs are left out: another phone of the same dial picked up first.
SELECT b_leg_to,
       count(*) AS legs,
       max(ended_at) AS last_tried,
       mode(outcome) AS usual_outcome
FROM dial_legs
WHERE outcome NOT IN ('in-progress', 'lost-race')
GROUP BY b_leg_to
HAVING NOT bool_or(answered)
ORDER BY legs DESC
LIMIT 50""",
}
