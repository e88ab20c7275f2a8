-- Per A leg, what its B legs add up to (callstatus/core/rollups.py, A_LEGS_SELECT): the A/B
-- legs page's fan-out, abandonment and wins by position read these rows instead of grouping
-- every B leg of a range by its A leg on each load (2.5 million B legs into 1.5 million A legs
-- at 10 million webhooks: most of that page's server time, docs/benchmarks.md). Only B legs
-- with a time (leg_at) count: no range holds the others. A legs whose B legs a range cuts, and
-- B legs without an A leg, are still grouped from dial_legs_rollup (dashboard/queries/legs.py).
-- Refreshed with the rollups, and where retention and erasure remove B legs. It has no
-- watermark in rollup_state yet, so the rollups count as never built: the next refresh
-- rebuilds them all, this table with them.
CREATE TABLE a_legs_rollup (
    a_leg_uuid   VARCHAR NOT NULL,
    first_at     TIMESTAMPTZ NOT NULL,  -- the earliest leg_at of its B legs
    last_at      TIMESTAMPTZ NOT NULL,  -- the latest
    b_legs       BIGINT NOT NULL,
    any_answered BOOLEAN,               -- a B leg answered
    gave_up      BOOLEAN,               -- a B leg was canceled
    position     INTEGER,               -- the lowest position of its B legs
    lost_race    BOOLEAN                -- a B leg lost the race
);
