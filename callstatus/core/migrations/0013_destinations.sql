-- Deeper call analytics: where calls go (country and line type of each number) and when an
-- outbound call first rang (post-dial delay). docs/data.md, "Destinations" and "Timing".
--
-- number_destinations holds one row per distinct number (or SIP URI, or pseudonym) ever stored,
-- with its ISO 3166 country and line type, derived in Python with phonenumbers
-- (callstatus/core/destinations.py). The rollup refresh adds the numbers of the webhooks it
-- reads before it recomputes their legs, so the views and the rollups see the same rows; a
-- number stored since the last refresh (a few seconds) has no row yet: its country reads NULL
-- in the views until then.
CREATE TABLE number_destinations (
    number     VARCHAR PRIMARY KEY,
    country    VARCHAR,   -- ISO 3166-1 alpha-2, e.g. 'GB'; NULL when unknown
    line_type  VARCHAR    -- fixed_line, mobile, fixed_line_or_mobile, toll_free, voip, sip, ...
);

-- calls_since and dial_legs_since as in 0008_call_records.sql, with new columns at the end:
--   calls:     rang_at (the first ring callback's arrival), to_country, to_line_type,
--              from_country, from_line_type
--   dial_legs: b_leg_to_country, b_leg_to_line_type
CREATE OR REPLACE MACRO calls_since(since) AS TABLE
WITH legs AS (
    SELECT
        call_uuid,
        -- Webhooks: as before (0002_views.sql), records left out by the FILTERs.
        arg_max(
            {
                'direction': direction, 'from_number': from_number, 'to_number': to_number,
                'call_status': call_status, 'start_time': start_time, 'end_time': end_time,
                'answer_time': answer_time, 'received_at': received_at, 'duration': duration,
                'bill_duration': bill_duration, 'hangup_cause': hangup_cause,
                'code': hangup_cause_code, 'name': hangup_cause_name, 'source': hangup_source
            },
            event_key((kind = 'hangup')::INTEGER, params_hash)
        ) FILTER (WHERE kind <> 'cdr') AS e,
        coalesce(bool_or(kind = 'hangup'), false) AS final,
        arg_max(call_status, event_key(call_status_rank(call_status), params_hash))
            FILTER (WHERE kind <> 'cdr') AS live_call_status,
        min(received_at) FILTER (WHERE kind <> 'cdr') AS first_received_at,
        coalesce(
            bool_or(answer_time IS NOT NULL OR bill_duration > 0) FILTER (WHERE kind <> 'cdr'),
            false
        ) AS answered,
        coalesce(bool_or(kind = 'machine_detection' AND machine), false) AS machine_detected,
        count(*) FILTER (WHERE kind <> 'cdr') > 0 AS has_webhooks,
        -- New here: when the first ring callback arrived (outbound API calls with a ring_url).
        min(received_at) FILTER (WHERE kind = 'ring') AS rang_at,
        -- The call's record (one per call: storing is idempotent; arg_max keeps it so anyway).
        arg_max(
            {
                'direction': direction, 'from_number': from_number, 'to_number': to_number,
                'start_time': start_time, 'end_time': end_time, 'answer_time': answer_time,
                'duration': duration, 'bill_duration': bill_duration,
                'code': hangup_cause_code, 'name': hangup_cause_name, 'source': hangup_source
            },
            params_hash
        ) FILTER (WHERE kind = 'cdr') AS r
    FROM webhook_events
    WHERE received_at >= since
        AND (
            kind IN ('answer', 'fallback', 'hangup', 'ring', 'machine_detection')
            -- B legs' records belong to dial_legs.
            OR (kind = 'cdr' AND dial_a_leg_uuid IS NULL)
        )
        AND NOT duplicate
        AND call_uuid IS NOT NULL
    GROUP BY call_uuid
),
calls AS (
    SELECT
        call_uuid,
        coalesce(e.direction, r.direction) AS direction,
        coalesce(e.from_number, r.from_number) AS from_number,
        coalesce(e.to_number, r.to_number) AS to_number,
        coalesce(CASE WHEN final THEN e.start_time END, r.start_time) AS start_time,
        CASE WHEN final THEN e.answer_time ELSE r.answer_time END AS answered_at,
        -- A hangup without EndTime still ended the call: the record's end, else its arrival.
        CASE WHEN final THEN coalesce(e.end_time, r.end_time, e.received_at) ELSE r.end_time END
            AS ended_at,
        CASE WHEN final THEN e.duration ELSE r.duration END AS duration_s,
        CASE WHEN final THEN e.bill_duration ELSE r.bill_duration END AS bill_duration_s,
        CASE WHEN final THEN e.call_status WHEN r IS NULL THEN live_call_status END
            AS webhook_call_status,
        CASE WHEN final THEN e.hangup_cause END AS hangup_cause,
        CASE WHEN final THEN e.code ELSE r.code END AS hangup_cause_code,
        CASE WHEN final THEN e.name ELSE r.name END AS hangup_cause_name,
        CASE WHEN final THEN e.source ELSE r.source END AS hangup_source,
        first_received_at,
        final OR r IS NOT NULL AS ended,
        CASE
            WHEN final THEN answered
            ELSE answered OR coalesce(r.answer_time IS NOT NULL OR r.bill_duration > 0, false)
        END AS answered,
        machine_detected,
        CASE WHEN NOT has_webhooks THEN 'cdr' WHEN r IS NULL THEN 'webhooks' ELSE 'both' END
            AS source,
        CASE WHEN final THEN 'webhooks' WHEN r IS NOT NULL THEN 'cdr' END AS end_source,
        rang_at
    FROM legs
),
grouped AS (
    SELECT
        c.*,
        g.grp,
        coalesce(c.webhook_call_status, record_call_status(c.hangup_cause_code, g.grp))
            AS call_status
    FROM calls c
    LEFT JOIN hangup_cause_groups g ON g.code = c.hangup_cause_code
)
SELECT
    call_uuid,
    direction,
    from_number,
    to_number,
    coalesce(start_time, first_received_at) AS started_at,
    answered_at,
    ended_at,
    duration_s,
    bill_duration_s,
    call_status,
    hangup_cause,
    hangup_cause_code,
    hangup_cause_name,
    hangup_source,
    answered,
    leg_outcome(
        ended, machine_detected, hangup_cause_code, grp, answered, hangup_cause, call_status
    ) AS outcome,
    source,
    end_source,
    rang_at,
    t.country AS to_country,
    t.line_type AS to_line_type,
    f.country AS from_country,
    f.line_type AS from_line_type
FROM grouped
LEFT JOIN number_destinations t ON t.number = grouped.to_number
LEFT JOIN number_destinations f ON f.number = grouped.from_number;

CREATE OR REPLACE VIEW calls AS SELECT * FROM calls_since('-infinity'::TIMESTAMPTZ);

CREATE OR REPLACE MACRO dial_legs_since(since) AS TABLE
WITH callbacks AS (
    SELECT
        *,
        lower(coalesce(dial_action, dial_b_leg_status)) AS action
    FROM webhook_events
    WHERE received_at >= since
        AND kind IN ('dial_callback', 'cdr') AND NOT duplicate AND dial_b_leg_uuid IS NOT NULL
),
legs AS (
    SELECT
        dial_b_leg_uuid AS b_leg_uuid,
        arg_max(
            {
                'a_leg_uuid': coalesce(dial_a_leg_uuid, call_uuid), 'to': dial_b_leg_to,
                'from': dial_b_leg_from, 'position': dial_b_leg_position,
                'duration': dial_b_leg_duration, 'bill_duration': dial_b_leg_bill_duration,
                'cause': dial_b_leg_hangup_cause, 'code': dial_b_leg_hangup_cause_code,
                'name': dial_b_leg_hangup_cause_name, 'source': dial_b_leg_hangup_source
            },
            event_key((action = 'hangup')::INTEGER, params_hash)
        ) FILTER (WHERE kind = 'dial_callback') AS e,
        coalesce(bool_or(action = 'hangup') FILTER (WHERE kind = 'dial_callback'), false)
            AS final,
        coalesce(
            bool_or(action = 'answer' OR dial_b_leg_bill_duration > 0)
                FILTER (WHERE kind = 'dial_callback'),
            false
        ) AS answered,
        min(received_at) FILTER (WHERE kind = 'dial_callback' AND action = 'answer')
            AS answered_at,
        min(received_at) FILTER (WHERE kind = 'dial_callback' AND action = 'hangup') AS ended_at,
        count(*) FILTER (WHERE kind = 'dial_callback') > 0 AS has_webhooks,
        arg_max(
            {
                'a_leg_uuid': dial_a_leg_uuid, 'to': to_number, 'from': from_number,
                'answer_time': answer_time, 'end_time': end_time, 'duration': duration,
                'bill_duration': bill_duration, 'code': hangup_cause_code,
                'name': hangup_cause_name, 'source': hangup_source
            },
            params_hash
        ) FILTER (WHERE kind = 'cdr') AS r
    FROM callbacks
    GROUP BY dial_b_leg_uuid
),
b_legs AS (
    SELECT
        coalesce(e.a_leg_uuid, r.a_leg_uuid) AS a_leg_uuid,
        b_leg_uuid,
        coalesce(e.to, r.to) AS b_leg_to,
        coalesce(e."from", r."from") AS b_leg_from,
        e.position,
        CASE
            WHEN final THEN answered
            ELSE answered OR coalesce(r.answer_time IS NOT NULL OR r.bill_duration > 0, false)
        END AS answered,
        coalesce(answered_at, r.answer_time) AS answered_at,
        coalesce(ended_at, r.end_time) AS ended_at,
        CASE WHEN final THEN e.duration ELSE r.duration END AS duration_s,
        CASE WHEN final THEN e.code ELSE r.code END AS hangup_cause_code,
        CASE WHEN final THEN e.name ELSE r.name END AS hangup_cause_name,
        CASE WHEN final THEN e.source ELSE r.source END AS hangup_source,
        CASE WHEN final THEN e.bill_duration ELSE r.bill_duration END AS bill_duration_s,
        CASE WHEN final THEN e.cause END AS hangup_cause,
        final OR r IS NOT NULL AS ended,
        CASE WHEN NOT has_webhooks THEN 'cdr' WHEN r IS NULL THEN 'webhooks' ELSE 'both' END
            AS source,
        CASE WHEN final THEN 'webhooks' WHEN r IS NOT NULL THEN 'cdr' END AS end_source
    FROM legs
)
SELECT
    b.a_leg_uuid,
    b.b_leg_uuid,
    b.b_leg_to,
    b.b_leg_from,
    b.position,
    b.answered,
    b.answered_at,
    b.ended_at,
    b.duration_s,
    b.hangup_cause_code,
    b.hangup_cause_name,
    b.hangup_source,
    leg_outcome(
        b.ended, false, b.hangup_cause_code, g.grp, b.answered, b.hangup_cause, NULL
    ) AS outcome,
    b.bill_duration_s,
    b.hangup_cause,
    b.source,
    b.end_source,
    n.country AS b_leg_to_country,
    n.line_type AS b_leg_to_line_type
FROM b_legs b
LEFT JOIN hangup_cause_groups g ON g.code = b.hangup_cause_code
LEFT JOIN number_destinations n ON n.number = b.b_leg_to;

CREATE OR REPLACE VIEW dial_legs AS SELECT * FROM dial_legs_since('-infinity'::TIMESTAMPTZ);

-- The rollups take the same columns, in the same order, at the end.
ALTER TABLE calls_rollup ADD COLUMN rang_at TIMESTAMPTZ;
ALTER TABLE calls_rollup ADD COLUMN to_country VARCHAR;
ALTER TABLE calls_rollup ADD COLUMN to_line_type VARCHAR;
ALTER TABLE calls_rollup ADD COLUMN from_country VARCHAR;
ALTER TABLE calls_rollup ADD COLUMN from_line_type VARCHAR;
ALTER TABLE dial_legs_rollup ADD COLUMN b_leg_to_country VARCHAR;
ALTER TABLE dial_legs_rollup ADD COLUMN b_leg_to_line_type VARCHAR;

-- The rollups lack the new columns' values and number_destinations is empty: the next refresh
-- rebuilds them in full, learning every stored number first.
DELETE FROM rollup_state;
