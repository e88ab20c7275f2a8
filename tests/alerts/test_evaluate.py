"""A rule's states: ok, pending, firing, no data; `for`; which changes send a message; and the
statuses, transitions and report times kept in DuckDB as they were."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from callstatus.alerts import state
from callstatus.alerts.evaluate import RuleStatus, Transition, advance
from callstatus.alerts.model import AlertsConfig, Evaluation, Report, Rule, Schedule
from callstatus.core.db import Database

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


def rule(for_: timedelta = timedelta(0)) -> Rule:
    return Rule("Agents not picking up", "dial_answer_rate", ("ops",), below=0.5, for_=for_)


def bad(at: datetime, value: float = 0.3) -> Evaluation:
    return Evaluation("Agents not picking up", value, 40, 0.5, True, at)


def good(at: datetime, value: float = 0.8) -> Evaluation:
    return Evaluation("Agents not picking up", value, 40, 0.5, False, at)


def nothing(at: datetime) -> Evaluation:
    return Evaluation("Agents not picking up", None, 3, 0.5, False, at)


def run(r: Rule, evaluations: list[Evaluation]) -> list[tuple[str, str | None]]:
    """(state, message sent) after each evaluation, from no status at all."""
    status: RuleStatus | None = None
    seen = []
    for evaluation in evaluations:
        status, transition = advance(status, r, evaluation)
        seen.append((status.state, transition.message if transition else None))
    return seen


def test_without_for_a_rule_fires_at_once_and_resolves_once() -> None:
    steps = [good(T0), bad(T0 + MINUTE), bad(T0 + 2 * MINUTE), good(T0 + 3 * MINUTE)]
    steps.append(good(T0 + 4 * MINUTE))
    assert run(rule(), steps) == [
        ("ok", None),
        ("firing", "firing"),
        ("firing", None),
        ("ok", "resolved"),
        ("ok", None),
    ]


def test_for_holds_the_rule_pending_until_the_condition_held_that_long() -> None:
    r = rule(for_=timedelta(minutes=5))
    steps = [bad(T0 + i * MINUTE) for i in range(7)]
    assert run(r, steps) == [("pending", None)] * 5 + [("firing", "firing"), ("firing", None)]


def test_a_pending_rule_that_recovers_never_fires() -> None:
    r = rule(for_=timedelta(minutes=5))
    steps = [bad(T0), bad(T0 + 3 * MINUTE), good(T0 + 4 * MINUTE), bad(T0 + 6 * MINUTE)]
    steps += [bad(T0 + 10 * MINUTE), bad(T0 + 11 * MINUTE)]
    # The condition starts holding afresh at +6: it fires at +11, not at +5 or +10.
    assert run(r, steps) == [
        ("pending", None),
        ("pending", None),
        ("ok", None),
        ("pending", None),
        ("pending", None),
        ("firing", "firing"),
    ]


def test_no_verdict_is_no_data_but_never_resolves_a_firing_rule() -> None:
    steps = [nothing(T0), bad(T0 + MINUTE), nothing(T0 + 2 * MINUTE), nothing(T0 + 3 * MINUTE)]
    steps += [good(T0 + 4 * MINUTE), nothing(T0 + 5 * MINUTE)]
    assert run(rule(), steps) == [
        ("no data", None),
        ("firing", "firing"),
        ("firing", None),
        ("firing", None),
        ("ok", "resolved"),
        ("no data", None),
    ]


def test_no_data_interrupts_pending() -> None:
    r = rule(for_=timedelta(minutes=2))
    steps = [bad(T0), nothing(T0 + MINUTE), bad(T0 + 2 * MINUTE), bad(T0 + 3 * MINUTE)]
    steps.append(bad(T0 + 4 * MINUTE))
    assert run(r, steps) == [
        ("pending", None),
        ("no data", None),
        ("pending", None),
        ("pending", None),
        ("firing", "firing"),
    ]


def test_the_status_carries_since_the_value_and_the_transition() -> None:
    r = rule(for_=timedelta(minutes=2))
    first, t1 = advance(None, r, bad(T0, 0.4))
    assert first == RuleStatus(r.name, "pending", T0, T0, 0.4, 0.5, 40, T0)
    assert t1 == Transition(T0, r.name, "ok", "pending", 0.4, 0.5)
    second, t2 = advance(first, r, bad(T0 + MINUTE, 0.35))
    assert t2 is None
    assert (second.since, second.pending_since, second.value) == (T0, T0, 0.35)
    third, t3 = advance(second, r, bad(T0 + 2 * MINUTE, 0.2))
    assert (third.state, third.since, third.pending_since) == ("firing", T0 + 2 * MINUTE, None)
    assert t3 is not None and (t3.from_state, t3.to_state, t3.message) == (
        "pending",
        "firing",
        "firing",
    )
    fourth, _ = advance(third, r, bad(T0 + 9 * MINUTE, 0.1))
    assert (fourth.since, fourth.evaluated_at, fourth.value) == (
        T0 + 2 * MINUTE,
        T0 + 9 * MINUTE,
        0.1,
    )


@pytest.mark.parametrize(
    ("before", "after", "message"),
    [
        ("ok", "firing", "firing"),
        ("pending", "firing", "firing"),
        ("no data", "firing", "firing"),
        ("firing", "ok", "resolved"),
        ("ok", "pending", None),
        ("pending", "ok", None),
        ("ok", "no data", None),
        ("no data", "ok", None),
    ],
)
def test_which_transitions_send_a_message(before: str, after: str, message: str | None) -> None:
    t = Transition(T0, "r", before, after, None, None)  # type: ignore[arg-type]
    assert t.message == message


@pytest.fixture
def db(tmp_path: Path) -> Database:
    database = Database(tmp_path / "alerts.duckdb")
    yield database  # type: ignore[misc]
    database.close()


def config(tmp_path: Path, *rules: Rule, reports: tuple[Report, ...] = ()) -> AlertsConfig:
    return AlertsConfig(tmp_path / "alerts.toml", rules=rules, reports=reports)


def test_statuses_and_transitions_come_back_as_stored(db: Database, tmp_path: Path) -> None:
    cur = db.cursor()
    r = rule(for_=timedelta(minutes=2))
    pending, t = advance(None, r, bad(T0))
    assert t is not None
    state.save_statuses(cur, [pending])
    state.add_transition(cur, t, notified=False)
    assert state.load_statuses(cur) == {r.name: pending}
    firing, t2 = advance(pending, r, bad(T0 + 3 * MINUTE))
    assert t2 is not None
    state.save_statuses(cur, [firing])
    state.add_transition(cur, t2, notified=True)
    assert state.load_statuses(cur) == {r.name: firing}
    rows = cur.execute(
        'SELECT "at", rule, from_state, to_state, value, threshold, notified '
        'FROM alert_transitions ORDER BY "at"'
    ).fetchall()
    assert rows == [
        (T0, r.name, "ok", "pending", 0.3, 0.5, False),
        (T0 + 3 * MINUTE, r.name, "pending", "firing", 0.3, 0.5, True),
    ]
    assert cur.execute("SELECT count(*) FROM alert_state").fetchone() == (1,)


def test_loading_rules_forgets_the_state_of_rules_no_longer_in_the_file(
    db: Database, tmp_path: Path
) -> None:
    cur = db.cursor()
    kept = Rule("kept", "calls", ("ops",), window=timedelta(hours=1), below=3, line=4)
    gone = Rule("gone", "spool_depth", (), above=10)
    daily = Report("daily", Schedule("day 08:00", unit="day", at=(8, 0)), timedelta(days=1), ())
    state.replace_rules(cur, config(tmp_path, kept, gone, reports=(daily,)), T0)
    for r in (kept, gone):
        status, _ = advance(None, r, Evaluation(r.name, 1.0, None, 3.0, True, T0))
        state.save_statuses(cur, [status])
    times = state.ReportTimes("daily", "day 08:00", T0 + timedelta(hours=23), None, None)
    state.save_report_times(cur, times)
    assert state.load_report_times(cur) == {"daily": times}
    rows = cur.execute(
        "SELECT rule, metric, condition, window_s, channels, line, loaded_at FROM alert_rules "
        "ORDER BY rule"
    ).fetchall()
    assert rows == [
        ("gone", "spool_depth", "above 10", None, [], None, T0),
        ("kept", "calls", "below 3", 3600.0, ["ops"], 4, T0),
    ]
    state.replace_rules(cur, config(tmp_path, kept), T0 + MINUTE)
    assert set(state.load_statuses(cur)) == {"kept"}
    assert state.load_report_times(cur) == {}
    assert cur.execute("SELECT rule, loaded_at FROM alert_rules").fetchall() == [
        ("kept", T0 + MINUTE)
    ]
