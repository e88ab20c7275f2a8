"""Erasure reaches the spool: spooled webhooks that mention the number, and the other spooled
webhooks of the same calls, are removed from the files (replayed lines too, so a replay from the
start cannot bring them back); the rest stays and is replayed once, in full; the counts say so."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

from callstatus.core import rollups
from callstatus.core.db import Database
from callstatus.core.records import Params, make_record
from callstatus.privacy.erase import erase, target_for
from callstatus.receiver.spool import Spool
from tests.factories import T0, make_settings, store

NUMBER = "+447911123456"
STORED, SPOOLED, OTHER = (f"bbbbbbbb-0000-0000-0000-00000000000{i}" for i in range(3))
BASE = {"Direction": "inbound", "To": "18005550199", "CallStatus": "completed"}


def spool_lines(spool: Spool, events: list[tuple[str, Params]], minute: int) -> None:
    at = T0 + timedelta(minutes=minute)
    spool.write([make_record(kind, "POST", params, "unchecked", at) for kind, params in events])


def spooled_calls(spool: Spool) -> list[tuple[str, str]]:
    found = []
    for path in spool.files():
        for line in path.read_text().splitlines():
            record = json.loads(line)
            found.append((json.loads(record["params"])["CallUUID"], record["kind"]))
    return found


def test_erase_removes_spooled_webhooks_of_the_number(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    db = Database(tmp_path / "callstatus.duckdb")
    # A call of the number already stored; its hangup still in the spool, without the number.
    store(db, [("answer", {**BASE, "CallUUID": STORED, "From": "447911123456"})])
    spool = Spool(tmp_path / "spool")
    spool_lines(spool, [("hangup", {**BASE, "CallUUID": STORED, "Duration": "5"})], 1)
    # A call of the number only in the spool, with a Dial callback that does not mention it.
    spool_lines(
        spool,
        [
            ("answer", {**BASE, "CallUUID": OTHER, "From": "15550001111"}),
            ("ring", {"CallUUID": STORED, "CallStatus": "ringing"}),
            ("answer", {**BASE, "CallUUID": SPOOLED, "From": f"sip:{NUMBER}@x.io"}),
            (
                "dial_callback",
                {"CallUUID": SPOOLED, "DialALegUUID": SPOOLED, "DialBLegTo": "14155550102"},
            ),
            ("hangup", {**BASE, "CallUUID": OTHER, "From": "15550001111", "Duration": "9"}),
        ],
        2,
    )
    # The first file and the second's first line are replayed already: in the database.
    cur = db.cursor()
    assert spool.replay_some(cur, "UTC", 2) == 2
    rollups.refresh(cur)
    target = target_for(NUMBER, settings)

    dry = erase(cur, settings, target, dry_run=True, trigger="file", spool=spool)
    assert dry.counts["spool"] == 3
    assert len(spooled_calls(spool)) == 5
    assert dry.counts["webhook_events"] == 2
    done = erase(cur, settings, target, dry_run=False, trigger="file", spool=spool)
    assert done.counts["spool"] == 3
    assert "spool" in done.describe()
    # What is left: the other caller's call, whole; the erased call's stored row too.
    assert spooled_calls(spool) == [(OTHER, "answer"), (OTHER, "hangup")]
    assert done.counts["webhook_events"] == 2  # STORED's answer and its replayed hangup
    recorded = json.loads(
        str(cur.execute("SELECT counts FROM erasures WHERE NOT dry_run").fetchall()[0][0])
    )
    assert recorded["spool"] == 3

    # The rest is replayed once: the other caller's answer (replayed before) is not stored twice.
    spool.replay(cur, "UTC")
    assert spool.files() == []
    rows = cur.execute(
        "SELECT params->>'CallUUID', kind FROM webhook_events ORDER BY kind"
    ).fetchall()
    assert rows == [(OTHER, "answer"), (OTHER, "hangup")]
    db.close()


def test_a_spool_replayed_from_the_start_after_an_erasure_stays_erased(tmp_path: Path) -> None:
    """As after a crash: the replayed part of a file is read again from its start."""
    settings = make_settings(tmp_path)
    db = Database(tmp_path / "callstatus.duckdb")
    spool = Spool(tmp_path / "spool")
    spool_lines(
        spool,
        [
            ("answer", {**BASE, "CallUUID": SPOOLED, "From": "447911123456"}),
            ("answer", {**BASE, "CallUUID": OTHER, "From": "15550001111"}),
            ("hangup", {**BASE, "CallUUID": OTHER, "From": "15550001111"}),
        ],
        1,
    )
    cur = db.cursor()
    assert spool.replay_some(cur, "UTC", 1) == 1
    rollups.refresh(cur)
    erase(cur, settings, target_for(NUMBER, settings), dry_run=False, trigger="file", spool=spool)
    Spool(tmp_path / "spool").replay(cur, "UTC")  # a new process: no memory of progress
    rows = cur.execute("SELECT params->>'CallUUID' FROM webhook_events").fetchall()
    assert sorted(rows) == [(OTHER,), (OTHER,)]
    db.close()
