-- Hourly aggregates of the rollups, so that a 30-day page reads thousands of rows instead of
-- millions (docs/data.md, "Hourly aggregates"). Kept by the rollup refresh with the rollups'
-- watermark (callstatus/core/rollups.py): an incremental refresh recomputes, from the rollups,
-- only the hours whose rows it changed; a full rebuild recomputes every hour the rollups hold.
--
-- `hour` is time_bucket(INTERVAL 1 HOUR, t): the start, in UTC, of the hour [hour, hour + 1 h)
-- holding the row's time t (a call's started_at, a Dial's received_at, a B leg's leg_at). The
-- dashboard re-buckets hours in the chosen zone where every offset of the range is a whole
-- number of hours, and reads the rollups' rows for the range's cut hours at its ends.
--
-- Every column but the counts is a dimension a page groups or filters by; NULL is a value.
--   direction, our_number, country: the A leg's direction, our number (the caller ID of an
--     outbound call, the number called of an inbound one) and far-end country (the called
--     number's for outbound, the caller's for inbound): the sidebar's slices.
CREATE TABLE calls_hourly (
    hour               TIMESTAMPTZ NOT NULL,
    direction          VARCHAR,
    our_number         VARCHAR,
    country            VARCHAR,
    outcome            VARCHAR,
    answered           BOOLEAN,
    source             VARCHAR,
    hangup_cause_code  INTEGER,
    hangup_cause_name  VARCHAR,
    hangup_cause       VARCHAR,
    hangup_source      VARCHAR,
    calls              BIGINT NOT NULL,
    duration_sum       BIGINT,          -- sum(duration_s)
    duration_n         BIGINT NOT NULL  -- count(duration_s): the calls with a duration
);

-- Dials by when their webhook arrived; the A-leg columns from the call (NULL, a_known false,
-- while the A leg is unknown).
CREATE TABLE dials_hourly (
    hour        TIMESTAMPTZ NOT NULL,
    a_known     BOOLEAN NOT NULL,
    direction   VARCHAR,
    our_number  VARCHAR,
    country     VARCHAR,
    completed   BOOLEAN NOT NULL,  -- dial_status = 'completed'
    dials       BIGINT NOT NULL
);

-- B legs by leg_at (dial_legs_rollup's time of a leg), with their A leg's slices and outcome.
CREATE TABLE legs_hourly (
    hour                TIMESTAMPTZ NOT NULL,
    direction           VARCHAR,
    our_number          VARCHAR,
    country             VARCHAR,
    b_leg_to            VARCHAR,
    b_leg_to_country    VARCHAR,
    b_leg_to_line_type  VARCHAR,
    position            INTEGER,
    outcome             VARCHAR,
    answered            BOOLEAN,
    a_outcome           VARCHAR,
    hangup_cause_code   INTEGER,
    hangup_cause_name   VARCHAR,
    hangup_cause        VARCHAR,
    hangup_source       VARCHAR,
    legs                BIGINT NOT NULL,
    duration_sum        BIGINT,
    duration_n          BIGINT NOT NULL
);

-- Histograms of the Timing page's times and the A/B legs page's ring times, per hour, measure
-- and destination (the called country for outbound calls, the B number for B legs), for
-- unsliced views: a bin's lower bound in milliseconds, 100 ms wide under 60 s, 1 s wide under
-- an hour, 1 minute wide above (callstatus/core/rollups.py, HISTOGRAM_BIN). Percentiles read
-- from them are within one bin of the exact ones.
CREATE TABLE timings_hourly (
    hour         TIMESTAMPTZ NOT NULL,
    measure      VARCHAR NOT NULL,
    destination  VARCHAR NOT NULL,
    bin_ms       BIGINT NOT NULL,
    legs         BIGINT NOT NULL
);

-- Concurrent legs per hour and series ('calls', 'B legs'), for unsliced views: the steps of
-- the hour summed (net), the highest level over the hour's start level (top) and when first
-- held (top_at), and the integral of the level over the start level (area, leg-microseconds);
-- see callstatus/core/rollups.py, CONCURRENCY. An hour without a step has no row.
CREATE TABLE concurrency_hourly (
    hour    TIMESTAMPTZ NOT NULL,
    series  VARCHAR NOT NULL,
    net     BIGINT NOT NULL,
    top     BIGINT NOT NULL,
    top_at  TIMESTAMPTZ NOT NULL,
    area    DOUBLE NOT NULL
);

-- The A leg's AnswerTime beside its start, so that B legs' times from the Dial's start need no
-- join (the Dial starts when the A leg is answered).
ALTER TABLE dial_legs_rollup ADD COLUMN a_answered_at TIMESTAMPTZ;

-- Old rows lack a_answered_at and the aggregates are empty: the next refresh rebuilds in full.
DELETE FROM rollup_state;
