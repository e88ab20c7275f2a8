"""Dashboard entry point (placeholder until the dashboard pages land)."""

import streamlit as st

st.set_page_config(page_title="callstatus", layout="wide")
st.title("callstatus")
st.write("Receiving Plivo webhooks. The dashboard pages are on their way.")
