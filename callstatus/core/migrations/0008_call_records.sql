-- Plivo's call records (kind 'cdr', signature 'api', fetched from its Call API by
-- callstatus/reconcile) complete the views where webhooks are missing. docs/data.md,
-- "Call records", says what each column takes from where.
--
-- A record is typed like a webhook (callstatus/core/typed.py, CDR_FIELDS): call_uuid, direction,
-- from_number, to_number, start_time (initiation_time), answer_time, end_time, duration,
-- bill_duration, hangup_cause_code/name, hangup_source; a B leg's record (parent_call_uuid set)
-- also carries dial_a_leg_uuid (its A leg) and dial_b_leg_uuid (itself).
--
-- The rules: webhooks win where both know a field, records fill what webhooks lack. A call's
-- hangup fields come from its hangup webhook when there is one, else from its record. Records
-- carry no telephony cause (hangup_cause, dial_hangup_cause) and no B-leg position: those stay
-- NULL on rows known only from records. `source` says which: 'webhooks', 'cdr' or 'both';
-- `end_source` where the hangup fields came from ('webhooks', 'cdr', NULL while in progress).

-- The CallStatus a hangup webhook would have carried, for a call ended by its record alone
-- (records have none): from the hangup code's group.
CREATE MACRO record_call_status(code, grp) AS
    CASE
        WHEN code = 6010 THEN 'timeout'
        WHEN grp IN ('busy', 'rejected') THEN 'busy'
        WHEN grp = 'no-answer' THEN 'no-answer'
        WHEN grp = 'canceled' THEN 'cancel'
        WHEN grp IN ('unreachable', 'failed') THEN 'failed'
        ELSE 'completed'
    END;

-- The dials row key (dials_rollup replaces rows by params_hash) of a Dial inferred from an A
-- leg's B-leg records: derived from the A leg, so it is stable and never a webhook's fingerprint
-- in practice (webhook fingerprints are blake2b, these DuckDB's hash, both 64 bits).
CREATE MACRO record_dial_key(a_leg_uuid) AS (hash('cdr-dial', a_leg_uuid) >> 1)::BIGINT;

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
        CASE WHEN final THEN 'webhooks' WHEN r IS NOT NULL THEN 'cdr' END AS end_source
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
    end_source
FROM grouped;

CREATE OR REPLACE VIEW calls AS SELECT * FROM calls_since('-infinity'::TIMESTAMPTZ);

-- Dial actions as before (0002_views.sql), and a Dial inferred from the B-leg records of an A leg
-- that has no Dial action webhook at all (an A leg with several Dials and one action lost keeps
-- its webhooks' rows only: records do not say which Dial a B leg belonged to). An inferred Dial:
-- b_leg_uuid the answered B leg; dial_status 'completed' when a B leg answered, else from the
-- B legs' hangup groups (canceled 'cancel', then code 6010 'timeout', no-answer, busy or
-- rejected 'busy', else 'failed'); dial_ring_status true when a B leg rang (answered, no-answer,
-- rejected, canceled, lost race); dial_hangup_cause NULL; received_at the end of its last B leg.
CREATE OR REPLACE MACRO dials_since(since) AS TABLE
-- Read once: Dial actions and B-leg records.
WITH events AS MATERIALIZED (
    SELECT
        kind, call_uuid, dial_a_leg_uuid, dial_b_leg_uuid, dial_status, dial_ring_status,
        dial_hangup_cause, received_at, event_id, params_hash, answer_time, bill_duration,
        end_time, hangup_cause_code
    FROM webhook_events
    WHERE received_at >= since AND NOT duplicate
        AND (kind = 'dial_action' OR (kind = 'cdr' AND dial_a_leg_uuid IS NOT NULL))
),
actions AS (
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
        'webhooks' AS source
    FROM events
    WHERE kind = 'dial_action'
    GROUP BY params_hash
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
SELECT * FROM actions
UNION ALL BY NAME
SELECT * FROM inferred i
WHERE NOT EXISTS (
    SELECT 1 FROM actions a WHERE a.a_leg_uuid = i.a_leg_uuid
);

CREATE OR REPLACE VIEW dials AS
SELECT * EXCLUDE (params_hash) FROM dials_since('-infinity'::TIMESTAMPTZ);

-- B legs from Dial callbacks as before (0002_views.sql), completed or added from B-leg records.
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
    b.end_source
FROM b_legs b
LEFT JOIN hangup_cause_groups g ON g.code = b.hangup_cause_code;

CREATE OR REPLACE VIEW dial_legs AS SELECT * FROM dial_legs_since('-infinity'::TIMESTAMPTZ);

ALTER TABLE calls_rollup ADD COLUMN source VARCHAR;
ALTER TABLE calls_rollup ADD COLUMN end_source VARCHAR;
ALTER TABLE dial_legs_rollup ADD COLUMN source VARCHAR;
ALTER TABLE dial_legs_rollup ADD COLUMN end_source VARCHAR;
ALTER TABLE dials_rollup ADD COLUMN source VARCHAR;

-- One row per reconcile run (callstatus/reconcile/run.py): what was asked of Plivo's Call API,
-- what came back and what it changed. The background job resumes from the newest window_end of
-- a run that ended 'ok'.
CREATE TABLE reconcile_runs (
    run_id           UUID NOT NULL,          -- a row is replaced (deleted, inserted) as the run goes
    started_at       TIMESTAMPTZ NOT NULL,
    finished_at      TIMESTAMPTZ,
    trigger          VARCHAR NOT NULL,       -- 'job' | 'command'
    window_start     TIMESTAMPTZ NOT NULL,   -- records with window_start <= end_time < window_end
    window_end       TIMESTAMPTZ NOT NULL,
    records_read     BIGINT NOT NULL DEFAULT 0,
    records_new      BIGINT NOT NULL DEFAULT 0,
    calls_had        BIGINT NOT NULL DEFAULT 0,  -- calls whose webhooks were all there
    calls_completed  BIGINT NOT NULL DEFAULT 0,  -- calls whose hangup webhook was missing
    calls_added      BIGINT NOT NULL DEFAULT 0,  -- calls with no webhook at all
    legs_added       BIGINT NOT NULL DEFAULT 0,  -- B legs with no Dial callback at all
    status           VARCHAR NOT NULL,           -- 'running' | 'ok' | 'error'
    error            VARCHAR
);

-- The rollups lack the new columns' values: rebuild them in full at the next refresh.
DELETE FROM rollup_state;
