"""`callstatus import --from FILE`: a single server's database copied into a real PostgreSQL, then
read back by a replica rebuilt from it, which shows the single server's calls, dials and B legs
exactly as the file did, beside what receivers stored after the switch; a second run adds
nothing, an interrupted one goes on; the old file is refused as a replica."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from callstatus.app.import_command import ImportOptions, run_import
from callstatus.cluster import pg
from callstatus.cluster.sync import ReplicaMismatch, sync_once
from callstatus.core import rollups
from callstatus.core.db import Database
from callstatus.core.duplicates import DuplicateTracker
from callstatus.core.errors import CommandError
from callstatus.core.records import EventRecord
from callstatus.core.settings import Settings, SettingsError
from callstatus.core.typed import typed_json
from callstatus.receiver.rejected import insert_rejected, refusal
from callstatus.simulator.seed import seed_database
from callstatus.simulator.traffic import TrafficModel
from tests.cluster.test_commands_clustered import call, in_pg, rebuild, store_in_pg
from tests.factories import deliver, make_settings, run_cli
from tests.servers import free_port

VIEWS = ("calls", "dials", "dial_legs")
SEEDED = 40
RETRIED = "iiiiiiii-0000-0000-0000-000000000001"


def single_server_file(path: Path, settings: Settings) -> list[EventRecord]:
    """What a single server leaves: seeded calls already in webhook_rows, the last hour's webhooks
    still in webhook_inbox (one delivered twice), a refused request, a repeat count. Returns the
    last hour's records."""
    database = Database(path)
    try:
        seed_database(database, TrafficModel(7), settings, SEEDED, 3.0)
        recent = call(RETRIED, "15550001111", datetime.now(UTC) - timedelta(minutes=30))
        retry = dataclasses.replace(recent[0], event_id=None)
        deliver(database, [*recent, retry], DuplicateTracker())
        cur = database.cursor()
        refused = refusal(
            "bad_signature",
            "POST",
            "/plivo/answer",
            "https://calls.example.com/plivo/answer",
            {"user-agent": "PlivoHTTP"},
            {"CallUUID": "nnnnnnnn-0000-0000-0000-000000000001"},
            datetime.now(UTC) - timedelta(hours=2),
        )
        insert_rejected(cur, [refused])
        cur.execute("INSERT INTO webhook_repeats VALUES (date_trunc('hour', now()), 'hangup', 3)")
    finally:
        database.close()
    return [*recent, retry]


def view_rows(path: Path, view: str, where: str = "") -> list[tuple[Any, ...]]:
    database = Database(path)
    try:
        cur = database.cursor()
        rollups.refresh(cur)
        return cur.execute(f"SELECT * FROM {view} {where} ORDER BY ALL").fetchall()
    finally:
        database.close()


def test_a_single_servers_history_reaches_every_replica(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = make_settings(tmp_path, CALLSTATUS_POSTGRES_URL=url)
    single = tmp_path / "single.duckdb"
    recent = single_server_file(single, settings)
    file_ids = sorted(r[0] for r in _file(single, "SELECT event_id::VARCHAR FROM webhook_events"))
    assert len(file_ids) > 4 * SEEDED
    # Receivers took calls after the switch, before the import.
    after = call("rrrrrrrr-0000-0000-0000-000000000001", "15550002222", datetime.now(UTC))
    store_in_pg(url, after)

    assert run_import(ImportOptions(single), settings) == 0
    out = capsys.readouterr()
    assert f"{len(file_ids):>12,} added  (0 already in PostgreSQL)" in out.out
    assert "refused requests                      1 added" in out.out
    assert "new CALLSTATUS_DB" in out.err

    stored = sorted(r[0] for r in in_pg(url, "SELECT event_id::text FROM webhook_inbox"))
    assert stored == sorted([*file_ids, *(r.ensure_id() for r in after)])
    assert in_pg(url, "SELECT count(*) FROM rejected_webhooks") == [(1,)]
    assert in_pg(url, "SELECT kind, repeats FROM webhook_repeats") == [("hangup", 3)]
    # `duplicate` as the file decided it: the retried answer's second copy.
    flags = in_pg(
        url,
        "SELECT duplicate FROM webhook_inbox WHERE params LIKE %s AND kind = 'answer'"
        " ORDER BY duplicate",
        (f"%{RETRIED}%",),
    )
    assert flags == [(False,), (True,)]

    # A replica built from PostgreSQL shows the single server's calls as the file did.
    rebuild(settings, url)
    mine = f"WHERE {{key}} NOT IN ('{after[0].params['CallUUID']}')"
    for view, key in (("calls", "call_uuid"), ("dials", "a_leg_uuid"), ("dial_legs", "a_leg_uuid")):
        expected = view_rows(single, view)
        assert expected, view
        assert view_rows(settings.db, view, mine.format(key=key)) == expected, view
    assert len(view_rows(settings.db, "calls")) == len(view_rows(single, "calls")) + 1

    # A retry of a webhook the single server took, reaching a receiver after the switch, is
    # flagged as the single server would have flagged it.
    late = dataclasses.replace(recent[1], event_id=None)
    store_in_pg(url, [late])
    [(duplicate,)] = in_pg(
        url, "SELECT duplicate FROM webhook_inbox WHERE event_id = %s", (late.ensure_id(),)
    )
    assert duplicate is True

    # Run again: nothing added. Interrupted (rows missing): only those added.
    assert run_import(ImportOptions(single), settings) == 0
    assert f"0 added  ({len(file_ids):,} already in PostgreSQL)" in capsys.readouterr().out
    with pg.connect(url) as con:
        con.execute("DELETE FROM webhook_inbox WHERE event_id = ANY(%s::uuid[])", (file_ids[:7],))
    assert run_import(ImportOptions(single), settings) == 0
    assert f"7 added  ({len(file_ids) - 7:,} already in PostgreSQL)" in capsys.readouterr().out
    assert (
        len(in_pg(url, "SELECT event_id FROM webhook_inbox")) == len(file_ids) + 3
    )  # and after, late


def test_the_single_servers_file_is_refused_as_a_replica(url: str, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, CALLSTATUS_POSTGRES_URL=url)
    single = tmp_path / "single.duckdb"
    single_server_file(single, settings)
    database = Database(single)
    try:
        with pg.connect(url, autocommit=True) as con, pytest.raises(ReplicaMismatch) as refused:
            sync_once(con, database.cursor())
        assert "did not come from PostgreSQL" in str(refused.value)
        assert "callstatus import --from" in str(refused.value)
        # Nothing was added to it.
        assert database.cursor().execute("SELECT count(*) FROM replica_state").fetchone() == (0,)
    finally:
        database.close()
    # An empty file is a replica like any other.
    rebuild(settings, url)


def test_serve_refuses_a_single_servers_file_as_its_replica(url: str, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, CALLSTATUS_POSTGRES_URL=url)
    single = tmp_path / "single.duckdb"
    single_server_file(single, settings)
    env = {**os.environ, "CALLSTATUS_POSTGRES_URL": url}
    for role in ("all", "dashboard"):
        command = ["serve", "--port", str(free_port()), "--db", str(single), "--role", role]
        done = run_cli(*command, cwd=tmp_path, env=env)
        assert done.returncode == 1, done
        [line] = done.stderr.strip().splitlines()
        assert "webhooks that did not come from PostgreSQL" in line
        assert f"callstatus import --from {single}" in line
    assert in_pg(url, "SELECT count(*) FROM webhook_inbox") == [(0,)]  # nothing started


def test_what_cannot_be_imported_is_explained(url: str, tmp_path: Path) -> None:
    single = tmp_path / "single.duckdb"
    embedded = make_settings(tmp_path)
    with pytest.raises(SettingsError, match="set CALLSTATUS_POSTGRES_URL"):
        run_import(ImportOptions(single), embedded)
    settings = make_settings(tmp_path, CALLSTATUS_POSTGRES_URL=url)
    with pytest.raises(CommandError, match="no database at"):
        run_import(ImportOptions(tmp_path / "missing.duckdb"), settings)
    # A replica's rows are in PostgreSQL already.
    store_in_pg(url, call("pppppppp-0000-0000-0000-000000000001", "15550003333", datetime.now(UTC)))
    rebuild(settings, url)
    with pytest.raises(CommandError, match="is a replica of the PostgreSQL at"):
        run_import(ImportOptions(settings.db), settings)


def test_a_file_held_by_a_running_process_is_refused(url: str, tmp_path: Path) -> None:
    single = tmp_path / "single.duckdb"
    Database(single).close()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys; c = duckdb.connect(sys.argv[1]); print('held', flush=True);"
            " sys.stdin.read()",
            str(single),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        settings = make_settings(tmp_path, CALLSTATUS_POSTGRES_URL=url)
        with pytest.raises(CommandError, match="held by another process: stop the"):
            run_import(ImportOptions(single), settings)
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)


def _file(path: Path, sql: str) -> list[tuple[Any, ...]]:
    database = Database(path)
    try:
        return database.cursor().execute(sql).fetchall()
    finally:
        database.close()


def test_typed_copies_are_computed_as_a_receiver_computes_them(url: str, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, CALLSTATUS_POSTGRES_URL=url)
    single = tmp_path / "single.duckdb"
    recent = single_server_file(single, settings)
    assert run_import(ImportOptions(single), settings) == 0
    for record in recent:
        [(typed,)] = in_pg(
            url, "SELECT typed FROM webhook_inbox WHERE event_id = %s", (record.ensure_id(),)
        )
        assert json.loads(typed) == json.loads(
            typed_json(record.params, ZoneInfo(settings.plivo_timezone), record.kind)
        )
