-- Call outcomes derived from webhook_events: calls, dials, dial_legs (ARCHITECTURE "Storage").
--
-- Every view reads webhook_events once, duplicates out, and aggregates per leg with
-- order-independent functions only (bool_or, min/max, arg_max on a key computed from the event's
-- own parameters), so the rows never depend on the order in which Plivo delivered the webhooks.

-- Plivo's hangup cause codes (plivo-webhooks.md section 3) and the outcome group of each.
-- grp is an outcome name, except 'normal', which the outcome rules turn into 'answered' or
-- 'canceled'. detail says which side failed, for codes whose group is 'failed'.
CREATE TABLE hangup_cause_groups (
    code    INTEGER PRIMARY KEY,
    name    VARCHAR NOT NULL,
    grp     VARCHAR NOT NULL,
    detail  VARCHAR
);

INSERT INTO hangup_cause_groups (code, name, grp, detail) VALUES
    (0,    'Unknown',                                   'failed',      NULL),
    (1000, 'Canceled',                                  'canceled',    NULL),
    (1010, 'Canceled (Out Of Credits)',                 'canceled',    NULL),
    (1020, 'Canceled (Simultaneous dial limit reached)', 'canceled',   NULL),
    (2000, 'Invalid Destination Address',               'unreachable', NULL),
    (2010, 'Destination Out Of Service',                'unreachable', NULL),
    (2020, 'Endpoint Not Registered',                   'unreachable', NULL),
    (2030, 'Destination Country Barred',                'unreachable', NULL),
    (2040, 'Destination Number Barred',                 'unreachable', NULL),
    (2050, 'Destination Prefix Barred',                 'unreachable', NULL),
    (2060, 'Loop Detected',                             'unreachable', NULL),
    (2070, 'Violates Media Anchoring',                  'unreachable', NULL),
    (3000, 'No Answer',                                 'no-answer',   NULL),
    (3010, 'Busy Line',                                 'busy',        NULL),
    (3020, 'Rejected',                                  'rejected',    NULL),
    (3030, 'Unknown Caller ID',                         'rejected',    NULL),
    (3040, 'Forbidden',                                 'rejected',    NULL),
    (3050, 'Unallocated number',                        'rejected',    NULL),
    (3070, 'Request timeout',                           'failed',      'carrier'),
    (3080, 'Internal server error from carrier',        'failed',      'carrier'),
    (3090, 'Network congestion from carrier',           'failed',      'carrier'),
    (3100, 'Busy everywhere',                           'busy',        NULL),
    (3110, 'Declined',                                  'rejected',    NULL),
    (3120, 'User does not exist anywhere',              'rejected',    NULL),
    (3130, 'Spam block',                                'rejected',    NULL),
    (3140, 'DNO Caller ID',                             'rejected',    NULL),
    (4000, 'Normal Hangup',                             'normal',      NULL),
    (4010, 'End Of XML Instructions',                   'normal',      NULL),
    (4020, 'Multiparty Call Ended',                     'normal',      NULL),
    (4030, 'Kicked Out Of Multiparty Call',             'normal',      NULL),
    (5000, 'Network Error',                             'failed',      'system'),
    (5010, 'Internal Error',                            'failed',      'system'),
    (5020, 'Routing Error',                             'failed',      'system'),
    (6000, 'Scheduled Hangup',                          'normal',      NULL),
    (6010, 'Ring Timeout Reached',                      'no-answer',   NULL),
    (6020, 'Media Timeout',                             'failed',      NULL),
    (7011, 'Error Reaching Answer URL',                 'failed',      'app'),
    (7012, 'Error Reaching Action URL',                 'failed',      'app'),
    (7013, 'Error Reaching Transfer URL',               'failed',      'app'),
    (7014, 'Error Reaching Redirect URL',               'failed',      'app'),
    (7022, 'Invalid Action URL',                        'failed',      'app'),
    (7023, 'Invalid Transfer URL',                      'failed',      'app'),
    (7024, 'Invalid Redirect URL',                      'failed',      'app'),
    (7032, 'Invalid Method For Action URL',             'failed',      'app'),
    (7033, 'Invalid Method For Transfer URL',           'failed',      'app'),
    (7034, 'Invalid Method For Redirect URL',           'failed',      'app'),
    (8011, 'Invalid Answer XML',                        'failed',      'app'),
    (8012, 'Invalid Action XML',                        'failed',      'app'),
    (8013, 'Invalid Transfer XML',                      'failed',      'app'),
    (8014, 'Invalid Redirect XML',                      'failed',      'app'),
    (9000, 'Lost Race',                                 'lost-race',   NULL),
    (9100, 'Machine Detected',                          'machine',     NULL),
    (9110, 'Confirm Key Challenge Failed',              'rejected',    NULL);

-- ARCHITECTURE's outcome rules 1-7, written once for call legs and B legs alike.
-- grp comes from hangup_cause_groups joined on code; a code missing from that table is treated
-- like no code at all, so the cause name and status still say something.
CREATE MACRO leg_outcome(final, machine, code, grp, answered, cause, status) AS
    CASE
        WHEN NOT coalesce(final, false) THEN 'in-progress'
        WHEN coalesce(machine, false) OR code = 9100 THEN 'machine'
        WHEN code = 9000 THEN 'lost-race'
        WHEN coalesce(answered, false) THEN 'answered'
        WHEN grp = 'normal' THEN 'canceled'
        WHEN grp IS NOT NULL THEN grp
        ELSE CASE
            WHEN upper(trim(cause)) = 'USER_BUSY' THEN 'busy'
            WHEN upper(trim(cause)) IN ('NO_ANSWER', 'NO_USER_RESPONSE') THEN 'no-answer'
            WHEN upper(trim(cause)) = 'CALL_REJECTED' THEN 'rejected'
            WHEN upper(trim(cause)) IN ('UNALLOCATED_NUMBER', 'NO_ROUTE_DESTINATION')
                THEN 'unreachable'
            WHEN upper(trim(cause)) = 'ORIGINATOR_CANCEL' THEN 'canceled'
            WHEN upper(trim(cause)) = 'LOSE_RACE' THEN 'lost-race'
            WHEN lower(trim(status)) = 'busy' THEN 'busy'
            WHEN lower(trim(status)) IN ('no-answer', 'timeout') THEN 'no-answer'
            WHEN lower(trim(status)) = 'cancel' THEN 'canceled'
            ELSE 'failed'
        END
    END;

-- Rank of a CallStatus for "the latest status" of a leg that has no hangup yet: a status
-- never goes back, so the furthest one wins whatever order the events arrived in.
CREATE MACRO call_status_rank(status) AS
    CASE
        WHEN status IS NULL THEN 0
        WHEN lower(status) = 'ringing' THEN 1
        WHEN lower(status) = 'in-progress' THEN 2
        WHEN lower(status) IN ('completed', 'no-answer', 'busy', 'cancel', 'timeout', 'failed')
            THEN 3
        ELSE 1
    END;

-- One row per call leg seen on answer/fallback/hangup/ring/machine_detection.
-- Hangup fields all come from one hangup event: arg_max_null over the same key for every column
-- (NULLs included) so that, should a leg have several distinct hangups, all fields come from the
-- one with the greatest parameter fingerprint, whatever the arrival order. (Per-column arg_max is
-- four times faster than one arg_max over a struct.)
CREATE VIEW calls AS
WITH legs AS (
    SELECT
        call_uuid,
        bool_or(kind = 'hangup') AS final,
        arg_max_null(direction, params_hash) FILTER (WHERE kind = 'hangup') AS h_direction,
        arg_max_null(from_number, params_hash) FILTER (WHERE kind = 'hangup') AS h_from_number,
        arg_max_null(to_number, params_hash) FILTER (WHERE kind = 'hangup') AS h_to_number,
        arg_max_null(call_status, params_hash) FILTER (WHERE kind = 'hangup') AS h_call_status,
        arg_max_null(start_time, params_hash) FILTER (WHERE kind = 'hangup') AS h_start_time,
        arg_max_null(answer_time, params_hash) FILTER (WHERE kind = 'hangup') AS h_answer_time,
        arg_max_null(end_time, params_hash) FILTER (WHERE kind = 'hangup') AS h_end_time,
        arg_max_null(received_at, params_hash) FILTER (WHERE kind = 'hangup') AS h_received_at,
        arg_max_null(duration, params_hash) FILTER (WHERE kind = 'hangup') AS duration_s,
        arg_max_null(bill_duration, params_hash) FILTER (WHERE kind = 'hangup') AS bill_duration_s,
        arg_max_null(hangup_cause, params_hash) FILTER (WHERE kind = 'hangup') AS hangup_cause,
        arg_max_null(hangup_cause_code, params_hash) FILTER (WHERE kind = 'hangup')
            AS hangup_cause_code,
        arg_max_null(hangup_cause_name, params_hash) FILTER (WHERE kind = 'hangup')
            AS hangup_cause_name,
        arg_max_null(hangup_source, params_hash) FILTER (WHERE kind = 'hangup') AS hangup_source,
        max(direction) AS any_direction,
        max(from_number) AS any_from_number,
        max(to_number) AS any_to_number,
        max(answer_time) AS any_answer_time,
        max({'rank': call_status_rank(call_status), 'status': call_status}).status
            AS live_call_status,
        min(received_at) AS first_received_at,
        coalesce(bool_or(answer_time IS NOT NULL OR bill_duration > 0), false) AS answered,
        coalesce(bool_or(kind = 'machine_detection' AND machine), false) AS machine_detected
    FROM webhook_events
    WHERE kind IN ('answer', 'fallback', 'hangup', 'ring', 'machine_detection')
        AND NOT duplicate
        AND call_uuid IS NOT NULL
    GROUP BY call_uuid
)
SELECT
    l.call_uuid,
    coalesce(l.h_direction, l.any_direction) AS direction,
    coalesce(l.h_from_number, l.any_from_number) AS from_number,
    coalesce(l.h_to_number, l.any_to_number) AS to_number,
    coalesce(l.h_start_time, l.first_received_at) AS started_at,
    coalesce(l.h_answer_time, l.any_answer_time) AS answered_at,
    -- A hangup without EndTime still ended the call: its arrival is the best end we know.
    CASE WHEN l.final THEN coalesce(l.h_end_time, l.h_received_at) END AS ended_at,
    l.duration_s,
    l.bill_duration_s,
    coalesce(l.h_call_status, l.live_call_status) AS call_status,
    l.hangup_cause,
    l.hangup_cause_code,
    l.hangup_cause_name,
    l.hangup_source,
    l.answered,
    leg_outcome(
        l.final, l.machine_detected, l.hangup_cause_code, g.grp, l.answered, l.hangup_cause,
        coalesce(l.h_call_status, l.live_call_status)
    ) AS outcome
FROM legs l
LEFT JOIN hangup_cause_groups g ON g.code = l.hangup_cause_code;

-- One row per Dial action (the Dial element ended). Grouping on the parameter fingerprint keeps a
-- repeat that escaped duplicate marking (a retry older than the tracker's memory) to one row, at
-- its first arrival. event_id links back to webhook_events.
CREATE VIEW dials AS
SELECT
    coalesce(any_value(dial_a_leg_uuid), any_value(call_uuid)) AS a_leg_uuid,
    any_value(dial_b_leg_uuid) AS b_leg_uuid,
    any_value(dial_status) AS dial_status,
    any_value(dial_ring_status) AS dial_ring_status,
    any_value(dial_hangup_cause) AS dial_hangup_cause,
    min(received_at) AS received_at,
    any_value(call_uuid) AS call_uuid,
    arg_min(event_id, received_at) AS event_id
FROM webhook_events
WHERE kind = 'dial_action' AND NOT duplicate
-- Same fingerprint, same parameters: every any_value above sees one value.
GROUP BY params_hash;

-- One row per B leg seen on Dial callbacks. A B leg UUID is unique on its own, so legs are
-- grouped by it: a callback lacking DialALegUUID still lands on the right leg.
CREATE VIEW dial_legs AS
WITH callbacks AS (
    SELECT
        *,
        lower(coalesce(dial_action, dial_b_leg_status)) AS action
    FROM webhook_events
    WHERE kind = 'dial_callback' AND NOT duplicate AND dial_b_leg_uuid IS NOT NULL
),
legs AS (
    SELECT
        dial_b_leg_uuid AS b_leg_uuid,
        coalesce(max(dial_a_leg_uuid), max(call_uuid)) AS a_leg_uuid,
        max(dial_b_leg_to) AS b_leg_to,
        max(dial_b_leg_from) AS b_leg_from,
        min(dial_b_leg_position) AS position,
        bool_or(action = 'hangup') AS final,
        coalesce(bool_or(action = 'answer' OR dial_b_leg_bill_duration > 0), false) AS answered,
        min(received_at) FILTER (WHERE action = 'answer') AS answered_at,
        min(received_at) FILTER (WHERE action = 'hangup') AS ended_at,
        -- The same key for every column: all hangup fields come from one callback.
        arg_max_null(dial_b_leg_duration, params_hash) FILTER (WHERE action = 'hangup')
            AS duration_s,
        arg_max_null(dial_b_leg_bill_duration, params_hash) FILTER (WHERE action = 'hangup')
            AS bill_duration_s,
        arg_max_null(dial_b_leg_hangup_cause, params_hash) FILTER (WHERE action = 'hangup')
            AS hangup_cause,
        arg_max_null(dial_b_leg_hangup_cause_code, params_hash) FILTER (WHERE action = 'hangup')
            AS hangup_cause_code,
        arg_max_null(dial_b_leg_hangup_cause_name, params_hash) FILTER (WHERE action = 'hangup')
            AS hangup_cause_name,
        arg_max_null(dial_b_leg_hangup_source, params_hash) FILTER (WHERE action = 'hangup')
            AS hangup_source
    FROM callbacks
    GROUP BY dial_b_leg_uuid
)
SELECT
    l.a_leg_uuid,
    l.b_leg_uuid,
    l.b_leg_to,
    l.b_leg_from,
    l.position,
    l.answered,
    l.answered_at,
    l.ended_at,
    l.duration_s,
    l.hangup_cause_code,
    l.hangup_cause_name,
    l.hangup_source,
    -- B legs carry no CallStatus of their own (CallStatus on a callback is the A leg's).
    leg_outcome(
        l.final, false, l.hangup_cause_code, g.grp, l.answered, l.hangup_cause, NULL
    ) AS outcome,
    l.bill_duration_s,
    l.hangup_cause
FROM legs l
LEFT JOIN hangup_cause_groups g ON g.code = l.hangup_cause_code;
