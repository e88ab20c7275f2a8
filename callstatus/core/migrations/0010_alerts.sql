-- Alerts and scheduled reports (callstatus/alerts): the rules loaded from the rules file, each
-- rule's state, every change of state, when each report is due, and the outbox of messages.
-- docs/alerts.md says what the states mean. Rows that change are deleted and inserted again,
-- never updated (see callstatus/core/rollups.py on updates and checkpoints); for the same reason
-- no table has a key constraint: DuckDB checks one against rows deleted earlier in the same
-- transaction.

-- The rules as loaded at the server's start (all replaced then), for the Alerts page.
CREATE TABLE alert_rules (
    rule       VARCHAR NOT NULL,      -- the rule's name, unique in its file
    metric     VARCHAR NOT NULL,
    condition  VARCHAR NOT NULL,      -- "below 0.5", "above 10", "20% below the 7d baseline"
    window_s   DOUBLE,                -- the window in seconds; NULL for metrics without one
    channels   VARCHAR[] NOT NULL,    -- channel names, in the file's order
    line       INTEGER,               -- where the rule starts in its file
    loaded_at  TIMESTAMPTZ NOT NULL
);

-- One row per rule: where it stands after its last evaluation.
CREATE TABLE alert_state (
    rule           VARCHAR NOT NULL,
    state          VARCHAR NOT NULL,  -- 'ok' | 'pending' | 'firing' | 'no data'
    since          TIMESTAMPTZ NOT NULL,  -- when the rule entered this state
    pending_since  TIMESTAMPTZ,       -- while pending: since when the condition holds
    value          DOUBLE,            -- the metric's value; NULL without a verdict
    threshold      DOUBLE,            -- the bound compared with (a drop rule: the baseline's)
    volume         BIGINT,            -- what min_volume counts, in the window
    evaluated_at   TIMESTAMPTZ NOT NULL
);

-- Every change of a rule's state; `notified`: a message was queued for it (to firing, and from
-- firing back to ok). `at` is a keyword in DuckDB's SQL: write it "at" or t.at.
CREATE TABLE alert_transitions (
    "at"        TIMESTAMPTZ NOT NULL,
    rule        VARCHAR NOT NULL,
    from_state  VARCHAR NOT NULL,
    to_state    VARCHAR NOT NULL,
    value       DOUBLE,
    threshold   DOUBLE,
    notified    BOOLEAN NOT NULL
);

-- One row per report: when it is due next, so that each due time is sent once.
CREATE TABLE report_schedule (
    report        VARCHAR NOT NULL,
    schedule      VARCHAR NOT NULL,   -- the `every` text; a changed text starts afresh
    next_due_at   TIMESTAMPTZ NOT NULL,
    last_sent_at  TIMESTAMPTZ,        -- the due time of the last report queued
    last_status   VARCHAR             -- 'queued', or 'failed: <why>' when it could not be built
);

-- Every message the alerts send, one row per channel: pending until a channel takes it, retried
-- with backoff (callstatus/alerts/outbox.py). A row that changes is deleted and inserted again,
-- never updated (see callstatus/core/rollups.py on updates and checkpoints). No key constraint:
-- DuckDB checks one against rows deleted earlier in the same transaction.
CREATE TABLE alert_deliveries (
    id UUID NOT NULL,                    -- one message to one channel
    created_at TIMESTAMPTZ NOT NULL,     -- when it was enqueued
    channel VARCHAR NOT NULL,            -- the channel's name in the rules file
    kind VARCHAR NOT NULL,               -- firing | resolved | report | test
    title VARCHAR NOT NULL,
    message JSON NOT NULL,               -- the message without its images (outbox.to_json)
    images BLOB[],                       -- its PNGs, in the order message.images names them;
                                         -- NULL once sent or given up
    status VARCHAR NOT NULL,             -- pending | sent | failed
    attempts INTEGER NOT NULL,           -- deliveries tried so far
    last_error VARCHAR,                  -- why the last attempt failed (NULL once sent)
    next_attempt_at TIMESTAMPTZ,         -- when a pending row is tried next (NULL once final)
    sent_at TIMESTAMPTZ                  -- when the channel took it
);
