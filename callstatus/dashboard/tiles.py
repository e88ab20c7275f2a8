"""The KPI tiles: which figure leads, how each is written, and its change on the last range."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd
import streamlit as st

from callstatus.dashboard import definitions


def fmt_count(value: Any) -> str:
    return "—" if _missing(value) else f"{int(value):,}"


def fmt_rate(value: Any) -> str:
    return "—" if _missing(value) else f"{100 * float(value):.1f}%"


def fmt_seconds(value: Any) -> str:
    if _missing(value):
        return "—"
    minutes, seconds = divmod(round(float(value)), 60)
    return f"{minutes}m {seconds:02d}s" if minutes else f"{seconds}s"


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or pd.isna(value)


@dataclass(frozen=True)
class Tile:
    label: str
    column: str
    fmt: Callable[[Any], str]
    help: str
    kind: str  # "count" (relative change), "rate" (points), "seconds"
    worse_when_up: bool = False


TILES = {
    "calls": Tile("Calls", "calls", fmt_count, definitions.CALLS, "count"),
    "dial": Tile(
        "Dial answer rate", "dial_answer_rate", fmt_rate, definitions.DIAL_ANSWER_RATE, "rate"
    ),
    "call": Tile(
        "Call answer rate", "call_answer_rate", fmt_rate, definitions.CALL_ANSWER_RATE, "rate"
    ),
    "b": Tile(
        "B-leg answer rate", "b_leg_answer_rate", fmt_rate, definitions.B_LEG_ANSWER_RATE, "rate"
    ),
    "acd": Tile("ACD", "acd_s", fmt_seconds, definitions.ACD, "seconds"),
    "busy": Tile("Busy", "busy_share", fmt_rate, definitions.BUSY, "rate", True),
    "no_answer": Tile(
        "No answer", "no_answer_share", fmt_rate, definitions.NO_ANSWER, "rate", True
    ),
    "failed": Tile("Failed", "failed_share", fmt_rate, definitions.FAILED, "rate", True),
}


def lead_metric(direction: str | None, now: pd.Series) -> str:
    """'dial' for inbound traffic, 'call' for outbound (ARCHITECTURE, Metrics); for both
    directions, whichever direction carries most calls decides."""
    if direction == "inbound":
        return "dial"
    if direction == "outbound":
        return "call"
    return "dial" if int(now["inbound_calls"]) >= int(now["outbound_calls"]) else "call"


def order(lead: str) -> list[str]:
    other = "call" if lead == "dial" else "dial"
    return [lead, "calls", other, "b", "acd", "busy", "no_answer", "failed"]


def delta(tile: Tile, now: Any, before: Any) -> str | None:
    if _missing(now) or _missing(before):
        return None
    if tile.kind == "rate":
        return f"{100 * (float(now) - float(before)):+.1f} pp"
    if tile.kind == "seconds":
        return f"{float(now) - float(before):+.0f} s"
    if float(before) == 0:
        return None
    return f"{100 * (float(now) / float(before) - 1):+.1f}%"


# Below this many calls in the previous range a change is noise ("+4900%"): show none.
MIN_CALLS_TO_COMPARE = 20


def render(now: pd.Series, before: pd.Series, lead: str, covered: bool = True) -> None:
    """Two rows of four tiles, the lead figure first. `covered` says whether the data reaches
    back over the whole previous range; if not, a change would compare against a part."""
    keys = order(lead)
    comparable = covered and int(before["calls"]) >= MIN_CALLS_TO_COMPARE
    for row in (keys[:4], keys[4:]):
        for column, key in zip(st.columns(4), row, strict=True):
            tile = TILES[key]
            column.metric(
                tile.label,
                tile.fmt(now[tile.column]),
                delta(tile, now[tile.column], before[tile.column]) if comparable else None,
                delta_color="inverse" if tile.worse_when_up else "normal",
                help=f"{tile.help}\n\n{definitions.DELTA}",
                border=True,
            )
    if not comparable:
        st.caption(
            "No change shown: the data does not cover the previous range of the same "
            f"length ({int(before['calls'])} calls in it)."
        )
