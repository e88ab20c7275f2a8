"""Receiver health: is Plivo reaching us, are we refusing anything, is anything stuck, and
how complete are the calls against Plivo's own call records."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
import streamlit as st

from callstatus.dashboard import charts, connection, controls, receiver_status, tiles, widgets
from callstatus.dashboard.queries import health as queries
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
        "—" if live.spool_depth is None else tiles.fmt_count(live.spool_depth),
        border=True,
        help="Webhooks waiting on disk for the database (0 is healthy).",
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

    completeness.render(rel, f)

    st.subheader("Webhooks per kind")
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

    base, origin = receiver_status.public_base_url()
    with st.expander("The URLs to set in Plivo"):
        urls = receiver_status.plivo_urls(base)
        st.code("\n".join(f"{name}: {url}" for name, url in urls.items()), language="text")
        st.caption(f"Base URL from {plain(origin)}. " + receiver_status.RETRY_NOTE)


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
