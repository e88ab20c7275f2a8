"""The A/B legs page's fan-out, abandonment and wins by position read a_legs_rollup's A legs
(migration 0017) where a range holds all their B legs: exactly what grouping every B leg of the
range by its A leg gives, for ranges that cut A legs, with B legs that have no A leg, and when
the table is behind (then the figures come from grouping the B legs)."""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pytest

from callstatus.cli import main as callstatus
from callstatus.core import settings as settings_module
from callstatus.dashboard import connection
from callstatus.dashboard.filters import Filters
from callstatus.dashboard.queries import legs
from callstatus.dashboard.queries.relations import ROLLUPS


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("a-legs") / "seeded.duckdb"
    seed = ["seed", "--db", str(path), "--calls", "1500", "--days", "2", "--seed", "11"]
    assert callstatus(seed) == 0
    con = duckdb.connect(str(path))
    # B legs without an A leg (a Dial callback that named none): grouped as one, as before.
    con.execute(
        "INSERT INTO dial_legs_rollup SELECT * REPLACE (NULL AS a_leg_uuid,"
        " 'orphan-' || b_leg_uuid AS b_leg_uuid) FROM dial_legs_rollup USING SAMPLE 40 ROWS"
    )
    con.close()
    return path


def _run(con: duckdb.DuckDBPyConnection, sql: str, f: Filters) -> pd.DataFrame:
    params = {k: v for k, v in f.params().items() if f"${k}" in sql}
    return con.execute(sql, params).df()


def _figures(frame: pd.DataFrame) -> dict[str, list[tuple[Any, ...]]]:
    """Each figure's rows, without the columns only other figures fill."""
    out = {}
    for figure, rows in frame.groupby("figure"):
        rows = rows.dropna(axis=1, how="all").drop(columns="figure")
        out[str(figure)] = sorted(map(tuple, rows.astype(object).values.tolist()))
    return out


def _cut_ranges(con: duckdb.DuckDBPyConnection, rng: random.Random) -> list[Filters]:
    """Ranges whose ends fall between the B legs of A legs that dialled several."""
    spans = con.execute(
        "SELECT first_at, last_at FROM a_legs_rollup WHERE last_at > first_at ORDER BY a_leg_uuid"
    ).fetchall()
    assert len(spans) > 50, "the seed should dial several B legs for many A legs"
    ranges = []
    for first, last in rng.sample(spans, 12):
        inside = first + (last - first) / 2
        other = inside + timedelta(hours=rng.choice([-30, -5, 1, 7, 30]))
        start, end = sorted([inside, other])
        ranges.append(Filters(start=start, end=end))
    (lo, hi) = con.execute("SELECT min(leg_at), max(leg_at) FROM dial_legs_rollup").fetchone()
    ranges.append(Filters(start=lo - timedelta(days=1), end=hi + timedelta(days=1)))  # all
    ranges.append(Filters(start=hi + timedelta(days=1), end=hi + timedelta(days=2)))  # none
    return ranges


def test_grouped_ahead_equals_grouping_every_b_leg(seeded: Path) -> None:
    con = duckdb.connect(str(seeded), read_only=True)
    try:
        con.execute("SET TimeZone = 'UTC'")
        cut = []
        for f in _cut_ranges(con, random.Random(3)):
            ahead = _run(con, legs._grouped_ahead(ROLLUPS, f), f)
            check = ahead.loc[ahead["figure"] == "check"].iloc[0]
            assert check["grouped"] == check["scoped"], f
            here = _figures(_run(con, legs._grouped_here(ROLLUPS, f), f))
            assert _figures(ahead[ahead["figure"] != "check"]) == here, f
            cut.append(
                con.execute(
                    "SELECT count(*) FROM a_legs_rollup WHERE first_at < $end"
                    " AND last_at >= $start AND (first_at < $start OR last_at >= $end)",
                    {"start": f.start, "end": f.end},
                ).fetchone()[0]
            )
        # Each of the first 12 ranges has an end inside an A leg's B legs; the whole span and
        # the empty range after it cut none.
        assert all(n >= 1 for n in cut[:12]), cut
        assert cut[12:] == [0, 0], cut
    finally:
        con.close()


@pytest.fixture
def dashboard_on(seeded: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("CALLSTATUS_DB", str(seeded))
    settings_module.get_settings.cache_clear()
    yield seeded
    settings_module.get_settings.cache_clear()


def test_a_table_behind_its_b_legs_is_not_trusted(
    dashboard_on: Path, caplog: pytest.LogCaptureFixture
) -> None:
    con = duckdb.connect(str(dashboard_on))
    con.execute("SET TimeZone = 'UTC'")
    f = _cut_ranges(con, random.Random(5))[-2]  # every B leg
    here = _figures(_run(con, legs._grouped_here(ROLLUPS, f), f))
    # An A leg's row lost (as a table the refresh forgot would be).
    con.execute(
        "DELETE FROM a_legs_rollup WHERE a_leg_uuid = (SELECT min(a_leg_uuid) FROM a_legs_rollup)"
    )
    con.close()
    assert connection.relations() is ROLLUPS
    with caplog.at_level(logging.WARNING, logger="callstatus.dashboard"):
        got = legs.a_leg_figures(ROLLUPS, f)
    assert "a_legs_rollup counts" in caplog.text
    assert "'check'" not in got.sql
    assert _figures(got.frame) == here
