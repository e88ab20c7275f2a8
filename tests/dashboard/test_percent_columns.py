"""Rates in tables show one decimal like the tiles (Streamlit's own percent format drops trailing
zeros: 98.1% beside 99.13%), while the CSV keeps the fractions the query returned."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from callstatus.dashboard.widgets import one_decimal_percent


def test_percent_columns_are_shown_in_points_with_one_decimal() -> None:
    frame = pd.DataFrame({"country": ["US", "GB"], "rate": [0.9913, 0.981], "calls": [3, 4]})
    config = {
        "rate": st.column_config.NumberColumn("answer rate", format="percent", help="h"),
        "calls": st.column_config.NumberColumn("calls"),
        "absent": st.column_config.NumberColumn("not in the frame", format="percent"),
    }
    shown, shown_config = one_decimal_percent(frame, config)
    assert shown_config is not None
    assert shown["rate"].round(6).tolist() == [99.13, 98.1]
    assert shown["calls"].tolist() == [3, 4]
    assert shown_config["rate"]["type_config"]["format"] == "%.1f%%"
    assert shown_config["rate"]["label"] == "answer rate"
    assert shown_config["calls"] == config["calls"]
    # The query's rows and the caller's config are left as they were (the CSV is built from them).
    assert frame["rate"].tolist() == [0.9913, 0.981]
    assert config["rate"]["type_config"]["format"] == "percent"


def test_tables_without_rates_are_passed_through() -> None:
    frame = pd.DataFrame({"calls": [1]})
    assert one_decimal_percent(frame, None) == (frame, None)
    config = {"calls": st.column_config.NumberColumn("calls")}
    shown, same = one_decimal_percent(frame, config)
    assert shown is frame and same is config
