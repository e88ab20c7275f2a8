"""Erasure on a file: every call mentioning the number goes, in every form it was sent in, from
every table and the archive; calls of other numbers stay; a dry run removes nothing; the
erasure is recorded by a pseudonym, never the number; the rollups still equal the views."""

from __future__ import annotations

import json
import random
from datetime import timedelta
from pathlib import Path

import duckdb
import pytest

from callstatus.core import rollups
from callstatus.core.db import Database
from callstatus.core.duplicates import DuplicateTracker
from callstatus.core.numbers import NumberMasker, pseudonym
from callstatus.privacy.erase import NotANumber, erase, target_for
from callstatus.privacy.retention import run_retention
from callstatus.simulator.traffic import TrafficModel
from tests.factories import (
    T0,
    assert_rollups_equal_views,
    deliver,
    make_settings,
    model_records,
    store,
)

NUMBER = "+447911123456"
LOOKALIKE = "+4447911123456"  # the same digits inside a longer number: another person
KEY = "a-number-key-of-thirty-two-chars"
A, B, C, D = (f"aaaaaaaa-0000-0000-0000-00000000000{i}" for i in range(4))


def caller_flows(db: Database) -> None:
    """Hand-built calls: the number as Plivo sends it in several forms, and a lookalike."""
    base = {"Direction": "inbound", "To": "18005550199", "CallStatus": "completed"}
    store(
        db,
        [
            ("answer", {**base, "CallUUID": A, "From": "447911123456"}),
            # A Dial's callback mentions only the agent, but belongs to A: it goes with A.
            (
                "dial_callback",
                {
                    "CallUUID": A,
                    "DialALegUUID": A,
                    "DialBLegUUID": B,
                    "DialBLegTo": "14155550102",
                    "DialAction": "answer",
                },
            ),
            ("hangup", {**base, "CallUUID": A, "From": "447911123456", "Duration": "30"}),
            # The number as a SIP URI in To, and inside a custom SIP header.
            ("hangup", {**base, "CallUUID": C, "From": "15550001111", "To": f"sip:{NUMBER}@x.io"}),
            (
                "hangup",
                {**base, "CallUUID": D, "From": "15550002222", "X-PH-Ref": "cb=00447911123456"},
            ),
        ],
        start=T0 + timedelta(hours=1),
    )
    store(
        db,
        [
            (
                "hangup",
                {**base, "CallUUID": "bbbbbbbb-0000-0000-0000-000000000009", "From": LOOKALIKE},
            )
        ],
        start=T0 + timedelta(hours=2),
    )
    for at, params in [
        (T0, {"From": "%2B447911123456", "To": "18005550199"}),
        (T0, {"From": "15550003333"}),
    ]:
        db.cursor().execute(
            "INSERT INTO rejected_webhooks VALUES (gen_random_uuid(), ?, 'bad_signature',"
            " '/plivo/answer', 'POST', NULL, '{}', ?, false)",
            [at, json.dumps(params)],
        )


@pytest.fixture
def db(tmp_path: Path) -> Database:
    database = Database(tmp_path / "erase.duckdb")
    model = TrafficModel(5)
    starts = model.starts(200, (T0 - timedelta(hours=1)).timestamp(), 2.0, random.Random(5))
    deliver(database, model_records(model, starts), DuplicateTracker())
    caller_flows(database)
    rollups.refresh(database.cursor())
    return database


def calls(db: Database) -> set[str]:
    return {r[0] for r in db.cursor().execute("SELECT call_uuid FROM calls").fetchall()}


def mentions(db: Database, digits: str = NUMBER[1:]) -> int:
    """Rows anywhere whose text holds the digits (not inside a longer run of digits)."""
    cur = db.cursor()
    pattern = rf"(^|[^0-9])(00)?{digits}([^0-9]|$)"
    total = 0
    for table, text in [
        ("webhook_events", "concat_ws(' ', params::VARCHAR, from_number, to_number)"),
        ("rejected_webhooks", "params::VARCHAR"),
        ("calls", "concat_ws(' ', from_number, to_number)"),
        ("dial_legs_rollup", "concat_ws(' ', b_leg_to, b_leg_from, a_from, a_to)"),
    ]:
        (row,) = cur.execute(
            f"SELECT count(*) FROM {table} WHERE regexp_matches({text}, ?)", [pattern]
        ).fetchall()
        total += int(row[0])
    return total


def test_not_a_number_is_refused(tmp_path: Path) -> None:
    with pytest.raises(NotANumber) as refused:
        target_for("alice", make_settings(tmp_path))
    assert "alice" not in str(refused.value)


def test_erase_removes_every_call_mentioning_the_number_and_nothing_else(
    db: Database, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path)
    cur = db.cursor()
    before = calls(db)
    assert mentions(db) > 0 and {A, C, D} <= before
    events_before = cur.execute("SELECT count(*) FROM webhook_events").fetchall()[0][0]
    target = target_for("+44 7911 123456", settings)

    dry = erase(cur, settings, target, dry_run=True, trigger="file")
    assert calls(db) == before  # nothing removed
    assert cur.execute("SELECT count(*) FROM webhook_events").fetchall()[0][0] == events_before
    assert dry.counts["webhook_events"] == 5 and dry.counts["rejected_webhooks"] == 1
    assert dry.counts["calls_rollup"] == 3 and dry.counts["dial_legs_rollup"] == 1

    done = erase(cur, settings, target, dry_run=False, trigger="file")
    assert done.counts == dry.counts
    assert mentions(db) == 0
    assert calls(db) == before - {A, C, D}  # the lookalike's call and the model's calls stay
    assert mentions(db, LOOKALIKE[1:]) == 2  # its webhook and its call
    assert cur.execute("SELECT count(*) FROM rejected_webhooks").fetchall() == [(1,)]
    numbers = cur.execute("SELECT number FROM number_destinations").fetchall()
    assert not [n for (n,) in numbers if "447911123456" in n and LOOKALIKE[1:] not in n]
    assert (
        cur.execute("SELECT count(*) FROM webhook_events").fetchall()[0][0]
        == events_before - done.counts["webhook_events"]
    )
    assert_rollups_equal_views(db)

    rows = cur.execute(
        "SELECT pseudonym, keyed, dry_run, trigger, counts FROM erasures ORDER BY erased_at"
    ).fetchall()
    assert [(r[2], r[3]) for r in rows] == [(True, "file"), (False, "file")]
    assert all(r[0] == target.pseudonym and not r[1] for r in rows)
    assert json.loads(rows[1][4])["webhook_events"] == 5
    recorded = " ".join(str(v) for r in rows for v in r)
    assert "7911123456" not in recorded and "123456" not in recorded

    again = erase(cur, settings, target, dry_run=False, trigger="file")
    assert not any(again.counts.values())


def test_other_numbers_keep_every_row(db: Database, tmp_path: Path) -> None:
    cur = db.cursor()
    per_number = (
        "SELECT from_number, count(*) FROM calls WHERE call_uuid NOT IN (?, ?, ?)"
        " GROUP BY ALL ORDER BY ALL"
    )
    before = cur.execute(per_number, [A, C, D]).fetchall()
    legs = (
        "SELECT b_leg_to, count(*) FROM dial_legs WHERE a_leg_uuid <> ? GROUP BY ALL ORDER BY ALL"
    )
    legs_before = cur.execute(legs, [A]).fetchall()
    settings = make_settings(tmp_path)
    erase(cur, settings, target_for(NUMBER, settings), dry_run=False, trigger="file")
    assert cur.execute(per_number, [A, C, D]).fetchall() == before
    assert cur.execute(legs, [A]).fetchall() == legs_before


def test_erase_rewrites_the_archive(db: Database, tmp_path: Path) -> None:
    folder = tmp_path / "archive"
    settings = make_settings(tmp_path, CALLSTATUS_RETENTION_DAYS=1, CALLSTATUS_ARCHIVE_DIR=folder)
    cur = db.cursor()
    # Everything before T0 + 3 hours goes to the archive: the number's calls included.
    run = run_retention(cur, settings, now=T0 + timedelta(days=1, hours=3))
    assert run is not None and run.archived["webhook_events"] > 5
    files = str(folder / "webhook_events" / "*" / "*.parquet")
    con = duckdb.connect()
    total = con.execute(f"SELECT count(*) FROM read_parquet('{files}')").fetchall()[0][0]

    target = target_for(NUMBER, settings)
    dry = erase(cur, settings, target, dry_run=True, trigger="file")
    assert dry.archive == {"webhook_events": 5, "rejected_webhooks": 1}
    done = erase(cur, settings, target, dry_run=False, trigger="file")
    assert done.archive == dry.archive
    left = con.execute(
        "SELECT count(*), count(*) FILTER (WHERE regexp_matches(params::VARCHAR, $re)"
        " OR list_contains($calls, call_uuid)) FROM read_parquet($files)",
        {"re": r"(^|[^0-9])(00)?447911123456([^0-9]|$)", "calls": [A, C, D], "files": files},
    ).fetchall()[0]
    assert left == (total - 5, 0)
    assert not list(folder.glob("**/.*partial"))


def test_masked_numbers_are_found_by_their_pseudonym(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, CALLSTATUS_NUMBERS="masked", CALLSTATUS_NUMBER_KEY=KEY)
    masker = NumberMasker.from_settings(settings)
    assert masker is not None
    db = Database(tmp_path / "masked.duckdb")
    try:
        params = {"CallUUID": A, "From": NUMBER, "To": "18005550199", "Direction": "inbound"}
        other = {**params, "CallUUID": C, "From": "+15550001111"}
        store(
            db,
            [
                ("answer", masker.mask_params("answer", params)),
                ("answer", masker.mask_params("answer", other)),
            ],
        )
        rollups.refresh(db.cursor())
        stored = db.cursor().execute("SELECT from_number FROM calls ORDER BY 1").fetchall()
        assert pseudonym(NUMBER, KEY) in {r[0] for r in stored}
        target = target_for("00447911123456", settings)
        assert target.keyed and target.pseudonym == pseudonym(NUMBER, KEY)
        done = erase(db.cursor(), settings, target, dry_run=False, trigger="file")
        assert done.counts["webhook_events"] == 1 and done.counts["calls_rollup"] == 1
        assert calls(db) == {C}
        assert_rollups_equal_views(db)
    finally:
        db.close()


def test_the_hourly_aggregates_lose_the_number_and_count_what_remains(
    db: Database, tmp_path: Path
) -> None:
    """A B-leg number (an agent's) erased: no hourly aggregate row names it, the hours whose calls
    went count what remains (as a full rebuild counts it), and the hours retention already
    emptied of calls keep their totals without the number."""
    cur = db.cursor()
    (agent,) = cur.execute(
        "SELECT b_leg_to FROM dial_legs_rollup WHERE regexp_matches(b_leg_to, '^[0-9]+$')"
        " GROUP BY ALL ORDER BY count(*) DESC, b_leg_to LIMIT 1"
    ).fetchall()[0]
    naming = {
        "legs_hourly": f"SELECT count(*) FROM legs_hourly WHERE b_leg_to = '{agent}'",
        "timings_hourly": f"SELECT count(*) FROM timings_hourly WHERE destination = '{agent}'",
    }
    horizon = T0 - timedelta(days=1)
    past = f" AND hour < '{horizon.isoformat()}'"
    run_retention(
        cur, make_settings(tmp_path, CALLSTATUS_RETENTION_DAYS=1), now=horizon + timedelta(days=1)
    )
    # Past the horizon the calls are gone but the aggregates still name the agent.
    assert cur.execute(naming["legs_hourly"] + past).fetchall()[0][0] > 0
    assert (
        cur.execute(naming["legs_hourly"]).fetchall()[0][0]
        > cur.execute(naming["legs_hourly"] + past).fetchall()[0][0]
    )
    total_before = cur.execute("SELECT sum(calls) FROM calls_hourly").fetchall()[0][0]
    settings = make_settings(tmp_path)
    target = target_for(f"+{agent}", settings)
    dry = erase(cur, settings, target, dry_run=True, trigger="file")
    done = erase(cur, settings, target, dry_run=False, trigger="file")
    assert done.counts["hourly_aggregates"] == dry.counts["hourly_aggregates"] > 0
    assert done.counts["calls_rollup"] > 0
    for sql in naming.values():
        assert cur.execute(sql).fetchall() == [(0,)]
    assert cur.execute("SELECT sum(calls) FROM calls_hourly").fetchall()[0][0] == (
        total_before - done.counts["calls_rollup"]
    )
    # What the erase left equals what a full rebuild computes from the rollups.
    for a in rollups.AGGREGATES:
        cur.execute(f"CREATE TEMP TABLE kept_{a.table} AS SELECT * FROM {a.table}")
    rollups.refresh(cur, full=True)
    for a in rollups.AGGREGATES:
        for left, right in ((a.table, f"kept_{a.table}"), (f"kept_{a.table}", a.table)):
            differ = cur.execute(f"SELECT * FROM {left} EXCEPT SELECT * FROM {right}").fetchall()
            assert differ == [], a.table
