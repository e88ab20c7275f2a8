"""Migration 0016 on a file written before it: each webhook_rows row's seq is its rowid (what the
rollups' watermark counted), the last seq given is the larger of the newest rowid and the
watermark, and the analysts' webhook_events keeps its columns."""

from __future__ import annotations

from pathlib import Path

import duckdb

from callstatus.core import rollups, storage
from callstatus.core.db import connect, migrate, migrations


def _migrate_until(con: duckdb.DuckDBPyConnection, last: str) -> None:
    con.execute("CREATE TABLE schema_migrations (name VARCHAR PRIMARY KEY, applied_at TIMESTAMPTZ)")
    for name, sql in migrations():
        if name > last:
            break
        con.execute(sql)
        con.execute("INSERT INTO schema_migrations VALUES (?, now())", [name])


def test_an_older_file_gets_its_rowids_as_seq(tmp_path: Path) -> None:
    con = connect(tmp_path / "old.duckdb")
    _migrate_until(con, "0015_hourly_aggregates")
    columns_before = [r[0] for r in con.execute("DESCRIBE webhook_events").fetchall()]
    con.execute(
        "INSERT INTO webhook_rows (event_id, received_at, kind, http_method, params, signature,"
        " duplicate, params_hash) SELECT gen_random_uuid(), now(), 'hangup', 'POST', '{}', 'v3',"
        " false, i FROM range(10) t(i)"
    )
    # Read by the rollups up to rowid 9, then the two newest removed (an erasure).
    con.execute(
        "INSERT INTO rollup_state SELECT unnest($names), 9, now()", {"names": list(rollups.TABLES)}
    )
    rowids = dict(con.execute("SELECT event_id, rowid FROM webhook_rows").fetchall())
    con.execute("DELETE FROM webhook_rows WHERE rowid >= 8")
    assert migrate(con) == ["0016_webhook_seq"] + [
        n for n, _ in migrations() if n > "0016_webhook_seq"
    ]
    seqs = dict(con.execute("SELECT event_id, seq FROM webhook_rows").fetchall())
    assert seqs == {k: v for k, v in rowids.items() if v < 8}
    assert storage.last_seq(con) == 9 == rollups.watermark(con)
    assert [r[0] for r in con.execute("DESCRIBE webhook_events").fetchall()] == columns_before
    # The next move continues after the last seq given, not after the newest row left.
    con.execute(
        "INSERT INTO webhook_inbox SELECT gen_random_uuid(), now(), 'hangup', 'POST', '{}', 'v3',"
        " false, 1, '{}'"
    )
    assert storage.move_inbox(con) == 1
    assert con.execute("SELECT max(seq) FROM webhook_rows").fetchall() == [(10,)]
    assert storage.last_seq(con) == 10
