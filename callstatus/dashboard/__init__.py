"""The Streamlit dashboard served by `callstatus serve` at `/`."""
