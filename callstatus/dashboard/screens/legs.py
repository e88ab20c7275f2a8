"""A/B legs: who we dialled for each call, who picked up, and how long it took."""

from __future__ import annotations

import streamlit as st

from callstatus.core.numbers import normalise
from callstatus.dashboard import connection, controls, definitions, leg_charts, tiles, widgets
from callstatus.dashboard.charts import OUTCOMES
from callstatus.dashboard.filters import Filters
from callstatus.dashboard.queries import legs, overview
from callstatus.dashboard.queries.relations import Relations

RING_CAP_S = 120
# The session state key of the Pairings listing's expander (open or not).
PAIRINGS_OPEN = "pairings-open"


def render() -> None:
    f = controls.current()
    rel = connection.relations()
    st.title("A/B legs")
    st.caption(controls.describe(f))
    gone = legs.abandoned(rel, f)
    row = gone.frame.iloc[0]
    kpi = overview.kpis(rel, f).frame.iloc[0]
    cols = st.columns(4)
    cols[0].metric("A legs that dialled", tiles.fmt_count(row["dialled_a_legs"]), border=True)
    cols[1].metric(
        "B-leg answer rate",
        tiles.fmt_rate(kpi["b_leg_answer_rate"]),
        help=definitions.B_LEG_ANSWER_RATE,
        border=True,
    )
    cols[2].metric(
        "Lost races",
        tiles.fmt_rate(kpi["b_lost_race_share"]),
        help="B legs that lost the race (code 9000) / B legs.",
        border=True,
    )
    cols[3].metric(
        "Abandoned while ringing",
        tiles.fmt_rate(row["abandoned_rate"]),
        help=definitions.ABANDONED,
        border=True,
    )
    widgets.provenance(gone, "abandoned")

    left, right = st.columns(2)
    with left:
        st.subheader("B legs per A leg")
        fan = legs.fanout(rel, f)
        widgets.chart(
            fan,
            leg_charts.count_bar(fan.frame, "b_legs", "a_legs", "B legs dialled", "A legs"),
            "fanout",
        )
    with right:
        st.subheader("Simultaneous dials: who wins, by position")
        wins = legs.winners_by_position(rel, f)
        widgets.chart(wins, leg_charts.winners_by_position(wins.frame), "winners-position")

    st.subheader("B-leg answer rate per destination")
    dest = legs.destinations(rel, f)
    widgets.chart(dest, leg_charts.destination_rates(dest.frame), "destinations")

    left, right = st.columns(2)
    with left:
        st.subheader("A outcome × B outcome")
        matrix = legs.outcome_matrix(rel, f)
        widgets.chart(matrix, leg_charts.outcome_matrix(matrix.frame), "outcome-matrix")
    with right:
        st.subheader("Time to answer and ring time")
        rings = legs.ring_times(rel, f, cap_s=RING_CAP_S)
        widgets.chart(rings, leg_charts.ring_histogram(rings.frame, RING_CAP_S), "ring-times")

    st.subheader("Pairings")
    _pairings(rel, f)


@st.fragment
def _pairings(rel: Relations, f: Filters) -> None:
    """Each A leg with the B legs it dialled, a listing drawn only while it is open (opening it
    reruns this fragment alone): drawn on every load, its filters and table took 0.45 s of
    Chromium's drawing of the page at 10 million webhooks (docs/benchmarks.md)."""
    listing = st.expander(
        "Each A leg with the B legs it dialled: filter by outcome, position or a UUID or number",
        key=PAIRINGS_OPEN,
        on_change="rerun",
    )
    if not listing.open:
        return
    with listing:
        a, b, c = st.columns([2, 1, 2])
        outcomes = a.multiselect(
            "B outcome", OUTCOMES[:-1], key="pair_outcome", placeholder="any outcome"
        )
        positions = b.multiselect(
            "Position", [1, 2, 3, 4, 5, 6, 7, 8], key="pair_position", placeholder="any"
        )
        search = c.text_input("Search", key="pair_search", placeholder="UUID or number")
        masker = controls.masker()
        if masker is not None and normalise(search.strip()):
            # Masked mode stores pseudonyms: a clear number typed here is looked up as its own.
            search = masker.lookup_forms(search.strip())[0]
        rows = widgets.rows_choice("pair_rows", "A/B pairings")
        listed = legs.pairings(rel, f, tuple(outcomes), tuple(positions), search, limit=rows)
        widgets.table(listed, "pairings")


controls.live(render)
