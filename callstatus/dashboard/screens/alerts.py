"""Alerts: each rule's state, the changes of state, the reports' next runs, messages no channel
took, and a test message to a chosen channel."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pandas as pd
import streamlit as st

from callstatus.core.errors import one_line
from callstatus.core.settings import Settings
from callstatus.dashboard import context, controls, tiles, widgets
from callstatus.dashboard.filters import Filters
from callstatus.dashboard.queries import alerts as queries
from callstatus.dashboard.screens.completeness import duration
from callstatus.dashboard.text import code, plain

STATES = ("firing", "pending", "no data", "ok", "not evaluated")
STATE_COLORS = ("red", "orange", "gray", "green", "gray")
TIME = "%Y-%m-%d %H:%M"
RESULT = "alerts-test-result"  # session state: the last test's (kind, Markdown)
CHANNEL = "alerts-test-channel"


def _state_column(label: str, help_text: str | None = None) -> Any:
    """States as coloured labels (a read-only multiselect column of one item each)."""
    return st.column_config.MultiselectColumn(
        label, options=STATES, color=list(STATE_COLORS), help=help_text
    )


VALUE = "%.4g"
# Shown in this order; the metric, the volume and the time of the last change stay in the CSV.
RULE_COLUMNS = {
    "rule": st.column_config.TextColumn("Rule"),
    "state": _state_column(
        "State",
        "firing: the condition holds (for its `for`, when set); pending: it holds, not yet for "
        "long enough; no data: too few events in the window for a verdict.",
    ),
    "since": st.column_config.DatetimeColumn("Since", format="D MMM HH:mm"),
    "value": st.column_config.NumberColumn("Value", format=VALUE, help="At the last evaluation."),
    "threshold": st.column_config.NumberColumn(
        "Threshold", format=VALUE, help="The bound compared with (a drop rule: the baseline's)."
    ),
    "condition": st.column_config.TextColumn("Fires when"),
    "window": st.column_config.TextColumn("Window"),
    "last_change": st.column_config.TextColumn("Last change"),
    "channels": st.column_config.TextColumn("Channels"),
}
TRANSITION_COLUMNS = {
    "at": st.column_config.DatetimeColumn("At", format="D MMM YYYY HH:mm:ss"),
    "rule": st.column_config.TextColumn("Rule"),
    "from_state": _state_column("From"),
    "to_state": _state_column("To"),
    "value": st.column_config.NumberColumn("Value", format=VALUE),
    "threshold": st.column_config.NumberColumn("Threshold", format=VALUE),
    "notified": st.column_config.CheckboxColumn(
        "Notified", help="A message was queued: when a rule starts firing, and when it resolves."
    ),
}
REPORT_COLUMNS = {
    "report": st.column_config.TextColumn("Report"),
    "schedule": st.column_config.TextColumn("Every"),
    "next_due_at": st.column_config.DatetimeColumn("Next run", format="ddd D MMM HH:mm"),
    "last_sent_at": st.column_config.DatetimeColumn(
        "Last sent", format="ddd D MMM HH:mm", help="The due time of the last report queued."
    ),
    "last_status": st.column_config.TextColumn("Last result"),
}
DELIVERY_COLUMNS = {
    "created_at": st.column_config.DatetimeColumn("Queued", format="D MMM HH:mm:ss"),
    "channel": st.column_config.TextColumn("Channel"),
    "kind": st.column_config.TextColumn("Kind"),
    "title": st.column_config.TextColumn("Message"),
    "status": st.column_config.TextColumn(
        "Status", help="pending: tried again at the next attempt; failed: given up after a day."
    ),
    "attempts": st.column_config.NumberColumn("Attempts"),
    "next_attempt_at": st.column_config.DatetimeColumn("Next attempt", format="D MMM HH:mm:ss"),
    "last_error": st.column_config.TextColumn("Last error", width="large"),
}


def render() -> None:
    f = controls.current()
    settings = context.settings()
    st.title("Alerts")
    if not queries.present():
        st.info(
            "This database has no alert tables yet: `callstatus serve` adds them at its next "
            "start. " + setup_text(settings),
            icon=":material/notifications_off:",
        )
        return
    top = queries.summary(f).frame.iloc[0]
    if int(top["rules"]) == 0 and int(top["reports"]) == 0:
        st.info(setup_text(settings), icon=":material/notifications_off:")
        _deliveries(f)
        return
    st.caption(loaded_line(settings, top, context.server() is not None, f.tz))
    if context.server() is not None and settings.alerts_path is None:
        st.warning(
            "This server was started without a rules file: these rules were loaded by an "
            "earlier start and are not evaluated now.",
            icon=":material/history:",
        )
    _tiles(top)
    _rules(f)
    _reports(f)
    _deliveries(f)
    _history(f)
    _test_message(f.tz)


def setup_text(settings: Settings) -> str:
    """How to turn alerts on (Markdown), or what to do with the configured file."""
    if settings.alerts_path is not None:
        return (
            f"**No rules or reports loaded** from {code(settings.alerts_path)}. The server reads "
            "the file at its start: restart `callstatus serve` after changing it; "
            f"{code(f'callstatus alerts check {settings.alerts_path}')} says what is wrong with "
            "it. docs/alerts.md describes every key."
        )
    return (
        "**No alert rules are loaded.** Write channels (Slack, email, a signed webhook), rules "
        "and reports in a TOML file, name it in `CALLSTATUS_ALERTS` (or save it as "
        "`alerts.toml` where `callstatus serve` starts), check it with "
        "`callstatus alerts check FILE`, and restart the server. docs/alerts.md describes every "
        "key, with an example."
    )


def loaded_line(settings: Settings, top: pd.Series, serving: bool, tz: str) -> str:
    """Where the rules come from, when they were loaded and last evaluated (Markdown)."""
    source = "Rules" if settings.alerts_path is None else f"Rules from {code(settings.alerts_path)}"
    parts = [source if _missing(top["loaded_at"]) else f"{source} loaded {_at(top['loaded_at'])}"]
    every = duration(settings.alert_interval_s)
    if _missing(top["evaluated_at"]):
        parts.append(f"not evaluated yet (every {every} while `callstatus serve` runs)")
    else:
        parts.append(f"last evaluated {_at(top['evaluated_at'])} (every {every})")
    if not serving:
        parts.append("no server in this process: nothing is evaluated from here")
    parts.append(f"times in {plain(tz)}")
    return " · ".join(parts)


def _tiles(top: pd.Series) -> None:
    undelivered = int(top["failed"]) + int(top["retrying"]) + int(top["queued"])
    figures = (
        ("Firing", top["firing"], "Rules whose condition holds now: a message went out."),
        ("Pending", top["pending"], "Rules whose condition holds, not yet for their `for`."),
        ("No data", top["no_data"], "Rules without a verdict: too few events in the window."),
        ("OK", top["ok"], "Rules whose condition does not hold."),
        (
            "Undelivered",
            undelivered,
            f"Messages no channel has taken: {int(top['failed'])} given up after a day, "
            f"{int(top['retrying'])} waiting for a retry, {int(top['queued'])} not tried yet.",
        ),
    )
    for column, (label, value, help_text) in zip(st.columns(len(figures)), figures, strict=True):
        column.metric(label, tiles.fmt_count(value), border=True, help=help_text)


def _rules(f: Filters) -> None:
    st.subheader("Rules")
    result = queries.rules(f)
    frame = rules_frame(result.frame)
    if frame.empty:
        st.caption("The rules file has no rules, only reports.")
        return
    st.dataframe(
        frame,
        hide_index=True,
        width="stretch",
        column_config=RULE_COLUMNS,
        column_order=list(RULE_COLUMNS),
    )
    widgets.provenance(result, "alert-rules")


def rules_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """The rules' rows as shown: states as one-item lists (coloured labels), windows in words."""
    shown = frame.copy()
    shown["state"] = [[_state(state)] for state in shown["state"]]
    shown["window"] = [
        "—" if _missing(seconds) else duration(float(seconds)) for seconds in shown["window_s"]
    ]
    return shown


def _history(f: Filters) -> None:
    st.subheader("Changes of state")
    result = queries.transitions(f)
    if result.frame.empty:
        st.caption("No rule changed state in this range.")
        return
    st.caption("Newest first, in the sidebar's time range.")
    shown = result.frame.copy()
    for column in ("from_state", "to_state"):
        shown[column] = [[_state(state)] for state in shown[column]]
    st.dataframe(shown, hide_index=True, width="stretch", column_config=TRANSITION_COLUMNS)
    widgets.provenance(result, "alert-transitions")


def _reports(f: Filters) -> None:
    result = queries.reports(f)
    if result.frame.empty:
        return
    st.subheader("Scheduled reports")
    widgets.table(result, "alert-reports", column_config=REPORT_COLUMNS)


def _deliveries(f: Filters) -> None:
    result = queries.undelivered(f)
    if result.frame.empty:
        return
    st.subheader("Messages not delivered")
    frame = result.frame
    failed = int((frame["status"] == "failed").sum())
    waiting = len(frame) - failed
    st.error(
        f"**{failed}** given up after a day of failed attempts, **{waiting}** waiting to be "
        "sent or retried (1 min after a failure, doubling up to an hour).",
        icon=":material/send:",
    )
    widgets.table(result, "alert-deliveries", column_config=DELIVERY_COLUMNS)
    newest = frame.dropna(subset=["last_error"])
    if not newest.empty:
        row = newest.iloc[0]
        st.caption(f"The newest error, from {plain(row['channel'])}:")
        st.code(str(row["last_error"]), language="text", wrap_lines=True)


def _test_message(tz: str) -> None:
    st.subheader("Send a test message")
    st.caption(
        "The server sends a short test message to the channel now and says how it went; a "
        "failed test is retried like any message."
    )
    names = queries.channels()
    pick, press = st.columns([3, 1], vertical_alignment="bottom")
    pick.selectbox(
        "Channel",
        names,
        index=0 if names else None,
        key=CHANNEL,
        accept_new_options=True,
        placeholder="a channel's name in the rules file",
    )
    press.button(
        "Send a test message",
        icon=":material/send:",
        on_click=_send_test,
        args=(tz,),
        width="stretch",
    )
    outcome = st.session_state.get(RESULT)
    if outcome is not None:
        kind, text = outcome
        show = st.info if kind == "line" else st.warning
        show(text, icon=":material/outgoing_mail:")


def _send_test(tz: str) -> None:
    # A callback: it runs before the page does, so a failed test is already in the table of
    # messages not delivered when the page draws it.
    st.session_state[RESULT] = send_test(st.session_state.get(CHANNEL), tz)


def send_test(channel: str | None, tz: str) -> tuple[str, str]:
    """Ask the server in this process to send a test message to `channel`: ("line", the line
    it returned, as Markdown that shows its text), or ("note", why nothing was sent)."""
    handle = context.server()
    if not channel:
        return "note", "Pick a channel first."
    if handle is None:
        return "note", (
            "No server runs in this process (this dashboard was started on its own): test "
            "messages are sent by `callstatus serve`. Open this page on the dashboard it serves."
        )
    if handle.send_test is None:
        return "note", (
            "This server runs without alerts (it loaded no rules file at its start), so it "
            "cannot send a test message. Set `CALLSTATUS_ALERTS` or add `alerts.toml`, then "
            "restart `callstatus serve`."
        )
    at = datetime.now(ZoneInfo(tz)).strftime("%H:%M:%S")
    try:
        line = handle.send_test(channel)
    except Exception as exc:  # the page stays up; the reason is shown as code
        return "note", f"{at} · the test message to {plain(channel)} failed: {code(one_line(exc))}"
    return "line", f"{at} · {plain(line)}"


def _state(value: Any) -> str:
    return "not evaluated" if _missing(value) else str(value)


def _missing(value: Any) -> bool:
    return value is None or bool(pd.isna(value))


def _at(value: Any) -> str:
    """A moment already in the dashboard's zone (the queries convert), or '—'."""
    return "—" if _missing(value) else pd.Timestamp(value).strftime(TIME)


controls.live(render)
