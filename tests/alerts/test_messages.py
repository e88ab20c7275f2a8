"""Messages for a rule firing and resolving, and a channel's test: what they say, and a link
that opens the dashboard with the rule's filters and range."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from streamlit.testing.v1 import AppTest

from callstatus.alerts import messages
from callstatus.alerts.model import Channel, Evaluation, Rule
from callstatus.core import settings as settings_module
from callstatus.core.db import Database
from callstatus.core.settings import Settings
from tests.factories import T0, make_settings, store

APP = Path(__file__).resolve().parents[2] / "callstatus" / "dashboard" / "app.py"
AT = datetime(2026, 11, 2, 9, 15, 30, tzinfo=UTC)
AGENTS = Rule(
    name="Agents not picking up",
    metric="dial_answer_rate",
    channels=("ops-slack", "ops-mail"),
    window=timedelta(minutes=15),
    below=0.5,
    min_volume=20,
    for_=timedelta(minutes=5),
)


def _settings(tmp_path: Path, **values: object) -> Settings:
    return make_settings(tmp_path, PUBLIC_BASE_URL="https://calls.example.com", **values)


def _evaluation(value: float | None, volume: int | None = 34, threshold: float = 0.5) -> Evaluation:
    return Evaluation(
        rule=AGENTS.name,
        value=value,
        volume=volume,
        threshold=threshold,
        condition=value is not None and value < threshold,
        at=AT,
    )


def test_firing_names_the_rule_metric_value_threshold_window_and_link(tmp_path: Path) -> None:
    message = messages.firing(AGENTS, _evaluation(0.3125), _settings(tmp_path))
    assert message.kind == "firing"
    assert message.title == "Firing: Agents not picking up"
    lines = message.text.splitlines()
    assert lines[0] == message.title
    assert lines[1] == "dial answer rate is 31.2%, below 50.0%, over the last 15 min (34 Dials)."
    assert "It held for 5 min before firing." in lines
    assert dict(message.fields) == {
        "Rule": "Agents not picking up",
        "Metric": "dial answer rate",
        "Value": "31.2%",
        "Threshold": "below 50.0%",
        "Window": "15 min",
        "Volume": "34 Dials",
        "At": "2026-11-02 09:15 UTC",
    }
    assert message.link == "https://calls.example.com/overview?range=Last+hour"
    assert lines[-1] == f"Dashboard: {message.link}"


def test_resolved_says_the_value_is_back(tmp_path: Path) -> None:
    message = messages.resolved(AGENTS, _evaluation(0.8), _settings(tmp_path))
    assert message.kind == "resolved"
    assert message.title == "Resolved: Agents not picking up"
    assert message.text.splitlines()[1] == (
        "dial answer rate is back at 80.0% over the last 15 min (34 Dials); "
        "it fires when below 50.0%."
    )
    assert "before firing" not in message.text
    assert dict(message.fields)["Value"] == "80.0%"


def test_resolved_without_a_verdict(tmp_path: Path) -> None:
    message = messages.resolved(AGENTS, _evaluation(None, volume=None), _settings(tmp_path))
    assert "has no verdict now" in message.text
    assert dict(message.fields)["Value"] == "no data"
    assert "Volume" not in dict(message.fields)


@pytest.mark.parametrize(
    ("rule", "value", "expected_value", "expected_bound", "page"),
    [
        (
            Rule("No webhooks", "minutes_since_last_webhook", ("pager",), above=10),
            12.5,
            "12.5 min",
            "above 10.0 min",
            "health",
        ),
        (Rule("Slow", "acd_seconds", ("p",), below=30), 12.4, "12 s", "below 30 s", "overview"),
        (Rule("Spool", "spool_depth", ("p",), above=1000), 1500, "1,500", "above 1,000", "health"),
        (
            Rule("Busy", "hangup_cause_share", ("p",), above=0.2, cause=3010),
            0.25,
            "25.0%",
            "above 20.0%",
            "causes",
        ),
        (
            Rule("B legs", "b_leg_answer_rate", ("p",), below=0.3),
            0.1,
            "10.0%",
            "below 30.0%",
            "legs",
        ),
    ],
)
def test_values_in_their_units_and_the_page_showing_them(
    tmp_path: Path, rule: Rule, value: float, expected_value: str, expected_bound: str, page: str
) -> None:
    evaluation = Evaluation(rule.name, value, None, None, True, AT)
    message = messages.firing(rule, evaluation, _settings(tmp_path))
    fields = dict(message.fields)
    assert fields["Value"] == expected_value
    assert fields["Threshold"] == expected_bound
    assert message.link is not None and urlsplit(message.link).path == f"/{page}"


def test_a_metric_of_the_moment_has_no_window(tmp_path: Path) -> None:
    rule = Rule("No webhooks", "minutes_since_last_webhook", ("pager",), above=10)
    message = messages.firing(
        rule, Evaluation(rule.name, 42, None, None, True, AT), _settings(tmp_path)
    )
    assert "Window" not in dict(message.fields)
    assert "over the last" not in message.text
    assert (
        message.text.splitlines()[1]
        == "minutes since the last webhook is 42.0 min, above 10.0 min."
    )


def test_a_cause_rule_names_its_cause(tmp_path: Path) -> None:
    rule = Rule("Busy", "hangup_cause_share", ("p",), above=0.2, cause=3010)
    message = messages.firing(
        rule, Evaluation("Busy", 0.25, 80, None, True, AT), _settings(tmp_path)
    )
    assert dict(message.fields)["Metric"] == "share of calls ending with cause 3010"
    assert "(80 calls that ended)" in message.text


def test_a_drop_rule_states_its_baseline(tmp_path: Path) -> None:
    rule = Rule(
        "Dip",
        "dial_answer_rate",
        ("p",),
        window=timedelta(hours=1),
        drop=0.2,
        baseline=timedelta(days=7),
    )
    evaluation = Evaluation("Dip", 0.5, 100, 0.64, True, AT)
    message = messages.firing(rule, evaluation, _settings(tmp_path))
    assert dict(message.fields)["Threshold"] == (
        "below 64.0% (20% under the same window over the last 7 days)"
    )
    # The link shows the baseline's days too.
    assert message.link is not None
    assert parse_qs(urlsplit(message.link).query)["range"] == ["Last 7 days"]


def test_the_link_carries_the_rules_filters(tmp_path: Path) -> None:
    rule = Rule(
        "Sales line",
        "dial_answer_rate",
        ("p",),
        window=timedelta(hours=2),
        below=0.5,
        direction="inbound",
        numbers=("+14155550100", "+14155550101"),
        destinations=("+15550001",),
    )
    message = messages.firing(rule, _evaluation(0.2), _settings(tmp_path))
    assert message.link is not None
    query = parse_qs(urlsplit(message.link).query)
    assert query == {
        "range": ["Last 24 hours"],
        "dir": ["inbound"],
        "num": ["+14155550100", "+14155550101"],
        "dest": ["+15550001"],
    }
    assert (
        "Filters: inbound; our numbers +14155550100, +14155550101; B destinations +15550001."
        in (message.text)
    )


def test_the_dashboard_url_wins_and_no_url_means_no_link(tmp_path: Path) -> None:
    elsewhere = messages.firing(
        AGENTS,
        _evaluation(0.3),
        _settings(tmp_path, CALLSTATUS_DASHBOARD_URL="https://dash.example.com/callstatus/"),
    )
    assert elsewhere.link == "https://dash.example.com/callstatus/overview?range=Last+hour"
    none = messages.firing(AGENTS, _evaluation(0.3), make_settings(tmp_path))
    assert none.link is None
    assert "Dashboard:" not in none.text


@pytest.mark.parametrize(
    ("span", "preset"),
    [
        (timedelta(minutes=15), "Last hour"),
        (timedelta(hours=1), "Last hour"),
        (timedelta(hours=1, minutes=1), "Last 24 hours"),
        (timedelta(days=7), "Last 7 days"),
        (timedelta(days=8), "Last 30 days"),
        (timedelta(days=365), "All time"),
    ],
)
def test_the_range_is_the_shortest_preset_holding_the_window(span: timedelta, preset: str) -> None:
    assert messages.range_preset(span) == preset


def test_the_test_message_names_its_channel(tmp_path: Path) -> None:
    channel = Channel("ops-slack", "slack", url="https://hooks.slack.com/services/T/B/X")
    message = messages.test(channel, _settings(tmp_path))
    assert message.kind == "test"
    assert "ops-slack" in message.title and "ops-slack (slack)" in message.text
    assert message.link == "https://calls.example.com/"
    assert messages.test(channel).link is None
    assert "hooks.slack.com" not in message.text, "the URL is a credential"


@pytest.fixture
def dashboard_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A database with one stored call, so that the dashboard shows its pages."""
    path = tmp_path / "dash.duckdb"
    database = Database(path)
    store(
        database,
        [("hangup", {"CallUUID": "c-1", "Direction": "inbound", "CallStatus": "completed"})],
        start=T0,
    )
    database.close()
    monkeypatch.setenv("CALLSTATUS_DB", str(path))
    settings_module.get_settings.cache_clear()
    yield path
    settings_module.get_settings.cache_clear()


def test_the_dashboard_opens_a_link_with_its_filters(dashboard_db: Path, tmp_path: Path) -> None:
    rule = Rule(
        "B legs",
        "b_leg_answer_rate",
        ("p",),
        window=timedelta(hours=3),
        below=0.5,
        direction="outbound",
        numbers=("+14155550100",),
        destinations=("+15550001", "+15550002"),
    )
    message = messages.firing(rule, _evaluation(0.2), _settings(tmp_path))
    assert message.link is not None
    parts = urlsplit(message.link)
    at = AppTest.from_file(str(APP), default_timeout=60)
    for key, values in parse_qs(parts.query).items():
        at.query_params[key] = values
    at.run()
    at.switch_page(f"screens{parts.path}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.title[0].value == "A/B legs"
    state = at.session_state
    assert state["range"] == "Last 24 hours"
    assert state["dir"] == "outbound"
    assert state["num"] == ["+14155550100"]
    assert state["dest"] == ["+15550001", "+15550002"]
