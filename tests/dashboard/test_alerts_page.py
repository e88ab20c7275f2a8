"""The Alerts page: headless (AppTest) over alert tables filled by hand, every value checked;
the test button through a server in this process sending to a real local HTTP peer; and one
real Chromium against `callstatus serve`, test button included."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import duckdb
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from callstatus.alerts import outbox, rules, state
from callstatus.cli import main as callstatus
from callstatus.core import server
from callstatus.core import settings as settings_module
from callstatus.core.db import Database
from callstatus.core.server import ReceiverStatus, ServerHandle
from callstatus.core.settings import Settings
from callstatus.dashboard.queries.alerts import TABLES
from callstatus.dashboard.screens import alerts as screen
from callstatus.dashboard.text import code, plain
from tests.alerts.peers import HttpPeer, http_peer
from tests.dashboard.chromium import LOAD_MS, assert_clean, choose, main_text, settle
from tests.factories import make_settings
from tests.servers import CHROMIUM, CHROMIUM_ARGS, running_server

APP = str(Path(__file__).resolve().parents[2] / "callstatus" / "dashboard" / "app.py")
PAGE = "screens/alerts.py"
TZ = "Asia/Kolkata"
# Whole seconds: what the tables hold comes back exactly.
NOW = datetime.now(UTC).replace(microsecond=0)
PLANTED = "Carrier failing [login](http://evil.example)"
RETRY_ERROR = "HTTP 500 from hooks.slack.com: [login](http://evil.example) `x` **bold**"
SEND = "Send a test message"
IDLE = ReceiverStatus(spool_depth=0, writer_queue=0, last_error=None, snapshot_age_s=None)


def ago(**delta: float) -> datetime:
    return NOW - timedelta(**delta)


def local(moment: datetime) -> pd.Timestamp:
    """A moment as the page's queries return it: wall time in TZ, without a zone."""
    return pd.Timestamp(moment.astimezone(ZoneInfo(TZ)).replace(tzinfo=None))


# (rule, metric, condition, window_s, channels, line)
RULES = [
    ("Agents not picking up", "dial_answer_rate", "below 0.5", 900.0, ["ops-slack", "ops-mail"],
     12),
    ("No webhooks", "minutes_since_last_webhook", "above 10", None, ["pager"], 20),
    (PLANTED, "failed_share", "above 0.2", 3600.0, ["ops-slack"], 27),
    ("Busy lines", "busy_share", "above 0.3", 900.0, ["ops-mail"], 33),
]  # fmt: skip
# (rule, state, since, pending_since, value, threshold, volume, evaluated_at); the planted rule
# was never evaluated.
STATES = [
    ("Agents not picking up", "firing", ago(minutes=40), None, 0.4231, 0.5, 52, ago(minutes=1)),
    ("No webhooks", "ok", ago(days=2), None, 0.5, 10.0, None, ago(minutes=1)),
    ("Busy lines", "pending", ago(minutes=3), ago(minutes=3), 0.35, 0.3, 40, ago(minutes=1)),
]
# (at, rule, from, to, value, threshold, notified); the first is outside "Last 7 days".
TRANSITIONS = [
    (ago(days=10), "Agents not picking up", "ok", "firing", 0.2, 0.5, True),
    (ago(days=2), "No webhooks", "firing", "ok", 0.5, 10.0, True),
    (ago(minutes=45), "Agents not picking up", "ok", "pending", 0.45, 0.5, False),
    (ago(minutes=40), "Agents not picking up", "pending", "firing", 0.4231, 0.5, True),
    (ago(minutes=3), "Busy lines", "ok", "pending", 0.35, 0.3, False),
]
# (report, schedule, next_due_at, last_sent_at, last_status)
REPORTS = [
    ("Daily call outcomes", "day 08:00 Europe/Berlin", NOW + timedelta(hours=5), ago(hours=19),
     "queued"),
    ("Hourly figures", "hour", NOW + timedelta(minutes=20), None, None),
]  # fmt: skip
# (created_at, channel, kind, title, status, attempts, last_error, next_attempt_at, sent_at)
DELIVERIES = [
    (ago(minutes=40), "ops-mail", "firing", "Firing: Agents not picking up", "sent", 1, None,
     None, ago(minutes=40)),
    (ago(minutes=40), "ops-slack", "firing", "Firing: Agents not picking up", "pending", 2,
     RETRY_ERROR, NOW + timedelta(minutes=3), None),
    (ago(hours=26), "ops-mail", "report", "Daily call outcomes", "failed", 20,
     "SMTP: connection refused", None, None),
    (ago(seconds=30), "pager", "firing", "Firing: No webhooks", "pending", 0, None, NOW, None),
]  # fmt: skip


def fill(path: Path) -> None:
    """The alert tables as the job would leave them, written by hand."""
    database = Database(path)
    cur = database.cursor()
    try:
        for rule, metric, condition, window, channels, line in RULES:
            cur.execute(
                "INSERT INTO alert_rules VALUES (?, ?, ?, ?, ?, ?, ?)",
                [rule, metric, condition, window, channels, line, ago(hours=3)],
            )
        cur.executemany("INSERT INTO alert_state VALUES (?, ?, ?, ?, ?, ?, ?, ?)", STATES)
        cur.executemany("INSERT INTO alert_transitions VALUES (?, ?, ?, ?, ?, ?, ?)", TRANSITIONS)
        cur.executemany("INSERT INTO report_schedule VALUES (?, ?, ?, ?, ?)", REPORTS)
        for n, (created, channel, kind, title, status, attempts, error, next_at, sent) in enumerate(
            DELIVERIES
        ):
            cur.execute(
                f"INSERT INTO alert_deliveries ({outbox.COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, '{}', NULL, ?, ?, ?, ?, ?)",
                [f"00000000-0000-7000-8000-00000000000{n}", created, channel, kind, title,
                 status, attempts, error, next_at, sent],
            )  # fmt: skip
    finally:
        database.close()


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A day of simulated calls (the dashboard shows its pages once a webhook arrived)."""
    path = tmp_path_factory.mktemp("alerts") / "seeded.duckdb"
    assert (
        callstatus(["seed", "--db", str(path), "--calls", "40", "--days", "1", "--seed", "7"]) == 0
    )
    return path


@pytest.fixture
def copy(seeded: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A copy of the seeded file for one test, which the dashboard opens (no server)."""
    path = tmp_path / "alerts.duckdb"
    shutil.copy(seeded, path)
    monkeypatch.setenv("CALLSTATUS_DB", str(path))
    monkeypatch.delenv("CALLSTATUS_ALERTS", raising=False)
    monkeypatch.chdir(tmp_path)  # no alerts.toml here
    settings_module.get_settings.cache_clear()
    yield path
    settings_module.get_settings.cache_clear()


def page(**query: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    for key, value in {"range": "Last 7 days", "tz": TZ, **query}.items():
        at.query_params[key] = value
    at.run()
    at.switch_page(PAGE).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def metric(at: AppTest, label: str) -> str:
    values = [m.value for m in at.metric if m.label == label]
    assert len(values) == 1, (label, [m.label for m in at.metric])
    return str(values[0])


def table(at: AppTest, first_column: str) -> pd.DataFrame:
    """The one dataframe whose first column is `first_column`."""
    frames = [d.value for d in at.dataframe if list(d.value.columns)[:1] == [first_column]]
    assert len(frames) == 1, [list(d.value.columns)[:1] for d in at.dataframe]
    frame: pd.DataFrame = frames[0]
    return frame


def texts(elements: Any) -> list[str]:
    return [str(e.value) for e in elements]


def press(at: AppTest, channel: str | None = None) -> AppTest:
    if channel is not None:
        at.selectbox(key=screen.CHANNEL).set_value(channel)
    [button] = [b for b in at.button if b.label == SEND]
    button.click().run()
    assert not at.exception, [e.value for e in at.exception]
    return at


# -- the page over tables filled by hand -----------------------------------------------------


def test_tiles_count_rules_by_state_and_undelivered_messages(copy: Path) -> None:
    fill(copy)
    at = page()
    assert at.title[0].value == "Alerts"
    assert [metric(at, label) for label in ("Firing", "Pending", "No data", "OK")] == [
        "1",
        "1",
        "0",
        "1",
    ]
    # Given up, waiting for a retry, never tried; the one sent is not counted.
    assert metric(at, "Undelivered") == "3"
    loaded = local(ago(hours=3)).strftime(screen.TIME)
    evaluated = local(ago(minutes=1)).strftime(screen.TIME)
    caption = texts(at.caption)
    assert any(
        f"loaded {loaded}" in text and f"last evaluated {evaluated} (every 1 min)" in text
        for text in caption
    ), caption
    assert any("no server in this process" in text for text in caption), caption


def test_rules_worst_first_with_value_threshold_and_last_change(copy: Path) -> None:
    fill(copy)
    frame = table(page(), "rule")
    assert list(frame["rule"]) == ["Agents not picking up", "Busy lines", "No webhooks", PLANTED]
    assert [list(s) for s in frame["state"]] == [
        ["firing"],
        ["pending"],
        ["ok"],
        ["not evaluated"],
    ]
    assert list(frame["value"].fillna(-1)) == [0.4231, 0.35, 0.5, -1]
    assert list(frame["threshold"].fillna(-1)) == [0.5, 0.3, 10.0, -1]
    assert list(frame["condition"]) == ["below 0.5", "above 0.3", "above 10", "above 0.2"]
    assert list(frame["window"]) == ["15 min", "15 min", "—", "1 h"]
    assert list(frame["volume"].fillna(-1)) == [52, 40, -1, -1]
    assert list(frame["channels"]) == ["ops-slack, ops-mail", "ops-mail", "pager", "ops-slack"]
    assert list(frame["last_change"].fillna("")) == [
        "pending → firing",
        "ok → pending",
        "firing → ok",
        "",
    ]
    assert list(frame["last_change_at"][:3]) == [
        local(ago(minutes=40)),
        local(ago(minutes=3)),
        local(ago(days=2)),
    ]
    assert pd.isna(frame["last_change_at"].iloc[3])
    assert list(frame["since"][:3]) == [
        local(ago(minutes=40)),
        local(ago(minutes=3)),
        local(ago(days=2)),
    ]


def test_history_in_the_range_newest_first(copy: Path) -> None:
    fill(copy)
    frame = table(page(), "at")
    in_range = sorted(TRANSITIONS[1:], key=lambda t: t[0], reverse=True)
    assert list(frame["at"]) == [local(t[0]) for t in in_range]
    assert list(frame["rule"]) == [t[1] for t in in_range]
    assert [list(s) for s in frame["from_state"]] == [[t[2]] for t in in_range]
    assert [list(s) for s in frame["to_state"]] == [[t[3]] for t in in_range]
    assert list(frame["notified"]) == [t[6] for t in in_range]
    # "Last 30 days" reaches the oldest change too.
    assert len(table(page(range="Last 30 days"), "at")) == len(TRANSITIONS)


def test_reports_with_their_next_run(copy: Path) -> None:
    fill(copy)
    frame = table(page(), "report")
    assert list(frame["report"]) == ["Hourly figures", "Daily call outcomes"]  # soonest first
    assert list(frame["schedule"]) == ["hour", "day 08:00 Europe/Berlin"]
    assert list(frame["next_due_at"]) == [
        local(NOW + timedelta(minutes=20)),
        local(NOW + timedelta(hours=5)),
    ]
    assert pd.isna(frame["last_sent_at"].iloc[0])
    assert frame["last_sent_at"].iloc[1] == local(ago(hours=19))
    assert list(frame["last_status"].fillna("")) == ["", "queued"]


def test_undelivered_messages_with_their_errors_as_text(copy: Path) -> None:
    fill(copy)
    at = page()
    frame = table(at, "created_at")
    assert list(frame["channel"]) == ["pager", "ops-slack", "ops-mail"]  # newest first
    assert list(frame["status"]) == ["pending", "pending", "failed"]
    assert list(frame["attempts"]) == [0, 2, 20]
    assert list(frame["last_error"].fillna("")) == ["", RETRY_ERROR, "SMTP: connection refused"]
    assert frame["next_attempt_at"].iloc[1] == local(NOW + timedelta(minutes=3))
    errors = [e.value for e in at.error]
    assert any(
        "**1** given up" in text and "**2** waiting to be sent or retried" in text
        for text in errors
    ), errors
    # The newest error verbatim in a code block, its channel as plain text.
    assert [c.value for c in at.code if c.language == "text"] == [RETRY_ERROR]
    assert f"The newest error, from {plain('ops-slack')}:" in texts(at.caption)
    # The planted Markdown never reaches a Markdown element as Markdown.
    for element in (*at.markdown, *at.caption, *at.error, *at.info, *at.warning):
        assert "](http" not in str(element.value), element.value


def test_the_test_button_without_a_server_says_so(copy: Path) -> None:
    fill(copy)
    at = page()
    assert at.selectbox(key=screen.CHANNEL).options == ["ops-mail", "ops-slack", "pager"]
    press(at, "pager")
    warnings = texts(at.warning)
    assert any("No server runs in this process" in text for text in warnings), warnings
    assert not at.info


# -- without rules ---------------------------------------------------------------------------


def test_no_rules_loaded_says_how_to_set_them_up(copy: Path) -> None:
    at = page()
    [info] = texts(at.info)
    assert "**No alert rules are loaded.**" in info
    for part in ("`CALLSTATUS_ALERTS`", "`alerts.toml`", "docs/alerts.md"):
        assert part in info
    assert "`callstatus alerts check FILE`" in info
    assert not at.metric and not at.dataframe and not at.button


def test_a_rules_file_named_but_not_loaded(
    copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    named = tmp_path / "my alerts.toml"
    monkeypatch.setenv("CALLSTATUS_ALERTS", str(named))
    settings_module.get_settings.cache_clear()
    [info] = texts(page().info)
    assert info.startswith(f"**No rules or reports loaded** from {code(named)}.")
    assert code(f"callstatus alerts check {named}") in info


def test_a_file_from_before_the_alert_tables(copy: Path) -> None:
    con = duckdb.connect(str(copy))
    try:
        for name in TABLES:
            con.execute(f"DROP TABLE {name}")
    finally:
        con.close()
    [info] = texts(page().info)
    assert info.startswith("This database has no alert tables yet")
    assert "**No alert rules are loaded.**" in info


# -- through a server in this process --------------------------------------------------------


RULES_FILE = """
[channels.ops-slack]
type = "slack"
url = "{url}/slack"

[channels.pager]
type = "webhook"
url = "{url}/hook"
secret = "s3cret"

[[rules]]
name = "Agents not picking up"
metric = "dial_answer_rate"
window = "15m"
below = 0.5
channels = ["ops-slack", "pager"]
"""


@pytest.fixture
def serving(copy: Path, tmp_path: Path) -> Iterator[tuple[Database, Settings, HttpPeer]]:
    """The copy opened as `callstatus serve` would, its rules (pointing at a local HTTP peer)
    stored as the alert job stores them; the handle installed by the test."""
    with http_peer(secret="s3cret") as peer:
        # Not ./alerts.toml: tests of a server without a rules file run in tmp_path.
        path = tmp_path / "rules" / "ops.toml"
        path.parent.mkdir()
        path.write_text(RULES_FILE.format(url=peer.url), encoding="utf-8")
        settings = make_settings(tmp_path, CALLSTATUS_DB=copy, CALLSTATUS_ALERTS=path)
        database = Database(copy)
        config = rules.load(path)
        state.replace_rules(database.cursor(), config, NOW)
        try:
            yield database, settings, peer
        finally:
            server.install(None)
            database.close()


def install(database: Database, settings: Settings, send: bool) -> None:
    """Install the handle as the runtime does; with `send`, its test sender (the outbox's)."""
    config = rules.load(settings.alerts_path) if settings.alerts_path else None

    def send_test(channel: str) -> str:
        assert config is not None
        return outbox.send_test(database.cursor(), config, settings, channel)

    server.install(
        ServerHandle(settings, database, None, lambda: IDLE, send_test if send else None)
    )


def test_the_test_button_shows_the_servers_line(
    serving: tuple[Database, Settings, HttpPeer],
) -> None:
    database, settings, peer = serving
    install(database, settings, send=True)
    at = page()
    assert at.selectbox(key=screen.CHANNEL).options == ["ops-slack", "pager"]
    press(at, "pager")
    [info] = texts(at.info)
    assert info.endswith(" · " + plain("test message sent to pager")), info
    [received] = peer.accepted
    assert received.path == "/hook" and "callstatus test: pager" in received.body.decode()
    assert "created_at" not in [next(iter(d.value.columns)) for d in at.dataframe]  # all sent


def test_a_failed_test_shows_at_once_among_the_undelivered(
    serving: tuple[Database, Settings, HttpPeer],
) -> None:
    database, settings, peer = serving
    peer.fail, peer.fail_status = 1, 503
    install(database, settings, send=True)
    at = press(page(), "ops-slack")
    [info] = texts(at.info)
    assert plain("test message to ops-slack failed: ") in info, info
    assert "503" in info and info.endswith(plain("(retried with backoff)"))
    frame = table(at, "created_at")
    assert list(frame[["channel", "kind", "status", "attempts"]].itertuples(index=False)) == [
        ("ops-slack", "test", "pending", 1)
    ]
    assert "503" in frame["last_error"].iloc[0]
    assert [c.value for c in at.code if c.language == "text"] == [frame["last_error"].iloc[0]]


def test_a_server_without_alerts_says_it_cannot_send(
    serving: tuple[Database, Settings, HttpPeer],
) -> None:
    database, settings, peer = serving
    install(database, settings, send=False)
    at = press(page(), "ops-slack")
    warnings = texts(at.warning)
    assert any("This server runs without alerts" in text for text in warnings), warnings
    assert not peer.requests


def test_a_server_without_a_rules_file_flags_rules_of_an_earlier_start(
    serving: tuple[Database, Settings, HttpPeer], tmp_path: Path
) -> None:
    database, _, _ = serving
    install(database, make_settings(tmp_path, CALLSTATUS_DB=database.path), send=False)
    warnings = texts(page().warning)
    assert any("started without a rules file" in text for text in warnings), warnings


# -- in Chromium, over a real server ---------------------------------------------------------


def open_alerts(
    url: str,
    page: Any,
    screenshot: Path | None = None,
    channel: str | None = None,
    expect: str = "This server runs without alerts",
) -> str:
    """Open the Alerts page, pick `channel` (else the first), press the test button, wait for
    `expect`; the page's text then."""
    page.goto(f"{url}/alerts?range=Last+7+days&tz=UTC", timeout=LOAD_MS)
    button = page.get_by_role("button", name=SEND)
    button.wait_for(timeout=LOAD_MS)
    assert_clean(page, "opening the Alerts page")
    page.locator('[data-testid="stMain"] [role="gridcell"]').filter(
        has_text="Agents not picking up"
    ).first.wait_for(state="attached", timeout=LOAD_MS)
    if channel is not None:
        choose(
            page, page.locator('[data-testid="stSelectbox"]').filter(has_text="Channel"), channel
        )
        settle(page)
    button.click()
    page.get_by_text(expect).wait_for(timeout=LOAD_MS)
    assert_clean(page, "pressing the test button")
    if screenshot is not None:
        page.screenshot(path=str(screenshot), full_page=True)
    return main_text(page)


@contextmanager
def chromium_page() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium is not installed")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser.new_page(viewport={"width": 1440, "height": 1000})
        finally:
            browser.close()


@pytest.mark.browser
def test_the_page_in_chromium(seeded: Path, tmp_path: Path) -> None:
    db = tmp_path / "chromium.duckdb"
    shutil.copy(seeded, db)
    fill(db)
    with running_server(db) as running, chromium_page() as page:
        text = open_alerts(running.url, page, tmp_path / "alerts.png")
        firing = page.locator('[data-testid="stMetric"]').filter(has_text="Firing")
        assert firing.inner_text().split() == ["Firing", "1"]
        cells = page.locator('[data-testid="stMain"] [role="gridcell"]').all_inner_texts()
        for name in ("Agents not picking up", "Busy lines", PLANTED, "Daily call outcomes"):
            assert name in cells, (name, cells)
        assert RETRY_ERROR in text  # the newest error, verbatim
        assert page.locator('a[href*="evil.example"]').count() == 0
        assert (tmp_path / "alerts.png").stat().st_size > 10_000


@pytest.mark.browser
def test_the_test_button_in_chromium_reaches_the_channel(seeded: Path, tmp_path: Path) -> None:
    db = tmp_path / "serving.duckdb"
    shutil.copy(seeded, db)
    with http_peer(secret="s3cret") as peer:
        rules_file = tmp_path / "ops.toml"
        rules_file.write_text(RULES_FILE.format(url=peer.url), encoding="utf-8")
        env = {"CALLSTATUS_ALERTS": str(rules_file)}
        with running_server(db, env) as running, chromium_page() as page:
            text = open_alerts(
                running.url, page, channel="pager", expect="test message sent to pager"
            )
            assert "Rules from" in text and "ops.toml" in text
        # Signed with the channel's secret: the peer accepts only a valid HMAC.
        tests = [r for r in peer.accepted if "callstatus test: pager" in r.body.decode()]
        assert [r.path for r in tests] == ["/hook"]
