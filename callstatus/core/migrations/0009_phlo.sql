-- PHLO reports (kind 'phlo', posted to /plivo/phlo by a PHLO's HTTP Request component after a
-- dial) count in `dials` exactly like a Dial action for the same A leg. Their typed copies come
-- from the keys the user typed, in any spelling (callstatus/core/typed.py, phlo_typed_values):
-- dial_status, dial_ring_status, dial_hangup_cause, dial_a_leg_uuid, dial_b_leg_uuid.
--
-- The rules, on top of 0008_call_records.sql:
-- - a PHLO report carrying a DialStatus is one Dial, like one Dial action: a_leg_uuid its
--   DialALegUUID (else a CallUUID the user added), b_leg_uuid its DialBLegUUID, received_at its
--   arrival, source 'phlo'; call_uuid is NULL unless the user added a CallUUID. A report without
--   a DialStatus (a test request, a typo in the key) is stored but is no Dial;
-- - a Dial action wins: an A leg with a Dial action webhook keeps its actions' rows only, so a
--   PHLO report and a Dial action for the same A leg count once;
-- - a Dial inferred from B-leg records (source 'cdr') is left out for an A leg with a Dial action
--   or a counted PHLO report.
CREATE OR REPLACE MACRO dials_since(since) AS TABLE
-- Read once: Dial actions, PHLO reports and B-leg records.
WITH events AS MATERIALIZED (
    SELECT
        kind, call_uuid, dial_a_leg_uuid, dial_b_leg_uuid, dial_status, dial_ring_status,
        dial_hangup_cause, received_at, event_id, params_hash, answer_time, bill_duration,
        end_time, hangup_cause_code
    FROM webhook_events
    WHERE received_at >= since AND NOT duplicate
        AND (
            kind = 'dial_action'
            OR (kind = 'phlo' AND dial_status IS NOT NULL)
            OR (kind = 'cdr' AND dial_a_leg_uuid IS NOT NULL)
        )
),
-- One row per distinct Dial action or PHLO report (params_hash covers the kind).
reports AS MATERIALIZED (
    SELECT
        coalesce(any_value(dial_a_leg_uuid), any_value(call_uuid)) AS a_leg_uuid,
        any_value(dial_b_leg_uuid) AS b_leg_uuid,
        any_value(dial_status) AS dial_status,
        any_value(dial_ring_status) AS dial_ring_status,
        any_value(dial_hangup_cause) AS dial_hangup_cause,
        min(received_at) AS received_at,
        any_value(call_uuid) AS call_uuid,
        arg_min(event_id, received_at) AS event_id,
        params_hash,
        CASE any_value(kind) WHEN 'phlo' THEN 'phlo' ELSE 'webhooks' END AS source
    FROM events
    WHERE kind IN ('dial_action', 'phlo')
    GROUP BY params_hash
),
counted AS (
    SELECT * FROM reports WHERE source = 'webhooks'
    UNION ALL BY NAME
    SELECT * FROM reports p
    WHERE p.source = 'phlo' AND NOT EXISTS (
        SELECT 1 FROM reports a WHERE a.source = 'webhooks' AND a.a_leg_uuid = p.a_leg_uuid
    )
),
b_records AS (
    SELECT
        l.dial_a_leg_uuid AS a_leg_uuid,
        l.call_uuid AS b_leg_uuid,
        l.answer_time IS NOT NULL OR coalesce(l.bill_duration, 0) > 0 AS answered,
        l.answer_time,
        l.end_time,
        l.received_at,
        l.hangup_cause_code AS code,
        g.grp
    FROM events l
    LEFT JOIN hangup_cause_groups g ON g.code = l.hangup_cause_code
    WHERE l.kind = 'cdr'
),
inferred AS (
    SELECT
        a_leg_uuid,
        arg_min(b_leg_uuid, answer_time) FILTER (WHERE answered) AS b_leg_uuid,
        CASE
            WHEN bool_or(answered) THEN 'completed'
            WHEN bool_or(grp = 'canceled') THEN 'cancel'
            WHEN bool_or(code = 6010) THEN 'timeout'
            WHEN bool_or(grp = 'no-answer') THEN 'no-answer'
            WHEN bool_or(grp IN ('busy', 'rejected')) THEN 'busy'
            ELSE 'failed'
        END AS dial_status,
        coalesce(
            bool_or(answered OR grp IN ('no-answer', 'rejected', 'canceled', 'lost-race')), false
        ) AS dial_ring_status,
        NULL::VARCHAR AS dial_hangup_cause,
        coalesce(max(end_time), max(received_at)) AS received_at,
        a_leg_uuid AS call_uuid,
        NULL::UUID AS event_id,
        record_dial_key(a_leg_uuid) AS params_hash,
        'cdr' AS source
    FROM b_records
    GROUP BY a_leg_uuid
)
SELECT * FROM counted
UNION ALL BY NAME
SELECT * FROM inferred i
WHERE NOT EXISTS (
    SELECT 1 FROM reports a WHERE a.a_leg_uuid = i.a_leg_uuid
);

CREATE OR REPLACE VIEW dials AS
SELECT * EXCLUDE (params_hash) FROM dials_since('-infinity'::TIMESTAMPTZ);

-- The rollups were built without PHLO reports: rebuild them in full at the next refresh.
DELETE FROM rollup_state;
