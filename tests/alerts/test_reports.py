"""Reports: when each schedule is due (across DST), and a report's figures, causes and charts
on a hand-built day of calls, delivered by email (PNGs attached) and to Slack."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import pytest
import vl_convert

from callstatus.alerts import reports
from callstatus.alerts.channels import send
from callstatus.alerts.model import Channel, Report, Schedule
from callstatus.core import rollups
from callstatus.core import settings as settings_module
from callstatus.core.db import Database
from callstatus.core.records import Params
from callstatus.core.settings import Settings
from callstatus.dashboard import charts, connection
from callstatus.dashboard.queries import causes, overview
from tests.alerts.peers import http_peer, smtp_peer
from tests.factories import make_settings, store

BERLIN = "Europe/Berlin"


def _utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, micro: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, micro, tzinfo=UTC)


def _day(at: tuple[int, int], zone: str = "UTC") -> Schedule:
    return Schedule(text=f"day {at[0]:02d}:{at[1]:02d} {zone}", unit="day", at=at, zone=zone)


# --- next_due ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("after", "expected"),
    [
        # 08:00 in Berlin is 07:00 UTC in winter (CET) and 06:00 UTC in summer (CEST).
        (_utc(2026, 3, 27, 12, 0), _utc(2026, 3, 28, 7, 0)),
        # Spring forward on Sunday 29 March 2026: the next 08:00 comes 23 hours later.
        (_utc(2026, 3, 28, 7, 0), _utc(2026, 3, 29, 6, 0)),
        # Fall back on Sunday 25 October 2026: 25 hours later.
        (_utc(2026, 10, 24, 6, 0), _utc(2026, 10, 25, 7, 0)),
        # Just before the time: the same day; at the time itself: the next day.
        (_utc(2026, 11, 2, 6, 59, 59), _utc(2026, 11, 2, 7, 0)),
        (_utc(2026, 11, 2, 7, 0), _utc(2026, 11, 3, 7, 0)),
    ],
)
def test_a_daily_report_keeps_its_local_time_across_dst(
    after: datetime, expected: datetime
) -> None:
    assert reports.next_due(_day((8, 0), BERLIN), after) == expected


def test_a_time_the_clock_skips_is_sent_an_hour_late() -> None:
    # 02:30 does not exist in Berlin on 29 March 2026 (02:00 CET -> 03:00 CEST).
    due = reports.next_due(_day((2, 30), BERLIN), _utc(2026, 3, 28, 12, 0))
    assert due == _utc(2026, 3, 29, 1, 30)
    assert due.astimezone(ZoneInfo(BERLIN)).strftime("%H:%M") == "03:30"


def test_a_time_the_clock_shows_twice_is_sent_once() -> None:
    # 02:30 happens twice in Berlin on 25 October 2026: 00:30 UTC (CEST) and 01:30 UTC (CET).
    schedule = _day((2, 30), BERLIN)
    first = reports.next_due(schedule, _utc(2026, 10, 24, 12, 0))
    assert first == _utc(2026, 10, 25, 0, 30)
    assert reports.next_due(schedule, first) == _utc(2026, 10, 26, 1, 30)


def test_weekly_on_its_weekday() -> None:
    monday = Schedule(text="week mon 08:00 UTC", unit="week", at=(8, 0), weekday=0)
    # Monday 2 November 2026, 09:00: next Monday; Sunday the 1st: the day after.
    assert reports.next_due(monday, _utc(2026, 11, 2, 9, 0)) == _utc(2026, 11, 9, 8, 0)
    assert reports.next_due(monday, _utc(2026, 11, 1, 23, 0)) == _utc(2026, 11, 2, 8, 0)
    assert reports.next_due(monday, _utc(2026, 11, 2, 7, 59)) == _utc(2026, 11, 2, 8, 0)


def test_weekly_in_a_zone_across_dst() -> None:
    monday = Schedule(
        text=f"week mon 08:00 {BERLIN}", unit="week", at=(8, 0), weekday=0, zone=BERLIN
    )
    # Monday 23 March (CET) then Monday 30 March (CEST).
    first = reports.next_due(monday, _utc(2026, 3, 22, 0, 0))
    assert first == _utc(2026, 3, 23, 7, 0)
    assert reports.next_due(monday, first) == _utc(2026, 3, 30, 6, 0)


def test_hourly_is_every_hour_across_dst() -> None:
    hourly = Schedule(text="hour", unit="hour", zone=BERLIN)
    moment = _utc(2026, 3, 29, 0, 0)
    times = []
    for _ in range(4):
        moment = reports.next_due(hourly, moment)
        times.append(moment)
    assert times == [_utc(2026, 3, 29, h, 0) for h in (1, 2, 3, 4)]
    # A zone half an hour off UTC: on the hour there is at :30 UTC.
    kolkata = Schedule(text="hour", unit="hour", zone="Asia/Kolkata")
    assert reports.next_due(kolkata, _utc(2026, 11, 2, 9, 0)) == _utc(2026, 11, 2, 9, 30)


@pytest.mark.parametrize(
    ("interval", "after", "expected"),
    [
        (timedelta(minutes=30), _utc(2026, 11, 2, 9, 0), _utc(2026, 11, 2, 9, 30)),
        (timedelta(minutes=30), _utc(2026, 11, 2, 9, 29, 59), _utc(2026, 11, 2, 9, 30)),
        (timedelta(minutes=30), _utc(2026, 11, 2, 9, 30, 0, 1), _utc(2026, 11, 2, 10, 0)),
        (timedelta(hours=6), _utc(2026, 11, 2, 23, 0), _utc(2026, 11, 3, 0, 0)),
        (timedelta(seconds=90), _utc(2026, 11, 2, 9, 0), _utc(2026, 11, 2, 9, 1, 30)),
    ],
)
def test_intervals_count_from_the_epoch(
    interval: timedelta, after: datetime, expected: datetime
) -> None:
    schedule = Schedule(text="interval", interval=interval)
    assert reports.next_due(schedule, after) == expected


def test_naive_times_are_utc() -> None:
    schedule = Schedule(text="30m", interval=timedelta(minutes=30))
    assert reports.next_due(schedule, datetime(2026, 11, 2, 9, 10)) == _utc(2026, 11, 2, 9, 30)


# --- build ---------------------------------------------------------------------------------

OURS = "+14155550100"
NOW = _utc(2026, 11, 3, 8, 0, 20)  # the job runs a little after the due time
DAILY = Report(
    name="Daily call outcomes",
    every=_day((9, 0), BERLIN),
    range=timedelta(days=1),
    channels=("ops-mail", "ops-slack"),
)


def _hangup(
    call: str, direction: str, at: datetime, answered: bool, code: int, name: str
) -> Params:
    start = at.strftime("%Y-%m-%d %H:%M:%S")
    return {
        "CallUUID": call,
        "Direction": direction,
        "From": "+15550009999" if direction == "inbound" else OURS,
        "To": OURS if direction == "inbound" else "+15550009999",
        "CallStatus": "completed" if answered else "busy",
        "HangupCauseCode": str(code),
        "HangupCauseName": name,
        "StartTime": start,
        "AnswerTime": start if answered else "",
        "EndTime": (at + timedelta(minutes=2)).strftime("%Y-%m-%d %H:%M:%S"),
        "Duration": "120" if answered else "0",
        "BillDuration": "120" if answered else "0",
    }


def _inbound(call: str, at: datetime, agent: str) -> list[tuple[str, Params]]:
    """An inbound call answered by our XML that dials one agent: `agent` says how that went."""
    code, name, status = {
        "answered": (4000, "Normal Hangup", "completed"),
        "no-answer": (3000, "No Answer", "no-answer"),
        "busy": (3010, "Busy Line", "busy"),
    }[agent]
    leg = {
        "CallUUID": call,
        "DialALegUUID": call,
        "DialBLegUUID": f"{call}-b",
        "DialBLegTo": "+17000000001",
        "DialBLegFrom": OURS,
        "DialBLegPosition": "1",
    }
    events: list[tuple[str, Params]] = []
    if agent == "answered":
        events.append(("dial_callback", {**leg, "DialAction": "answer"}))
    events += [
        (
            "dial_callback",
            {
                **leg,
                "DialAction": "hangup",
                "DialBLegHangupCauseCode": str(code),
                "DialBLegHangupCauseName": name,
                "DialBLegDuration": "30" if agent == "answered" else "0",
                "DialBLegBillDuration": "30" if agent == "answered" else "0",
            },
        ),
        ("dial_action", {"CallUUID": call, "DialALegUUID": call, "DialStatus": status}),
        ("hangup", _hangup(call, "inbound", at, True, 4000, "Normal Hangup")),
    ]
    return events


def _traffic(database: Database) -> None:
    """The day before NOW: 30 inbound calls (12 agents answer, 10 ring out, 8 busy) and 5
    outbound calls the callee's line refuses as busy. The day before that: 25 inbound calls
    (20 answered by agents, 5 not). One call earlier still, so the data covers both days."""

    def put(events: list[tuple[str, Params]], at: datetime) -> None:
        store(database, events, start=at, step=timedelta(milliseconds=10))

    put(
        [
            (
                "hangup",
                _hangup("early", "outbound", _utc(2026, 10, 31, 12), True, 4000, "Normal Hangup"),
            )
        ],
        _utc(2026, 10, 31, 12),
    )
    previous = _utc(2026, 11, 1, 10, 0)
    for i in range(25):
        at = previous + timedelta(minutes=i)
        put(_inbound(f"prev-{i}", at, "answered" if i < 20 else "no-answer"), at)
    current = _utc(2026, 11, 2, 10, 0)
    for i in range(30):
        at = current + timedelta(minutes=i)
        agent = "answered" if i < 12 else "no-answer" if i < 22 else "busy"
        put(_inbound(f"cur-{i}", at, agent), at)
    for i in range(5):
        at = _utc(2026, 11, 2, 12, i)
        put([("hangup", _hangup(f"out-{i}", "outbound", at, False, 3010, "Busy Line"))], at)


@pytest.fixture(params=["views", "rollups"])
def traffic(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """The traffic in a database file the dashboard's queries read (CALLSTATUS_DB), through
    its views or its rollup tables."""
    path = tmp_path / "report.duckdb"
    database = Database(path)
    _traffic(database)
    if request.param == "rollups":
        rollups.refresh(database.cursor())
    database.close()
    monkeypatch.setenv("CALLSTATUS_DB", str(path))
    settings_module.get_settings.cache_clear()
    yield path
    settings_module.get_settings.cache_clear()


def _settings(tmp_path: Path, **values: object) -> Settings:
    return make_settings(tmp_path, PUBLIC_BASE_URL="https://calls.example.com", **values)


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "a PNG file"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


def test_a_report_compares_the_range_with_the_one_before(traffic: Path, tmp_path: Path) -> None:
    message = reports.build(DAILY, connection.relations(), _settings(tmp_path), NOW)
    assert message.kind == "report"
    # On the minute, in the schedule's zone (CET: UTC+1).
    assert message.title == (
        "Daily call outcomes: 2026-11-02 09:00 to 2026-11-03 09:00 (Europe/Berlin)"
    )
    lines = message.text.splitlines()
    assert lines[0] == message.title
    assert lines[1] == "35 calls, dial answer rate 40.0%."
    fields = dict(message.fields)
    # The Overview's tiles in its order, inbound traffic leading with the dial answer rate.
    assert list(fields)[:8] == [
        "Dial answer rate",
        "Calls",
        "Call answer rate",
        "B-leg answer rate",
        "ACD",
        "Busy",
        "No answer",
        "Failed",
    ]
    assert fields["Dial answer rate"] == "40.0% (-40.0 pp)"  # 12 of 30 against 20 of 25
    assert fields["Calls"] == "35 (+40.0%)"  # against 25
    assert fields["Call answer rate"] == "85.7% (-14.3 pp)"  # the 5 busy outbound calls
    assert fields["B-leg answer rate"] == "40.0% (-40.0 pp)"
    assert fields["Busy"] == "14.3% (+14.3 pp)"
    assert fields["Top hangup causes, unanswered calls"] == "3010 Busy Line: 5"
    assert fields["Top hangup causes, unanswered B legs"] == (
        "3000 No Answer: 10\n3010 Busy Line: 8"
    )
    assert "Dial answer rate: 40.0% (-40.0 pp)" in lines
    assert "  3000 No Answer: 10" in lines
    assert message.link is not None
    link = urlsplit(message.link)
    assert link.path == "/overview"
    assert parse_qs(link.query) == {"range": ["Last 24 hours"], "tz": [BERLIN]}
    assert lines[-1] == f"Dashboard: {message.link}"


def test_its_charts_are_the_dashboards_as_png(traffic: Path, tmp_path: Path) -> None:
    rel = connection.relations()
    message = reports.build(DAILY, rel, _settings(tmp_path), NOW)
    names = [name for name, _ in message.images]
    assert names == ["answer-rates.png", "hangup-causes-a.png", "hangup-causes-b.png"]
    for _, data in message.images:
        width, height = _png_size(data)
        assert width >= reports.CHART_WIDTH * reports.CHART_SCALE and height > 200
    # The answer-rate chart is the Overview's builder over the Overview's query.
    f = reports.report_filters(DAILY, _settings(tmp_path), NOW)
    frame = overview.rates_over_time(rel, f).frame
    assert frame["calls"].sum() == 35
    page = charts.rates_with_volume(frame, "dial answer rate", BERLIN, f.wall_clock()).to_dict()
    found = {leg: causes.by_cause(rel, f, leg, with_answered=False).frame for leg in "ab"}
    figures = dict(reports.report_figures(rel, f, "dial", found))
    drawn = figures["answer-rates.png"].to_dict()
    assert drawn.pop("title") == "Answer rates over time, with call volume"
    assert drawn == page
    assert dict(message.images)["answer-rates.png"] == reports.png(figures["answer-rates.png"])
    # What the causes chart shows, read from its SVG twin.
    svg = vl_convert.vegalite_to_svg(
        figures["hangup-causes-b.png"].configure_view(continuousWidth=600).to_dict()
    )
    assert "3000 No Answer" in svg and "3010 Busy Line" in svg
    assert "Hangup causes of unanswered B legs" in svg


def test_no_change_without_the_previous_range(traffic: Path, tmp_path: Path) -> None:
    # Two days back from NOW reach before the first call: nothing to compare with.
    two_days = Report(
        "Two days", Schedule(text="2d", interval=timedelta(days=2)), timedelta(days=2), ()
    )
    message = reports.build(two_days, connection.relations(), _settings(tmp_path), NOW)
    fields = dict(message.fields)
    assert fields["Calls"] == "60"  # 25 + 35
    assert "(" not in fields["Dial answer rate"]
    assert message.text.splitlines()[2].startswith("No changes shown")
    # An interval schedule has no zone of its own: PLIVO_TIMEZONE's.
    assert message.title.endswith("(UTC)")


def test_an_empty_range_still_reports(traffic: Path, tmp_path: Path) -> None:
    later = reports.build(
        DAILY, connection.relations(), _settings(tmp_path), NOW + timedelta(days=30)
    )
    fields = dict(later.fields)
    assert fields["Calls"] == "0"
    assert fields["Dial answer rate"] == "—"
    assert fields["Top hangup causes, unanswered calls"] == "none"
    assert [name for name, _ in later.images] == ["answer-rates.png", "hangup-causes-a.png"]


def test_a_report_by_email_and_to_slack(traffic: Path, tmp_path: Path) -> None:
    message = reports.build(DAILY, connection.relations(), _settings(tmp_path), NOW)
    with smtp_peer() as smtp, http_peer() as slack:
        settings = _settings(
            tmp_path,
            SMTP_HOST=smtp.host,
            SMTP_PORT=smtp.port,
            SMTP_FROM="reports@example.com",
            SMTP_STARTTLS=False,
        )
        send(Channel("ops-mail", "email", to=("ops@example.com",)), message, settings)
        send(Channel("ops-slack", "slack", url=slack.url), message, settings)
        (mail,) = smtp.wait_for(1)
    attached = {
        part.get_filename(): part.get_content()
        for part in mail.message.walk()
        if part.get_content_type() == "image/png"
    }
    assert attached == dict(message.images)
    html = next(p for p in mail.message.walk() if p.get_content_type() == "text/html")
    assert "40.0% (-40.0 pp)" in html.get_content()
    payload = slack.accepted[0].json()
    texts = [f["text"] for block in payload["blocks"] for f in block.get("fields", [])]
    assert "*Dial answer rate*\n40.0% (-40.0 pp)" in texts
    assert "*Top hangup causes, unanswered B legs*\n3000 No Answer: 10\n3010 Busy Line: 8" in texts
    assert payload["blocks"][-1]["elements"][0]["url"] == message.link
