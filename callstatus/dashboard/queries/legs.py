"""A/B legs: fan-out, who wins simultaneous dials, destinations, ring times, pairings."""

from __future__ import annotations

import logging

import pandas as pd

from callstatus.core import rollups
from callstatus.dashboard.filters import Filters
from callstatus.dashboard.queries import facts
from callstatus.dashboard.queries.base import ROW_LIMIT, Result, run, with_
from callstatus.dashboard.queries.facts import count
from callstatus.dashboard.queries.relations import Relations
from callstatus.dashboard.queries.scopes import LEG_DESTINATIONS, listed_legs, scoped_legs, sliced

log = logging.getLogger("callstatus.dashboard")

# B outcome and position choices on the Pairings table.
LEG_CHOICES = """
    (len(CAST($b_outcomes AS VARCHAR[])) = 0
     OR list_contains(CAST($b_outcomes AS VARCHAR[]), l.outcome))
    AND (len(CAST($positions AS INTEGER[])) = 0
         OR list_contains(CAST($positions AS INTEGER[]), l.position))"""


def a_leg_figures(rel: Relations, f: Filters) -> Result:
    """Fan-out, abandonment and who wins simultaneous dials, in one query: each groups the B
    legs by A leg, so the grouping (`per_a`) is done once. Rows are tagged by `figure`
    ('abandoned', 'fanout', 'winners'); `fanout`, `abandoned` and `winners_by_position` give
    each its own rows, with this query as their SQL.

    On the rollups, without a slice, the A legs whose B legs all fall in the range come
    grouped already (a_legs_rollup, migration 0017): grouping 2.5 million B legs into 1.5
    million A legs was most of the A/B legs page's server time at 10 million webhooks. Only the
    A legs the range cuts, and B legs without an A leg, are grouped here. A row tagged 'check'
    compares the B legs so counted with the B legs in the range: were the table ever behind
    them, the figures come from grouping every B leg instead (and a warning says so).

    Wins by position count every B leg of an A leg that dialled several as every B leg less
    those whose A leg dialled no other (`per_a` with one leg): no join back to the B legs."""
    if not rel.stored or sliced(f) or f.destinations:
        return run(_grouped_here(rel, f), f.params())
    result = run(_grouped_ahead(rel, f), f.params())
    check = result.frame.loc[result.frame["figure"] == "check"].iloc[0]
    if int(check["grouped"]) != int(check["scoped"]):
        log.warning(
            "a_legs_rollup counts %s B legs where the range holds %s: grouped from the B legs",
            check["grouped"],
            check["scoped"],
        )
        return run(_grouped_here(rel, f), f.params())
    return result


def _grouped_here(rel: Relations, f: Filters) -> str:
    """`a_leg_figures` grouping every B leg in the range by its A leg."""
    return (
        with_(scoped_legs(rel, f, a_leg=False, inline=True))
        + """
    , per_a AS MATERIALIZED (
        SELECT a_leg_uuid IS NOT NULL AS known, count(*) AS b_legs,
               bool_or(answered) AS any_answered, bool_or(outcome = 'canceled') AS gave_up,
               any_value(position) AS position, bool_or(outcome = 'lost-race') AS lost_race
        FROM scoped_legs GROUP BY a_leg_uuid)
"""
        + _FIGURES
        + """
    ORDER BY figure, position, b_legs
    """
    )


def _grouped_ahead(rel: Relations, f: Filters) -> str:
    """`a_leg_figures` on the rollups without a slice: a_legs_rollup's A legs inside the range,
    and the rest grouped here (the A legs the range cuts, and B legs without an A leg)."""
    return (
        with_(scoped_legs(rel, f, a_leg=False, inline=True))
        + """
    , cut AS (
        SELECT a_leg_uuid FROM a_legs_rollup
        WHERE first_at < $end AND last_at >= $start AND (first_at < $start OR last_at >= $end))
    , per_a AS MATERIALIZED (
        SELECT true AS known, b_legs, any_answered, gave_up, position, lost_race
        FROM a_legs_rollup WHERE first_at >= $start AND last_at < $end
        UNION ALL
        SELECT a_leg_uuid IS NOT NULL AS known, count(*) AS b_legs,
               bool_or(answered) AS any_answered, bool_or(outcome = 'canceled') AS gave_up,
               any_value(position) AS position, bool_or(outcome = 'lost-race') AS lost_race
        FROM scoped_legs
        WHERE a_leg_uuid IS NULL OR a_leg_uuid IN (SELECT a_leg_uuid FROM cut)
        GROUP BY a_leg_uuid)
"""
        + _FIGURES
        + """
    UNION ALL BY NAME
    SELECT 'check' AS figure,
           (SELECT CAST(coalesce(sum(b_legs), 0) AS BIGINT) FROM per_a) AS grouped,
           (SELECT count(*) FROM scoped_legs) AS scoped
    ORDER BY figure, position, b_legs
    """
    )


# The figures from per_a (one row per A leg) and scoped_legs.
_FIGURES = """    , fanout AS (SELECT b_legs, count(*) AS a_legs FROM per_a GROUP BY b_legs)
    , abandoned AS (
        SELECT count(*) AS dialled_a_legs,
               count(*) FILTER (WHERE NOT any_answered AND gave_up) AS abandoned,
               count(*) FILTER (WHERE NOT any_answered AND gave_up) / nullif(count(*), 0)
                   AS abandoned_rate
        FROM per_a)
    , signed AS (
        SELECT position, 1 AS legs, CAST(answered AS INTEGER) AS wins,
               CAST(outcome = 'lost-race' AS INTEGER) AS lost_race
        FROM scoped_legs WHERE a_leg_uuid IS NOT NULL
        UNION ALL
        SELECT position, -1, -CAST(any_answered AS INTEGER), -CAST(lost_race AS INTEGER)
        FROM per_a WHERE known AND b_legs = 1)
    , winners AS (
        SELECT position, CAST(sum(legs) AS BIGINT) AS b_legs, CAST(sum(wins) AS BIGINT) AS wins,
               CAST(sum(lost_race) AS BIGINT) AS lost_race
        FROM signed GROUP BY position)
    SELECT 'fanout' AS figure, * FROM fanout
    UNION ALL BY NAME SELECT 'abandoned' AS figure, * FROM abandoned
    UNION ALL BY NAME
    SELECT 'winners' AS figure, *, wins / b_legs AS win_rate FROM winners WHERE b_legs > 0
"""


def _figure(result: Result, figure: str, columns: list[str]) -> Result:
    """One figure's rows of `a_leg_figures`, with its own columns typed as DuckDB types them
    for a query of its own: the union filled the other figures' columns with NULL, which makes
    an integer column nullable (Int64) where its own rows hold no NULL (int64)."""
    frame = result.frame
    rows = frame.loc[frame["figure"] == figure, columns].reset_index(drop=True)
    for name in columns:
        dtype = rows[name].dtype
        nullable_int = isinstance(dtype, pd.api.extensions.ExtensionDtype) and dtype.kind in "iu"
        if nullable_int and not rows[name].isna().any():
            rows[name] = rows[name].astype(dtype.numpy_dtype)
    return Result(rows, result.sql, result.params)


def fanout(rel: Relations, f: Filters) -> Result:
    """How many A legs dialled 1, 2, 3… B legs."""
    return _figure(a_leg_figures(rel, f), "fanout", ["b_legs", "a_legs"])


def winners_by_position(rel: Relations, f: Filters) -> Result:
    """In simultaneous dials (2+ B legs), who answered first, by position in the Dial."""
    columns = ["position", "b_legs", "wins", "lost_race", "win_rate"]
    return _figure(a_leg_figures(rel, f), "winners", columns)


def abandoned(rel: Relations, f: Filters) -> Result:
    """A legs whose caller gave up while B legs rang: no B leg answered and a B leg was
    canceled (a caller hanging up during the Dial cancels the ringing legs)."""
    columns = ["dialled_a_legs", "abandoned", "abandoned_rate"]
    return _figure(a_leg_figures(rel, f), "abandoned", columns)


def destinations(rel: Relations, f: Filters) -> Result:
    """Per B number: legs, answered, lost races and answer rate (lost races shown apart)."""
    h = facts.hours(rel, f, zone=False, bucket=False, legs=True)
    if h is not None:
        answered, lost = count("answered"), count("outcome = 'lost-race'")
        sql = (
            with_(facts.leg_facts())
            + f"""
    SELECT coalesce(b_leg_to, '(unknown)') AS b_leg_to, {count()} AS b_legs,
           {answered} AS answered, {lost} AS lost_race,
           {count("NOT answered AND outcome <> 'lost-race'")} AS not_answered,
           {answered} / {count()} AS answer_rate,
           {answered} / nullif({count("outcome <> 'lost-race'")}, 0)
               AS answer_rate_excl_lost_race
    FROM leg_facts GROUP BY ALL ORDER BY b_legs DESC LIMIT 100
    """
        )
        return run(sql, {**f.params(), **h})
    sql = (
        with_(scoped_legs(rel, f, a_leg=False))
        + """
    SELECT coalesce(b_leg_to, '(unknown)') AS b_leg_to, count(*) AS b_legs,
           count(*) FILTER (WHERE answered) AS answered,
           count(*) FILTER (WHERE outcome = 'lost-race') AS lost_race,
           count(*) FILTER (WHERE NOT answered AND outcome <> 'lost-race') AS not_answered,
           count(*) FILTER (WHERE answered) / count(*) AS answer_rate,
           count(*) FILTER (WHERE answered)
               / nullif(count(*) FILTER (WHERE outcome <> 'lost-race'), 0)
               AS answer_rate_excl_lost_race
    FROM scoped_legs GROUP BY ALL ORDER BY b_legs DESC LIMIT 100
    """
    )
    return run(sql, f.params())


def outcome_matrix(rel: Relations, f: Filters) -> Result:
    """Pairings counted by the A leg's outcome and the B leg's outcome."""
    h = facts.hours(rel, f, zone=False, bucket=False, legs=True)
    if h is not None:
        sql = (
            with_(facts.leg_facts())
            + f"""
    SELECT coalesce(a_outcome, '(A leg not seen)') AS a_outcome, outcome AS b_outcome,
           {count()} AS pairs
    FROM leg_facts GROUP BY ALL ORDER BY pairs DESC
    """
        )
        return run(sql, {**f.params(), **h})
    sql = (
        with_(scoped_legs(rel, f, a_leg=True))
        + """
    SELECT coalesce(a_outcome, '(A leg not seen)') AS a_outcome, outcome AS b_outcome,
           count(*) AS pairs
    FROM scoped_legs GROUP BY ALL ORDER BY pairs DESC
    """
    )
    return run(sql, f.params())


def ring_times(rel: Relations, f: Filters, bin_s: int = 5, cap_s: int = 120) -> Result:
    """Seconds from the A leg's start to the B leg's answer, or to its hangup when unanswered.

    Callbacks carry no timestamps, so these are arrival times: a second or so of slack.
    Seconds come from epoch_us: subtracting two TIMESTAMPTZ values takes calendar arithmetic,
    about five times as slow over 2 million legs (same seconds under a day; the cap hides more).

    On the hourly aggregates (no direction, number or country slice; whole seconds per bin, a
    cap within 10 minutes) from the histograms of these times: their bins below 10 minutes hold
    values of one whole second, so these counts are exact.
    """
    h = None if sliced(f) else facts.hours(rel, f, zone=False, bucket=False, legs=True)
    if h is not None and bin_s >= 1 and cap_s <= 600:
        sql = (
            with_(facts.timing_facts())
            + f"""
    SELECT measure,
           CAST(least(greatest(floor(bin_ms / 1000 / $bin) * $bin, 0), $cap) AS INTEGER)
               AS seconds,
           {count()} AS legs
    FROM timing_facts
    WHERE measure IN ('{rollups.A_TO_ANSWER}', '{rollups.A_TO_GIVE_UP}')
      AND (len(CAST($destinations AS VARCHAR[])) = 0
           OR list_contains(CAST($destinations AS VARCHAR[]), destination))
    GROUP BY ALL ORDER BY measure, seconds
    """
        )
        return run(sql, {**f.params(), **h, "bin": bin_s, "cap": cap_s})
    sql = (
        with_(scoped_legs(rel, f, a_leg=True))
        + """
    , timed AS (
        SELECT CASE WHEN answered THEN 'time to answer' ELSE 'ring time, not answered' END
                   AS measure,
               (epoch_us(CASE WHEN answered THEN answered_at ELSE ended_at END)
                - epoch_us(a_started_at)) / 1e6 AS s
        FROM scoped_legs
        WHERE outcome NOT IN ('lost-race', 'in-progress') AND a_started_at IS NOT NULL)
    SELECT measure, CAST(least(greatest(floor(s / $bin) * $bin, 0), $cap) AS INTEGER) AS seconds,
           count(*) AS legs
    FROM timed WHERE s IS NOT NULL GROUP BY ALL ORDER BY measure, seconds
    """
    )
    return run(sql, {**f.params(), "bin": bin_s, "cap": cap_s})


def pairings(
    rel: Relations,
    f: Filters,
    b_outcomes: tuple[str, ...] = (),
    positions: tuple[int, ...] = (),
    search: str = "",
    limit: int = ROW_LIMIT,
) -> Result:
    """A/B pairings, newest first, optionally narrowed by B outcome, position and text. Without
    a text, the hourly aggregates narrow the range to the hours holding the newest `limit`
    (facts.newest)."""
    if not search.strip():
        choices = {"b_outcomes": list(b_outcomes), "positions": list(positions)}
        where = f"{facts.LEG_DESTINATIONS} AND {LEG_CHOICES}"
        f = facts.newest(rel, f, "legs_hourly", where, limit, choices)
    # With nothing to match on the A leg, only the newest B legs are joined to their A leg.
    where = f"{LEG_DESTINATIONS} AND {LEG_CHOICES}"
    ctes = listed_legs(rel, f, where, only_newest=not sliced(f) and not search.strip())
    sql = (
        with_(*ctes)
        + """
    SELECT timezone($tz, t) AS at, a_leg_uuid, a_from, a_to, direction, a_outcome,
           position, b_leg_to, b_leg_uuid, outcome AS b_outcome, answered AS b_answered,
           duration_s AS b_duration_s, hangup_cause_code AS b_cause_code,
           hangup_cause_name AS b_cause_name
    FROM scoped_legs
    WHERE (len(CAST($b_outcomes AS VARCHAR[])) = 0
           OR list_contains(CAST($b_outcomes AS VARCHAR[]), outcome))
      AND (len(CAST($positions AS INTEGER[])) = 0
           OR list_contains(CAST($positions AS INTEGER[]), position))
      AND ($search = '' OR contains(concat_ws(' ', a_leg_uuid, b_leg_uuid, a_from, a_to,
                                              b_leg_to), $search))
    ORDER BY t DESC LIMIT $limit
    """
    )
    params = {
        **f.params(),
        "b_outcomes": list(b_outcomes),
        "positions": list(positions),
        "search": search.strip(),
        "limit": limit,
    }
    return run(sql, params)
