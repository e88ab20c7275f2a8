"""`callstatus alerts check [FILE]`: the file validated, each rule's current value printed (the
value the job would measure), and every mistake refused with its line."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest
import streamlit as st

from callstatus.alerts import rules
from callstatus.alerts.check import run_check
from callstatus.alerts.rules import RulesError
from callstatus.core import server
from callstatus.core.db import Database
from callstatus.core.errors import UsageError
from tests.factories import make_settings, store

NOW = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
RULES = """
[channels.ops-slack]
type = "slack"
url = "https://hooks.slack.com/services/T000/B000/XXXX"

[[rules]]
name = "Agents not picking up"
metric = "dial_answer_rate"
window = "15m"
below = 0.5
min_volume = 4
for = "5m"
channels = ["ops-slack"]

[[rules]]
name = "Busy"
metric = "calls"
window = "1h"
above = 100
min_volume = 50

[[rules]]
name = "No webhooks"
metric = "minutes_since_last_webhook"
above = 10
channels = ["ops-slack"]

[[reports]]
name = "Daily call outcomes"
every = "day 08:00 Europe/Berlin"
channels = ["ops-slack"]
"""


@pytest.fixture(autouse=True)
def _clean() -> Iterator[None]:
    yield
    assert server.installed() is None  # the check removes the handle it installed
    st.cache_data.clear()
    st.cache_resource.clear()


def rules_file(tmp_path: Path, text: str = RULES) -> Path:
    path = tmp_path / "alerts.toml"
    path.write_text(text, encoding="utf-8")
    return path


def dials(db: Database, statuses: list[str], at: datetime) -> None:
    events = [
        ("dial_action", {"CallUUID": f"a{i}", "DialALegUUID": f"a{i}", "DialStatus": status})
        for i, status in enumerate(statuses)
    ]
    store(db, events, start=at)


def check(path: Path | None, tmp_path: Path, **settings: object) -> tuple[int, list[str]]:
    out = io.StringIO()
    code = run_check(path, make_settings(tmp_path, **settings), out=out, now=NOW)
    return code, out.getvalue().splitlines()


def test_each_rules_value_now(tmp_path: Path) -> None:
    db = Database(tmp_path / "callstatus.duckdb")
    # 1 of 5 Dials answered, from 10 minutes ago on, a second apart.
    dials(db, ["completed"] + ["no-answer"] * 4, NOW - timedelta(minutes=10))
    db.close()
    path = rules_file(tmp_path)
    code, lines = check(path, tmp_path)
    assert code == 0
    assert lines == [
        f"{path}: 1 channel, 3 rules, 1 report: valid",
        "report 'Daily call outcomes': every day 08:00 Europe/Berlin, covering the last 1d, "
        "to ops-slack; next at 2026-11-03 08:00 Europe/Berlin",
        f"values from {tmp_path / 'callstatus.duckdb'}",
        "rule 'Agents not picking up' (line 6): dial_answer_rate over 15m = 0.2 (20.0%) "
        "(5 Dials); below 0.5: crossed (fires once it holds for 5m)",
        "rule 'Busy' (line 15): calls over 1h = none (0 calls); above 100: no verdict "
        "(fewer than min_volume 50)",
        "rule 'No webhooks' (line 22): minutes_since_last_webhook = 9.933; above 10: ok",
    ]


def test_the_check_reads_the_snapshot_while_a_server_holds_the_database(
    tmp_path: Path,
) -> None:
    settings = make_settings(tmp_path)
    db = Database(settings.db)
    dials(db, ["completed"] * 3 + ["no-answer"], NOW - timedelta(minutes=3))
    db.close()
    shutil.copyfile(settings.db, settings.snapshot_path)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('held', "
            "flush=True); time.sleep(60)",
            str(settings.db),
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
        with pytest.raises(duckdb.IOException):
            duckdb.connect(str(settings.db), read_only=True)
        code, lines = check(rules_file(tmp_path), tmp_path)
    finally:
        holder.kill()
        holder.wait()
    assert code == 0
    assert lines[2].startswith(f"values from the snapshot {settings.snapshot_path}, written ")
    assert lines[2].endswith("s ago (a server holds the database)")
    assert lines[3].endswith("= 0.75 (75.0%) (4 Dials); below 0.5: ok")


def test_mistakes_are_refused_with_the_line(tmp_path: Path) -> None:
    path = rules_file(tmp_path, RULES.replace('window = "1h"', 'window = "1 hour"'))
    with pytest.raises(RulesError) as caught:
        check(path, tmp_path)
    assert str(caught.value).startswith(f"{path}, line 18: rule 'Busy': key 'window': ")
    path = rules_file(
        tmp_path,
        RULES.replace(
            '"ops-slack"]\n\n[[rules]]\nname = "Busy"', '"ops-slak"]\n\n[[rules]]\nname = "Busy"'
        ),
    )
    with pytest.raises(RulesError, match="line 13: rule 'Agents not picking up': key 'channels'"):
        check(path, tmp_path)


def test_an_email_channel_needs_smtp(tmp_path: Path) -> None:
    mail = '[channels.mail]\ntype = "email"\nto = ["ops@example.com"]\n'
    with pytest.raises(RulesError, match="line 1: channel 'mail': an email channel needs SMTP_"):
        check(rules_file(tmp_path, mail), tmp_path)
    code, lines = check(
        rules_file(tmp_path, mail), tmp_path, SMTP_HOST="127.0.0.1", SMTP_FROM="a@b.example"
    )
    assert (code, lines) == (
        0,
        [f"{tmp_path / 'alerts.toml'}: 1 channel, 0 rules, 0 reports: valid"],
    )


def test_the_file_comes_from_the_settings_or_the_working_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError, match="no rules file: pass FILE, set CALLSTATUS_ALERTS"):
        check(None, tmp_path)
    rules_file(tmp_path)  # ./alerts.toml
    _, lines = check(None, tmp_path)
    assert lines[0] == "alerts.toml: 1 channel, 3 rules, 1 report: valid"
    elsewhere = tmp_path / "conf" / "rules.toml"
    elsewhere.parent.mkdir()
    elsewhere.write_text(RULES.replace("[[reports]]", "[[reports]]\nrange = '2d'"))
    _, lines = check(None, tmp_path, CALLSTATUS_ALERTS=elsewhere)
    assert lines[0] == f"{elsewhere}: 1 channel, 3 rules, 1 report: valid"
    assert "covering the last 2d" in lines[1]


def test_without_a_database_nothing_is_measured(tmp_path: Path) -> None:
    code, lines = check(rules_file(tmp_path), tmp_path)
    assert code == 0
    assert lines[2:] == [f"no database at {tmp_path / 'callstatus.duckdb'}: values not measured"]


def test_a_rule_that_cannot_be_measured_fails_the_check(tmp_path: Path) -> None:
    db = Database(tmp_path / "callstatus.duckdb")
    dials(db, ["completed"] * 4, NOW - timedelta(minutes=3))
    # What the webhook figures read besides the webhooks: the other rules are measured.
    db.cursor().execute("DROP TABLE rejected_webhooks")
    db.close()
    code, lines = check(rules_file(tmp_path), tmp_path)
    assert code == 1
    assert lines[3].endswith("= 1 (100.0%) (4 Dials); below 0.5: ok")
    assert lines[5].startswith("rule 'No webhooks' (line 22): could not be measured: ")
    assert "rejected_webhooks" in lines[5]


def test_a_file_that_is_no_callstatus_database(tmp_path: Path) -> None:
    duckdb.connect(str(tmp_path / "callstatus.duckdb")).close()
    with pytest.raises(UsageError, match="is it a callstatus database"):
        check(rules_file(tmp_path), tmp_path)


def test_describe_matches_the_rules_words(tmp_path: Path) -> None:
    config = rules.loads(RULES, tmp_path / "x.toml")
    assert [rules.describe_condition(r) for r in config.rules] == [
        "below 0.5",
        "above 100",
        "above 10",
    ]
