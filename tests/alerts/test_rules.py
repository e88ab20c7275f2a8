"""The rules file: the issue's example as written, durations and schedules, and every mistake
refused with the file, line, rule and key at fault."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from callstatus.alerts import rules
from callstatus.alerts.model import Channel, Schedule
from callstatus.alerts.rules import RulesError
from callstatus.core.numbers import NumberMasker, pseudonym
from callstatus.core.settings import SettingsError
from tests.factories import make_settings

EXAMPLE = """\
[channels.ops-slack]
type = "slack"             # Slack incoming-webhook JSON
url = "https://hooks.slack.com/services/T000/B000/XXXX"

[channels.ops-mail]
type = "email"             # SMTP from SMTP_HOST, SMTP_PORT, ...
to = ["ops@example.com"]

[channels.pager]
type = "webhook"           # JSON POST; HMAC-SHA256 of the body, hex, in X-Callstatus-Signature
url = "https://example.com/hooks/callstatus"
secret = "change-me"

[[rules]]
name = "Agents not picking up"
metric = "dial_answer_rate"
window = "15m"
below = 0.5
min_volume = 20            # fewer dials in the window: no verdict
for = "5m"                 # must hold this long before it fires (optional)
channels = ["ops-slack", "ops-mail"]

[[rules]]
name = "No webhooks"
metric = "minutes_since_last_webhook"
above = 10
channels = ["pager"]

[[reports]]
name = "Daily call outcomes"
every = "day 08:00 Europe/Berlin"   # also "hour", "week mon 08:00 UTC", or an interval
range = "1d"
channels = ["ops-mail"]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "alerts.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_issues_example_loads_as_written(tmp_path: Path) -> None:
    path = write(tmp_path, EXAMPLE)
    config = rules.load(path)
    assert config.path == path
    assert config.channels == {
        "ops-slack": Channel(
            "ops-slack", "slack", url="https://hooks.slack.com/services/T000/B000/XXXX"
        ),
        "ops-mail": Channel("ops-mail", "email", to=("ops@example.com",)),
        "pager": Channel(
            "pager", "webhook", url="https://example.com/hooks/callstatus", secret="change-me"
        ),
    }
    agents, silence = config.rules
    assert (agents.name, agents.metric, agents.below, agents.above) == (
        "Agents not picking up",
        "dial_answer_rate",
        0.5,
        None,
    )
    assert agents.window == timedelta(minutes=15)
    assert agents.for_ == timedelta(minutes=5)
    assert agents.min_volume == 20
    assert agents.channels == ("ops-slack", "ops-mail")
    assert agents.line == 14
    assert (silence.metric, silence.above, silence.channels, silence.line) == (
        "minutes_since_last_webhook",
        10.0,
        ("pager",),
        23,
    )
    assert silence.for_ == timedelta(0)
    (report,) = config.reports
    assert report.every == Schedule(
        "day 08:00 Europe/Berlin", unit="day", at=(8, 0), zone="Europe/Berlin"
    )
    assert (report.range, report.channels, report.line) == (
        timedelta(days=1),
        ("ops-mail",),
        29,
    )


def test_filters_causes_and_the_baseline_form(tmp_path: Path) -> None:
    text = """
[[rules]]
name = "Fewer answered than usual"
metric = "call_answer_rate"
window = "1h"
drop = 0.2
baseline = "7d"
direction = "outbound"
numbers = ["+14155550100"]
destinations = ["+1700", "+1701"]

[[rules]]
name = "Carrier failing"
metric = "b_leg_hangup_cause_share"
cause = 3000
above = 0.25
"""
    baseline, cause = rules.load(write(tmp_path, text)).rules
    assert (baseline.drop, baseline.baseline) == (0.2, timedelta(days=7))
    assert (baseline.below, baseline.above, baseline.channels) == (None, None, ())
    assert baseline.direction == "outbound"
    assert baseline.numbers == ("+14155550100",)
    assert baseline.destinations == ("+1700", "+1701")
    assert rules.describe_condition(baseline) == "20% below the 7d baseline"
    assert (cause.cause, cause.above, cause.window) == (3000, 0.25, timedelta(minutes=15))
    assert rules.describe_condition(cause) == "above 0.25"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", timedelta(seconds=30)),
        ("15m", timedelta(minutes=15)),
        ("2h", timedelta(hours=2)),
        ("1d", timedelta(days=1)),
        ("7d", timedelta(days=7)),
        ("1w", timedelta(days=7)),
        ("1h30m", timedelta(minutes=90)),
        ("0s", timedelta(0)),
    ],
)
def test_durations(text: str, expected: timedelta) -> None:
    assert rules.parse_duration(text) == expected
    assert rules.parse_duration(rules.show_duration(expected)) == expected


@pytest.mark.parametrize("text", ["", "15", "m", "15x", "1.5h", "-5m", "15 minutes", "h1"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        rules.parse_duration(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("day 08:00 Europe/Berlin", Schedule("", unit="day", at=(8, 0), zone="Europe/Berlin")),
        ("day 23:59", Schedule("", unit="day", at=(23, 59), zone="UTC")),
        ("hour", Schedule("", unit="hour")),
        ("week mon 08:00 UTC", Schedule("", unit="week", at=(8, 0), weekday=0, zone="UTC")),
        (
            "week Sunday 7:30 Asia/Kolkata",
            Schedule("", unit="week", at=(7, 30), weekday=6, zone="Asia/Kolkata"),
        ),
        ("30m", Schedule("", interval=timedelta(minutes=30))),
        ("2h", Schedule("", interval=timedelta(hours=2))),
    ],
)
def test_schedules(text: str, expected: Schedule) -> None:
    parsed = rules.parse_schedule(text)
    assert parsed.text == text
    assert (parsed.interval, parsed.unit, parsed.at, parsed.weekday, parsed.zone) == (
        expected.interval,
        expected.unit,
        expected.at,
        expected.weekday,
        expected.zone,
    )


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("day", "not a schedule"),
        ("day 25:00", "not a time of day"),
        ("day 08:00 Mars/Olympus", "not a time zone"),
        ("week 08:00", "not a schedule"),
        ("week someday 08:00", "not a weekday"),
        ("hour 08:00", "not a schedule"),
        ("30s", "shorter than 1m"),
        ("fortnightly", "not a schedule"),
    ],
)
def test_bad_schedules(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        rules.parse_schedule(text)


def test_a_report_range_defaults_to_its_period(tmp_path: Path) -> None:
    text = """
[channels.mail]
type = "email"
to = ["a@example.com"]

[[reports]]
name = "Weekly"
every = "week mon 08:00 UTC"
channels = ["mail"]

[[reports]]
name = "Half-hourly"
every = "30m"
channels = ["mail"]
"""
    weekly, half = rules.load(write(tmp_path, text)).reports
    assert weekly.range == timedelta(days=7)
    assert half.range == timedelta(minutes=30)


# (what to change in EXAMPLE, the line, where, the key, words of the problem)
MISTAKES = [
    (
        ('metric = "dial_answer_rate"', 'metric = "dial_answer_rat"'),
        16,
        "rule 'Agents not picking up'",
        "metric",
        "'dial_answer_rat' is not a metric",
    ),
    (
        ('channels = ["pager"]', 'channels = ["pagr"]'),
        27,
        "rule 'No webhooks'",
        "channels",
        "no channel named 'pagr'",
    ),
    (
        ('window = "15m"', 'window = "15x"'),
        17,
        "rule 'Agents not picking up'",
        "window",
        "'15x' is not a duration",
    ),
    (
        ('window = "15m"', "window = 15"),
        17,
        "rule 'Agents not picking up'",
        "window",
        "must be a quoted duration",
    ),
    (
        ('for = "5m"', 'for = "soon"'),
        20,
        "rule 'Agents not picking up'",
        "for",
        "'soon' is not a duration",
    ),
    (
        ("below = 0.5", "below = 50"),
        18,
        "rule 'Agents not picking up'",
        "below",
        "out of range for dial_answer_rate",
    ),
    (
        ("below = 0.5", 'below = "half"'),
        18,
        "rule 'Agents not picking up'",
        "below",
        "is not a number",
    ),
    (
        ("above = 10", "above = 10\nbelow = 1"),
        27,
        "rule 'No webhooks'",
        "below",
        "exactly one of below, above or drop",
    ),
    (
        ("min_volume = 20 ", "min_volume = -1 "),
        19,
        "rule 'Agents not picking up'",
        "min_volume",
        "not a whole number",
    ),
    (
        ("above = 10", 'above = 10\nwindow = "5m"'),
        27,
        "rule 'No webhooks'",
        "window",
        "does not apply to minutes_since_last_webhook",
    ),
    (
        ("above = 10", "above = 10\ntreshold = 3"),
        27,
        "rule 'No webhooks'",
        "treshold",
        "unknown",
    ),
    (
        ('type = "slack" ', 'type = "teams" '),
        2,
        "channel 'ops-slack'",
        "type",
        "'teams' is not a channel type",
    ),
    (
        ('secret = "change-me"', ""),
        9,
        "channel 'pager'",
        "secret",
        "missing",
    ),
    (
        ('to = ["ops@example.com"]', 'to = ["ops.example.com"]'),
        7,
        "channel 'ops-mail'",
        "to",
        "not an email address",
    ),
    (
        ('url = "https://example.com/hooks/callstatus"', 'url = "example.com/hooks"'),
        11,
        "channel 'pager'",
        "url",
        "not an http(s) URL",
    ),
    (
        ('every = "day 08:00 Europe/Berlin"', 'every = "day 8 o\'clock"'),
        31,
        "report 'Daily call outcomes'",
        "every",
        "not a time of day",
    ),
    (
        ('range = "1d"', 'range = "a day"'),
        32,
        "report 'Daily call outcomes'",
        "range",
        "not a duration",
    ),
    (
        ('name = "No webhooks"', 'name = "Agents not picking up"'),
        24,
        "rule 'Agents not picking up'",
        "name",
        "a second rule with this name",
    ),
    (
        ('name = "No webhooks"', "name = 7"),
        24,
        "rule #2",
        "name",
        "missing",
    ),
]


@pytest.mark.parametrize(("change", "line", "where", "key", "problem"), MISTAKES)
def test_mistakes_name_the_file_line_rule_and_key(
    tmp_path: Path, change: tuple[str, str], line: int, where: str, key: str, problem: str
) -> None:
    old, new = change
    assert old in EXAMPLE
    path = write(tmp_path, EXAMPLE.replace(old, new, 1))
    with pytest.raises(RulesError) as caught:
        rules.load(path)
    error = caught.value
    assert isinstance(error, SettingsError)  # serve refuses to start on it
    assert (error.path, error.line, error.where, error.key) == (path, line, where, key)
    assert problem in error.problem
    message = str(error)
    assert message.startswith(f"{path}, line {line}: {where}: key {key!r}: ")
    assert "\n" not in message


@pytest.mark.parametrize(
    ("rule", "key", "problem"),
    [
        ('metric = "spool_depth"\nabove = 5\nmin_volume = 3', "min_volume", "does not apply"),
        (
            'metric = "rejected_webhooks"\nabove = 5\ndirection = "inbound"',
            "direction",
            "does not apply",
        ),
        (
            'metric = "missed_call_share"\nabove = 0.1\nnumbers = ["+1"]',
            "numbers",
            "does not apply",
        ),
        (
            'metric = "calls"\ndrop = 0.5\nbaseline = "7d"\ncause = 3000',
            "cause",
            "only hangup_cause_share",
        ),
        ('metric = "hangup_cause_share"\nabove = 0.1', "cause", "missing"),
        (
            'metric = "hangup_cause_share"\nabove = 0.1\ncause = "busy"',
            "cause",
            "not a Plivo hangup code",
        ),
        ('metric = "calls"\ndrop = 0.2', "baseline", "missing"),
        ('metric = "calls"\ndrop = 20\nbaseline = "7d"', "drop", "not a fraction"),
        ('metric = "calls"\ndrop = 0.2\nbaseline = "36h"', "baseline", "whole days"),
        ('metric = "calls"\nbelow = 3\nbaseline = "7d"', "baseline", "only a drop rule"),
        ('metric = "spool_depth"\ndrop = 0.2\nbaseline = "7d"', "drop", "does not apply"),
        ('metric = "calls"\nbelow = 3\nwindow = "30s"', "window", "from 1m to 7d"),
        (
            'metric = "calls"\nbelow = 3\ndirection = "sideways"',
            "direction",
            "not inbound or outbound",
        ),
        ('metric = "calls"\nbelow = 3\nnumbers = "+1"', "numbers", "list of strings"),
        ('metric = "calls"', "below", "exactly one of below, above or drop"),
        ("below = 3", "metric", "missing"),
    ],
)
def test_rule_keys_are_checked_against_the_metric(
    tmp_path: Path, rule: str, key: str, problem: str
) -> None:
    path = write(tmp_path, f'# a comment\n\n[[rules]]\nname = "r"\n{rule}\n')
    with pytest.raises(RulesError) as caught:
        rules.load(path)
    error = caught.value
    assert (error.where, error.key) == ("rule 'r'", key)
    assert problem in error.problem
    lines = path.read_text().splitlines()
    assert error.line is not None
    expected = next((n for n, text in enumerate(lines, 1) if text.startswith(f"{key} =")), 3)
    assert error.line == expected


def test_invalid_toml_names_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, EXAMPLE.replace("below = 0.5", "below = 0.5 0.6"))
    with pytest.raises(RulesError, match=r"alerts.toml, line 18: not valid TOML") as caught:
        rules.load(path)
    assert caught.value.line == 18


def test_unknown_sections_and_quoted_channel_names(tmp_path: Path) -> None:
    text = '[channels."ops slack"]\ntype = "slack"\nurl = "https://x.test/h"\n\n[rule]\nx = 1\n'
    with pytest.raises(RulesError) as caught:
        rules.load(write(tmp_path, text))
    assert (caught.value.line, caught.value.key) == (5, "rule")
    text = '\n[channels."ops slack"]\ntype = "slack"\nurl = 5\n'
    with pytest.raises(RulesError) as caught:
        rules.load(write(tmp_path, text))
    assert (caught.value.line, caught.value.where, caught.value.key) == (
        4,
        "channel 'ops slack'",
        "url",
    )


def test_inline_channel_tables_are_found_too(tmp_path: Path) -> None:
    text = '[channels]\nok = { type = "slack", url = "https://x.test/h" }\nbad = { type = "fax" }\n'
    with pytest.raises(RulesError) as caught:
        rules.load(write(tmp_path, text))
    assert (caught.value.line, caught.value.where, caught.value.key) == (
        3,
        "channel 'bad'",
        "type",
    )


def test_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(RulesError, match="cannot read it"):
        rules.load(tmp_path / "nowhere.toml")


def test_email_channels_need_smtp(tmp_path: Path) -> None:
    config = rules.load(write(tmp_path, EXAMPLE))
    with pytest.raises(RulesError) as caught:
        rules.require_settings(config, make_settings(tmp_path, SMTP_HOST="smtp.example.com"))
    assert (caught.value.line, caught.value.where) == (5, "channel 'ops-mail'")
    assert "SMTP_FROM" in caught.value.problem and "SMTP_HOST" not in caught.value.problem
    rules.require_settings(
        config, make_settings(tmp_path, SMTP_HOST="smtp.example.com", SMTP_FROM="a@b.c")
    )
    slack = '[channels.s]\ntype = "slack"\nurl = "https://x.test/h"\n'
    rules.require_settings(rules.loads(slack, Path("x")), make_settings(tmp_path))


def test_masked_mode_matches_clear_destinations_by_their_pseudonyms(tmp_path: Path) -> None:
    text = """
[[rules]]
name = "Agent not answering"
metric = "b_leg_answer_rate"
below = 0.5
numbers = ["+14155550100"]
destinations = ["+442071838750", "sip:agent7@example.com"]
"""
    config = rules.load(write(tmp_path, text))
    key = "k" * 32
    masked = make_settings(
        tmp_path,
        CALLSTATUS_NUMBERS="masked",
        CALLSTATUS_NUMBER_KEY=key,
        CALLSTATUS_OWN_NUMBERS="+14155550100",
    )
    [rule] = rules.as_stored(config, masked).rules
    assert rule.destinations == (
        pseudonym("+442071838750", key),
        NumberMasker(key, []).mask("sip:agent7@example.com"),
    )
    assert "+14155550100" in rule.numbers  # our own number stays as written
    # Clear mode: the file's values as they are.
    assert rules.as_stored(config, make_settings(tmp_path)).rules == config.rules
