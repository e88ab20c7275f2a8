"""What a query reads: the views, or the rollup tables that hold the same rows.

The `calls`, `dials` and `dial_legs` views aggregate every webhook each time they are read;
their rollup tables (`callstatus.core.rollups`) hold the same rows, stored, while they are
current. Every query builder takes a `Relations` and names exactly what it holds, so the SQL
shown under a chart is the SQL that ran. `connection.relations()` says which one is right now.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from callstatus.core import rollups

_PLAIN = re.compile(r"^[a-z_]+$")


@dataclass(frozen=True)
class Relations:
    """The relations of calls, Dials and B legs; `stored`: they are the rollup tables."""

    calls: str
    dials: str
    dial_legs: str
    # The rollups store more than the views show: dial_legs_rollup each leg's time (leg_at)
    # and its A leg's columns (a_outcome, a_started_at, a_direction, a_from, a_to; migration
    # 0004), and webhook_counts (migration 0005) the webhooks per 5 minutes, kind, duplicate
    # and signature, kept by the same refresh.
    stored: bool
    # The hourly aggregates (migration 0015, queries/facts.py) are read where they answer the
    # filters: they share the rollups' watermark, so they are current exactly when those are.
    aggregates: bool = False

    def __post_init__(self) -> None:
        # These names are put into SQL text: only fixed identifiers, never input.
        for name in (self.calls, self.dials, self.dial_legs):
            if not _PLAIN.match(name):
                raise ValueError(f"not a relation name: {name!r}")


VIEWS = Relations("calls", "dials", "dial_legs", stored=False)
ROLLUPS = Relations(
    rollups.VIEWS["calls"],
    rollups.VIEWS["dials"],
    rollups.VIEWS["dial_legs"],
    stored=True,
    aggregates=True,
)
# The rollups without the aggregates: what the aggregates are checked against.
ROLLUPS_ONLY = Relations(
    rollups.VIEWS["calls"], rollups.VIEWS["dials"], rollups.VIEWS["dial_legs"], stored=True
)
