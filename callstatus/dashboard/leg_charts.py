"""Pure chart builders of the A/B legs page: fan-out, winners by position, destinations, the
A x B outcome matrix and ring times (colours and scales shared with `charts`)."""

from __future__ import annotations

import altair as alt
import pandas as pd

from callstatus.dashboard.charts import (
    OUTCOME_COLORS,
    OUTCOMES,
    Figure,
    empty,
    outcome_scale,
    rows_height,
)


def count_bar(frame: pd.DataFrame, x: str, y: str, x_title: str, y_title: str) -> alt.Chart:
    """A plain bar per category (fan-out, positions)."""
    if frame.empty:
        return empty()
    chart: alt.Chart = (
        alt.Chart(frame)
        .mark_bar(color="#4c78a8")
        .encode(
            x=alt.X(f"{x}:O", title=x_title, axis=alt.Axis(labelAngle=0)),
            y=alt.Y(f"{y}:Q", title=y_title),
            tooltip=[alt.Tooltip(f"{x}:O"), alt.Tooltip(f"{y}:Q")],
        )
        .properties(height=220)
    )
    return chart


def winners_by_position(frame: pd.DataFrame) -> alt.Chart:
    """Per Dial position: wins (answered) vs lost races vs the rest, as stacked legs."""
    if frame.empty:
        return empty("No simultaneous dials in this range")
    data = frame.assign(other=frame["b_legs"] - frame["wins"] - frame["lost_race"]).melt(
        id_vars=["position"],
        value_vars=["wins", "lost_race", "other"],
        var_name="result",
        value_name="legs",
    )
    data["outcome"] = data["result"].map(
        {"wins": "answered", "lost_race": "lost-race", "other": "canceled"}
    )
    chart: alt.Chart = (
        alt.Chart(data)
        .mark_bar()
        .encode(
            x=alt.X("position:O", title="position in the Dial", axis=alt.Axis(labelAngle=0)),
            y=alt.Y("legs:Q", title="B legs"),
            color=alt.Color(
                "outcome:N",
                scale=outcome_scale(data["outcome"]),
                title=None,
                legend=alt.Legend(
                    labelExpr="{'answered': 'won (answered)', 'lost-race': "
                    "'lost the race', 'canceled': 'did not answer'}[datum.label]"
                ),
            ),
            order=alt.Order("outcome:N"),
            tooltip=[alt.Tooltip("position:O"), alt.Tooltip("result:N"), alt.Tooltip("legs:Q")],
        )
        .properties(height=220)
    )
    return chart


def destination_rates(frame: pd.DataFrame) -> alt.Chart:
    """B-leg answer rate per destination, lost races shown apart as their own bar segment."""
    if frame.empty:
        return empty()
    data = frame.melt(
        id_vars=["b_leg_to", "b_legs"],
        value_vars=["answered", "lost_race", "not_answered"],
        var_name="result",
        value_name="legs",
    )
    data["outcome"] = data["result"].map(
        {"answered": "answered", "lost_race": "lost-race", "not_answered": "no-answer"}
    )
    data["share"] = data["legs"] / data["b_legs"]
    chart: alt.Chart = (
        alt.Chart(data)
        .mark_bar()
        .encode(
            y=alt.Y(
                "b_leg_to:N",
                sort=alt.EncodingSortField("b_legs", order="descending"),
                title=None,
                axis=alt.Axis(labelLimit=260),
            ),
            x=alt.X(
                "share:Q", stack="normalize", title="share of B legs", axis=alt.Axis(format="%")
            ),
            color=alt.Color(
                "outcome:N",
                scale=outcome_scale(data["outcome"]),
                title=None,
                legend=alt.Legend(
                    orient="top",
                    labelExpr="{'answered': 'answered', 'lost-race': 'lost race',"
                    " 'no-answer': 'not answered'}[datum.label]",
                ),
            ),
            order=alt.Order("result:N"),
            tooltip=[
                alt.Tooltip("b_leg_to:N"),
                alt.Tooltip("result:N"),
                alt.Tooltip("legs:Q"),
                alt.Tooltip("share:Q", format=".1%"),
            ],
        )
        .properties(height=rows_height(frame["b_leg_to"].nunique(), chrome=110))
    )
    return chart


def outcome_matrix(frame: pd.DataFrame) -> Figure:
    if frame.empty:
        return empty()
    base = alt.Chart(frame).encode(
        x=alt.X(
            "b_outcome:N",
            title="B-leg outcome",
            sort=OUTCOMES,
            axis=alt.Axis(labelAngle=-30, orient="top", labelOverlap=False),
        ),
        # The rows named "A leg answered" and so on: a vertical axis title is clipped to the
        # height of the one or two rows a range usually has (B legs are dialled once A answers).
        y=alt.Y(
            "a_outcome:N",
            title=None,
            sort=OUTCOMES,
            axis=alt.Axis(labelExpr="'A leg ' + datum.label"),
        ),
    )
    cells = base.mark_rect().encode(
        color=alt.Color("pairs:Q", scale=alt.Scale(scheme="blues", type="sqrt"), legend=None),
        tooltip=[alt.Tooltip("a_outcome:N"), alt.Tooltip("b_outcome:N"), alt.Tooltip("pairs:Q")],
    )
    labels = base.mark_text(fontSize=13).encode(
        text=alt.Text("pairs:Q"),
        color=alt.condition(
            f"datum.pairs > {frame['pairs'].max() * 0.4}", alt.value("white"), alt.value("#222")
        ),
    )
    layered: alt.LayerChart = (cells + labels).properties(
        # Room above the bands for the slanted B outcomes and their title (with 80 px the one
        # row of a usual range was squeezed to a line, and its white counts vanished).
        height=rows_height(frame["a_outcome"].nunique(), step=44, chrome=150)
    )
    return layered


def ring_histogram(frame: pd.DataFrame, cap_s: int) -> alt.Chart:
    if frame.empty:
        return empty()
    # Legs beyond the cap are counted in its bin: said only when there are some.
    capped = f" ({cap_s} = {cap_s} or more)" if (frame["seconds"] >= cap_s).any() else ""
    chart: alt.Chart = (
        alt.Chart(frame)
        .mark_bar(opacity=0.85)
        .encode(
            x=alt.X(
                "seconds:O",
                title=f"seconds after the A leg started{capped}",
                axis=alt.Axis(labelAngle=0),
            ),
            y=alt.Y("legs:Q", title="B legs", stack=None),
            color=alt.Color(
                "measure:N",
                title=None,
                legend=alt.Legend(orient="top"),
                scale=alt.Scale(
                    domain=["time to answer", "ring time, not answered"],
                    range=[OUTCOME_COLORS["answered"], OUTCOME_COLORS["no-answer"]],
                ),
            ),
            xOffset=alt.XOffset("measure:N"),
            tooltip=[alt.Tooltip("measure:N"), alt.Tooltip("seconds:O"), alt.Tooltip("legs:Q")],
        )
        # The legend above takes its share: at 240 the bars had about 90 px.
        .properties(height=300)
    )
    return chart
