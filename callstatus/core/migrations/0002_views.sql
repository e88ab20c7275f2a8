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

-- An order-independent sort key for picking one event of a leg: `rank` first, then the event's
-- parameter fingerprint to break ties the same way whatever the arrival order. One HUGEINT
-- compares much faster than a struct.
CREATE MACRO event_key(rank, fingerprint) AS rank::HUGEINT * 18446744073709551616 + fingerprint;

-- Each view's body is a table macro over the webhooks received since `since`: the rollup tables
-- (0003_rollups.sql, callstatus/rollups.py) recompute only the recent legs through them. The
-- bound sits in the WHERE before the GROUP BY, so it reaches the scan of webhook_events and its
-- zone maps skip older row groups. A leg is complete in a window only if all its webhooks are in
-- it: the rollups rely on a leg's webhooks arriving within a day (docs/data.md, "Rollups").

-- One row per call leg seen on answer/fallback/hangup/ring/machine_detection.
-- `e` is one event of the leg, a hangup if there is any (should a leg have several distinct
-- hangups, the same one for every field), so hangup fields never mix two events.
CREATE MACRO calls_since(since) AS TABLE
WITH legs AS (
    SELECT
        call_uuid,
        arg_max(
            {
                'direction': direction, 'from_number': from_number, 'to_number': to_number,
                'call_status': call_status, 'start_time': start_time, 'end_time': end_time,
                'answer_time': answer_time, 'received_at': received_at, 'duration': duration,
                'bill_duration': bill_duration, 'hangup_cause': hangup_cause,
                'code': hangup_cause_code, 'name': hangup_cause_name, 'source': hangup_source
            },
            event_key((kind = 'hangup')::INTEGER, params_hash)
        ) AS e,
        bool_or(kind = 'hangup') AS final,
        arg_max(call_status, event_key(call_status_rank(call_status), params_hash))
            AS live_call_status,
        min(received_at) AS first_received_at,
        coalesce(bool_or(answer_time IS NOT NULL OR bill_duration > 0), false) AS answered,
        coalesce(bool_or(kind = 'machine_detection' AND machine), false) AS machine_detected
    FROM webhook_events
    WHERE received_at >= since
        AND kind IN ('answer', 'fallback', 'hangup', 'ring', 'machine_detection')
        AND NOT duplicate
        AND call_uuid IS NOT NULL
    GROUP BY call_uuid
),
calls AS (
    SELECT
        call_uuid,
        e.direction,
        e.from_number,
        e.to_number,
        CASE WHEN final THEN e.start_time END AS start_time,
        CASE WHEN final THEN e.answer_time END AS answered_at,
        -- A hangup without EndTime still ended the call: its arrival is the best end we know.
        CASE WHEN final THEN coalesce(e.end_time, e.received_at) END AS ended_at,
        CASE WHEN final THEN e.duration END AS duration_s,
        CASE WHEN final THEN e.bill_duration END AS bill_duration_s,
        CASE WHEN final THEN e.call_status ELSE live_call_status END AS call_status,
        CASE WHEN final THEN e.hangup_cause END AS hangup_cause,
        CASE WHEN final THEN e.code END AS hangup_cause_code,
        CASE WHEN final THEN e.name END AS hangup_cause_name,
        CASE WHEN final THEN e.source END AS hangup_source,
        first_received_at,
        final,
        answered,
        machine_detected
    FROM legs
)
SELECT
    c.call_uuid,
    c.direction,
    c.from_number,
    c.to_number,
    coalesce(c.start_time, c.first_received_at) AS started_at,
    c.answered_at,
    c.ended_at,
    c.duration_s,
    c.bill_duration_s,
    c.call_status,
    c.hangup_cause,
    c.hangup_cause_code,
    c.hangup_cause_name,
    c.hangup_source,
    c.answered,
    leg_outcome(
        c.final, c.machine_detected, c.hangup_cause_code, g.grp, c.answered, c.hangup_cause,
        c.call_status
    ) AS outcome
FROM calls c
LEFT JOIN hangup_cause_groups g ON g.code = c.hangup_cause_code;

CREATE VIEW calls AS SELECT * FROM calls_since('-infinity'::TIMESTAMPTZ);

-- One row per Dial action (the Dial element ended). Grouping on the parameter fingerprint keeps a
-- repeat that escaped duplicate marking (a retry older than the tracker's memory) to one row, at
-- its first arrival. event_id links back to webhook_events. params_hash, the group key, is for
-- the rollup (which replaces groups by it); the view leaves it out.
CREATE MACRO dials_since(since) AS TABLE
SELECT
    coalesce(any_value(dial_a_leg_uuid), any_value(call_uuid)) AS a_leg_uuid,
    any_value(dial_b_leg_uuid) AS b_leg_uuid,
    any_value(dial_status) AS dial_status,
    any_value(dial_ring_status) AS dial_ring_status,
    any_value(dial_hangup_cause) AS dial_hangup_cause,
    min(received_at) AS received_at,
    any_value(call_uuid) AS call_uuid,
    arg_min(event_id, received_at) AS event_id,
    params_hash
FROM webhook_events
WHERE received_at >= since AND kind = 'dial_action' AND NOT duplicate
-- Same fingerprint, same parameters: every any_value above sees one value.
GROUP BY params_hash;

CREATE VIEW dials AS SELECT * EXCLUDE (params_hash) FROM dials_since('-infinity'::TIMESTAMPTZ);

-- One row per B leg seen on Dial callbacks. A B leg UUID is unique on its own, so legs are
-- grouped by it: a callback lacking DialALegUUID still lands on the right leg.
CREATE MACRO dial_legs_since(since) AS TABLE
WITH callbacks AS (
    SELECT
        *,
        lower(coalesce(dial_action, dial_b_leg_status)) AS action
    FROM webhook_events
    WHERE received_at >= since
        AND kind = 'dial_callback' AND NOT duplicate AND dial_b_leg_uuid IS NOT NULL
),
legs AS (
    SELECT
        dial_b_leg_uuid AS b_leg_uuid,
        -- One callback of the leg, a hangup if there is any: every B-leg field comes from it.
        arg_max(
            {
                'a_leg_uuid': coalesce(dial_a_leg_uuid, call_uuid), 'to': dial_b_leg_to,
                'from': dial_b_leg_from, 'position': dial_b_leg_position,
                'duration': dial_b_leg_duration, 'bill_duration': dial_b_leg_bill_duration,
                'cause': dial_b_leg_hangup_cause, 'code': dial_b_leg_hangup_cause_code,
                'name': dial_b_leg_hangup_cause_name, 'source': dial_b_leg_hangup_source
            },
            event_key((action = 'hangup')::INTEGER, params_hash)
        ) AS e,
        bool_or(action = 'hangup') AS final,
        coalesce(bool_or(action = 'answer' OR dial_b_leg_bill_duration > 0), false) AS answered,
        min(received_at) FILTER (WHERE action = 'answer') AS answered_at,
        min(received_at) FILTER (WHERE action = 'hangup') AS ended_at
    FROM callbacks
    GROUP BY dial_b_leg_uuid
),
b_legs AS (
    SELECT
        e.a_leg_uuid,
        b_leg_uuid,
        e.to AS b_leg_to,
        e."from" AS b_leg_from,
        e.position,
        answered,
        answered_at,
        ended_at,
        CASE WHEN final THEN e.duration END AS duration_s,
        CASE WHEN final THEN e.code END AS hangup_cause_code,
        CASE WHEN final THEN e.name END AS hangup_cause_name,
        CASE WHEN final THEN e.source END AS hangup_source,
        CASE WHEN final THEN e.bill_duration END AS bill_duration_s,
        CASE WHEN final THEN e.cause END AS hangup_cause,
        final
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
    -- B legs carry no CallStatus of their own (CallStatus on a callback is the A leg's).
    leg_outcome(
        b.final, false, b.hangup_cause_code, g.grp, b.answered, b.hangup_cause, NULL
    ) AS outcome,
    b.bill_duration_s,
    b.hangup_cause
FROM b_legs b
LEFT JOIN hangup_cause_groups g ON g.code = b.hangup_cause_code;

CREATE VIEW dial_legs AS SELECT * FROM dial_legs_since('-infinity'::TIMESTAMPTZ);
