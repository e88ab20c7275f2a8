"""Receiver health's Completeness section: our webhooks against Plivo's call records."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pandas as pd
import streamlit as st

from callstatus.core.settings import Settings
from callstatus.dashboard import charts, comparison, context, controls, tiles, widgets
from callstatus.dashboard.filters import Filters
from callstatus.dashboard.queries import completeness as queries
from callstatus.dashboard.queries.base import Result
from callstatus.dashboard.queries.relations import Relations
from callstatus.dashboard.text import code, plain

# (label, column, help): two rows of three, like the tiles above them.
TILES = (
    ("Calls", "calls", "Calls that started in the range, from webhooks, records or both."),
    (
        "In Plivo's records",
        "reported",
        "Calls Plivo has a call record of (fetched from its Call API by reconciliation). "
        "Plivo keeps records of completed calls only, for 90 days.",
    ),
    (
        "Seen by webhook",
        "with_webhooks",
        "Calls at least one of whose webhooks reached us.",
    ),
    (
        "Completed from records",
        "completed",
        "Calls we had webhooks for but whose hangup webhook never arrived: their end, duration "
        "and hangup cause come from Plivo's record.",
    ),
    (
        "Added from records",
        "added",
        "Calls none of whose webhooks reached us: known only from Plivo's record.",
    ),
    (
        "Missed share",
        "missed_share",
        "Calls added from records / all calls: the share of calls we would not know of "
        "without Plivo's records.",
    ),
)
COLUMNS = {
    "day": st.column_config.DatetimeColumn("Day", format="ddd D MMM YYYY"),
    "calls": st.column_config.NumberColumn("Calls"),
    "reported": st.column_config.NumberColumn("In Plivo's records"),
    "with_webhooks": st.column_config.NumberColumn("Seen by webhook"),
    "completed": st.column_config.NumberColumn("Completed from records"),
    "added": st.column_config.NumberColumn("Added from records"),
    "missed_share": st.column_config.NumberColumn("Missed share", format="percent"),
}
TRIGGERS = {"job": "by the background job", "command": "by `callstatus reconcile`"}
TIME = "%Y-%m-%d %H:%M"


def render(rel: Relations, f: Filters) -> None:
    st.subheader("Completeness")
    settings = context.settings()
    total = queries.totals(rel, f)
    row = total.frame.iloc[0]
    runs = queries.last_run().frame
    run = None if runs.empty else runs.iloc[0]
    if run is None and int(row["reported"]) == 0:
        # Nothing to compare with: a row of zeros would read as "nothing was missed".
        st.info(not_reconciled(settings), icon=":material/fact_check:")
        return
    st.caption(
        "Calls we had webhooks for against Plivo's own call records, by the day calls started "
        f"({plain(f.tz)}). Direction and number filters do not apply."
    )
    if run is not None:
        kind, text = run_summary(run, f.tz)
        line = " ".join(
            part
            for part in (text, next_run(settings, context.server() is not None, run, f.tz))
            if part
        )
        show = {"ok": st.success, "error": st.error, "running": st.info}.get(kind, st.warning)
        healthy = kind in ("ok", "running")
        show(line, icon=":material/sync:" if healthy else ":material/sync_problem:")
    for keys in (TILES[:3], TILES[3:]):
        for column, (label, name, help_text) in zip(st.columns(3), keys, strict=True):
            value = row[name]
            shown = tiles.fmt_rate(value) if name == "missed_share" else tiles.fmt_count(value)
            column.metric(label, shown, border=True, help=help_text)
    st.caption(
        "Records come with each reconcile run, for calls that ended at least "
        f"{duration(settings.reconcile_grace_s)} before it: the newest calls have none yet."
    )
    widgets.provenance(total, "completeness")
    days = queries.per_day(rel, f)
    # The table needs the page's width for its seven columns; the chart shows the same rows.
    if controls.comparing() and f.end - f.start >= timedelta(days=1):
        compared = comparison.overlay(_days_as_buckets, rel, replace(f, bucket="1 day"))
        shown = compared.frame.rename(columns={"bucket": "day"})
        st.altair_chart(charts.missed_share_per_day(shown, f.tz), width="stretch")
        note = compared.params.get(comparison.NOTE)
        if note:
            st.caption(str(note))
    else:
        st.altair_chart(charts.missed_share_per_day(days.frame, f.tz), width="stretch")
    widgets.table(days, "completeness-per-day", column_config=COLUMNS)


def _days_as_buckets(rel: Relations, f: Filters) -> Result:
    """The per-day figures with their day as `bucket`, for comparison.overlay."""
    days = queries.per_day(rel, f)
    return Result(days.frame.rename(columns={"day": "bucket"}), days.sql, days.params)


def not_reconciled(settings: Settings) -> str:
    """What to say before any reconcile run, as Markdown."""
    if not settings.reconcile_configured:
        return (
            "**Reconciliation is off.** Plivo keeps a record of every completed call for 90 "
            "days. With access to its Call API, callstatus fetches them to complete calls "
            "whose hangup webhook never arrived and to add calls none of whose webhooks did; "
            "this section then shows how many were missing. To turn it on, set "
            "`PLIVO_AUTH_ID` (and `PLIVO_API_TOKEN` if the API's auth token is not the first "
            "of `PLIVO_AUTH_TOKEN`), restart `callstatus serve`, and run "
            "`callstatus reconcile --days 90` once to import the history."
        )
    if settings.reconcile_interval_s <= 0:
        background = "Background runs are off (`CALLSTATUS_RECONCILE_INTERVAL=0`)."
    else:
        background = (
            f"The server fetches new records every {duration(settings.reconcile_interval_s)}."
        )
    return (
        f"**No reconcile run yet.** {background} Run `callstatus reconcile --days 90` once to "
        "import Plivo's records of the last 90 days."
    )


def run_summary(run: pd.Series, tz: str) -> tuple[str, str]:
    """(status, Markdown) for the newest reconcile run (a `last_run` row); the error text and
    any value not ours pass through code() or plain()."""
    status = str(run["status"])
    trigger = TRIGGERS.get(str(run["trigger"]), "by " + plain(run["trigger"]))
    window = f"records that ended {_at(run['window_start'], tz)} → {_at(run['window_end'], tz)}"
    if status == "running":
        return status, (
            f"A reconcile run is **running** since {_at(run['started_at'], tz)} ({trigger}, "
            f"{window})."
        )
    if status == "error":
        return status, (
            f"The last reconcile run **failed** ({_at(run['started_at'], tz)}, {trigger}, "
            f"{window}): {code(run['error']) or 'no error text'}."
        )
    if status != "ok":
        return "unknown", (
            f"The last reconcile run ({_at(run['started_at'], tz)}, {trigger}) has status "
            f"{code(status)}."
        )
    legs = int(run["legs_added"])
    return status, (
        f"Last reconcile run **ok** at {_at(run['finished_at'], tz)} ({trigger}, {window}): "
        f"{int(run['records_read']):,} records read, {int(run['records_new']):,} new; "
        f"{int(run['calls_had']):,} calls had every webhook, "
        f"{int(run['calls_completed']):,} completed and {int(run['calls_added']):,} added "
        f"from records, {legs:,} B leg{'' if legs == 1 else 's'} added."
    )


def next_run(
    settings: Settings, serving: bool, run: pd.Series, tz: str, now: datetime | None = None
) -> str:
    """When the background job runs next, as far as this process can tell (Markdown)."""
    if not settings.reconcile_configured:
        return "Background runs are off: `PLIVO_AUTH_ID` or the API token is not set."
    if settings.reconcile_interval_s <= 0:
        return "Background runs are off (`CALLSTATUS_RECONCILE_INTERVAL=0`)."
    every = duration(settings.reconcile_interval_s)
    if not serving or str(run["status"]) == "running":
        return f"Background runs every {every}."
    if _missing(run["last_job_end"]):
        return f"Background runs every {every}; none has run yet."
    due = _utc(run["last_job_end"]) + timedelta(seconds=settings.reconcile_interval_s)
    if due <= (now or datetime.now(UTC)):
        return f"Next background run due now (every {every})."
    return f"Next background run due about {_at(due, tz)} (every {every})."


def duration(seconds: float) -> str:
    """600 -> '10 min', 7200 -> '2 h', 45 -> '45 s'."""
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:.0f} h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.0f} s"


def _missing(value: Any) -> bool:
    return value is None or bool(pd.isna(value))


def _utc(value: Any) -> datetime:
    moment = pd.Timestamp(value)
    moment = moment.tz_localize(UTC) if moment.tzinfo is None else moment.tz_convert(UTC)
    result: datetime = moment.to_pydatetime()
    return result


def _at(value: Any, tz: str) -> str:
    """A stored moment in the dashboard's zone, or '—'."""
    if _missing(value):
        return "—"
    return _utc(value).astimezone(ZoneInfo(tz)).strftime(TIME)
