"""Connections to the shared PostgreSQL store and its numbered migrations."""

from __future__ import annotations

from importlib import resources

import psycopg

# Every process applies missing migrations at start; several receivers may start at once, so
# they take turns on one advisory lock (an arbitrary constant: "callstatus" in ASCII, truncated).
MIGRATION_LOCK = 0x63616C6C737461
CONNECT_TIMEOUT_S = 5


def connect(url: str, *, autocommit: bool = False) -> psycopg.Connection[tuple[object, ...]]:
    """A connection to CALLSTATUS_POSTGRES_URL, in UTC, failing within a few seconds when the
    server cannot be reached."""
    con = psycopg.connect(
        url,
        autocommit=autocommit,
        connect_timeout=CONNECT_TIMEOUT_S,
        application_name="callstatus",
    )
    # SET runs in a transaction without autocommit: end it, so the caller starts clean.
    con.execute("SET TIME ZONE 'UTC'")
    if not autocommit:
        con.commit()
    return con


def migrations() -> list[tuple[str, str]]:
    """(name, SQL) of every PostgreSQL migration shipped with the package, in order."""
    folder = resources.files("callstatus.cluster") / "migrations"
    files = sorted(
        (entry for entry in folder.iterdir() if entry.name.endswith(".sql")),
        key=lambda entry: entry.name,
    )
    return [(entry.name.removesuffix(".sql"), entry.read_text(encoding="utf-8")) for entry in files]


def migrate(url: str) -> list[str]:
    """Apply the migrations the shared store has not seen yet; return their names."""
    applied: list[str] = []
    with connect(url) as con:
        con.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        con.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " name TEXT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        done = {row[0] for row in con.execute("SELECT name FROM schema_migrations").fetchall()}
        for name, sql in migrations():
            if name in done:
                continue
            con.execute(sql.encode())
            con.execute("INSERT INTO schema_migrations (name) VALUES (%s)", (name,))
            applied.append(name)
        con.commit()
    return applied
