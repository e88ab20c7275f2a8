"""The receivers' PostgreSQL writer on a real server: group commit, duplicates and repeats
decided the same across receivers, refusals, the spool while PostgreSQL is down, replay."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg

from callstatus.cluster import inbox, pg
from callstatus.cluster.writer import PgWriter
from callstatus.core.duplicates import DuplicateTracker, five_minutes
from callstatus.core.records import EventRecord, make_record
from callstatus.receiver.rejected import refusal
from callstatus.receiver.spool import Spool
from tests.factories import wait_until
from tests.postgres import PostgresServer, reset


def hangup(seq: str, at: datetime | None = None, **extra: str) -> EventRecord:
    params: dict[str, str | list[str]] = {
        "CallUUID": seq,
        "Event": "Hangup",
        "Duration": "42",
        "StartTime": "2026-11-26 10:00:00",
        **extra,
    }
    return make_record("hangup", "POST", params, "valid", at or datetime.now(UTC))


def writer(url: str, folder: Path, name: str = "127.0.0.1:9001", **kwargs: float) -> PgWriter:
    started = PgWriter(url, Spool(folder / name), "UTC", name, **kwargs)  # type: ignore[arg-type]
    started.start()
    return started


def store_all(target: PgWriter, records: Sequence[EventRecord]) -> list[str]:
    async def run() -> list[str]:
        return list(await asyncio.gather(*(target.store(r) for r in records)))

    return asyncio.run(run())


def query(url: str, sql: str, params: Sequence[object] = ()) -> list[tuple[object, ...]]:
    with psycopg.connect(url) as con:
        return con.execute(sql, params).fetchall()


def test_a_batch_is_one_transaction_and_rows_carry_what_replicas_need(
    url: str, tmp_path: Path
) -> None:
    target = writer(url, tmp_path)
    try:
        records = [hangup(f"call-{n}") for n in range(300)]
        assert store_all(target, records) == ["stored"] * 300
    finally:
        target.stop()
    rows = query(url, "SELECT count(*), count(DISTINCT tx), bool_or(duplicate) FROM webhook_inbox")
    count, transactions, any_duplicate = rows[0]
    assert count == 300
    assert isinstance(transactions, int) and transactions < 300  # grouped, not one commit each
    assert any_duplicate is False
    ((receiver, typed, params, kind),) = query(
        url,
        "SELECT receiver, typed, params, kind FROM webhook_inbox WHERE params LIKE %s",
        ('%"call-7"%',),
    )
    assert receiver == "127.0.0.1:9001"
    assert kind == "hangup"
    assert json.loads(str(typed))["duration"] == 42
    assert json.loads(str(params))["CallUUID"] == "call-7"
    assert target.stored == 300


def test_copies_taken_by_two_receivers_are_flagged_once_and_repeats_counted(
    url: str, tmp_path: Path
) -> None:
    first = writer(url, tmp_path, "127.0.0.1:9001")
    second = writer(url, tmp_path, "127.0.0.1:9002")
    at = datetime.now(UTC)
    try:
        # Five deliveries of one webhook, alternately to each receiver, some in one batch.
        assert store_all(first, [hangup("same", at)]) == ["stored"]
        assert store_all(second, [hangup("same", at + timedelta(seconds=1))]) == ["stored"]
        store_all(first, [hangup("same", at + timedelta(seconds=2))])
        store_all(second, [hangup("same", at + timedelta(seconds=3)) for _ in range(2)])
        # One webhook per receiver, never repeated.
        store_all(first, [hangup("only-a", at)])
        store_all(second, [hangup("only-b", at)])
    finally:
        first.stop()
        second.stop()
    rows = query(
        url,
        "SELECT params::json->>'CallUUID', duplicate, receiver FROM webhook_inbox ORDER BY seq",
    )
    same = [(duplicate, receiver) for uuid_, duplicate, receiver in rows if uuid_ == "same"]
    # The first three deliveries are stored (the first not a duplicate), the rest counted.
    assert [d for d, _ in same] == [False, True, True]
    assert {r for _, r in same} == {"127.0.0.1:9001", "127.0.0.1:9002"}
    assert {(u, d) for u, d, _ in rows if u != "same"} == {("only-a", False), ("only-b", False)}
    ((repeats,),) = query(url, "SELECT sum(repeats) FROM webhook_repeats WHERE kind = 'hangup'")
    assert repeats == 2
    ((deliveries,),) = query(url, "SELECT max(deliveries) FROM webhook_fingerprints")
    assert deliveries == 5


def test_a_repeat_after_the_window_is_stored_again(url: str, tmp_path: Path) -> None:
    target = writer(url, tmp_path, window_s=0.5)
    try:
        for _ in range(4):
            store_all(target, [hangup("slow-replay")])
        time.sleep(0.6)
        store_all(target, [hangup("slow-replay")])
    finally:
        target.stop()
    ((stored,),) = query(url, "SELECT count(*) FROM webhook_inbox")
    ((repeats,),) = query(url, "SELECT coalesce(sum(repeats), 0) FROM webhook_repeats")
    assert (stored, repeats) == (4, 1)


def test_refused_requests_are_recorded_with_their_receiver(url: str, tmp_path: Path) -> None:
    target = writer(url, tmp_path)
    try:
        target.store_rejected(
            refusal(
                "bad_signature",
                "POST",
                "/plivo/hangup",
                "https://calls.example.com/plivo/hangup",
                {"host": "calls.example.com", "cookie": "not kept"},
                {"CallUUID": "x"},
                datetime.now(UTC),
            )
        )
        store_all(target, [hangup("after-refusal")])  # the refusal is written before it
    finally:
        target.stop()
    ((reason, headers, receiver),) = query(
        url, "SELECT reason, headers, receiver FROM rejected_webhooks"
    )
    assert (reason, receiver) == ("bad_signature", "127.0.0.1:9001")
    assert json.loads(str(headers)) == {"host": "calls.example.com"}


def test_heartbeat_row_says_what_the_receiver_stored(url: str, tmp_path: Path) -> None:
    target = writer(url, tmp_path, heartbeat_s=0.1)
    try:
        store_all(target, [hangup(f"beat-{n}") for n in range(5)])

        def beaten() -> bool:
            rows = query(url, "SELECT stored FROM receivers WHERE receiver = '127.0.0.1:9001'")
            return bool(rows) and rows[0][0] == 5

        wait_until(beaten)
    finally:
        target.stop()
    ((seen_at, last_webhook_at, spool_depth),) = query(
        url, "SELECT seen_at, last_webhook_at, spool_depth FROM receivers"
    )
    assert isinstance(seen_at, datetime) and isinstance(last_webhook_at, datetime)
    assert spool_depth == 0
    assert last_webhook_at == target.last_event_at


def test_a_spool_of_rows_already_stored_is_not_stored_twice(url: str, tmp_path: Path) -> None:
    """A commit whose reply was lost: its batch was spooled though PostgreSQL holds it."""
    first = writer(url, tmp_path)
    records = [hangup(f"lost-reply-{n}") for n in range(40)] + [hangup("twice"), hangup("twice")]
    try:
        assert store_all(first, records) == ["stored"] * 42
    finally:
        first.stop()
    spool = Spool(tmp_path / "127.0.0.1:9001")
    spool.write(records)  # the same event_ids, as the failed commit spooled them
    spool.write([hangup("only-in-spool")])
    assert spool.depth() == 43
    # Replayed as soon as the writer starts: its depth may be 0 by the time it is read.
    replaying = writer(url, tmp_path)
    try:
        wait_until(lambda: replaying.spool_depth() == 0)
    finally:
        replaying.stop()
    assert spool.files() == []
    rows = query(url, "SELECT params::json->>'CallUUID', count(*) FROM webhook_inbox GROUP BY 1")
    counts = dict(rows)
    assert len(counts) == 42 and counts["twice"] == 2 and counts["only-in-spool"] == 1
    assert set(counts.values()) <= {1, 2}
    # The skipped rows were not counted as deliveries again.
    ((deliveries,),) = query(
        url,
        "SELECT deliveries FROM webhook_fingerprints WHERE params_hash = %s",
        (records[0].params_hash,),
    )
    assert deliveries == 1


def test_postgres_down_spools_and_replays_when_it_is_back(
    server: PostgresServer, url: str, tmp_path: Path
) -> None:
    target = writer(url, tmp_path)
    try:
        assert store_all(target, [hangup("before")]) == ["stored"]
        server.stop()
        down = [hangup(f"down-{n}") for n in range(120)] + [hangup("down-0")]
        outcomes = store_all(target, down)
        assert set(outcomes) == {"spooled"}
        assert target.spool_depth() == 121
        assert not target.postgres_ok
        assert target.last_error is not None and "PostgreSQL" in target.last_error
        # New webhooks keep being acknowledged from the spool, without a connect wait each.
        started = time.monotonic()
        assert store_all(target, [hangup("still-down")]) == ["spooled"]
        assert time.monotonic() - started < 2
        server.start()
        wait_until(lambda: target.spool_depth() == 0 and target.postgres_ok, timeout=30)
        assert store_all(target, [hangup("after")]) == ["stored"]
    finally:
        target.stop()
    rows = query(url, "SELECT params::json->>'CallUUID', duplicate FROM webhook_inbox")
    seqs = [s for s, _ in rows]
    assert len(seqs) == 124
    assert {f"down-{n}" for n in range(120)} | {"before", "still-down", "after"} == set(seqs)
    # The spooled copy of down-0 is flagged at replay, as it would have been at once.
    assert sorted(d for s, d in rows if s == "down-0") == [False, True]
    assert list((tmp_path / "127.0.0.1:9001").glob("spool-*")) == []


def test_a_receiver_started_while_postgres_is_down_spools_then_migrates(
    server: PostgresServer, tmp_path: Path
) -> None:
    reset(server.url)  # not migrated: the writer migrates when it first connects
    server.stop()
    try:
        target = writer(server.url, tmp_path)
        assert store_all(target, [hangup(str(uuid.uuid4())) for _ in range(3)]) == ["spooled"] * 3
    finally:
        server.start()
    try:
        wait_until(lambda: target.spool_depth() == 0 and target.postgres_ok, timeout=30)
    finally:
        target.stop()
    ((count,),) = query(server.url, "SELECT count(*) FROM webhook_inbox")
    assert count == 3


def test_copies_racing_through_two_receivers_get_one_first_copy_each(
    url: str, tmp_path: Path
) -> None:
    """Both receivers take a copy of each of 400 webhooks at the same time, in opposite orders
    (their batches lock the shared fingerprints against each other): no deadlock, and each
    webhook has exactly one copy that is not a duplicate."""
    first = writer(url, tmp_path, "127.0.0.1:9001")
    second = writer(url, tmp_path, "127.0.0.1:9002")
    at = datetime.now(UTC)
    originals = [hangup(f"race-{n}", at) for n in range(400)]

    def copy(record: EventRecord) -> EventRecord:
        return hangup(str(record.params["CallUUID"]), at)

    async def race() -> list[str]:
        ones = [first.store(r) for r in originals]
        others = [second.store(copy(r)) for r in reversed(originals)]
        return list(await asyncio.gather(*ones, *others))

    try:
        assert set(asyncio.run(race())) == {"stored"}
    finally:
        first.stop()
        second.stop()
    rows = query(
        url,
        "SELECT params::json->>'CallUUID', count(*), count(*) FILTER (WHERE NOT duplicate),"
        " count(DISTINCT receiver) FROM webhook_inbox GROUP BY 1",
    )
    assert len(rows) == 400
    assert {(n, first_copies) for _, n, first_copies, _ in rows} == {(2, 1)}


def test_old_fingerprints_are_pruned_and_a_late_copy_is_a_first_copy(
    url: str, tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    first = writer(url, tmp_path)
    try:
        store_all(first, [hangup("last-week", now - timedelta(days=8)), hangup("today", now)])
    finally:
        first.stop()
    # A writer prunes when it starts, then every minute.
    second = writer(url, tmp_path)
    try:
        wait_until(lambda: len(query(url, "SELECT 1 FROM webhook_fingerprints")) == 1)
        store_all(second, [hangup("last-week", now), hangup("today", now)])
    finally:
        second.stop()
    rows = query(
        url,
        "SELECT params::json->>'CallUUID', array_agg(duplicate ORDER BY seq) FROM webhook_inbox"
        " GROUP BY 1",
    )
    assert dict(rows) == {"last-week": [False, False], "today": [False, True]}


def test_one_statement_decides_each_copy_as_the_embedded_tracker_does(url: str) -> None:
    """Batches mixing new webhooks and copies (several in one batch) against
    core.duplicates.DuplicateTracker, the embedded store's rules: the same copies stored, the
    same `duplicate` flags, the same repeats counted, in the same 5-minute buckets."""
    tracker = DuplicateTracker()
    at = datetime(2026, 11, 26, 10, 4, 59, tzinfo=UTC)
    names = ["a", "b", "a", "a", "c", "a", "b", "a", "b", "b", "b", "d"]
    batches = [names[:3], names[3:4], names[4:9], names[9:]]
    expected_stored: list[tuple[str, bool]] = []
    expected_repeats: Counter[tuple[datetime, str]] = Counter()
    got_stored = 0
    with pg.connect(url, autocommit=True) as con:
        for index, batch in enumerate(batches):
            moment = at + timedelta(seconds=index)
            ours = [hangup(n, moment) for n in batch]
            theirs = [hangup(n, moment) for n in batch]
            stored, repeats = tracker.admit(theirs)
            expected_stored += [(r.params["CallUUID"], r.duplicate) for r in stored]  # type: ignore[misc]
            expected_repeats.update((five_minutes(r.received_at), r.kind) for r in repeats)
            done = inbox.store(con, ours, ZoneInfo("UTC"), "r:1")
            assert done.stored.total() == len(stored)
            assert done.repeats.total() == len(repeats)
            got_stored += done.stored.total()
    rows = query(url, "SELECT params::json->>'CallUUID', duplicate FROM webhook_inbox ORDER BY seq")
    assert rows == expected_stored and len(rows) == got_stored
    repeats = query(url, "SELECT bucket, kind, repeats FROM webhook_repeats ORDER BY 1, 2")
    assert repeats == sorted((b, k, n) for (b, k), n in expected_repeats.items())
    assert {b for b, _, _ in repeats} == {datetime(2026, 11, 26, 10, 5, tzinfo=UTC)}


def test_a_field_holding_a_separator_travels_as_arrays_intact(url: str) -> None:
    """A batch travels as one text cut by ASCII separators, which JSON escapes: a short field
    holding one (not something Plivo sends) goes the other way, and is stored as it was."""
    odd = make_record("hangup", "POST", {"CallUUID": "odd"}, "valid\x1fx\x1e", datetime.now(UTC))
    plain = hangup("plain")
    with pg.connect(url, autocommit=True) as con:
        done = inbox.store(con, [odd, plain], ZoneInfo("UTC"), "r:1")
    assert done.stored == Counter({"hangup": 2})
    rows = query(url, "SELECT signature FROM webhook_inbox ORDER BY seq")
    assert rows == [("valid\x1fx\x1e",), ("valid",)]
