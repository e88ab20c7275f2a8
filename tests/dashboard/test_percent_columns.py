"""Rates in tables show one decimal like the tiles (Streamlit's own percent format drops trailing
zeros: 98.1% beside 99.13%), while the CSV keeps the fractions the query returned."""

from __future__ import annotations

import json

import pandas as pd
import streamlit as st
from streamlit.testing.v1 import AppTest

from callstatus.dashboard.widgets import one_decimal_percent, readable


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


def test_headers_read_as_words_and_the_csv_keeps_the_names() -> None:
    assert [
        readable(c)
        for c in ("call_uuid", "b_leg_to", "a_legs", "duration_s", "ring_ms", "sip_uri", "busy")
    ] == ["call UUID", "B leg to", "A legs", "duration (s)", "ring (ms)", "SIP uri", "busy"]
    # "s" inside a name is a word, not a unit; a lone "a" is not a leg.
    assert readable("s_count") == "s count" and readable("a_b") == "a b"


def test_a_tables_headers_are_readable_unless_configured() -> None:
    at = AppTest.from_function(_table_page).run()
    assert not at.exception
    [grid] = at.dataframe
    columns = json.loads(grid.proto.columns)
    assert columns["call_uuid"] == {"label": "call UUID"}
    assert columns["duration_s"] == {"label": "duration (s)"}
    # Configured without a label: the readable one joins its configuration.
    assert columns["rate"] == {"type_config": {"format": "%.1f%%"}, "label": "rate"}
    # Configured with a label: kept.
    assert columns["b_leg_to"]["label"] == "destination"


def _table_page() -> None:
    import pandas as pd
    import streamlit as st

    from callstatus.dashboard import widgets
    from callstatus.dashboard.queries.base import Result

    frame = pd.DataFrame(
        {"call_uuid": ["u1"], "duration_s": [12], "rate": [0.5], "b_leg_to": ["sip:a@b"]}
    )
    widgets.table(
        Result(frame, "SELECT 1", {}),
        "t",
        column_config={
            "rate": {"type_config": {"format": "percent"}},
            "b_leg_to": st.column_config.TextColumn("destination"),
        },
    )
