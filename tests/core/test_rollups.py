"""Rollup tables equal their views, whatever the delivery order and the split into refreshes."""

from __future__ import annotations

import asyncio
import json
import random
import signal
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest

from callstatus.core import rollups
from callstatus.core.db import Database
from callstatus.core.duplicates import DuplicateTracker
from callstatus.core.records import make_record
from callstatus.core.storage import insert_events, move_inbox
from callstatus.simulator.seed import seed_calls
from callstatus.simulator.simulate import Plan, Tally, Target, simulate
from callstatus.simulator.traffic import TrafficModel
from tests.factories import (
    SAMPLES,
    T0,
    assert_rollups_equal_views,
    deliver,
    model_records,
    sample_records,
    split,
)
from tests.servers import running_server


@pytest.mark.parametrize("order", ["arrival", "shuffled", "reversed"])
@pytest.mark.parametrize("seed", [1, 2])
def test_incremental_refreshes_equal_the_views(db: Database, order: str, seed: int) -> None:
    rng = random.Random(seed)
    starts = [T0.timestamp() + 7.0 * i for i in range(120)]
    records = model_records(TrafficModel(seed), starts)
    # Plivo retries: the same webhooks again, later (marked duplicates, or not when a
    # retry escaped the tracker, which the views must count once either way).
    records += [
        make_record(
            r.kind,
            r.http_method,
            r.params,
            "unchecked",
            r.received_at + timedelta(seconds=rng.uniform(1, 600)),
        )
        for r in rng.sample(records, 40)
    ]
    if order == "shuffled":
        rng.shuffle(records)
    elif order == "reversed":
        records.reverse()
    else:
        records.sort(key=lambda r: r.received_at)
    tracker = DuplicateTracker()
    for batch in split(records, 7, rng):
        if rng.random() < 0.3:
            tracker = DuplicateTracker()  # a restart: retries of earlier webhooks escape
        deliver(db, batch, tracker)
        if rng.random() < 0.8:  # sometimes two batches before one refresh
            rollups.refresh(db.cursor())
    rollups.refresh(db.cursor())
    assert_rollups_equal_views(db)


def test_a_late_b_leg_hangup_updates_its_leg(db: Database) -> None:
    records = sample_records("inbound_simultaneous_dial", T0)
    late = [r for r in records if r.kind == "dial_callback"][-1]
    deliver(db, [r for r in records if r is not late], DuplicateTracker())
    rollups.refresh(db.cursor())
    assert_rollups_equal_views(db)
    before = db.cursor().execute("SELECT outcome FROM dial_legs_rollup ORDER BY b_leg_uuid")
    # The leg left without its hangup is in progress until the hangup arrives.
    assert "in-progress" in {row[0] for row in before.fetchall()}
    again = make_record(late.kind, "POST", late.params, "unchecked", T0 + timedelta(hours=2))
    deliver(db, [late, again], DuplicateTracker())  # late, and delivered twice
    assert rollups.refresh(db.cursor()) == 2
    assert_rollups_equal_views(db)
    after = db.cursor().execute("SELECT outcome FROM dial_legs_rollup").fetchall()
    assert "in-progress" not in {row[0] for row in after}


def test_a_late_a_leg_hangup_updates_its_b_legs(db: Database) -> None:
    """The A leg's hangup arriving in a later refresh than its B legs' webhooks still reaches
    the B legs' leg_at and a_* columns, though no webhook of the B legs came with it."""
    records = sample_records("inbound_simultaneous_dial", T0)
    hangup = [r for r in records if r.kind == "hangup"]
    assert hangup
    deliver(db, [r for r in records if r.kind != "hangup"], DuplicateTracker())
    rollups.refresh(db.cursor())
    assert_rollups_equal_views(db)
    query = "SELECT DISTINCT a_outcome FROM dial_legs_rollup"
    assert db.cursor().execute(query).fetchall() == [("in-progress",)]
    deliver(db, hangup, DuplicateTracker())
    assert rollups.refresh(db.cursor()) == len(hangup)
    assert_rollups_equal_views(db)
    assert db.cursor().execute(query).fetchall() != [("in-progress",)]


def test_b_legs_before_their_a_leg_take_its_columns_later(db: Database) -> None:
    records = sample_records("inbound_simultaneous_dial", T0)
    deliver(db, [r for r in records if r.kind == "dial_callback"], DuplicateTracker())
    rollups.refresh(db.cursor())
    assert_rollups_equal_views(db)
    unseen = "SELECT count(*) FROM dial_legs_rollup WHERE a_started_at IS NULL"
    assert db.cursor().execute(unseen).fetchone() != (0,)
    deliver(db, [r for r in records if r.kind != "dial_callback"], DuplicateTracker())
    rollups.refresh(db.cursor())
    assert_rollups_equal_views(db)
    assert db.cursor().execute(unseen).fetchone() == (0,)


@pytest.mark.parametrize("name", sorted(p.stem for p in SAMPLES.glob("*.json")))
def test_every_sample_flow_event_by_event(db: Database, name: str) -> None:
    tracker = DuplicateTracker()
    for record in sample_records(name, T0):
        deliver(db, [record], tracker)
        rollups.refresh(db.cursor())
        assert_rollups_equal_views(db)


def test_seeded_batches_then_a_full_rebuild_give_the_same_rows(db: Database) -> None:
    model = TrafficModel(5)
    base = T0.timestamp()
    for k in range(3):  # three seeds, hours apart, a refresh after each
        starts = [base + 3600.0 * k + 11.0 * i for i in range(150)]
        seed_calls(
            db,
            model,
            starts,
            signature="unchecked",
            plivo_timezone="UTC",
            first_index=150 * k,
            workers=1,
        )
        rollups.refresh(db.cursor())
        assert_rollups_equal_views(db)
    cur = db.cursor()
    incremental = {
        t: cur.execute(f"SELECT * FROM {t} ORDER BY ALL").fetchall() for t in rollups.TABLES
    }
    rollups.refresh(cur, full=True)
    for table in rollups.TABLES:
        assert cur.execute(f"SELECT * FROM {table} ORDER BY ALL").fetchall() == incremental[table]


def test_far_behind_rebuilds_in_full(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    records = model_records(TrafficModel(3), [T0.timestamp() + 5.0 * i for i in range(40)])
    tracker = DuplicateTracker()
    deliver(db, records[:50], tracker)
    rollups.refresh(db.cursor())
    rebuilds: list[int] = []
    real = rollups._rebuild
    monkeypatch.setattr(rollups, "_rebuild", lambda cur: (rebuilds.append(1), real(cur)))
    deliver(db, records[50:60], tracker)
    rollups.refresh(db.cursor())
    assert rebuilds == []
    monkeypatch.setattr(rollups, "FULL_REBUILD_ROWS", 20)
    deliver(db, records[60:], tracker)
    rollups.refresh(db.cursor())
    assert rebuilds == [1]
    assert_rollups_equal_views(db)


def test_seq_grows_with_every_append_across_checkpoint_reopen_and_deletion(
    tmp_path: Path,
) -> None:
    """The watermark's premise: moved rows get higher seqs than every row moved before, no gaps,
    even once the newest rows were deleted."""
    path = tmp_path / "seq.duckdb"
    records = model_records(TrafficModel(4), [T0.timestamp() + 5.0 * i for i in range(60)])
    tracker = DuplicateTracker()
    given = 0
    for step, batch in enumerate(split(records, 6, random.Random(4))):
        db = Database(path)
        cur = db.cursor()
        if step == 2:  # a transaction that appends, then rolls back, must leave no trace
            cur.execute("BEGIN")
            insert_events(cur, batch, "UTC")
            cur.execute("ROLLBACK")
        deliver(db, batch, tracker)
        move_inbox(cur)
        seqs = [
            r[0]
            for r in cur.execute(
                "SELECT seq FROM webhook_rows WHERE seq >= ? ORDER BY seq", [given]
            ).fetchall()
        ]
        assert seqs == list(range(given, given + len(batch)))
        given += len(batch)
        if step % 2:
            cur.execute("CHECKPOINT")
        if step == 3:  # the newest rows deleted: their numbers are not given again
            cur.execute("DELETE FROM webhook_rows WHERE seq >= ?", [given - 3])
            given_before = given
            cur.execute("CHECKPOINT")
            assert rollups.last_seq(cur) == given_before - 1
        db.close()


def test_the_watermark_survives_a_restart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "restart.duckdb"
    records = model_records(TrafficModel(6), [T0.timestamp() + 9.0 * i for i in range(50)])
    db = Database(path)
    deliver(db, records[:100], DuplicateTracker())
    rollups.refresh(db.cursor())
    mark = rollups.watermark(db.cursor())
    db.close()
    db = Database(path)
    cur = db.cursor()
    assert rollups.watermark(cur) == mark == 99
    assert rollups.is_current(cur)
    monkeypatch.setattr(rollups, "_rebuild", lambda cur: pytest.fail("rebuilt in full"))
    deliver(db, records[100:], DuplicateTracker())
    assert not rollups.is_current(cur)
    assert rollups.refresh(cur) == len(records) - 100
    assert_rollups_equal_views(db)
    db.close()


def test_rows_removed_behind_its_back_do_not_wedge_the_rollups(db: Database) -> None:
    tracker = DuplicateTracker()
    deliver(db, sample_records("inbound_simultaneous_dial", T0), tracker)
    cur = db.cursor()
    rollups.refresh(cur)
    # Never done by callstatus outside retention and erasure (which fix the rollups themselves),
    # but the newest rows removed must not wedge the refresh: later webhooks are still read,
    # and a full refresh brings the rollups back to the views.
    cur.execute("DELETE FROM webhook_rows WHERE seq >= 3")
    assert rollups.refresh(cur) == 0
    deliver(db, sample_records("busy_b_leg", T0 + timedelta(hours=1)), tracker)
    assert rollups.refresh(cur) > 0
    (read,) = cur.execute(
        "SELECT count(*) FROM calls_rollup WHERE started_at >= ?", [T0 + timedelta(hours=1)]
    ).fetchall()[0]
    assert read > 0
    rollups.refresh(cur, full=True)
    assert_rollups_equal_views(db)


def test_nothing_new_writes_nothing(db: Database) -> None:
    deliver(db, sample_records("busy_b_leg", T0), DuplicateTracker())
    cur = db.cursor()
    assert rollups.refresh(cur) > 0
    stamp = cur.execute("SELECT max(refreshed_at) FROM rollup_state").fetchone()
    assert rollups.refresh(cur) == 0
    assert cur.execute("SELECT max(refreshed_at) FROM rollup_state").fetchone() == stamp


def test_an_empty_database_is_current_after_one_refresh(db: Database) -> None:
    cur = db.cursor()
    assert not rollups.is_current(cur)
    assert rollups.refresh(cur) == 0
    assert_rollups_equal_views(db)


@pytest.mark.parametrize("macro", ["calls_since", "dials_since", "dial_legs_since"])
def test_the_time_bound_reaches_the_scan(db: Database, macro: str) -> None:
    records = sample_records("inbound_simultaneous_dial", T0)
    tracker = DuplicateTracker()
    # Some webhooks moved to webhook_rows, the rest still in the inbox: both are scanned.
    deliver(db, records[:4], tracker)
    move_inbox(db.cursor())
    deliver(db, records[4:], tracker)
    # A bound inside the data: one below every row would be dropped as always true.
    since = T0 + timedelta(seconds=3)
    plan = (
        db.cursor()
        .execute(f"EXPLAIN (FORMAT json) SELECT * FROM {macro}($since)", {"since": since})
        .fetchall()[0][1]
    )
    scans = [
        n
        for n in _nodes(json.loads(plan))
        if n["name"] == "SEQ_SCAN"
        and n["extra_info"].get("Table", "").endswith(("webhook_rows", "webhook_inbox"))
    ]
    # webhook_events is a view over both tables, read once or more per macro (dials_since also
    # reads call records): the bound reaches each scan.
    assert scans and len(scans) % 2 == 0
    for scan in scans:
        assert any(f.startswith("(received_at >= ") for f in scan["extra_info"]["Filters"])


def _nodes(plan: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m for n in plan for m in [n, *_nodes(n.get("children", []))]]


def _snapshot_watermark(snapshot: Path) -> int | None:
    """The rollups' watermark in the server's latest snapshot (None before the first)."""
    try:
        con = duckdb.connect(str(snapshot), read_only=True)
    except (duckdb.Error, FileNotFoundError):
        return None
    try:
        return rollups.watermark(con)
    finally:
        con.close()


@pytest.mark.slow
def test_ingest_keeps_flowing_while_the_server_refreshes(tmp_path: Path) -> None:
    path = tmp_path / "live.duckdb"
    db = Database(path)
    model = TrafficModel(9)
    now = time.time()
    # A day of earlier calls, so that each refresh has a real window to read.
    seeded = seed_calls(
        db,
        model,
        [now - 86_400 + 20.0 * i for i in range(4000)],
        signature="valid",
        plivo_timezone="UTC",
        workers=1,
    ).events
    db.close()
    token = "rollup-token-0123456789"
    snapshot = tmp_path / "live-snapshot.duckdb"
    env = {"PLIVO_AUTH_TOKEN": token, "CALLSTATUS_SNAPSHOT_INTERVAL": "1"}
    with running_server(path, env) as server:
        plan = Plan(600, rate=80, concurrency=16, first_index=4000)
        target = Target(server.url, server.url, token)
        tallies: list[Tally] = []
        load = threading.Thread(
            target=lambda: tallies.append(asyncio.run(simulate(target, model, plan)))
        )
        load.start()
        # The rollups' watermark as the server's snapshots show it, while the load runs.
        marks: list[int] = []
        while load.is_alive():
            mark = _snapshot_watermark(snapshot)
            if mark is not None and mark not in marks:
                marks.append(mark)
            load.join(0.2)
        assert tallies and tallies[0].ok, tallies
        tally = tallies[0]
        # Two refreshes at least moved the watermark on while webhooks kept arriving.
        assert len(marks) >= 3 and marks == sorted(marks), marks
        assert server.stop(signal.SIGTERM) == 0
    db = Database(path, read_only=True)
    try:
        cur = db.cursor()
        count = cur.execute("SELECT count(*) FROM webhook_events").fetchone()
        assert count is not None and count[0] == sum(tally.accepted.values()) + seeded
        assert_rollups_equal_views(db)  # the final refresh at stop caught up
    finally:
        db.close()
