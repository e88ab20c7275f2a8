-- A dashboard's replica of the shared PostgreSQL store (clustered mode, callstatus/cluster/sync.py).
--
-- The sync job appends what the receivers stored in PostgreSQL to webhook_inbox,
-- rejected_webhooks and webhook_repeats, and records in the same DuckDB transaction how far it
-- read: a crash between the two can neither lose nor double a row. Without
-- CALLSTATUS_POSTGRES_URL these tables stay empty.
--
-- replica_state holds one row (replaced, never updated: see callstatus/core/rollups.py):
--   snapshot     the PostgreSQL snapshot (pg_snapshot as text, xmin:xmax:xip) of the last read:
--                a row is new to the replica exactly when its transaction was not visible in it
--   watermark    that snapshot's xmin: rows of older transactions are all here
--   synced_at    when the last sync began: every row PostgreSQL had committed then is here
--   finished_at  when it committed here
--   webhooks, rejected   rows the last sync copied
--   total_webhooks       rows copied since the replica was built
--   source       the PostgreSQL it copies (host:port/database, no credentials)
CREATE TABLE replica_state (
    watermark       BIGINT NOT NULL,
    snapshot        VARCHAR NOT NULL,
    synced_at       TIMESTAMPTZ NOT NULL,
    finished_at     TIMESTAMPTZ NOT NULL,
    webhooks        BIGINT NOT NULL,
    rejected        BIGINT NOT NULL,
    total_webhooks  BIGINT NOT NULL,
    source          VARCHAR NOT NULL
);

-- The receivers' heartbeats (PostgreSQL's `receivers`), copied by every sync: Receiver health
-- lists them.
CREATE TABLE cluster_receivers (
    receiver         VARCHAR NOT NULL,   -- host:port
    started_at       TIMESTAMPTZ NOT NULL,
    seen_at          TIMESTAMPTZ NOT NULL,
    last_webhook_at  TIMESTAMPTZ,
    spool_depth      BIGINT NOT NULL,
    stored           BIGINT NOT NULL
);
