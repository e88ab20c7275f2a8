-- Rollups: the rows of the calls, dials and dial_legs views kept in tables, so the dashboard
-- reads stored rows instead of aggregating every webhook on each read. callstatus/rollups.py
-- keeps them equal to the views (docs/data.md, "Rollups").
--
-- Each table takes its columns from its view (LIMIT 0), so the two can never drift apart.
-- dials_rollup also keeps params_hash, the key the dials view groups by: a refresh replaces a
-- dial's row by that key.
CREATE TABLE calls_rollup AS SELECT * FROM calls LIMIT 0;
CREATE TABLE dials_rollup AS SELECT * FROM dials_since('-infinity'::TIMESTAMPTZ) LIMIT 0;
CREATE TABLE dial_legs_rollup AS SELECT * FROM dial_legs LIMIT 0;

-- How far each rollup has read webhook_events: every row with rowid <= watermark is in it.
CREATE TABLE rollup_state (
    name          VARCHAR PRIMARY KEY,
    watermark     BIGINT NOT NULL,
    refreshed_at  TIMESTAMPTZ NOT NULL
);
