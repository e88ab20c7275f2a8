"""The outbox against real peers: every queued message sent once, failures retried with backoff
and recorded, given up after a day, kept across a restart, never raising."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from callstatus.alerts import outbox
from callstatus.alerts.model import AlertsConfig, Channel, Message
from callstatus.core.db import Database
from callstatus.core.settings import Settings
from tests.alerts.peers import HttpPeer, http_peer, smtp_peer, valid_signature
from tests.factories import make_settings
from tests.servers import free_port

NOW = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
PNG = b"\x89PNG\r\n\x1a\n" + b"chart" * 100
FIRING = Message(
    kind="firing",
    title="Firing: Agents not picking up",
    text="Firing: Agents not picking up\ndial answer rate is 31.2%, below 50.0%.",
    fields=(("Rule", "Agents not picking up"), ("Value", "31.2%")),
    link="https://calls.example.com/overview?range=Last+hour",
)
RESOLVED = Message(
    kind="resolved",
    title="Resolved: Agents not picking up",
    text="Resolved: Agents not picking up\ndial answer rate is back at 80.0%.",
)
REPORT = Message(
    kind="report",
    title="Daily call outcomes",
    text="Daily call outcomes\n120 calls.",
    images=(("answer-rates.png", PNG),),
)


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Database]:
    db = Database(tmp_path / "alerts.duckdb")
    yield db
    db.close()


def _config(tmp_path: Path, *channels: Channel) -> AlertsConfig:
    return AlertsConfig(path=tmp_path / "alerts.toml", channels={c.name: c for c in channels})


def _settings(tmp_path: Path, **values: object) -> Settings:
    return make_settings(tmp_path, SMTP_STARTTLS=False, **values)


def _rows(database: Database) -> list[outbox.Delivery]:
    ids = (
        database.cursor().execute("SELECT id FROM alert_deliveries ORDER BY created_at").fetchall()
    )
    found = [outbox.get(database.cursor(), str(row_id)) for (row_id,) in ids]
    return [row for row in found if row is not None]


def test_each_channel_gets_the_message_once(tmp_path: Path, database: Database) -> None:
    with http_peer() as slack, http_peer(secret="change-me") as pager:
        config = _config(
            tmp_path,
            Channel("ops-slack", "slack", url=slack.url),
            Channel("pager", "webhook", url=pager.url, secret="change-me"),
        )
        cur = database.cursor()
        ids = outbox.enqueue(cur, ["ops-slack", "pager", "ops-slack"], FIRING, NOW)
        assert len(ids) == 2, "a channel named twice gets one message"
        assert outbox.deliver_due(cur, config, _settings(tmp_path), NOW) == 2
        assert outbox.deliver_due(cur, config, _settings(tmp_path), NOW + timedelta(hours=1)) == 0
    assert len(slack.requests) == 1 and len(pager.requests) == 1
    assert valid_signature("change-me", pager.accepted[0].headers, pager.accepted[0].body)
    assert {r.channel: r.status for r in _rows(database)} == {"ops-slack": "sent", "pager": "sent"}
    for row in _rows(database):
        assert row.attempts == 1 and row.sent_at == NOW and row.last_error is None
        assert row.next_attempt_at is None
        assert row.message == FIRING


def test_a_failure_is_recorded_and_retried_after_a_minute(
    tmp_path: Path, database: Database
) -> None:
    with http_peer(fail=1) as slack:
        config = _config(tmp_path, Channel("ops-slack", "slack", url=slack.url))
        cur = database.cursor()
        (row_id,) = outbox.enqueue(cur, ["ops-slack"], FIRING, NOW)
        assert outbox.deliver_due(cur, config, _settings(tmp_path), NOW) == 0
        row = outbox.get(cur, row_id)
        assert row is not None
        assert (row.status, row.attempts) == ("pending", 1)
        assert row.last_error == "127.0.0.1 answered HTTP 500: invalid_payload"
        assert row.next_attempt_at == NOW + timedelta(minutes=1)
        # Not due yet: nothing is sent.
        assert (
            outbox.deliver_due(cur, config, _settings(tmp_path), NOW + timedelta(seconds=59)) == 0
        )
        assert len(slack.requests) == 1
        assert outbox.deliver_due(cur, config, _settings(tmp_path), NOW + timedelta(minutes=1)) == 1
    assert [r.status for r in slack.requests] == [500, 200]
    # The same delivery id both times: a receiver can drop a repeat.
    assert {r.headers["X-Callstatus-Delivery"] for r in slack.requests} == {row_id}
    row = outbox.get(database.cursor(), row_id)
    assert row is not None
    assert (row.status, row.attempts, row.last_error) == ("sent", 2, None)
    assert row.sent_at == NOW + timedelta(minutes=1)


def test_backoff_doubles_up_to_an_hour() -> None:
    minutes = [outbox.retry_delay(n) / timedelta(minutes=1) for n in range(1, 10)]
    assert minutes == [1, 2, 4, 8, 16, 32, 60, 60, 60]


def test_given_up_after_a_day(tmp_path: Path, database: Database) -> None:
    with http_peer(fail=10_000, fail_status=503) as slack:
        config = _config(tmp_path, Channel("ops-slack", "slack", url=slack.url))
        cur = database.cursor()
        (row_id,) = outbox.enqueue(cur, ["ops-slack"], FIRING, NOW)
        tried_at = []
        moment = NOW
        while True:
            outbox.deliver_due(cur, config, _settings(tmp_path), moment)
            tried_at.append(moment)
            row = outbox.get(cur, row_id)
            assert row is not None
            if row.status != "pending":
                break
            assert row.next_attempt_at is not None
            moment = row.next_attempt_at
    # Tried at 0, 1, 3, 7, 15, 31, 63 minutes, then hourly while within a day of the first.
    offsets = [(t - NOW) / timedelta(minutes=1) for t in tried_at]
    assert offsets[:8] == [0, 1, 3, 7, 15, 31, 63, 123]
    assert offsets[-1] == 63 + 60 * 22 and offsets[-1] + 60 > 24 * 60
    assert len(slack.requests) == len(tried_at) == 29
    assert (row.status, row.attempts, row.next_attempt_at) == ("failed", 29, None)
    assert row.last_error == "127.0.0.1 answered HTTP 503: invalid_payload"


def test_a_failing_channel_costs_one_attempt_per_pass(tmp_path: Path, database: Database) -> None:
    dead = f"http://127.0.0.1:{free_port()}/hook"
    with http_peer() as slack:
        config = _config(
            tmp_path,
            Channel("dead", "webhook", url=dead),
            Channel("ops-slack", "slack", url=slack.url),
        )
        cur = database.cursor()
        for message in (FIRING, RESOLVED, FIRING):
            outbox.enqueue(cur, ["dead", "ops-slack"], message, NOW)
        assert outbox.deliver_due(cur, config, _settings(tmp_path), NOW) == 3
    rows = _rows(database)
    assert sorted(r.attempts for r in rows if r.channel == "dead") == [0, 0, 1]
    failed = next(r for r in rows if r.channel == "dead" and r.attempts == 1)
    assert failed.last_error is not None and failed.last_error.startswith(
        "POST to 127.0.0.1 failed"
    )
    assert [r.json()["text"].split(":")[0] for r in slack.accepted] == [
        "Firing",
        "Resolved",
        "Firing",
    ]


def test_never_raises(tmp_path: Path, database: Database) -> None:
    config = _config(tmp_path, Channel("ops-slack", "slack", url="http://127.0.0.1:1/x"))
    cur = database.cursor()
    outbox.enqueue(cur, ["ops-slack"], FIRING, NOW)
    assert outbox.deliver_due(cur, config, _settings(tmp_path), NOW) == 0
    cur.execute("DROP TABLE alert_deliveries")
    assert outbox.deliver_due(cur, config, _settings(tmp_path), NOW) == 0


def test_a_channel_gone_from_the_file_fails_at_once(tmp_path: Path, database: Database) -> None:
    cur = database.cursor()
    (row_id,) = outbox.enqueue(cur, ["removed"], FIRING, NOW)
    assert outbox.deliver_due(cur, _config(tmp_path), _settings(tmp_path), NOW) == 0
    row = outbox.get(cur, row_id)
    assert row is not None and row.status == "failed"
    assert row.last_error == f"no channel named 'removed' in {tmp_path / 'alerts.toml'}"


def test_email_with_images_through_the_outbox(tmp_path: Path, database: Database) -> None:
    with smtp_peer() as smtp:
        settings = _settings(
            tmp_path, SMTP_HOST=smtp.host, SMTP_PORT=smtp.port, SMTP_FROM="alerts@example.com"
        )
        config = _config(tmp_path, Channel("ops-mail", "email", to=("ops@example.com",)))
        cur = database.cursor()
        (row_id,) = outbox.enqueue(cur, ["ops-mail"], REPORT, NOW)
        stored = cur.execute(
            "SELECT images FROM alert_deliveries WHERE id = ?", [row_id]
        ).fetchall()
        assert stored == [([PNG],)], "the PNGs wait with the message"
        assert outbox.deliver_due(cur, config, settings, NOW) == 1
        (mail,) = smtp.wait_for(1)
    (image,) = [p for p in mail.message.walk() if p.get_content_type() == "image/png"]
    assert image.get_filename() == "answer-rates.png"
    assert image.get_content() == PNG
    after = (
        database.cursor()
        .execute("SELECT images, status FROM alert_deliveries WHERE id = ?", [row_id])
        .fetchall()
    )
    assert after == [(None, "sent")], "sent: the PNGs are not kept"


def test_pending_messages_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "restart.duckdb"
    first = Database(path)
    outbox.enqueue(first.cursor(), ["ops-slack"], FIRING, NOW)
    first.close()
    second = Database(path)
    try:
        with http_peer() as slack:
            config = _config(tmp_path, Channel("ops-slack", "slack", url=slack.url))
            assert outbox.deliver_due(second.cursor(), config, _settings(tmp_path), NOW) == 1
            assert outbox.deliver_due(second.cursor(), config, _settings(tmp_path), NOW) == 0
        assert len(slack.accepted) == 1
    finally:
        second.close()


def test_two_passes_at_once_send_each_message_once(tmp_path: Path, database: Database) -> None:
    with http_peer() as slack:
        config = _config(tmp_path, Channel("ops-slack", "slack", url=slack.url))
        for _ in range(20):
            outbox.enqueue(database.cursor(), ["ops-slack"], FIRING, NOW)
        counts: list[int] = []

        def deliver() -> None:
            counts.append(outbox.deliver_due(database.cursor(), config, _settings(tmp_path), NOW))

        threads = [threading.Thread(target=deliver) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    assert sum(counts) == 20
    assert len(slack.requests) == 20


def test_a_test_message_is_sent_at_once_and_reports_failure(
    tmp_path: Path, database: Database
) -> None:
    with http_peer() as slack:
        config = _config(
            tmp_path,
            Channel("ops-slack", "slack", url=slack.url),
            Channel("dead", "slack", url=f"http://127.0.0.1:{free_port()}/x"),
        )
        cur = database.cursor()
        settings = _settings(tmp_path)
        assert outbox.send_test(cur, config, settings, "ops-slack", NOW) == (
            "test message sent to ops-slack"
        )
        assert slack.accepted[0].json()["blocks"][0]["text"]["text"].endswith("test: ops-slack")
        # A failing channel: the test is tried at once even though an older message for the
        # same channel failed before it in this pass.
        outbox.enqueue(cur, ["dead"], FIRING, NOW)
        outcome = outbox.send_test(cur, config, settings, "dead", NOW)
        assert outcome.startswith("test message to dead failed: POST to 127.0.0.1 failed")
        assert outbox.send_test(cur, config, settings, "nope", NOW) == (
            f"no channel named 'nope' in {tmp_path / 'alerts.toml'}"
        )
    kinds = [(r.channel, r.message.kind, r.attempts) for r in _rows(database)]
    assert ("dead", "test", 1) in kinds


def test_old_delivered_rows_are_pruned(tmp_path: Path, database: Database) -> None:
    cur = database.cursor()
    with http_peer() as slack:
        config = _config(tmp_path, Channel("ops-slack", "slack", url=slack.url))
        outbox.enqueue(cur, ["ops-slack"], FIRING, NOW)
        outbox.deliver_due(cur, config, _settings(tmp_path), NOW)
        (kept,) = outbox.enqueue(cur, ["ops-slack"], RESOLVED, NOW + timedelta(days=20))
        outbox.deliver_due(cur, config, _settings(tmp_path), NOW + outbox.KEEP + timedelta(days=1))
    assert [r.id for r in _rows(database)] == [kept]


def test_peer_counts_what_it_refused() -> None:
    # The peer itself: a wrong signature is refused, so the tests above could fail.
    peer = HttpPeer(secret="s")
    assert peer.answer("/", {"X-Callstatus-Signature": "00"}, b"{}") == 401
    assert peer.accepted == []


def test_ids_sort_in_the_order_they_were_made() -> None:
    ids = [outbox.new_id() for _ in range(5000)]  # many share a millisecond
    assert ids == sorted(ids, key=str) == sorted(ids, key=lambda u: u.int)
    assert len(set(ids)) == len(ids)
    assert {u.version for u in ids} == {7}
