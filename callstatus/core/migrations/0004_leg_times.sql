-- dial_legs_rollup also keeps, per B leg, its time as the dashboard defines it and its A leg's
-- columns, computed at refresh time from calls_rollup (callstatus/rollups.py), so the dashboard
-- filters B legs by time without joining calls_rollup. The dial_legs view keeps its columns.
--   leg_at        coalesce(answered_at, ended_at, the A leg's started_at)
--   a_started_at, a_outcome, a_direction, a_from, a_to: the A leg's started_at, outcome,
--                 direction, from_number, to_number (NULL while the A leg is unknown)
ALTER TABLE dial_legs_rollup ADD COLUMN leg_at TIMESTAMPTZ;
ALTER TABLE dial_legs_rollup ADD COLUMN a_started_at TIMESTAMPTZ;
ALTER TABLE dial_legs_rollup ADD COLUMN a_outcome VARCHAR;
ALTER TABLE dial_legs_rollup ADD COLUMN a_direction VARCHAR;
ALTER TABLE dial_legs_rollup ADD COLUMN a_from VARCHAR;
ALTER TABLE dial_legs_rollup ADD COLUMN a_to VARCHAR;

-- Rows stored before this migration lack them: forget the watermarks, so the next refresh
-- rebuilds every rollup in full (and the dashboard reads the views until it has).
DELETE FROM rollup_state;
