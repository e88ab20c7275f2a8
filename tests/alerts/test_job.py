"""The alerts job: rules firing and resolving on signed traffic through the receiver, exactly one
message per change delivered to real local peers, nothing repeated across a restart, failures
retried, reports once per due time, and the loop in its thread."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import streamlit as st

from callstatus.alerts import rules
from callstatus.alerts.job import AlertJob
from callstatus.alerts.model import AlertsConfig
from callstatus.core import rollups, server
from callstatus.core.db import Database
from callstatus.core.server import ReceiverStatus, ServerHandle
from callstatus.core.settings import Settings
from tests.alerts.peers import HttpPeer, http_peer
from tests.factories import app_client, make_settings, signed_request, store, wait_until

T0 = datetime(2026, 11, 2, 9, 10, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
TOKEN = "alerts-test-auth-token"
BASE = "https://calls.example.com"
IDLE = ReceiverStatus(spool_depth=0, writer_queue=0, last_error=None, snapshot_age_s=None)


def load(tmp_path: Path, text: str) -> AlertsConfig:
    path = tmp_path / "alerts.toml"
    path.write_text(text, encoding="utf-8")
    return rules.load(path)


@pytest.fixture
def slack() -> Iterator[HttpPeer]:
    with http_peer() as peer:
        yield peer


@pytest.fixture
def pager() -> Iterator[HttpPeer]:
    with http_peer(secret="change-me") as peer:
        yield peer


@pytest.fixture(autouse=True)
def _clean() -> Iterator[None]:
    yield
    server.install(None)
    # The dashboard keeps a source per database object: never hand a later test a closed one.
    st.cache_data.clear()
    st.cache_resource.clear()


def channels(slack: HttpPeer, pager: HttpPeer | None = None) -> str:
    text = f'[channels.ops-slack]\ntype = "slack"\nurl = "{slack.url}/slack"\n\n'
    if pager is not None:
        text += f'[channels.pager]\ntype = "webhook"\nurl = "{pager.url}/hook"\n'
        text += 'secret = "change-me"\n\n'
    return text


def dial(client: Any, status: str) -> None:
    a_leg = str(uuid.uuid4())
    pairs = [("CallUUID", a_leg), ("DialALegUUID", a_leg), ("DialStatus", status)]
    response = signed_request(client, "POST", "/plivo/dial/action", pairs, base=BASE, token=TOKEN)
    assert response.status_code == 200, response.text


def rolled_up(database: Database, dials: int) -> None:
    """Wait for the server's rollup job to hold `dials` Dials (what the dashboard reads)."""
    cur = database.cursor()
    table = rollups.VIEWS["dials"]

    def done() -> bool:
        row = cur.execute(f"SELECT count(*) FROM {table}").fetchone()
        return row is not None and row[0] == dials and rollups.is_current(cur)

    wait_until(done, timeout=20)


def posts(peer: HttpPeer) -> list[dict[str, Any]]:
    return [r.json() for r in peer.accepted]


def test_signed_traffic_fires_resolves_and_silence_fires(
    tmp_path: Path, slack: HttpPeer, pager: HttpPeer
) -> None:
    config = load(
        tmp_path,
        channels(slack, pager)
        + """
[[rules]]
name = "Agents not picking up"
metric = "dial_answer_rate"
window = "15m"
below = 0.5
min_volume = 5
channels = ["ops-slack"]

[[rules]]
name = "No webhooks"
metric = "minutes_since_last_webhook"
above = 10
channels = ["pager"]
""",
    )
    with app_client(tmp_path, PLIVO_AUTH_TOKEN=TOKEN, PUBLIC_BASE_URL=BASE) as client:
        handle = server.installed()
        assert handle is not None
        job = AlertJob(handle.database, handle.settings, config)
        job.store_rules()
        for status in ["completed"] * 2 + ["no-answer"] * 8:
            dial(client, status)
        rolled_up(handle.database, 10)
        changes = job.evaluate_once()
        assert [(c.rule.name, c.status.state) for c in changes] == [
            ("Agents not picking up", "firing"),
            ("No webhooks", "ok"),
        ]
        assert changes[0].status.value == pytest.approx(0.2)
        (fired,) = posts(slack)
        assert "Agents not picking up" in fired["text"] and "blocks" in fired
        # Evaluated again while it still holds: nothing more.
        job.evaluate_once()
        assert len(slack.requests) == 1

        for _ in range(30):
            dial(client, "completed")
        rolled_up(handle.database, 40)
        changes = job.evaluate_once()
        assert changes[0].status.state == "ok"
        assert changes[0].status.value == pytest.approx(32 / 40)
        fired_again, resolved = posts(slack)
        assert fired_again == fired
        assert "Agents not picking up" in resolved["text"]
        assert "resolved" in resolved["text"].lower()
        assert pager.requests == []

        # No webhook for 11 minutes: the pager gets one signed POST naming the rule.
        quiet = datetime.now(UTC) + timedelta(minutes=11)
        changes = job.evaluate_once(quiet)
        assert [c.status.state for c in changes] == ["ok", "firing"]
        job.evaluate_once(quiet + MINUTE)
        (paged,) = pager.requests
        assert paged.status == 200  # the peer checked X-Callstatus-Signature
        assert "No webhooks" in paged.body.decode()
        assert len(slack.requests) == 2

        cur = handle.database.cursor()
        transitions = cur.execute(
            'SELECT rule, from_state, to_state, notified FROM alert_transitions ORDER BY "at"'
        ).fetchall()
        assert transitions == [
            ("Agents not picking up", "ok", "firing", True),
            ("Agents not picking up", "firing", "ok", True),
            ("No webhooks", "ok", "firing", True),
        ]
        deliveries = cur.execute(
            "SELECT channel, kind, status FROM alert_deliveries ORDER BY created_at, channel"
        ).fetchall()
        assert deliveries == [
            ("ops-slack", "firing", "sent"),
            ("ops-slack", "resolved", "sent"),
            ("pager", "firing", "sent"),
        ]


def serve(database: Database, settings: Settings) -> None:
    """Install a server handle as `serve` does (the dashboard's queries read `database`)."""
    server.install(ServerHandle(settings, database, None, lambda: IDLE))


def add_calls(database: Database, at: datetime, count: int) -> None:
    """`count` inbound calls answered by our XML, a second apart from `at`."""
    events = [
        (
            "answer",
            {
                "CallUUID": str(uuid.uuid4()),
                "Direction": "inbound",
                "From": "+1555",
                "To": "+1415",
                "CallStatus": "in-progress",
            },
        )
        for _ in range(count)
    ]
    store(database, events, start=at)


QUIET_RULE = """
[[rules]]
name = "Too few calls"
metric = "calls"
window = "15m"
below = 1
channels = ["ops-slack"]
"""


def test_a_restart_neither_forgets_a_firing_rule_nor_sends_it_again(
    tmp_path: Path, slack: HttpPeer
) -> None:
    config = load(tmp_path, channels(slack) + QUIET_RULE)
    settings = make_settings(tmp_path)
    path = tmp_path / "alerts.duckdb"

    def restarted() -> tuple[Database, AlertJob]:
        database = Database(path)
        serve(database, settings)
        job = AlertJob(database, settings, config)
        job.store_rules(T0)
        return database, job

    database, job = restarted()
    (change,) = job.evaluate_once(T0)
    assert (change.status.state, change.status.value) == ("firing", 0.0)
    assert len(posts(slack)) == 1
    database.close()

    for restart in range(2):
        database, job = restarted()
        (change,) = job.evaluate_once(T0 + (restart + 1) * MINUTE)
        assert (change.status.state, change.status.since, change.transition) == (
            "firing",
            T0,
            None,
        )
        assert len(slack.requests) == 1
        database.close()

    database, job = restarted()
    add_calls(database, T0, 3)
    (change,) = job.evaluate_once(T0 + 5 * MINUTE)
    assert (change.status.state, change.status.value) == ("ok", 3.0)
    database.close()
    database, job = restarted()
    job.evaluate_once(T0 + 6 * MINUTE)
    database.close()
    fired, resolved = posts(slack)
    assert "Too few calls" in fired["text"] and "Too few calls" in resolved["text"]
    assert len(slack.requests) == 2


def test_a_failing_channel_is_retried_and_the_change_is_not_sent_twice(
    tmp_path: Path,
) -> None:
    settings = make_settings(tmp_path)
    with http_peer(fail=2) as slack:
        config = load(tmp_path, channels(slack) + QUIET_RULE)
        database = Database(tmp_path / "alerts.duckdb")
        serve(database, settings)
        job = AlertJob(database, settings, config)
        job.evaluate_once(T0)  # the first attempt fails: 500
        assert [r.status for r in slack.requests] == [500]
        (row,) = (
            database.cursor()
            .execute("SELECT status, attempts, last_error FROM alert_deliveries")
            .fetchall()
        )
        assert row[:2] == ("pending", 1) and "500" in row[2]
        job.evaluate_once(T0 + timedelta(seconds=30))  # not due yet (backoff of a minute)
        assert len(slack.requests) == 1
        database.close()

        database = Database(tmp_path / "alerts.duckdb")  # a restart meanwhile
        serve(database, settings)
        job = AlertJob(database, settings, config)
        job.evaluate_once(T0 + 2 * MINUTE)  # the second attempt fails too
        job.evaluate_once(T0 + 3 * MINUTE)  # backoff doubled: not yet
        job.evaluate_once(T0 + 5 * MINUTE)
        assert [r.status for r in slack.requests] == [500, 500, 200]
        assert (
            database.cursor().execute("SELECT status, attempts FROM alert_deliveries").fetchall()
        ) == [("sent", 3)]
        transitions = (
            database.cursor().execute("SELECT to_state, notified FROM alert_transitions").fetchall()
        )
        assert transitions == [("firing", True)]
        database.close()


def test_a_rule_that_cannot_be_measured_keeps_its_state_and_others_go_on(
    tmp_path: Path, slack: HttpPeer
) -> None:
    settings = make_settings(tmp_path)
    config = load(
        tmp_path,
        channels(slack)
        + QUIET_RULE
        + '\n[[rules]]\nname = "Spool"\nmetric = "spool_depth"\nabove = 0\n',
    )
    database = Database(tmp_path / "alerts.duckdb")
    serve(database, settings)
    job = AlertJob(database, settings, config)
    job.evaluate_once(T0)
    database.cursor().execute("DROP VIEW webhook_events CASCADE")  # what every query reads
    changes = job.evaluate_once(T0 + MINUTE)
    # "Too few calls" fails and keeps its row; the spool needs no query.
    assert [c.rule.name for c in changes] == ["Spool"]
    states = dict(database.cursor().execute("SELECT rule, state FROM alert_state").fetchall())
    assert states == {"Too few calls": "firing", "Spool": "ok"}
    database.close()


def test_the_job_refuses_to_measure_another_database(tmp_path: Path, slack: HttpPeer) -> None:
    settings = make_settings(tmp_path)
    config = load(tmp_path, channels(slack) + QUIET_RULE)
    database = Database(tmp_path / "alerts.duckdb")
    other = Database(tmp_path / "other.duckdb")
    job = AlertJob(database, settings, config)
    with pytest.raises(RuntimeError, match="none is installed for this database"):
        job.evaluate_once(T0)
    serve(other, settings)
    with pytest.raises(RuntimeError, match="none is installed for this database"):
        job.evaluate_once(T0)
    assert slack.requests == []
    database.close()
    other.close()


REPORT = """
[[reports]]
name = "Half-hourly"
every = "30m"
channels = ["ops-slack"]
"""


def test_a_report_is_sent_once_per_due_time(tmp_path: Path, slack: HttpPeer) -> None:
    settings = make_settings(tmp_path)
    config = load(tmp_path, channels(slack) + REPORT)
    path = tmp_path / "alerts.duckdb"

    def started() -> tuple[Database, AlertJob]:
        database = Database(path)
        serve(database, settings)
        job = AlertJob(database, settings, config)
        job.store_rules(T0)
        return database, job

    def schedule(database: Database) -> tuple[Any, ...]:
        row = (
            database.cursor()
            .execute("SELECT next_due_at, last_sent_at, last_status FROM report_schedule")
            .fetchone()
        )
        assert row is not None
        return tuple(row)

    database, job = started()
    job.evaluate_once(T0)  # 09:10: first due at 09:30, nothing sent now
    half_past = T0 + 20 * MINUTE
    assert schedule(database) == (half_past, None, None)
    job.evaluate_once(half_past - timedelta(seconds=1))
    assert slack.requests == []
    job.evaluate_once(half_past)
    assert schedule(database) == (half_past + 30 * MINUTE, half_past, "queued")
    (report,) = posts(slack)
    assert "Half-hourly" in report["text"]
    job.evaluate_once(half_past + 15 * MINUTE)
    database.close()

    database, job = started()  # a restart before the next due time sends nothing
    job.evaluate_once(half_past + 20 * MINUTE)
    assert len(slack.requests) == 1
    # Down from 09:50 to 12:10: the due times 10:00 ... 12:00 were missed; one report, 12:00's.
    noon = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)
    job.evaluate_once(noon + 10 * MINUTE)
    assert schedule(database) == (noon + 30 * MINUTE, noon, "queued")
    assert len(slack.requests) == 2
    assert "12:00" in posts(slack)[1]["text"]
    database.close()


def test_the_loop_evaluates_in_its_own_thread(tmp_path: Path, slack: HttpPeer) -> None:
    settings = make_settings(tmp_path, CALLSTATUS_ALERT_INTERVAL=1)
    config = load(tmp_path, channels(slack) + QUIET_RULE)
    database = Database(tmp_path / "alerts.duckdb")
    serve(database, settings)
    job = AlertJob(database, settings, config)
    assert job.loop.interval_s == 1 and not job.loop.run_at_stop
    job.start()
    try:
        wait_until(lambda: len(slack.accepted) == 1, timeout=20)
        wait_until(lambda: job.loop.last_ok is not None)
        rows = database.cursor().execute("SELECT rule, condition FROM alert_rules").fetchall()
        assert rows == [("Too few calls", "below 1")]

        # Runs every second: two runs later (the first one's delivery done), still one message.
        def evaluated() -> object:
            return database.cursor().execute("SELECT evaluated_at FROM alert_state").fetchone()

        for _ in range(2):
            before = evaluated()
            wait_until(lambda: evaluated() != before, timeout=10)  # noqa: B023
        assert len(slack.requests) == 1
    finally:
        job.stop()
    assert job.loop.last_error is None
    database.close()
