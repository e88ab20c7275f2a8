"""The first-run page: no webhook yet, so say how to point Plivo here or start the demo."""

from __future__ import annotations

import streamlit as st

from callstatus.dashboard import receiver_status
from callstatus.dashboard.text import plain


def render() -> None:
    st.title("Welcome to callstatus")
    st.write("No webhook has arrived yet. Point Plivo at this server, or start the demo.")
    base, origin = receiver_status.public_base_url()
    urls = receiver_status.plivo_urls(base)
    st.subheader("1 · Point your Plivo application here")
    st.caption(f"Base URL from {origin}. Method: POST (Plivo's default).")
    # st.table reads Markdown in its cells; the base URL may come from request headers.
    st.table(
        {
            "Plivo setting": [plain(name) for name in urls],
            "URL": [plain(url) for url in urls.values()],
        }
    )
    st.code("\n".join(f"{name}: {url}" for name, url in urls.items()), language="text")
    st.caption(receiver_status.RETRY_NOTE)
    st.write(
        "Set `PLIVO_AUTH_TOKEN` so signatures are checked, and `PUBLIC_BASE_URL` to the address "
        "above if Plivo reaches you through a proxy. `DIAL_NUMBERS` lists the numbers the "
        "answer XML rings at the same time."
    )
    st.subheader("2 · Or watch simulated traffic")
    st.code(
        "callstatus demo            # serve plus simulated calls, live\n"
        "callstatus seed --db data/practice.duckdb --calls 50000 --days 30",
        language="bash",
    )
    st.caption("This page switches to the dashboard by itself when the first webhook arrives.")


render()
