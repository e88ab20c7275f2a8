"""When DuckDB refuses writes, webhooks still get 200 from an fsynced spool, replayed later."""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest
from starlette.testclient import TestClient
from starlette.types import Message, Receive, Scope, Send
from streamlit.runtime import Runtime as StreamlitRuntime

import callstatus.receiver.spool
import callstatus.receiver.writer
from callstatus.app.asgi import build_app
from callstatus.core.db import Database
from callstatus.core.records import EventRecord, make_record
from callstatus.core.storage import InboxAppender
from callstatus.receiver.spool import Spool
from tests.factories import app_client, make_settings, rows, wait_until


class FailingDisk:
    """While `failing`, every append to webhook_inbox (the writer's and the spool replay's)
    fails: the database refuses every write."""

    def __init__(self) -> None:
        self.failing = True


@pytest.fixture
def disk(monkeypatch: pytest.MonkeyPatch) -> FailingDisk:
    fake = FailingDisk()
    real = InboxAppender.append

    def append(appender: InboxAppender, records: Sequence[EventRecord]) -> None:
        if fake.failing:
            raise duckdb.IOException("IO Error: No space left on device")
        real(appender, records)

    monkeypatch.setattr(InboxAppender, "append", append)
    monkeypatch.setattr(callstatus.receiver.writer, "SPOOL_RETRY_S", 0.1)
    return fake


def _spooled_lines(folder: Path) -> list[dict[str, Any]]:
    lines = []
    for path in sorted(folder.glob("spool-*.jsonl")):
        lines += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return lines


def test_webhooks_spool_while_the_database_refuses_and_replay_after(
    tmp_path: Path, disk: FailingDisk
) -> None:
    spool_dir = tmp_path / "spool"
    with app_client(tmp_path) as client:
        for i in range(5):
            response = client.post("/plivo/hangup", data={"CallUUID": f"s{i}", "Duration": "3"})
            assert response.status_code == 200, response.text
        # The same webhook twice while spooling: the repeat is flagged all the same.
        assert (
            client.post("/plivo/hangup", data={"CallUUID": "s0", "Duration": "3"}).status_code
            == 200
        )

        spooled = _spooled_lines(spool_dir)
        assert sorted(line["event_id"] for line in spooled) == sorted(
            {line["event_id"] for line in spooled}
        )
        assert len(spooled) == 6
        assert not list(spool_dir.glob("*.partial"))
        assert rows("SELECT count(*) AS n FROM webhook_events")[0]["n"] == 0
        health = client.get("/healthz").json()
        assert health["status"] == "degraded"
        assert health["spool_depth"] == 6
        assert "No space left" in health["database"]
        assert "callstatus_spool_depth 6.0" in client.get("/metrics").text

        disk.failing = False
        wait_until(lambda: rows("SELECT count(*) AS n FROM webhook_events")[0]["n"] == 6)
        assert client.post("/plivo/hangup", data={"CallUUID": "after"}).status_code == 200
        stored = rows(
            "SELECT call_uuid, duplicate, count(*) OVER (PARTITION BY event_id) AS copies"
            " FROM webhook_events ORDER BY received_at"
        )
        wait_until(lambda: client.get("/healthz").json()["status"] == "ok")
        health = client.get("/healthz").json()
    assert [row["call_uuid"] for row in stored] == ["s0", "s1", "s2", "s3", "s4", "s0", "after"]
    assert [row["duplicate"] for row in stored] == [False] * 5 + [True, False]
    assert all(row["copies"] == 1 for row in stored)
    assert health["spool_depth"] == 0
    assert health["database"] == "ok"
    assert not list(spool_dir.glob("spool-*"))


def test_a_spooled_webhook_is_answered_only_after_its_file_and_folder_are_fsynced(
    tmp_path: Path, disk: FailingDisk, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The order of events, as the server saw them: every fsync returned, then the reply
    started; and while an fsync is held, the client has no reply."""
    events: list[str] = []
    held = threading.Event()
    release = threading.Event()
    real = os.fsync

    def slow_fsync(fd: int) -> None:
        held.set()
        assert release.wait(30), "the test never released fsync"
        real(fd)
        events.append("fsync")

    monkeypatch.setattr("callstatus.receiver.spool.os.fsync", slow_fsync)
    app = build_app(make_settings(tmp_path))

    async def recording(scope: Scope, receive: Receive, send: Send) -> None:
        async def send_and_record(message: Message) -> None:
            if message["type"] == "http.response.start" and scope["path"] == "/plivo/hangup":
                events.append(f"reply {message['status']}")
            await send(message)

        await app(scope, receive, send_and_record)

    replies: list[Any] = []
    try:
        with TestClient(recording, base_url="http://testserver") as client:
            sender = threading.Thread(
                target=lambda: replies.append(
                    client.post("/plivo/hangup", data={"CallUUID": "held"})
                )
            )
            sender.start()
            assert held.wait(30), "the webhook was never spooled"
            # The writer is inside the spool file's fsync: nothing may have been answered.
            assert events == [] and replies == []
            release.set()
            sender.join(30)
            assert not sender.is_alive()
            spooled = _spooled_lines(tmp_path / "spool")
    finally:
        release.set()
        StreamlitRuntime._instance = None  # as app_client does
    assert [reply.status_code for reply in replies] == [200]
    # The file, then its folder entry (the rename), each fsynced before the reply.
    assert events == ["fsync", "fsync", "reply 200"]
    assert [json.loads(line["params"])["CallUUID"] for line in spooled] == ["held"]


def _records(n: int, prefix: str = "r") -> list[EventRecord]:
    now = datetime.now(UTC)
    return [
        make_record("hangup", "POST", {"CallUUID": f"{prefix}{i}"}, "unchecked", now)
        for i in range(n)
    ]


def test_replaying_the_same_file_twice_stores_it_once(db: Database, tmp_path: Path) -> None:
    # A crash between the replay's commit and the file's removal replays the file again.
    spool = Spool(tmp_path / "spool")
    path = spool.write(_records(3))
    kept = tmp_path / "copy.jsonl"
    shutil.copy(path, kept)
    assert spool.depth() == 3
    assert spool.replay(db.cursor(), "UTC") == 3
    assert spool.depth() == 0
    shutil.copy(kept, path)
    spool.replay(db.cursor(), "UTC")
    (count,) = (
        db.cursor()
        .execute("SELECT count(*), count(DISTINCT event_id) FROM webhook_events")
        .fetchall()
    )
    assert count == (3, 3)
    assert not path.exists()


def test_a_spool_left_by_a_previous_process_is_replayed_at_start(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    left: Sequence[EventRecord] = _records(4, prefix="left")
    spool.write(left[:2])
    spool.write(left[2:])
    # What a process that died mid-write leaves: never acknowledged, never replayed, removed.
    partial = tmp_path / "spool" / "spool-00000000000000000000-1.partial"
    partial.write_text('{"trunc')
    with app_client(tmp_path) as client:
        assert not partial.exists()
        # Replayed by the writer thread in steps, between new webhooks.
        wait_until(lambda: rows("SELECT count(*) AS n FROM webhook_events")[0]["n"] == 4)
        stored = rows("SELECT call_uuid, event_id::VARCHAR AS id FROM webhook_events")
        wait_until(lambda: client.get("/healthz").json()["status"] == "ok")
        health = client.get("/healthz").json()
        # A retry of a spooled webhook arriving after the restart is still a duplicate.
        assert client.post("/plivo/hangup", data={"CallUUID": "left0"}).status_code == 200
        (retry,) = rows(
            "SELECT duplicate FROM webhook_events WHERE call_uuid = 'left0'"
            " ORDER BY received_at DESC LIMIT 1"
        )
    assert sorted(str(row["id"]) for row in stored) == sorted(str(r.event_id) for r in left)
    assert health["spool_depth"] == 0
    assert retry["duplicate"] is True
    assert not list((tmp_path / "spool").glob("spool-*"))


def test_when_the_spool_fails_too_the_webhook_is_refused_not_lost_silently(
    tmp_path: Path, disk: FailingDisk, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_write(self: Spool, records: Sequence[EventRecord]) -> Path:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Spool, "write", broken_write)
    with app_client(tmp_path) as client:
        response = client.post("/plivo/hangup", data={"CallUUID": "lost"})
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "storage_unavailable"
        rt = client.app.runtime
        assert rt is not None
        # The writer survives: once the disk is back, webhooks are stored again.
        disk.failing = False
        monkeypatch.undo()
        assert client.post("/plivo/hangup", data={"CallUUID": "ok"}).status_code == 200
        assert [r["call_uuid"] for r in rows("SELECT call_uuid FROM webhook_events")] == ["ok"]


def test_a_spool_step_that_cannot_confirm_its_file_keeps_the_spool(tmp_path: Path) -> None:
    database = Database(tmp_path / "confirm.duckdb")
    spool = Spool(tmp_path / "spool")
    for first in range(0, 30, 10):
        spool.write(_records(10, prefix=f"f{first}-"))

    def gone() -> None:
        raise RuntimeError("the database file was replaced")

    with pytest.raises(RuntimeError):
        spool.replay_some(database.cursor(), "UTC", 25, committed=gone)
    assert spool.depth() == 30 and len(spool.files()) == 3
    # A crash after a step's commit: a new process replays from the files' start, and what
    # is already stored is skipped.
    assert spool.replay_some(database.cursor(), "UTC", 15) == 15
    assert spool.depth() == 15
    again = Spool(tmp_path / "spool")
    assert again.replay(database.cursor(), "UTC") > 0
    (count,) = (
        database.cursor()
        .execute("SELECT count(*), count(DISTINCT event_id) FROM webhook_events")
        .fetchall()
    )
    database.close()
    assert count == (30, 30)
    assert not list((tmp_path / "spool").glob("spool-*"))


def test_a_failed_spool_write_leaves_no_partial_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("callstatus.receiver.spool.os.fsync", full)
    spool = Spool(tmp_path / "spool")
    for _ in range(3):
        with pytest.raises(OSError):
            spool.write(_records(2))
    assert list((tmp_path / "spool").iterdir()) == []
