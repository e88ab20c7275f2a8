"""Each metric's value: the dashboard's own query's figure for the same range and slices, and the
definition written as plain SQL over the views; volumes, min_volume, the baseline form, and the
receiver's figures."""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import streamlit as st

from callstatus.alerts import metrics
from callstatus.alerts.model import Rule
from callstatus.core import rollups, server
from callstatus.core.db import Database
from callstatus.core.duplicates import DuplicateTracker
from callstatus.core.records import Params, make_record
from callstatus.core.server import ReceiverStatus, ServerHandle
from callstatus.core.storage import insert_events
from callstatus.dashboard import connection
from callstatus.dashboard.filters import Filters
from callstatus.dashboard.queries import causes, completeness, overview
from callstatus.simulator.traffic import TrafficModel
from tests.factories import deliver, make_settings, model_records

END = datetime(2026, 11, 4, 12, 0, tzinfo=UTC)
IDLE = ReceiverStatus(spool_depth=0, writer_queue=0, last_error=None, snapshot_age_s=None)
MODEL = TrafficModel(11)
OURS = MODEL.config.our_numbers[0].number
AGENT = MODEL.config.our_numbers[0].team[0].number


@pytest.fixture(scope="module")
def traffic(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three days of simulated calls in two files: rollups refreshed, and views only."""
    records = model_records(MODEL, MODEL.starts(900, END.timestamp(), 3, random.Random(3)))
    files = {}
    for name in ("rollups", "views"):
        path = tmp_path_factory.mktemp(name) / "traffic.duckdb"
        database = Database(path)
        deliver(database, records, DuplicateTracker())
        if name == "rollups":
            rollups.refresh(database.cursor())
        database.close()
        files[name] = path
    return files


def serve(database: Database, tmp_path: Path) -> None:
    """Install a server handle as `serve` does: the dashboard's queries read `database`."""
    server.install(ServerHandle(make_settings(tmp_path), database, None, lambda: IDLE))


@pytest.fixture
def clean() -> Iterator[None]:
    yield
    server.install(None)
    # The dashboard keeps a source per database object: never hand a later test a closed one.
    st.cache_data.clear()
    st.cache_resource.clear()


@pytest.fixture(params=["rollups", "views"])
def served(
    request: pytest.FixtureRequest, traffic: dict[str, Path], tmp_path: Path, clean: None
) -> Iterator[Database]:
    database = Database(traffic[request.param])
    serve(database, tmp_path)
    assert connection.relations().stored == (request.param == "rollups")
    yield database
    database.close()


@pytest.fixture
def empty(tmp_path: Path, clean: None) -> Iterator[Database]:
    database = Database(tmp_path / "alerts.duckdb")
    serve(database, tmp_path)
    yield database
    database.close()


def rule(metric: str, **values: Any) -> Rule:
    values.setdefault("below", 0.5)
    return Rule(name=metric, metric=metric, channels=(), **values)


def scalar(database: Database, sql: str, params: dict[str, object]) -> Any:
    row = database.cursor().execute(sql, params).fetchone()
    assert row is not None
    return row[0]


# metric -> (its definition as plain SQL over the views on [$start, $end), the volume's SQL)
ENDED = "FROM calls WHERE started_at >= $start AND started_at < $end AND outcome <> 'in-progress'"
LEGS = "FROM dial_legs WHERE coalesce(answered_at, ended_at) >= $start AND coalesce(answered_at, "
LEGS += "ended_at) < $end AND outcome <> 'in-progress'"
DIALS = "FROM dials WHERE received_at >= $start AND received_at < $end"
PLAIN = {
    "calls": (
        "SELECT count(*) FROM calls WHERE started_at >= $start AND started_at < $end",
        "SELECT count(*) FROM calls WHERE started_at >= $start AND started_at < $end",
    ),
    "call_answer_rate": (
        f"SELECT avg(CASE WHEN answered THEN 1 ELSE 0 END) {ENDED}",
        f"SELECT count(*) {ENDED}",
    ),
    "dial_answer_rate": (
        f"SELECT avg(CASE WHEN dial_status = 'completed' THEN 1 ELSE 0 END) {DIALS}",
        f"SELECT count(*) {DIALS}",
    ),
    "b_leg_answer_rate": (
        f"SELECT avg(CASE WHEN answered THEN 1 ELSE 0 END) {LEGS}",
        f"SELECT count(*) {LEGS}",
    ),
    "acd_seconds": (
        f"SELECT avg(duration_s) {ENDED} AND answered",
        f"SELECT count(*) {ENDED} AND answered",
    ),
    "busy_share": (
        f"SELECT avg(CASE WHEN outcome = 'busy' THEN 1 ELSE 0 END) {ENDED}",
        f"SELECT count(*) {ENDED}",
    ),
    "no_answer_share": (
        f"SELECT avg(CASE WHEN outcome = 'no-answer' THEN 1 ELSE 0 END) {ENDED}",
        f"SELECT count(*) {ENDED}",
    ),
    "failed_share": (
        f"SELECT avg(CASE WHEN outcome = 'failed' THEN 1 ELSE 0 END) {ENDED}",
        f"SELECT count(*) {ENDED}",
    ),
    "hangup_cause_share": (
        f"SELECT avg(CASE WHEN hangup_cause_code = $cause THEN 1 ELSE 0 END) {ENDED}",
        f"SELECT count(*) {ENDED}",
    ),
    "b_leg_hangup_cause_share": (
        f"SELECT avg(CASE WHEN hangup_cause_code = $cause THEN 1 ELSE 0 END) {LEGS}",
        f"SELECT count(*) {LEGS}",
    ),
    "missed_call_share": (
        "SELECT avg(CASE WHEN source = 'cdr' THEN 1 ELSE 0 END) FROM calls "
        "WHERE started_at >= $start AND started_at < $end",
        "SELECT count(*) FROM calls WHERE started_at >= $start AND started_at < $end",
    ),
}
CAUSES = {"hangup_cause_share": 3000, "b_leg_hangup_cause_share": 3000}


@pytest.mark.parametrize("metric", list(PLAIN))
def test_a_metric_is_the_dashboards_figure_and_its_definition(
    served: Database, metric: str
) -> None:
    window = timedelta(hours=5)
    cause = CAUSES.get(metric)
    r = rule(metric, window=window, cause=cause)
    evaluation = metrics.measure(r, connection.relations(), END, IDLE)
    params = {"start": END - window, "end": END}
    value_sql, volume_sql = PLAIN[metric]
    bound = {**params, "cause": cause} if cause is not None else params
    expected = scalar(served, value_sql, bound)
    assert evaluation.volume == scalar(served, volume_sql, params)
    assert evaluation.volume and evaluation.volume > 10  # enough traffic to mean something
    assert evaluation.value == pytest.approx(float(expected))
    assert (evaluation.rule, evaluation.at, evaluation.threshold) == (metric, END, 0.5)
    assert evaluation.condition == (evaluation.value < 0.5)
    # The dashboard's own query for the same range gives the same figure.
    f = Filters(start=END - window, end=END)
    rel = connection.relations()
    if metric in metrics.KPI_COLUMNS:
        column, _ = metrics.KPI_COLUMNS[metric]
        assert evaluation.value == pytest.approx(overview.kpis(rel, f).frame.iloc[0][column])
    elif metric == "missed_call_share":
        assert evaluation.value == completeness.totals(rel, f).frame.iloc[0]["missed_share"]
    else:
        leg = "b" if metric.startswith("b_leg") else "a"
        frame = causes.by_cause(rel, f, leg).frame
        ended = frame[frame["outcome"] != "in-progress"]
        share = ended.loc[ended["code"] == cause, "legs"].sum() / ended["legs"].sum()
        assert evaluation.value == pytest.approx(share)


@pytest.mark.parametrize("metric", ["calls", "call_answer_rate", "dial_answer_rate", "busy_share"])
def test_slices_are_the_dashboards(served: Database, metric: str) -> None:
    window = timedelta(hours=24)
    rel = connection.relations()
    sliced = {"direction": "inbound", "numbers": (OURS,), "destinations": (AGENT,)}
    evaluation = metrics.measure(rule(metric, window=window, **sliced), rel, END, IDLE)
    whole = metrics.measure(rule(metric, window=window), rel, END, IDLE)
    f = Filters(start=END - window, end=END, **sliced)  # type: ignore[arg-type]
    column, volume = metrics.KPI_COLUMNS[metric]
    row = overview.kpis(rel, f).frame.iloc[0]
    assert evaluation.value == pytest.approx(row[column])
    assert evaluation.volume == row[volume]
    assert evaluation.volume is not None and whole.volume is not None
    assert 0 < evaluation.volume < whole.volume


def test_min_volume_withholds_the_verdict(served: Database) -> None:
    rel = connection.relations()
    r = rule("dial_answer_rate", window=timedelta(hours=1), below=1.0)
    counted = metrics.measure(r, rel, END, IDLE)
    assert counted.volume is not None and counted.value is not None and counted.condition
    enough = metrics.measure(
        rule("dial_answer_rate", window=timedelta(hours=1), below=1.0, min_volume=counted.volume),
        rel,
        END,
        IDLE,
    )
    assert enough.value == counted.value and enough.condition
    short = metrics.measure(
        rule(
            "dial_answer_rate",
            window=timedelta(hours=1),
            below=1.0,
            min_volume=counted.volume + 1,
        ),
        rel,
        END,
        IDLE,
    )
    assert (short.value, short.volume, short.condition) == (None, counted.volume, False)


def test_an_empty_window(empty: Database) -> None:
    rel = connection.relations()
    rate = metrics.measure(rule("call_answer_rate"), rel, END, IDLE)
    assert (rate.value, rate.volume, rate.condition) == (None, 0, False)
    # No calls at all is a count of 0, a verdict: "fewer than 5 calls" holds.
    calls = metrics.measure(rule("calls", below=5), rel, END, IDLE)
    assert (calls.value, calls.volume, calls.condition) == (0.0, 0, True)
    silent = metrics.measure(rule("minutes_since_last_webhook", above=10), rel, END, IDLE)
    assert (silent.value, silent.condition) == (None, False)  # never a webhook: nothing stopped


def dial_actions(at: datetime, completed: int, other: int) -> list[tuple[datetime, str, Params]]:
    """Dial actions received from `at` on, a second apart: `completed` answered, the rest not."""
    statuses = ["completed"] * completed + ["no-answer"] * other
    events = []
    for i, status in enumerate(statuses):
        a_leg = str(uuid.uuid4())
        params = {"CallUUID": a_leg, "DialALegUUID": a_leg, "DialStatus": status}
        events.append((at + timedelta(seconds=i), "dial_action", params))
    return events


def store_at(database: Database, events: list[tuple[datetime, str, Params]]) -> None:
    records = [make_record(kind, "POST", dict(p), "unchecked", at) for at, kind, p in events]
    DuplicateTracker().mark(records)
    cur = database.cursor()
    cur.execute("BEGIN")
    insert_events(cur, records, "UTC")
    cur.execute("COMMIT")


def test_the_baseline_is_the_same_window_on_the_days_before_pooled(empty: Database) -> None:
    window = timedelta(minutes=15)
    start = END - window
    events = []
    # 7 days before: (answered, not) at the same time of day; pooled 63/90 = 0.7.
    usual = [(8, 2), (7, 3), (9, 1), (6, 4), (12, 8), (9, 1), (12, 8)]
    for day, (answered, missed) in enumerate(usual, start=1):
        events += dial_actions(start - timedelta(days=day) + timedelta(minutes=1), answered, missed)
        # Outside the window that day: never counted.
        events += dial_actions(start - timedelta(days=day) - timedelta(minutes=5), 0, 9)
    events += dial_actions(start + timedelta(minutes=2), 11, 9)  # today: 0.55
    store_at(empty, events)
    rel = connection.relations()
    drop = rule("dial_answer_rate", below=None, drop=0.2, baseline=timedelta(days=7))
    evaluation = metrics.measure(drop, rel, END, IDLE)
    usual_rate = sum(a for a, _ in usual) / sum(a + m for a, m in usual)
    assert usual_rate == pytest.approx(0.7)
    assert metrics.baseline(drop, rel, END, IDLE) == pytest.approx(usual_rate)
    assert evaluation.threshold == pytest.approx(usual_rate * 0.8)
    assert (evaluation.value, evaluation.volume) == (pytest.approx(0.55), 20)
    assert evaluation.condition  # 0.55 < 0.56
    milder = metrics.measure(
        rule("dial_answer_rate", below=None, drop=0.25, baseline=timedelta(days=7)),
        rel,
        END,
        IDLE,
    )
    assert milder.threshold == pytest.approx(0.525) and not milder.condition
    # Three days back only: (8 + 7 + 9) / 30
    short = rule("dial_answer_rate", below=None, drop=0.2, baseline=timedelta(days=3))
    assert metrics.baseline(short, rel, END, IDLE) == pytest.approx(0.8)


def test_a_baseline_of_calls_is_the_mean_count_per_day(empty: Database) -> None:
    calls = []
    for day, count in ((1, 4), (2, 0), (3, 8)):
        for i in range(count):
            at = END - timedelta(days=day) - timedelta(minutes=10) + timedelta(seconds=i)
            params = {
                "CallUUID": str(uuid.uuid4()),
                "Direction": "inbound",
                "From": "+1555",
                "To": OURS,
                "CallStatus": "ringing",
            }
            calls.append((at, "answer", params))
    store_at(empty, calls)
    rel = connection.relations()
    r = rule("calls", below=None, drop=0.5, baseline=timedelta(days=3))
    assert metrics.baseline(r, rel, END, IDLE) == pytest.approx(4.0)  # (4 + 0 + 8) / 3
    evaluation = metrics.measure(r, rel, END, IDLE)
    assert (evaluation.value, evaluation.threshold, evaluation.condition) == (0.0, 2.0, True)
    # Without anything on the days before there is no baseline and no verdict.
    nothing = metrics.measure(r, rel, END - timedelta(days=10), IDLE)
    assert (nothing.value, nothing.threshold, nothing.condition) == (None, None, False)


def test_minutes_since_the_last_webhook_leaves_call_records_out(empty: Database) -> None:
    last = END - timedelta(minutes=12)
    store_at(empty, dial_actions(last - timedelta(seconds=30), 1, 0))
    rel = connection.relations()
    r = rule("minutes_since_last_webhook", below=None, above=10)
    first = metrics.measure(r, rel, END, IDLE)
    assert first.value == pytest.approx(12.5) and first.condition
    record = {"call_uuid": str(uuid.uuid4()), "call_direction": "inbound"}
    store_at(empty, [(END - timedelta(minutes=1), "cdr", record)])
    later = END + timedelta(minutes=3)
    assert metrics.measure(r, rel, later, IDLE).value == pytest.approx(15.5)
    store_at(empty, dial_actions(later - timedelta(minutes=2), 1, 0))
    assert metrics.measure(r, rel, later + timedelta(seconds=1), IDLE).value == pytest.approx(
        2 + 1 / 60
    )


def test_rejected_webhooks_count_in_the_window(empty: Database) -> None:
    cur = empty.cursor()
    for minutes in (1, 2, 3, 20):
        cur.execute(
            "INSERT INTO rejected_webhooks VALUES (?, ?, 'bad-signature', '/plivo/hangup', "
            "'POST', NULL, ?, ?, false)",
            [str(uuid.uuid4()), END - timedelta(minutes=minutes), json.dumps({}), json.dumps({})],
        )
    rel = connection.relations()
    r = rule("rejected_webhooks", below=None, above=2, window=timedelta(minutes=5))
    evaluation = metrics.measure(r, rel, END, IDLE)
    assert (evaluation.value, evaluation.volume, evaluation.condition) == (3.0, None, True)
    wider = rule("rejected_webhooks", below=None, above=2, window=timedelta(minutes=30))
    assert metrics.measure(wider, rel, END + timedelta(seconds=1), IDLE).value == 4.0


def test_spool_depth_is_the_receivers_own(empty: Database) -> None:
    rel = connection.relations()
    r = rule("spool_depth", below=None, above=100)
    deep = ReceiverStatus(spool_depth=250, writer_queue=0, last_error=None, snapshot_age_s=None)
    assert metrics.measure(r, rel, END, deep).value == 250.0
    assert metrics.measure(r, rel, END, deep).condition
    assert not metrics.measure(r, rel, END, IDLE).condition
    assert metrics.measure(r, rel, END, None).value is None


def test_the_bound_itself_is_not_crossed(empty: Database) -> None:
    store_at(empty, dial_actions(END - timedelta(minutes=5), 1, 1))
    rel = connection.relations()
    at_bound = metrics.measure(rule("dial_answer_rate", below=0.5), rel, END, IDLE)
    assert (at_bound.value, at_bound.condition) == (0.5, False)
    above = rule("dial_answer_rate", below=None, above=0.5)
    assert not metrics.measure(above, rel, END, IDLE).condition
    assert metrics.measure(rule("dial_answer_rate", below=0.51), rel, END, IDLE).condition


def test_every_metric_is_measured(empty: Database) -> None:
    """The catalogue and the measuring code name the same metrics."""
    rel = connection.relations()
    for name, metric in metrics.METRICS.items():
        values: dict[str, Any] = {"above": 0.0, "below": None}
        if metric.cause:
            values["cause"] = 3000
        evaluation = metrics.measure(rule(name, **values), rel, END, IDLE)
        assert evaluation.rule == name
        assert (evaluation.volume is None) == (metric.volume is None)
