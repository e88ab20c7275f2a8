"""Clustered mode, no server holding the replica: `callstatus reconcile` stores Plivo's records in
PostgreSQL and `callstatus erase` removes the number's rows from PostgreSQL too (refusing, with
nothing removed, when PostgreSQL cannot be read); and a receiver replays into PostgreSQL the spool
the embedded writer left before clustered mode was switched on. A real PostgreSQL, the commands'
functions in this process."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import duckdb
import psycopg
import pytest

from callstatus.app.erase_command import EraseOptions, run_erase
from callstatus.app.reconcile_command import ReconcileOptions, run_reconcile
from callstatus.app.runtime import Runtime
from callstatus.cluster import deletions, inbox, pg
from callstatus.cluster.sync import sync_once
from callstatus.core.db import Database
from callstatus.core.duplicates import DuplicateTracker
from callstatus.core.errors import CommandError
from callstatus.core.records import EventRecord, Params, make_record
from callstatus.core.settings import Settings
from callstatus.receiver.spool import Spool
from callstatus.simulator.call_api import CallApiServer
from callstatus.simulator.traffic import TrafficModel
from tests.cluster.pg_rows import insert_rejected_pg
from tests.factories import call_webhooks, make_settings
from tests.servers import free_port

AUTH_ID = "MACLUSTERCOMMANDS001"
TOKEN = "cluster-commands-token"
CALLS = 45
NUMBER = "+447911222333"
OTHER = "15550009999"


def nowhere() -> str:
    return f"postgresql://postgres@127.0.0.1:{free_port()}/callstatus"


def in_pg(url: str, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as con:
        return con.execute(sql, params).fetchall()


def in_replica(settings: Settings, sql: str) -> list[tuple[Any, ...]]:
    with duckdb.connect(str(settings.db), read_only=True) as con:
        return con.execute(sql).fetchall()


def rebuild(settings: Settings, url: str) -> None:
    """What an operator does to rebuild a replica: delete the file and its WAL, sync again."""
    for path in (settings.db, settings.db.with_name(settings.db.name + ".wal")):
        path.unlink(missing_ok=True)
    database = Database(settings.db)
    try:
        with pg.connect(url, autocommit=True) as con:
            sync_once(con, database.cursor())
    finally:
        database.close()


def store_in_pg(url: str, records: Sequence[EventRecord], receiver: str = "r1:8000") -> None:
    """As a receiver stores webhooks: fingerprints decide `duplicate`, each batch committed."""
    with pg.connect(url, autocommit=True) as con:
        inbox.store(con, records, ZoneInfo("UTC"), receiver)


def call(uuid: str, caller: str, at: datetime) -> list[EventRecord]:
    params: Params = {"CallUUID": uuid, "From": caller, "To": "18005550199"}
    return [
        make_record("answer", "POST", params, "valid", at),
        make_record("hangup", "POST", {**params, "Event": "Hangup"}, "valid", at),
    ]


# -- reconcile ---------------------------------------------------------------------------------


def test_reconcile_without_a_server_stores_the_records_in_postgres(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    now = datetime.now(UTC)
    model = TrafficModel(seed=47)
    starts = model.starts(CALLS, (now - timedelta(hours=2)).timestamp(), 1.0, model.rng(-1))
    calls = [model.call(i, at) for i, at in enumerate(starts)]
    # A third of the calls reached no receiver; the others' webhooks are in PostgreSQL only
    # (the replica file does not exist yet): the command reads them before classifying.
    received = [r for c in calls if c.index % 3 for r in call_webhooks(c)]
    DuplicateTracker().mark(received)
    with pg.connect(url) as con:
        inbox.insert_events(con, received, ZoneInfo("UTC"), "r1:8000")
        con.commit()
    records = [record for c in calls for record in c.records]
    since = (now - timedelta(days=2)).strftime("%Y-%m-%dT%H:%M")
    with CallApiServer(records, auth_id=AUTH_ID, token=TOKEN) as api:
        settings = make_settings(
            tmp_path,
            PLIVO_AUTH_ID=AUTH_ID,
            PLIVO_API_TOKEN=TOKEN,
            PLIVO_API_URL=api.url,
            CALLSTATUS_POSTGRES_URL=url,
        )
        assert run_reconcile(ReconcileOptions(since=since), settings) == 0
        first = capsys.readouterr().out
        assert run_reconcile(ReconcileOptions(since=since), settings) == 0
        again = capsys.readouterr().out
    assert f"{len(records)} new" in first
    assert f"calls added (no webhook at all):          {CALLS - CALLS * 2 // 3}" in first
    assert "nothing new, every one was already stored" in again

    cdr = "SELECT count(*), count(DISTINCT event_id) FROM {} WHERE kind = 'cdr'"
    assert in_pg(url, cdr.format("webhook_inbox")) == [(len(records), len(records))]
    (receiver,) = in_pg(url, "SELECT DISTINCT receiver FROM webhook_inbox WHERE kind = 'cdr'")
    assert receiver[0].startswith("reconcile-command@")
    assert in_replica(settings, cdr.format("webhook_events")) == [(len(records), len(records))]
    rebuild(settings, url)
    assert in_replica(settings, cdr.format("webhook_events")) == [(len(records), len(records))]
    assert in_replica(settings, "SELECT count(*) FROM webhook_events") == [
        (len(records) + len(received),)
    ]


def test_reconcile_refuses_while_postgres_cannot_be_read(tmp_path: Path) -> None:
    with CallApiServer([], auth_id=AUTH_ID, token=TOKEN) as api:
        settings = make_settings(
            tmp_path,
            PLIVO_AUTH_ID=AUTH_ID,
            PLIVO_API_TOKEN=TOKEN,
            PLIVO_API_URL=api.url,
            CALLSTATUS_POSTGRES_URL=nowhere(),
        )
        with pytest.raises(CommandError, match="stores Plivo's call records in PostgreSQL"):
            run_reconcile(ReconcileOptions(days=1), settings)
        assert api.requests == []
    assert in_replica(settings, "SELECT count(*) FROM reconcile_runs") == [(0,)]


# -- erase -------------------------------------------------------------------------------------


def seed_two_numbers(url: str) -> None:
    at = datetime.now(UTC) - timedelta(minutes=30)
    store_in_pg(url, call("eeeeeeee-0000-0000-0000-000000000001", NUMBER[1:], at))
    store_in_pg(url, call("eeeeeeee-0000-0000-0000-000000000002", OTHER, at))
    with pg.connect(url) as con:
        insert_rejected_pg(con, params=json.dumps({"From": NUMBER[1:]}))
        insert_rejected_pg(con, params=json.dumps({"From": OTHER}))
        con.commit()


def test_erase_without_a_server_removes_the_number_from_postgres(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seed_two_numbers(url)
    settings = make_settings(tmp_path, CALLSTATUS_POSTGRES_URL=url)
    mentions = "SELECT count(*) FROM {} WHERE params LIKE %s"
    number = (f"%{NUMBER[1:]}%",)

    # A dry run counts on the replica as synced, and removes nothing anywhere.
    assert run_erase(EraseOptions(NUMBER, dry_run=True), settings) == 0
    assert "webhook_events" in capsys.readouterr().out
    assert in_pg(url, mentions.format("webhook_inbox"), number) == [(2,)]

    assert run_erase(EraseOptions(NUMBER), settings) == 0
    out = capsys.readouterr().out
    assert "postgres/webhook_events" in out and "postgres/rejected_webhooks" in out
    for table in ("webhook_inbox", "rejected_webhooks"):
        assert in_pg(url, mentions.format(table), number) == [(0,)]
    assert in_pg(url, mentions.format("webhook_inbox"), (f"%{OTHER}%",)) == [(2,)]
    assert in_pg(url, mentions.format("rejected_webhooks"), (f"%{OTHER}%",)) == [(1,)]
    # The erased webhooks' fingerprints went with them: a later copy would be a first copy.
    assert in_pg(url, "SELECT count(*) FROM webhook_fingerprints") == [(2,)]

    check = (
        "SELECT (SELECT count(*) FROM webhook_events WHERE params LIKE '%{n}%'),"
        " (SELECT count(*) FROM rejected_webhooks WHERE params LIKE '%{n}%')"
    )
    assert in_replica(settings, check.format(n=NUMBER[1:])) == [(0, 0)]
    assert in_replica(settings, "SELECT count(*) FROM erasures WHERE NOT dry_run") == [(1,)]
    rebuild(settings, url)
    assert in_replica(settings, check.format(n=NUMBER[1:])) == [(0, 0)]
    assert in_replica(settings, check.format(n=OTHER)) == [(2, 1)]


def test_erase_refuses_and_removes_nothing_while_postgres_cannot_be_read(
    url: str, tmp_path: Path
) -> None:
    seed_two_numbers(url)
    rebuild(make_settings(tmp_path), url)  # a replica synced while PostgreSQL was reachable
    settings = make_settings(tmp_path, CALLSTATUS_POSTGRES_URL=nowhere())
    at = datetime.now(UTC)
    spooled = Spool(settings.spool_dir).write(
        call("eeeeeeee-0000-0000-0000-000000000003", NUMBER[1:], at)
    )
    lines = spooled.read_text()
    with pytest.raises(CommandError) as refused:
        run_erase(EraseOptions(NUMBER), settings)
    message = str(refused.value)
    assert "removes the rows from PostgreSQL too" in message
    assert "nothing was removed" in message and "try again" in message
    n = NUMBER[1:]
    assert in_replica(
        settings,
        f"SELECT (SELECT count(*) FROM webhook_events WHERE params LIKE '%{n}%'),"
        f" (SELECT count(*) FROM rejected_webhooks WHERE params LIKE '%{n}%'),"
        " (SELECT count(*) FROM erasures)",
    ) == [(2, 1, 0)]
    assert spooled.read_text() == lines
    assert in_pg(url, "SELECT count(*) FROM webhook_inbox") == [(4,)]


# -- the embedded spool, adopted by a receiver -------------------------------------------------


def receiver(settings: Settings) -> Runtime:
    rt = Runtime(settings, ("127.0.0.1", 8131), "receiver")
    rt.start()
    return rt


def start_until_replayed(settings: Settings, timeout: float = 30) -> None:
    """A receiver started, left until its spool is replayed, and stopped."""
    rt = receiver(settings)
    try:
        deadline = time.monotonic() + timeout
        while rt.spool_depth() or rt.status().last_error is not None:
            assert time.monotonic() < deadline, f"spool depth {rt.spool_depth()}"
            time.sleep(0.05)
    finally:
        rt.stop()


def test_a_receiver_replays_the_spool_left_by_the_embedded_writer(url: str, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, CALLSTATUS_POSTGRES_URL=url)
    at = datetime.now(UTC) - timedelta(minutes=5)
    spooled = [
        r for i in range(5) for r in call(f"ssssssss-0000-0000-0000-00000000000{i}", OTHER, at)
    ]
    # As the embedded writer left them (callstatus.receiver.writer: Spool(settings.spool_dir)),
    # in two files.
    legacy = Spool(settings.spool_dir)
    first = legacy.write(spooled[:4])
    legacy.write(spooled[4:])
    kept = first.read_bytes()
    ids = sorted(r.ensure_id() for r in spooled)
    stored = "SELECT event_id::text FROM webhook_inbox ORDER BY 1"

    start_until_replayed(settings)
    assert [row[0] for row in in_pg(url, stored)] == ids
    assert legacy.files() == []
    assert list((settings.spool_dir / "postgres-8131").glob("spool-*")) == []

    # A second start finds nothing to replay; and a file whose rows are already stored (a crash
    # after the commit, before the file was removed) is replayed without storing them twice.
    (settings.spool_dir / first.name).write_bytes(kept)
    start_until_replayed(settings)
    assert [row[0] for row in in_pg(url, stored)] == ids
    assert legacy.files() == []
    rt = receiver(settings)
    rt.stop()
    assert [row[0] for row in in_pg(url, stored)] == ids


def test_a_command_does_the_deletions_left_waiting_for_postgres(url: str, tmp_path: Path) -> None:
    seed_two_numbers(url)
    settings = make_settings(tmp_path, CALLSTATUS_POSTGRES_URL=url)
    rebuild(settings, url)
    (gone,) = in_pg(url, "SELECT event_id::text FROM webhook_inbox WHERE kind = 'answer' LIMIT 1")
    # An earlier erasure removed it from the replica while PostgreSQL was down.
    waiting = deletions.pending_path(settings.db.absolute())
    waiting.write_text(json.dumps({"webhook_inbox": [gone[0]]}))
    assert run_erase(EraseOptions(NUMBER, dry_run=True), settings) == 0
    assert not waiting.exists()
    where = "SELECT count(*) FROM webhook_inbox WHERE event_id = %s"
    assert in_pg(url, where, gone) == [(0,)]
    assert in_pg(url, "SELECT count(*) FROM webhook_inbox") == [(3,)]
