"""Dashboard entry point: shared sidebar controls and navigation.

Live refresh lives in the pages: each page runs its body through `controls.live()`, a fragment
of its own. A fragment here around `page.run()` would break every widget inside a page: the
widget reruns the fragment, and st.navigation allows `page.run()` once per app run only.
"""

from __future__ import annotations

import streamlit as st

from callstatus.dashboard import controls
from callstatus.dashboard.queries import sidebar
from callstatus.dashboard.sql_page import render as sql_page

FIRST_RUN_POLL_S = 5


def waiting_for_first_webhook() -> None:
    @st.fragment(run_every=FIRST_RUN_POLL_S)
    def poll() -> None:
        if sidebar.event_count() > 0:
            st.rerun(scope="app")

    poll()
    st.navigation(
        [
            st.Page(
                "screens/first_run.py",
                title="Get started",
                url_path="welcome",
                icon=":material/rocket_launch:",
            )
        ]
    ).run()


def dashboard() -> None:
    # The page files live in screens/, not pages/: Streamlit would run a `pages/` folder next
    # to the main script as a legacy multipage app, each file alone without the sidebar.
    page = st.navigation(
        {
            "Call outcomes": [
                st.Page(
                    "screens/overview.py",
                    title="Overview",
                    url_path="overview",
                    default=True,
                    icon=":material/monitoring:",
                ),
                st.Page(
                    "screens/causes.py",
                    title="Hangup causes",
                    url_path="causes",
                    icon=":material/call_end:",
                ),
                st.Page(
                    "screens/legs.py",
                    title="A/B legs",
                    url_path="legs",
                    icon=":material/call_split:",
                ),
                st.Page(
                    "screens/timing.py",
                    title="Timing and load",
                    url_path="timing",
                    icon=":material/timer:",
                ),
                st.Page(
                    "screens/destinations.py",
                    title="Destinations",
                    url_path="destinations",
                    icon=":material/public:",
                ),
                st.Page(
                    "screens/calls.py", title="Calls", url_path="calls", icon=":material/search:"
                ),
            ],
            "Operations": [
                st.Page(
                    "screens/health.py",
                    title="Receiver health",
                    url_path="health",
                    icon=":material/health_and_safety:",
                ),
                st.Page(
                    "screens/alerts.py",
                    title="Alerts",
                    url_path="alerts",
                    icon=":material/notifications:",
                ),
                st.Page(sql_page, title="SQL", url_path="sql", icon=":material/database:"),
            ],
        }
    )
    controls.sidebar()
    page.run()


st.set_page_config(page_title="callstatus", page_icon="📞", layout="wide")
if sidebar.event_count() == 0:
    waiting_for_first_webhook()
else:
    dashboard()
