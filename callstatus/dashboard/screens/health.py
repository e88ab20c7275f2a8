"""Receiver health: is Plivo reaching us, are we refusing anything, is anything stuck, and
how complete are the calls against Plivo's own call records."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
import streamlit as st

from callstatus.dashboard import (
    charts,
    comparison,
    connection,
    context,
    controls,
    receiver_status,
    tiles,
    widgets,
)
from callstatus.dashboard.queries import health as queries
from callstatus.dashboard.queries.base import Result
from callstatus.dashboard.screens import completeness
from callstatus.dashboard.text import plain


def render() -> None:
    f = controls.current()
    rel = connection.relations()
    st.title("Receiver health")
    st.caption(controls.describe(f) + " · direction and number filters do not apply here")
    totals = queries.receiver_totals(rel, f)
    row = totals.frame.iloc[0]
    live = receiver_status.status()
    repeats = queries.repeats_not_stored(f).frame.iloc[0]["repeats"]
    clustered = context.settings().clustered
    receivers = queries.cluster_receivers() if clustered else None
    spool = live.spool_depth
    if receivers is not None:  # the receivers' spools, not this dashboard's
        spool = int(receivers.frame["spool_depth"].sum())
    # Two rows of three: six tiles in one row cut their labels and values ("Since last we…")
    # at 1440 px and below. What arrives first, then what was refused or is waiting.
    arrived, trouble = st.columns(3), st.columns(3)
    arrived[0].metric(
        "Since last webhook",
        _ago(row["last_event_at"]),
        border=True,
        help="Time since the most recent webhook was stored (any time range).",
    )
    arrived[1].metric("Webhooks", tiles.fmt_count(row["webhooks"]), border=True)
    arrived[2].metric(
        "Duplicates",
        tiles.fmt_count(row["duplicates"]),
        border=True,
        help="Repeat deliveries of the same webhook (Plivo retries); kept, but "
        "counted once in every view.",
    )
    trouble[0].metric(
        "Rejected",
        tiles.fmt_count(row["rejected"]),
        border=True,
        help="Requests refused with 403 (bad signature): Plivo does not retry them.",
    )
    trouble[1].metric(
        "Repeats not stored",
        tiles.fmt_count(repeats),
        border=True,
        help="Deliveries of the same webhook past the first 3 within 10 minutes "
        "(a replay): answered 200, since a stored copy has the same content, but "
        "only counted (webhook_repeats).",
    )
    trouble[2].metric(
        "Spool depth",
        "—" if spool is None else tiles.fmt_count(spool),
        border=True,
        help="Webhooks waiting on disk for the database (0 is healthy)"
        + (", all receivers together." if clustered else "."),
    )
    snapshot = "—" if live.snapshot_age_s is None else f"{live.snapshot_age_s:.0f} s"
    st.caption(
        f"Signature checks: **{live.signature_checks}** · snapshot age: **{snapshot}** · "
        + (
            f"writer queue: **{live.writer_queue}**"
            if live.serving
            else "no server in this process: spool and queue unknown"
        )
    )
    widgets.provenance(totals, "receiver-totals")

    if receivers is not None:
        _cluster(receivers, f.tz)

    completeness.render(rel, f)

    st.subheader("Webhooks per kind")
    if controls.comparing():
        kinds = comparison.overlay(queries.webhooks_per_kind, rel, f)
    else:
        kinds = queries.webhooks_per_kind(rel, f)
    widgets.chart(kinds, charts.webhooks_per_kind(kinds.frame, f.tz), "webhooks-per-kind")

    st.subheader("Rejected requests, and why")
    rejected = queries.rejections(f)
    if rejected.frame.empty:
        st.success("No request was refused in this range.")
    else:
        samples = queries.rejected_samples(f)
        for advice in receiver_status.base_url_advice(samples.frame, receiver_status.auth_tokens()):
            st.error(advice, icon=":material/link_off:")
        widgets.table(rejected, "rejected")

    widgets.on_request("Show the URLs to set in Plivo", "plivo-urls", plivo_urls)


def plivo_urls() -> None:
    """The receiver's URLs as Plivo's settings name them, ready to copy."""
    base, origin = receiver_status.public_base_url()
    urls = receiver_status.plivo_urls(base)
    st.code("\n".join(f"{name}: {url}" for name, url in urls.items()), language="text")
    st.caption(f"Base URL from {plain(origin)}. " + receiver_status.RETRY_NOTE)


# A receiver beats every 2 s (callstatus/cluster/heartbeat.py): silent this long, it is down or
# cannot reach PostgreSQL.
SILENT_S = 10.0
# The replica syncs every half second: this far behind, it cannot read PostgreSQL.
BEHIND_S = 10.0


def _cluster(receivers: Result, tz: str) -> None:
    """Clustered mode: each receiver's heartbeat, and how far behind this dashboard's replica
    of PostgreSQL is."""
    st.subheader("Receivers and this dashboard's replica")
    replica = queries.replica_state()
    frame = receivers.frame
    up = int((frame["silent_s"] <= SILENT_S).sum())
    cols = st.columns(3)
    cols[2].metric(
        "Receivers up",
        f"{up} of {len(frame)}",
        border=True,
        help=f"Receivers heard from in the last {SILENT_S:.0f} s (they report every 2 s).",
    )
    if replica.frame.empty:
        st.warning(
            "This dashboard's replica has not copied anything from PostgreSQL yet: it does "
            "within a second of starting when PostgreSQL is reachable.",
            icon=":material/sync_problem:",
        )
    else:
        row = replica.frame.iloc[0]
        lag = float(row["lag_s"])
        cols[0].metric(
            "Replica lag",
            f"{lag:.1f} s",
            border=True,
            help="Time since this dashboard last read PostgreSQL: every webhook stored "
            "before then is shown here.",
        )
        cols[1].metric(
            "Webhooks copied",
            tiles.fmt_count(row["total_webhooks"]),
            border=True,
            help="Copied from PostgreSQL since this replica was built.",
        )
        if lag > BEHIND_S:
            st.warning(
                f"This dashboard's replica last read PostgreSQL {_ago(row['synced_at'])} ago: "
                "it cannot reach PostgreSQL, or is rebuilding (the log says which).",
                icon=":material/sync_problem:",
            )
        st.caption(f"Replica of {plain(str(row['source']))}, read every half second.")
    if frame.empty:
        st.info("No receiver has reported to PostgreSQL yet.")
        return
    shown = pd.DataFrame(
        {
            "receiver": frame["receiver"],
            "status": ["up" if s <= SILENT_S else "silent" for s in frame["silent_s"]],
            "last seen": [_ago(t) for t in frame["last_seen"]],
            "last webhook": frame["last_webhook"].dt.tz_convert(tz),
            "spool depth": frame["spool_depth"],
            "stored since start": frame["stored"],
            "started": frame["started_at"].dt.tz_convert(tz),
        }
    )
    widgets.table(Result(shown, receivers.sql), "receivers")


def _ago(moment: object) -> str:
    if moment is None or pd.isna(moment):
        return "never"
    seconds = (datetime.now(UTC) - pd.Timestamp(moment).to_pydatetime()).total_seconds()
    if seconds < 5:
        return "just now"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} days"


controls.live(render)
