"""The Streamlit dashboard served by `callstatus serve` at `/`."""

import logging

import streamlit  # noqa: F401  (creates its loggers, whose levels are set below)

# Imported outside Streamlit's runtime (by serve's read API and alert job, commands, tests), every
# st.cache_data function warns "No runtime found" on stderr: nothing a user can act on, and it
# would come before the one-line error of a command that fails.
logging.getLogger("streamlit.runtime.caching.cache_data_api").setLevel(logging.ERROR)
