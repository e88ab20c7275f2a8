"""Every aggregation the dashboard shows, as parameterised DuckDB SQL over the views.

Values are always bound (`$name`), never formatted into the SQL text. Each function returns a
`Result` carrying the rows and the exact SQL and parameters behind them, so the page can offer
them as "show SQL" and CSV. Results are cached briefly: a live page refreshes every few seconds.
The SQL is written against the views; when their rollup tables are current it runs on those
(same rows, stored instead of aggregated on every read), and the shown SQL names them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pandas as pd
import streamlit as st

from callstatus.core import rollups
from callstatus.dashboard import connection
from callstatus.dashboard.filters import Filters

CACHE_TTL_S = 10
ROW_LIMIT = 1000

# Slices shared by every query. A call belongs to the view when it started in the range; an
# "our number" is the number Plivo called (inbound) or the caller ID we used (outbound).
CALL_SLICE = """
    ($direction IS NULL OR c.direction = $direction)
    AND (len(CAST($numbers AS VARCHAR[])) = 0 OR list_contains(CAST($numbers AS VARCHAR[]),
         CASE WHEN c.direction = 'outbound' THEN c.from_number ELSE c.to_number END))
    AND (len(CAST($destinations AS VARCHAR[])) = 0 OR EXISTS (
         SELECT 1 FROM dial_legs x WHERE x.a_leg_uuid = c.call_uuid
         AND list_contains(CAST($destinations AS VARCHAR[]), x.b_leg_to)))
"""
SCOPED_CALLS = f"""
scoped_calls AS (
    SELECT c.*, c.started_at AS t FROM calls c
    WHERE c.started_at >= $start AND c.started_at < $end AND {CALL_SLICE}
)"""
# Dials and B legs are timed by when their webhooks arrived (ARCHITECTURE, Metrics); their
# A leg, when we saw it, gives the direction and our number.
DIAL_SLICE = """
    ($direction IS NULL OR c.direction = $direction)
    AND (len(CAST($numbers AS VARCHAR[])) = 0 OR list_contains(CAST($numbers AS VARCHAR[]),
         CASE WHEN c.direction = 'outbound' THEN c.from_number ELSE c.to_number END))
"""
# Dials and B legs join their A leg only when they need it: for the direction and number slices,
# and for the A leg's columns. The joined calls are bounded to the range widened by one day on
# either side (the same one-day assumption as the rollups, docs/data.md), so the join scales with
# the range instead of hashing every call's UUID.
NEAR_CALLS = """(SELECT call_uuid, outcome, started_at, direction, from_number, to_number
          FROM calls WHERE started_at >= $start - INTERVAL 1 DAY
          AND started_at < $end + INTERVAL 1 DAY)"""
DIAL_DESTINATIONS = """
    (len(CAST($destinations AS VARCHAR[])) = 0 OR EXISTS (
         SELECT 1 FROM dial_legs x WHERE x.a_leg_uuid = d.a_leg_uuid
         AND list_contains(CAST($destinations AS VARCHAR[]), x.b_leg_to)))"""
# scoped_legs on the rollups: leg_at and the A-leg columns are stored, so no join and zone maps
# on leg_at (rows are inserted in its order) skip the row groups outside the range.
ROLLUP_LEGS = """
scoped_legs AS (
    SELECT l.* EXCLUDE (leg_at, a_direction), l.leg_at AS t, l.a_direction AS direction
    FROM dial_legs_rollup l
    WHERE l.leg_at >= $start AND l.leg_at < $end
      AND ($direction IS NULL OR l.a_direction = $direction)
      AND (len(CAST($numbers AS VARCHAR[])) = 0 OR list_contains(CAST($numbers AS VARCHAR[]),
           CASE WHEN l.a_direction = 'outbound' THEN l.a_from ELSE l.a_to END))
      AND (len(CAST($destinations AS VARCHAR[])) = 0
           OR list_contains(CAST($destinations AS VARCHAR[]), l.b_leg_to))
)"""
# CTE text on the views -> its equivalent on the rollups (filled by scoped_legs; few variants).
_ON_ROLLUPS: dict[str, str] = {}
LEG_DESTINATIONS = """
    (len(CAST($destinations AS VARCHAR[])) = 0
     OR list_contains(CAST($destinations AS VARCHAR[]), l.b_leg_to))"""


def _sliced(f: Filters | None) -> bool:
    """Whether the direction or number slice is set (None: either may be)."""
    return f is None or f.direction is not None or bool(f.numbers)


def scoped_dials(f: Filters | None = None) -> str:
    """The scoped_dials CTE: dials whose webhooks arrived in the range, within the slices."""
    if not _sliced(f):
        return f"""
scoped_dials AS (
    SELECT d.*, d.received_at AS t FROM dials d
    WHERE d.received_at >= $start AND d.received_at < $end AND {DIAL_DESTINATIONS}
)"""
    return f"""
scoped_dials AS (
    SELECT d.*, d.received_at AS t FROM dials d LEFT JOIN {NEAR_CALLS} c
        ON c.call_uuid = d.a_leg_uuid
    WHERE d.received_at >= $start AND d.received_at < $end AND {DIAL_SLICE}
    AND {DIAL_DESTINATIONS}
)"""


def scoped_legs(f: Filters | None = None, a_leg: bool = True, legs: str = "dial_legs") -> str:
    """The scoped_legs CTE: B legs timed in the range, within the slices; with `a_leg` their A
    leg's outcome, start, direction and numbers too (a_outcome, a_started_at, direction, a_from,
    a_to). A leg that has neither answered nor ended is timed by its A leg's start. `legs`
    names the relation of B legs to read (the dial_legs view, or a CTE of its rows).

    The SQL returned joins the views; `on_rollups` swaps it for a plain range filter on
    dial_legs_rollup, which stores each leg's time (leg_at) and A-leg columns (migration 0004),
    whatever `legs` and `a_leg` are (its A-leg columns cost nothing to read there)."""
    views = _scoped_legs_on_views(f, a_leg, legs)
    _ON_ROLLUPS[views] = ROLLUP_LEGS
    return views


def _scoped_legs_on_views(
    f: Filters | None = None, a_leg: bool = True, legs: str = "dial_legs"
) -> str:
    """The scoped_legs CTE: B legs timed in the range, within the slices; with `a_leg` their A
    leg's outcome, start, direction and numbers too (a_outcome, a_started_at, direction, a_from,
    a_to). A leg that has neither answered nor ended is timed by its A leg's start. `legs`
    names the relation of B legs to read (the dial_legs view, or a CTE of its rows).
    (On the views; `scoped_legs` gives this and its equivalent on the rollups.)"""
    if not a_leg and not _sliced(f):
        return f"""
scoped_legs AS (
    SELECT l.*, coalesce(l.answered_at, l.ended_at) AS t FROM dial_legs l
    WHERE coalesce(l.answered_at, l.ended_at) >= $start
      AND coalesce(l.answered_at, l.ended_at) < $end AND {LEG_DESTINATIONS}
    UNION ALL
    SELECT l.*, c.started_at AS t FROM dial_legs l JOIN {NEAR_CALLS} c
        ON c.call_uuid = l.a_leg_uuid
    WHERE l.answered_at IS NULL AND l.ended_at IS NULL
      AND c.started_at >= $start AND c.started_at < $end AND {LEG_DESTINATIONS}
)"""
    return f"""
scoped_legs AS (
    SELECT l.*, coalesce(l.answered_at, l.ended_at, c.started_at) AS t,
           c.outcome AS a_outcome, c.started_at AS a_started_at, c.direction,
           c.from_number AS a_from, c.to_number AS a_to
    FROM {legs} l LEFT JOIN {NEAR_CALLS} c ON c.call_uuid = l.a_leg_uuid
    WHERE ((l.answered_at IS NULL AND l.ended_at IS NULL)
           OR (coalesce(l.answered_at, l.ended_at) >= $start
               AND coalesce(l.answered_at, l.ended_at) < $end))
      AND coalesce(l.answered_at, l.ended_at, c.started_at) >= $start
      AND coalesce(l.answered_at, l.ended_at, c.started_at) < $end
      AND {DIAL_SLICE}
      AND {LEG_DESTINATIONS}
)"""


def newest_legs(where: str) -> str:
    """The `recent` and `candidates` CTEs: the newest $limit B legs matching `where` (a fixed
    condition on dial_legs l) that answered or ended in the range, plus every one that did
    neither (timed by its A leg's start). When nothing is matched on the A leg, the newest
    $limit of scoped_legs are among these, so only they need joining to their A leg."""
    return f"""
recent AS (
    SELECT l.*, coalesce(l.answered_at, l.ended_at) AS t0 FROM dial_legs l
    WHERE coalesce(l.answered_at, l.ended_at) >= $start
      AND coalesce(l.answered_at, l.ended_at) < $end AND {where}
    ORDER BY t0 DESC LIMIT $limit
), candidates AS (
    SELECT * EXCLUDE (t0) FROM recent
    UNION ALL
    SELECT l.* FROM dial_legs l
    WHERE l.answered_at IS NULL AND l.ended_at IS NULL AND {where}
)"""


SCOPED_DIALS = scoped_dials()
SCOPED_LEGS = scoped_legs()
BUCKET = "time_bucket(CAST($bucket AS INTERVAL), timezone($tz, t))"
# Bars span their whole bucket, so charts get its end too.
BUCKET_END = "bucket + CAST($bucket AS INTERVAL) AS bucket_end"
# A row's 5-minute bucket in UTC, to count before bucketing in the chosen zone.
T5 = "time_bucket(INTERVAL 5 MINUTE, t)"


@dataclass(frozen=True)
class Result:
    """Rows plus the SQL and bound parameters that produced them."""

    frame: pd.DataFrame
    sql: str
    params: dict[str, Any] = field(default_factory=dict)


def run(sql: str, params: dict[str, Any] | None = None) -> Result:
    """Run SQL with the parameters it names (DuckDB refuses unused ones), on the rollup tables
    when they are current."""
    source = connection.source()
    if connection.reads_rollups():
        sql = on_rollups(sql)
    used = set(re.findall(r"\$(\w+)", sql))
    bound = {k: v for k, v in (params or {}).items() if k in used}
    frame = _fetch(sql, tuple(sorted(bound.items(), key=lambda kv: kv[0])), source)
    return Result(frame, sql.strip(), bound)


# A view read in FROM or JOIN; CTE names (scoped_calls …) and column aliases never match.
_VIEW_READ = re.compile(r"\b(FROM|JOIN)(\s+)(" + "|".join(rollups.VIEWS) + r")\b")


def on_rollups(sql: str) -> str:
    """The same query reading each view's rollup table (equal rows, docs/data.md)."""
    for views, on_rollup_tables in _ON_ROLLUPS.items():
        sql = sql.replace(views, on_rollup_tables)
    return _VIEW_READ.sub(lambda m: m[1] + m[2] + rollups.VIEWS[m[3]], sql)


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False, max_entries=512)
def _fetch(sql: str, params: tuple[tuple[str, Any], ...], source: str) -> pd.DataFrame:
    bound = {k: list(v) if isinstance(v, tuple) else v for k, v in params}
    return connection.cursor().execute(sql, bound).df()


def _with(*ctes: str) -> str:
    return "WITH " + ",".join(ctes)


# --- first run, filter choices ------------------------------------------------------------


def event_count() -> int:
    """Webhooks stored so far (0 on a fresh install, or when there is no database yet)."""
    try:
        frame = run("SELECT count(*) AS n FROM webhook_events").frame
    except connection.NoDatabase:
        return 0
    return int(frame["n"].iloc[0])


def data_span() -> tuple[datetime, datetime] | None:
    frame = run("SELECT min(started_at) AS first, max(started_at) AS last FROM calls").frame
    first, last = frame["first"].iloc[0], frame["last"].iloc[0]
    if pd.isna(first):
        return None
    return first.to_pydatetime(), last.to_pydatetime()


def our_numbers() -> list[str]:
    frame = run(
        """
        SELECT CASE WHEN direction = 'outbound' THEN from_number ELSE to_number END AS number,
               count(*) AS calls
        FROM calls WHERE number IS NOT NULL GROUP BY number ORDER BY calls DESC LIMIT 200
        """
    ).frame
    return list(frame["number"])


def destinations_list() -> list[str]:
    frame = run(
        """
        SELECT b_leg_to, count(*) AS legs FROM dial_legs WHERE b_leg_to IS NOT NULL
        GROUP BY b_leg_to ORDER BY legs DESC LIMIT 200
        """
    ).frame
    return list(frame["b_leg_to"])


# --- Overview -------------------------------------------------------------------------------

KPI_BODY = """
, c AS (
    SELECT count(*) AS calls,
           count(*) FILTER (WHERE direction = 'inbound') AS inbound_calls,
           count(*) FILTER (WHERE direction = 'outbound') AS outbound_calls,
           count(*) FILTER (WHERE outcome <> 'in-progress') AS ended_calls,
           count(*) FILTER (WHERE outcome <> 'in-progress' AND answered) AS answered_calls,
           avg(duration_s) FILTER (WHERE answered) AS acd_s,
           count(*) FILTER (WHERE outcome = 'busy') AS busy_calls,
           count(*) FILTER (WHERE outcome = 'no-answer') AS no_answer_calls,
           count(*) FILTER (WHERE outcome = 'failed') AS failed_calls
    FROM scoped_calls
), d AS (
    SELECT count(*) AS dials, count(*) FILTER (WHERE dial_status = 'completed') AS dials_completed
    FROM scoped_dials
), l AS (
    SELECT count(*) AS b_legs, count(*) FILTER (WHERE answered) AS b_answered,
           count(*) FILTER (WHERE outcome = 'lost-race') AS b_lost_race
    FROM scoped_legs
)
SELECT c.*, d.*, l.*,
       answered_calls / nullif(ended_calls, 0) AS call_answer_rate,
       dials_completed / nullif(dials, 0) AS dial_answer_rate,
       b_answered / nullif(b_legs, 0) AS b_leg_answer_rate,
       b_lost_race / nullif(b_legs, 0) AS b_lost_race_share,
       busy_calls / nullif(ended_calls, 0) AS busy_share,
       no_answer_calls / nullif(ended_calls, 0) AS no_answer_share,
       failed_calls / nullif(ended_calls, 0) AS failed_share
FROM c, d, l
"""


def kpis(f: Filters) -> Result:
    """One row: every KPI tile's figure for the range (ARCHITECTURE, Metrics)."""
    sql = _with(SCOPED_CALLS, scoped_dials(f), scoped_legs(f, a_leg=False)) + KPI_BODY
    return run(sql, f.params())


def rates_over_time(f: Filters) -> Result:
    """Per bucket: calls, and the call, dial and B-leg answer rates.

    Each relation is first counted per 5 minutes UTC (`t5`): a 5-minute bucket always falls in
    one bucket of the chosen zone (webhook_counts, docs/data.md), and converting a few thousand
    buckets to local time instead of every row saves most of the query's time."""
    sql = (
        _with(SCOPED_CALLS, scoped_dials(f), scoped_legs(f, a_leg=False))
        + f"""
    , c5 AS (SELECT {T5} AS t, count(*) AS calls,
                    count(*) FILTER (WHERE outcome <> 'in-progress' AND answered) AS answered,
                    count(*) FILTER (WHERE outcome <> 'in-progress') AS ended
             FROM scoped_calls GROUP BY 1)
    , c AS (SELECT {BUCKET} AS bucket, CAST(sum(calls) AS BIGINT) AS calls,
                   sum(answered) / nullif(sum(ended), 0) AS call_answer_rate
            FROM c5 GROUP BY bucket)
    , d5 AS (SELECT {T5} AS t, count(*) AS dials,
                    count(*) FILTER (WHERE dial_status = 'completed') AS completed
             FROM scoped_dials GROUP BY 1)
    , d AS (SELECT {BUCKET} AS bucket, sum(completed) / sum(dials) AS dial_answer_rate
            FROM d5 GROUP BY bucket)
    , l5 AS (SELECT {T5} AS t, count(*) AS legs, count(*) FILTER (WHERE answered) AS answered
             FROM scoped_legs GROUP BY 1)
    , l AS (SELECT {BUCKET} AS bucket, sum(answered) / sum(legs) AS b_leg_answer_rate
            FROM l5 GROUP BY bucket)
    SELECT bucket, {BUCKET_END}, coalesce(c.calls, 0) AS calls, call_answer_rate, dial_answer_rate,
           b_leg_answer_rate
    FROM c FULL JOIN d USING (bucket) FULL JOIN l USING (bucket)
    ORDER BY bucket
    """
    )
    return run(sql, f.params())


def outcomes_over_time(f: Filters) -> Result:
    sql = (
        _with(SCOPED_CALLS)
        + f"""
    SELECT {BUCKET} AS bucket, {BUCKET_END}, outcome, count(*) AS calls
    FROM scoped_calls GROUP BY ALL ORDER BY bucket, outcome
    """
    )
    return run(sql, f.params())


def answer_heatmap(f: Filters, metric: str) -> Result:
    """Answer rate by weekday and hour (in the chosen zone); metric is 'dial' or 'call'."""
    if metric == "dial":
        body = """SELECT t, dial_status = 'completed' AS ok, true AS counted FROM scoped_dials"""
        ctes: tuple[str, ...] = (scoped_dials(f),)
    else:
        body = """SELECT t, answered AS ok, outcome <> 'in-progress' AS counted
                  FROM scoped_calls"""
        ctes = (SCOPED_CALLS,)
    sql = (
        _with(*ctes)
        + f"""
    , facts AS ({body})
    SELECT isodow(timezone($tz, t)) AS weekday_no,
           strftime(timezone($tz, t), '%a') AS weekday,
           hour(timezone($tz, t)) AS hour,
           count(*) FILTER (WHERE counted) AS total,
           count(*) FILTER (WHERE counted AND ok) AS answered,
           count(*) FILTER (WHERE counted AND ok) / nullif(count(*) FILTER (WHERE counted), 0)
               AS answer_rate
    FROM facts GROUP BY ALL ORDER BY weekday_no, hour
    """
    )
    return run(sql, f.params())


# --- Hangup causes --------------------------------------------------------------------------

# leg -> relation: A legs are the calls view, B legs the dial_legs view; both name their cause
# columns alike. Only these two fixed relation names are ever put into SQL text.
LEG_RELATIONS = {"a": "scoped_calls", "b": "scoped_legs"}
CAUSE_LABEL = (
    "coalesce(CAST(hangup_cause_code AS VARCHAR) || ' ' || hangup_cause_name, "
    "hangup_cause_name, hangup_cause, '(none yet)')"
)


def _leg(leg: str, f: Filters, a_leg: bool = False) -> tuple[str, str]:
    """The CTE and relation for a leg; `a_leg`: B legs carry their A leg's columns."""
    if leg not in LEG_RELATIONS:
        raise ValueError(f"leg must be 'a' or 'b', not {leg!r}")
    cte = SCOPED_CALLS if leg == "a" else scoped_legs(f, a_leg=a_leg)
    return cte, LEG_RELATIONS[leg]


def causes(f: Filters, leg: str, with_answered: bool = True) -> Result:
    """Legs per Plivo cause code/name beside the telephony cause name, split by outcome."""
    cte, rel = _leg(leg, f)
    sql = (
        _with(cte)
        + f"""
    , grouped AS (
        SELECT {CAUSE_LABEL} AS cause, hangup_cause_code AS code,
               hangup_cause_name AS plivo_name, hangup_cause AS telephony_cause, outcome,
               count(*) AS legs
        FROM {rel} WHERE ($with_answered OR outcome <> 'answered') GROUP BY ALL)
    SELECT *, sum(legs) OVER (PARTITION BY cause) AS cause_legs
    FROM grouped ORDER BY cause_legs DESC, cause, legs DESC
    """
    )
    return run(sql, {**f.params(), "with_answered": with_answered})


def causes_by_source(f: Filters, leg: str, with_answered: bool = True) -> Result:
    cte, rel = _leg(leg, f)
    sql = (
        _with(cte)
        + f"""
    SELECT coalesce(hangup_source, '(none)') AS source, outcome, count(*) AS legs
    FROM {rel} WHERE ($with_answered OR outcome <> 'answered')
    GROUP BY ALL ORDER BY source, outcome
    """
    )
    return run(sql, {**f.params(), "with_answered": with_answered})


def causes_over_time(f: Filters, leg: str, with_answered: bool = True, top: int = 8) -> Result:
    """Legs per bucket and cause; causes beyond the `top` most frequent become 'other'."""
    cte, rel = _leg(leg, f)
    sql = (
        _with(cte)
        + f"""
    , labelled AS (SELECT {BUCKET} AS bucket, {CAUSE_LABEL} AS cause, count(*) AS legs
                   FROM {rel} WHERE ($with_answered OR outcome <> 'answered') GROUP BY ALL)
    , ranked AS (SELECT cause, row_number() OVER (ORDER BY sum(legs) DESC, cause) AS rank
                 FROM labelled GROUP BY cause)
    SELECT bucket, {BUCKET_END},
           CASE WHEN r.rank <= $top THEN l.cause ELSE 'other' END AS cause,
           CAST(sum(legs) AS BIGINT) AS legs
    FROM labelled l JOIN ranked r USING (cause) GROUP BY ALL ORDER BY bucket, cause
    """
    )
    return run(sql, {**f.params(), "with_answered": with_answered, "top": top})


def cause_legs(f: Filters, leg: str, cause: str, limit: int = ROW_LIMIT) -> Result:
    """The calls (A) or B legs behind one cause label, newest first."""
    cte, rel = _leg(leg, f, a_leg=True)
    if leg == "b" and not _sliced(f):
        # Nothing to match on the A leg: join only the newest B legs with this cause.
        newest = newest_legs(f"{LEG_DESTINATIONS} AND {CAUSE_LABEL} = $cause")
        cte = newest + "," + scoped_legs(f, a_leg=True, legs="candidates")
    b_cols = "b_leg_uuid, b_leg_to, position, " if leg == "b" else ""
    sql = (
        _with(cte)
        + f"""
    SELECT timezone($tz, t) AS at, {"a_leg_uuid" if leg == "b" else "call_uuid"} AS call_uuid,
           {b_cols}direction, {"a_from" if leg == "b" else "from_number"} AS from_number,
           {"a_to" if leg == "b" else "to_number"} AS to_number, outcome,
           hangup_cause_code, hangup_cause_name, hangup_cause, hangup_source, duration_s
    FROM {rel} WHERE {CAUSE_LABEL} = $cause ORDER BY t DESC LIMIT $limit
    """
    )
    return run(sql, {**f.params(), "cause": cause, "limit": limit})


# --- A/B legs -------------------------------------------------------------------------------


def fanout(f: Filters) -> Result:
    """How many A legs dialled 1, 2, 3… B legs."""
    sql = (
        _with(scoped_legs(f, a_leg=False))
        + """
    , per_a AS (SELECT a_leg_uuid, count(*) AS b_legs FROM scoped_legs GROUP BY a_leg_uuid)
    SELECT b_legs, count(*) AS a_legs FROM per_a GROUP BY b_legs ORDER BY b_legs
    """
    )
    return run(sql, f.params())


def winners_by_position(f: Filters) -> Result:
    """In simultaneous dials (2+ B legs), who answered first, by position in the Dial.

    Counted as every B leg less those whose A leg dialled no other (`lone`): one grouping by A
    leg and no join back to the B legs, about 40% less work at 2 million legs."""
    sql = (
        _with(scoped_legs(f, a_leg=False))
        + """
    , lone AS (SELECT any_value(position) AS position, bool_or(answered) AS answered,
                      bool_or(outcome = 'lost-race') AS lost_race
               FROM scoped_legs WHERE a_leg_uuid IS NOT NULL
               GROUP BY a_leg_uuid HAVING count(*) = 1)
    , signed AS (
        SELECT position, 1 AS legs, CAST(answered AS INTEGER) AS wins,
               CAST(outcome = 'lost-race' AS INTEGER) AS lost_race
        FROM scoped_legs WHERE a_leg_uuid IS NOT NULL
        UNION ALL
        SELECT position, -1, -CAST(answered AS INTEGER), -CAST(lost_race AS INTEGER) FROM lone)
    , counted AS (
        SELECT position, CAST(sum(legs) AS BIGINT) AS b_legs, CAST(sum(wins) AS BIGINT) AS wins,
               CAST(sum(lost_race) AS BIGINT) AS lost_race
        FROM signed GROUP BY position)
    SELECT *, wins / b_legs AS win_rate FROM counted WHERE b_legs > 0 ORDER BY position
    """
    )
    return run(sql, f.params())


def destinations(f: Filters) -> Result:
    """Per B number: legs, answered, lost races and answer rate (lost races shown apart)."""
    sql = (
        _with(scoped_legs(f, a_leg=False))
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


def outcome_matrix(f: Filters) -> Result:
    """Pairings counted by the A leg's outcome and the B leg's outcome."""
    sql = (
        _with(scoped_legs(f, a_leg=True))
        + """
    SELECT coalesce(a_outcome, '(A leg not seen)') AS a_outcome, outcome AS b_outcome,
           count(*) AS pairs
    FROM scoped_legs GROUP BY ALL ORDER BY pairs DESC
    """
    )
    return run(sql, f.params())


def ring_times(f: Filters, bin_s: int = 5, cap_s: int = 120) -> Result:
    """Seconds from the A leg's start to the B leg's answer, or to its hangup when unanswered.

    Callbacks carry no timestamps, so these are arrival times: a second or so of slack.
    Seconds come from epoch_us: subtracting two TIMESTAMPTZ values takes calendar arithmetic,
    about five times as slow over 2 million legs (same seconds under a day; the cap hides more).
    """
    sql = (
        _with(scoped_legs(f, a_leg=True))
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


def abandoned(f: Filters) -> Result:
    """A legs whose caller gave up while B legs rang: no B leg answered and a B leg was
    canceled (a caller hanging up during the Dial cancels the ringing legs)."""
    sql = (
        _with(scoped_legs(f, a_leg=False))
        + """
    , per_a AS (
        SELECT a_leg_uuid, bool_or(answered) AS any_answered,
               bool_or(outcome = 'canceled') AS gave_up
        FROM scoped_legs GROUP BY a_leg_uuid)
    SELECT count(*) AS dialled_a_legs,
           count(*) FILTER (WHERE NOT any_answered AND gave_up) AS abandoned,
           count(*) FILTER (WHERE NOT any_answered AND gave_up) / nullif(count(*), 0)
               AS abandoned_rate
    FROM per_a
    """
    )
    return run(sql, f.params())


def pairings(
    f: Filters,
    b_outcomes: tuple[str, ...] = (),
    positions: tuple[int, ...] = (),
    search: str = "",
    limit: int = ROW_LIMIT,
) -> Result:
    """A/B pairings, newest first, optionally narrowed by B outcome, position and text."""
    legs_cte: tuple[str, ...] = ()
    legs = "dial_legs"
    if not _sliced(f) and not search.strip():
        # Nothing to match on the A leg: the newest `limit` B legs that answered or ended, and
        # those that did neither (timed by their A leg), are the only candidates; only they are
        # joined to their A leg.
        legs_cte = (newest_legs(f"{LEG_DESTINATIONS} AND {LEG_CHOICES}"),)
        legs = "candidates"
    sql = (
        _with(*legs_cte, scoped_legs(f, a_leg=True, legs=legs))
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


# B outcome and position choices on the Pairings table.
LEG_CHOICES = """
    (len(CAST($b_outcomes AS VARCHAR[])) = 0
     OR list_contains(CAST($b_outcomes AS VARCHAR[]), l.outcome))
    AND (len(CAST($positions AS INTEGER[])) = 0
         OR list_contains(CAST($positions AS INTEGER[]), l.position))"""


# --- Calls ----------------------------------------------------------------------------------


def search_calls(text: str, tz: str, limit: int = 200) -> Result:
    """Calls (over all time) whose UUID starts with, or whose numbers contain, the text."""
    if not text.strip():
        # The newest calls: a plain top-N, which DuckDB answers from the newest row groups.
        sql = """
        SELECT timezone($tz, started_at) AS started, call_uuid, direction, from_number,
               to_number, outcome, duration_s, hangup_cause_name
        FROM calls ORDER BY started_at DESC LIMIT $limit
        """
        return run(sql, {"tz": tz, "limit": limit})
    sql = """
    SELECT timezone($tz, started_at) AS started, call_uuid, direction, from_number, to_number,
           outcome, duration_s, hangup_cause_name
    FROM calls
    WHERE $text = '' OR starts_with(call_uuid, $text) OR contains(from_number, $text)
       OR contains(to_number, $text)
       OR call_uuid IN (SELECT a_leg_uuid FROM dial_legs
                        WHERE starts_with(b_leg_uuid, $text) OR contains(b_leg_to, $text))
    ORDER BY started_at DESC LIMIT $limit
    """
    return run(sql, {"text": text.strip(), "tz": tz, "limit": limit})


def call_summary(call_uuid: str, tz: str) -> Result:
    sql = """
    SELECT call_uuid, direction, from_number, to_number, timezone($tz, started_at) AS started,
           timezone($tz, answered_at) AS answered_at, timezone($tz, ended_at) AS ended,
           duration_s, bill_duration_s, call_status, answered, outcome, hangup_cause_code,
           hangup_cause_name, hangup_cause, hangup_source
    FROM calls WHERE call_uuid = $uuid
    """
    return run(sql, {"uuid": call_uuid, "tz": tz})


def call_b_legs(call_uuid: str, tz: str) -> Result:
    sql = """
    SELECT position, b_leg_to, b_leg_from, b_leg_uuid, outcome, answered,
           timezone($tz, answered_at) AS answered_at, timezone($tz, ended_at) AS ended,
           duration_s, hangup_cause_code, hangup_cause_name, hangup_cause, hangup_source
    FROM dial_legs WHERE a_leg_uuid = $uuid ORDER BY position, b_leg_uuid
    """
    return run(sql, {"uuid": call_uuid, "tz": tz})


TIMELINE_ENTRIES = 200


def call_timeline(call_uuid: str, tz: str, limit: int = TIMELINE_ENTRIES) -> Result:
    """The webhooks about this call (its own, its Dial's, its B legs'), raw parameters too, one
    entry per distinct delivery: repeats of a webhook (same kind and parameters, the
    `duplicate` rule) collapse into their first one, with `deliveries`, `last_received` and
    `duplicate` (some delivery was a repeat). At most `limit` entries, oldest first;
    `entries` is how many there are in all, `webhooks` how many webhooks they stand for.

    On the rollups, the call's time span (its start and end, its B legs' answers and hangups)
    bounds the scan of webhook_events to one day either side, so zone maps skip nearly all of
    it (the rollups' one-day assumption, docs/data.md). A call not in the rollups yet, or the
    views, get the full scan.
    """
    params: dict[str, Any] = {"uuid": call_uuid, "tz": tz, "limit": limit}
    bound = ""
    if connection.reads_rollups():
        span = run(
            """
            SELECT min(lo) AS lo, max(hi) AS hi FROM (
                SELECT started_at AS lo, coalesce(ended_at, answered_at, started_at) AS hi
                FROM calls WHERE call_uuid = $uuid
                UNION ALL
                SELECT coalesce(answered_at, ended_at), coalesce(ended_at, answered_at)
                FROM dial_legs WHERE a_leg_uuid = $uuid)
            """,
            params,
        ).frame.iloc[0]
        if not (pd.isna(span["lo"]) or pd.isna(span["hi"])):
            params.update(lo=span["lo"].to_pydatetime(), hi=span["hi"].to_pydatetime())
            bound = """received_at >= $lo - INTERVAL 1 DAY AND received_at <= $hi + INTERVAL 1 DAY
          AND """
    sql = f"""
    WITH hooks AS (
        SELECT * FROM webhook_events
        WHERE {bound}(call_uuid = $uuid OR dial_a_leg_uuid = $uuid
           OR dial_b_leg_uuid IN (SELECT b_leg_uuid FROM dial_legs WHERE a_leg_uuid = $uuid))
    ),
    entries AS (
        SELECT min(received_at) AS first_at, max(received_at) AS last_at,
               count(*) AS deliveries, bool_or(duplicate) AS duplicate, kind,
               CAST(params AS VARCHAR) AS params,
               arg_min(event, (received_at, event_id)) AS event,
               arg_min(dial_action, (received_at, event_id)) AS dial_action,
               arg_min(call_status, (received_at, event_id)) AS call_status,
               arg_min(dial_status, (received_at, event_id)) AS dial_status,
               arg_min(dial_b_leg_uuid, (received_at, event_id)) AS dial_b_leg_uuid,
               arg_min(signature, (received_at, event_id)) AS signature,
               arg_min(http_method, (received_at, event_id)) AS http_method,
               arg_min(event_id, (received_at, event_id)) AS first_id
        FROM hooks GROUP BY kind, CAST(params AS VARCHAR)
    )
    SELECT timezone($tz, first_at) AS received, kind, event, dial_action, call_status,
           dial_status, dial_b_leg_uuid, duplicate, deliveries,
           timezone($tz, last_at) AS last_received, signature, http_method, params,
           CAST(first_id AS VARCHAR) AS event_id,
           count(*) OVER () AS entries, CAST(sum(deliveries) OVER () AS BIGINT) AS webhooks
    FROM entries
    ORDER BY first_at, event_id
    LIMIT $limit
    """
    return run(sql, params)


# --- Receiver health ------------------------------------------------------------------------


# The webhooks received in the range, as (t, kind, duplicate, signature, webhooks) rows.
RECEIVED = """
received AS (
    SELECT received_at AS t, kind, duplicate, signature, 1 AS webhooks FROM webhook_events
    WHERE received_at >= $start AND received_at < $end
)"""
# The same on the rollups: webhook_counts (migration 0005) for the 5-minute buckets wholly in
# the range, the webhooks themselves for the buckets its ends cut. Bucketing a row by its
# bucket_at in the chosen zone counts its webhooks where their own times would: every zone's
# offset from UTC is a multiple of 15 minutes, and has changed only at whole 5 minutes UTC
# since 2023 (tzdata 2020-2040), so a 5-minute bucket never straddles a local bucket's edge.
RECEIVED_COUNTS = """
received AS (
    SELECT bucket_at AS t, kind, duplicate, signature, webhooks FROM webhook_counts
    WHERE bucket_at >= $start AND bucket_at <= $end - INTERVAL 5 MINUTE
    UNION ALL
    SELECT received_at, kind, duplicate, signature, 1 FROM webhook_events
    WHERE received_at >= $start AND received_at < $end
      AND (received_at < $start + INTERVAL 5 MINUTE OR received_at >= $end - INTERVAL 5 MINUTE)
      AND NOT (time_bucket(INTERVAL 5 MINUTE, received_at) >= $start
               AND time_bucket(INTERVAL 5 MINUTE, received_at) + INTERVAL 5 MINUTE <= $end)
)"""
_ON_ROLLUPS[RECEIVED] = RECEIVED_COUNTS


def webhooks_per_kind(f: Filters) -> Result:
    sql = (
        _with(RECEIVED)
        + f"""
    SELECT {BUCKET} AS bucket, {BUCKET_END}, kind, CAST(sum(webhooks) AS BIGINT) AS webhooks,
           CAST(coalesce(sum(webhooks) FILTER (WHERE duplicate), 0) AS BIGINT) AS duplicates
    FROM received GROUP BY ALL ORDER BY bucket, kind
    """
    )
    return run(sql, f.params())


def receiver_totals(f: Filters) -> Result:
    sql = (
        _with(RECEIVED)
        + """
    SELECT (SELECT max(received_at) FROM webhook_events) AS last_event_at,
           CAST(coalesce(sum(webhooks), 0) AS BIGINT) AS webhooks,
           CAST(coalesce(sum(webhooks) FILTER (WHERE duplicate), 0) AS BIGINT) AS duplicates,
           CAST(coalesce(sum(webhooks) FILTER (WHERE signature = 'unchecked'), 0) AS BIGINT)
               AS unchecked,
           (SELECT count(*) FROM rejected_webhooks
            WHERE received_at >= $start AND received_at < $end) AS rejected
    FROM received
    """
    )
    return run(sql, f.params())


def repeats_not_stored(f: Filters) -> Result:
    """Deliveries of a webhook past the first few, acknowledged but only counted
    (webhook_repeats, per 5-minute bucket of received_at: a bucket counts when it starts in
    the range)."""
    sql = """
    SELECT CAST(coalesce(sum(repeats), 0) AS BIGINT) AS repeats
    FROM webhook_repeats WHERE bucket >= $start AND bucket < $end
    """
    return run(sql, f.params())


def rejections(f: Filters) -> Result:
    """Refused requests grouped by why, where, and the URL we checked against what was sent."""
    sql = """
    SELECT reason, path, regexp_extract(checked_url, '^(https?://[^/]+)') AS checked_base,
           coalesce(headers->>'x-forwarded-proto', '') AS forwarded_proto,
           coalesce(headers->>'x-forwarded-host', '') AS forwarded_host,
           coalesce(headers->>'host', '') AS host_header,
           count(*) AS requests, timezone($tz, max(received_at)) AS last_seen,
           any_value(checked_url) AS example_checked_url
    FROM rejected_webhooks WHERE received_at >= $start AND received_at < $end
    GROUP BY ALL ORDER BY requests DESC
    """
    return run(sql, f.params())


def rejected_samples(f: Filters, per_reason: int = 20) -> Result:
    """The newest refused requests of each reason, whole (headers and parameters as JSON
    text), for the advice on Receiver health: it checks their signatures against the
    addresses their headers claim."""
    sql = """
    SELECT reason, http_method, checked_url, CAST(headers AS VARCHAR) AS headers,
           CAST(params AS VARCHAR) AS params, truncated
    FROM rejected_webhooks WHERE received_at >= $start AND received_at < $end
    QUALIFY row_number() OVER (PARTITION BY reason ORDER BY received_at DESC) <= $per_reason
    ORDER BY received_at DESC
    """
    return run(sql, {**f.params(), "per_reason": per_reason})
