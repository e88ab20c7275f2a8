"""Dashboard entry point: shared sidebar controls, navigation, live refresh around each page."""

from __future__ import annotations

import streamlit as st

from dashboard import controls, queries

FIRST_RUN_POLL_S = 5


def sql_page() -> None:
    # Written by another engineer; the dashboard must run before it lands.
    try:
        from dashboard.sql_page import render
    except ImportError:
        st.title("SQL")
        st.info("The SQL page is not installed in this version of callstatus yet.")
        return
    render()


def waiting_for_first_webhook() -> None:
    @st.fragment(run_every=FIRST_RUN_POLL_S)
    def poll() -> None:
        if queries.event_count() > 0:
            st.rerun(scope="app")

    poll()
    st.navigation([st.Page("pages/first_run.py", title="Get started", url_path="welcome",
                           icon=":material/rocket_launch:")]).run()


def dashboard() -> None:
    # url_paths differ from the file names on purpose: a first request for /<file stem> would
    # otherwise run that file alone, as a legacy `pages/` page, without this script.
    page = st.navigation(
        {
            "Call outcomes": [
                st.Page("pages/overview.py", title="Overview", url_path="outcomes", default=True,
                        icon=":material/monitoring:"),
                st.Page("pages/causes.py", title="Hangup causes", url_path="hangup-causes",
                        icon=":material/call_end:"),
                st.Page("pages/legs.py", title="A/B legs", url_path="ab-legs",
                        icon=":material/call_split:"),
                st.Page("pages/calls.py", title="Calls", url_path="call",
                        icon=":material/search:"),
            ],
            "Operations": [
                st.Page("pages/health.py", title="Receiver health", url_path="receiver-health",
                        icon=":material/health_and_safety:"),
                st.Page(sql_page, title="SQL", url_path="sql", icon=":material/database:"),
            ],
        }
    )
    controls.sidebar()

    # Live mode reruns only the page body: the sidebar and the browser page stay put.
    @st.fragment(run_every=controls.refresh_seconds())
    def body() -> None:
        page.run()

    body()


st.set_page_config(page_title="callstatus", page_icon=":material/call:", layout="wide")
if queries.event_count() == 0:
    waiting_for_first_webhook()
else:
    dashboard()
