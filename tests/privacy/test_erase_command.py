"""`callstatus erase` on a file no server holds: the counts printed, a dry run, the snapshot
rewritten without the number, a mistyped number refused without repeating it."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import duckdb
import pytest

from callstatus.cli import main as callstatus
from callstatus.core import rollups
from callstatus.core.db import Database
from callstatus.core.snapshot import write_snapshot
from tests.factories import T0, make_settings, store

NUMBER = "+447911444555"


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "callstatus.duckdb"
    database = Database(path)
    for uuid, caller in [("e1", NUMBER[1:]), ("e2", "15550001234")]:
        params = {"CallUUID": f"eeeeeeee-0000-0000-0000-0000000000{uuid}", "From": caller}
        store(database, [("answer", params), ("hangup", params)], start=T0 + timedelta(hours=1))
    rollups.refresh(database.cursor())
    write_snapshot(database.cursor(), make_settings(tmp_path, CALLSTATUS_DB=path).snapshot_path)
    database.close()
    return path


def count(path: Path) -> int:
    con = duckdb.connect(str(path), read_only=True)
    try:
        (row,) = con.execute(
            "SELECT count(*) FROM webhook_events WHERE params::VARCHAR LIKE '%447911444555%'"
        ).fetchall()
        return int(row[0])
    finally:
        con.close()


def test_erase_on_the_file(
    db: Path, cli_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    snapshot = db.with_name("callstatus-snapshot.duckdb")
    assert callstatus(["erase", "--number", NUMBER, "--dry-run", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert "dry run" in out and "would remove" in out and "webhook_events" in out
    assert count(db) == 2 and count(snapshot) == 2
    assert callstatus(["erase", "--number", NUMBER, "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert "removed" in out and "snapshot: rewritten" in out
    assert "447911444555" not in out
    assert count(db) == 0 and count(snapshot) == 0
    con = duckdb.connect(str(db), read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM calls").fetchall() == [(1,)]
        assert con.execute("SELECT trigger FROM erasures").fetchall() == [("file",), ("file",)]
    finally:
        con.close()


def test_not_a_number(
    db: Path, cli_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert callstatus(["erase", "--number", "bob smith", "--db", str(db)]) == 2
    err = capsys.readouterr().err
    assert "not a phone number" in err and "bob" not in err
