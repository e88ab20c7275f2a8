"""webhook_events as a view over webhook_rows and the receiver's inbox (migration 0006)."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from pathlib import Path

from callstatus.core import db as db_module
from callstatus.core.db import Database, connect
from callstatus.core.duplicates import DuplicateTracker
from callstatus.core.records import Params, make_record
from callstatus.core.storage import InboxAppender, events_count_and_last, move_inbox
from tests.factories import T0, store

# Values that exercise every typing rule: a list, blanks, spaces, floats, overflow, bad booleans,
# a time zone with DST, unicode, an unknown parameter.
AWKWARD: list[tuple[str, Params]] = [
    (
        "hangup",
        {
            "CallUUID": ["first", "second"],
            "Direction": " inbound ",
            "From": "",
            "To": "Zoë ☎",
            "HangupCauseCode": "4000.0",
            "Duration": "99999999999",
            "BillDuration": "abc",
            "StartTime": "2026-03-29 01:30:00",
            "AnswerTime": "2026-03-29 03:30:00",
            "EndTime": "not a time",
            "Unknown": "kept in params only",
        },
    ),
    (
        "dial_action",
        {"CallUUID": "a", "DialRingStatus": "False", "DialStatus": "completed"},
    ),
    ("machine_detection", {"CallUUID": "m", "Machine": "maybe"}),
    ("machine_detection", {"CallUUID": "n", "Machine": "true"}),
    ("dial_callback", {"CallUUID": "a", "DialBLegPosition": "2", "DialBLegUUID": "b"}),
]


def _events(db: Database) -> list[tuple[object, ...]]:
    return db.cursor().execute("SELECT * FROM webhook_events ORDER BY received_at").fetchall()


def test_webhook_events_reads_the_same_before_and_after_the_move(db: Database) -> None:
    store(db, AWKWARD, plivo_timezone="Europe/Berlin")
    in_inbox = _events(db)
    assert move_inbox(db.cursor()) == len(AWKWARD)
    moved = _events(db)
    assert moved == in_inbox
    cur = db.cursor()
    assert cur.execute("SELECT count(*) FROM webhook_inbox").fetchone() == (0,)
    assert cur.execute("SELECT count(*) FROM webhook_rows").fetchone() == (len(AWKWARD),)
    # Spot checks of the typing rules, read through the view.
    row = cur.execute(
        "SELECT call_uuid, direction, from_number, to_number, hangup_cause_code, duration,"
        " bill_duration, start_time, answer_time, end_time FROM webhook_events"
        " WHERE kind = 'hangup'"
    ).fetchone()
    assert row is not None
    assert row[:7] == ("second", "inbound", None, "Zoë ☎", 4000, None, None)
    # Berlin: 01:30 is CET (UTC+1), 03:30 is already CEST (UTC+2).
    assert row[7] == T0.replace(month=3, day=29, hour=0, minute=30)
    assert row[8] == T0.replace(month=3, day=29, hour=1, minute=30)
    assert row[9] is None
    flags = cur.execute(
        "SELECT call_uuid, machine, dial_ring_status, dial_b_leg_position FROM webhook_events"
        " WHERE kind IN ('machine_detection', 'dial_action', 'dial_callback') ORDER BY received_at"
    ).fetchall()
    assert flags == [("a", None, False, None), ("m", None, None, None), ("n", True, None, None),
                     ("a", None, None, 2)]  # fmt: skip


def test_a_move_keeps_arrival_order_and_later_webhooks_stay_in_the_inbox(db: Database) -> None:
    store(db, AWKWARD[:3])
    move_inbox(db.cursor())
    store(db, AWKWARD[3:], start=T0 + timedelta(minutes=1))
    cur = db.cursor()
    assert cur.execute("SELECT count(*) FROM webhook_inbox").fetchone() == (2,)
    assert [r[0] for r in cur.execute("SELECT kind FROM webhook_events").fetchall()] == [
        kind for kind, _ in AWKWARD
    ]
    move_inbox(cur)
    rows = cur.execute("SELECT kind FROM webhook_rows ORDER BY seq").fetchall()
    assert [r[0] for r in rows] == [kind for kind, _ in AWKWARD]


def test_moving_while_the_writer_appends_loses_and_doubles_nothing(tmp_path: Path) -> None:
    database = Database(tmp_path / "concurrent.duckdb")
    appended: list[int] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def write() -> None:
        inbox = InboxAppender(database.cursor(), "UTC")
        batch = 0
        try:
            while not stop.is_set() and batch < 2000:
                records = [
                    make_record("hangup", "POST", {"CallUUID": f"c{batch}-{i}"}, "unchecked", T0)
                    for i in range(10)
                ]
                inbox.append(records)
                appended.append(len(records))
                batch += 1
        except BaseException as exc:
            errors.append(exc)

    def move() -> None:
        cur = database.cursor()
        try:
            while not stop.is_set():
                move_inbox(cur)
                time.sleep(0.005)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write), threading.Thread(target=move)]
    for thread in threads:
        thread.start()
    threads[0].join(timeout=60)
    stop.set()
    threads[1].join(timeout=60)
    assert not errors
    cur = database.cursor()
    total, distinct = cur.execute(
        "SELECT count(*), count(DISTINCT call_uuid) FROM webhook_events"
    ).fetchone() or (0, 0)
    assert total == distinct == sum(appended) > 0
    move_inbox(cur)
    assert cur.execute("SELECT count(*) FROM webhook_rows").fetchone() == (sum(appended),)
    database.close()


def test_a_database_from_before_the_inbox_keeps_its_webhooks(tmp_path: Path) -> None:
    path = tmp_path / "old.duckdb"
    con = connect(path)
    con.execute("CREATE TABLE schema_migrations (name VARCHAR PRIMARY KEY, applied_at TIMESTAMPTZ)")
    for name, sql in db_module.migrations():
        if name >= "0006":
            break
        con.execute(sql)
        con.execute("INSERT INTO schema_migrations VALUES (?, now())", [name])
    # A webhook stored by the 40-column insert of earlier versions.
    con.execute(
        "INSERT INTO webhook_events (event_id, received_at, kind, http_method, params, signature,"
        " duplicate, params_hash, call_uuid, duration) VALUES (gen_random_uuid(), ?, 'hangup',"
        " 'POST', '{\"CallUUID\":\"old\",\"Duration\":\"5\"}', 'valid', false, 1, 'old', 5)",
        [T0],
    )
    con.close()
    database = Database(path)
    store(database, [("hangup", {"CallUUID": "new", "Duration": "7"})], tracker=DuplicateTracker())
    cur = database.cursor()
    assert cur.execute(
        "SELECT call_uuid, duration FROM webhook_events ORDER BY received_at, call_uuid"
    ).fetchall() == [("new", 7), ("old", 5)]
    assert cur.execute("SELECT call_uuid, duration_s FROM calls ORDER BY 1").fetchall() == [
        ("new", 7),
        ("old", 5),
    ]
    database.close()


def test_the_duplicate_tracker_remembers_recent_fingerprints_within_its_bound() -> None:
    tracker = DuplicateTracker(capacity=100)
    assert tracker.flags(range(50)) == [False] * 50
    # Every one of the last capacity/2 distinct fingerprints is remembered, repeats included.
    assert tracker.flags([0, 49, 49]) == [True, True, True]
    assert tracker.flags(range(1000, 1200)) == [False] * 200
    assert tracker.size <= 100
    # Long forgotten: a repeat this late counts as new (the views never double-count anyway).
    assert tracker.flags([0]) == [False]


def test_count_and_newest_read_from_the_tables_equal_the_views(db: Database) -> None:
    cur = db.cursor()
    view = "SELECT count(*), max(received_at) FROM webhook_events"
    newest_not_cdr = "SELECT max(received_at) FROM webhook_events WHERE kind <> 'cdr'"

    def both() -> tuple[object, object]:
        (tables,) = cur.execute(events_count_and_last()).fetchall()
        (viewed,) = cur.execute(view).fetchall()
        (not_cdr,) = cur.execute(events_count_and_last(where="kind <> 'cdr'")).fetchall()
        assert not_cdr[1] == cur.execute(newest_not_cdr).fetchall()[0][0]
        assert tables == viewed
        return tables

    assert both() == (0, None)  # empty: no rows anywhere
    store(db, AWKWARD)
    assert both() == (len(AWKWARD), T0 + timedelta(seconds=len(AWKWARD) - 1))  # inbox only
    move_inbox(cur)
    store(db, [*AWKWARD[:2], ("cdr", {"CallUUID": "c"})], start=T0 + timedelta(hours=1))
    # Some in webhook_rows, some in the inbox, the newest a call record.
    assert both() == (len(AWKWARD) + 3, T0 + timedelta(hours=1, seconds=2))
    (newest_webhook,) = cur.execute(events_count_and_last(where="kind <> 'cdr'")).fetchall()
    assert newest_webhook[1] == T0 + timedelta(hours=1, seconds=1)
    move_inbox(cur)
    assert both() == (len(AWKWARD) + 3, T0 + timedelta(hours=1, seconds=2))  # rows only
