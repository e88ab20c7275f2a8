-- The shared store of clustered mode: what the receivers took, for the dashboards' replicas.
--
-- A row's `seq` comes from a sequence, and sequence values become visible out of order when
-- transactions commit out of order: a reader that keeps "the greatest seq seen" would skip a row
-- whose transaction took a smaller seq and committed later. So every row also records the id of
-- the transaction that wrote it (`tx`). A replica reads the rows with tx >= its watermark and then
-- sets its watermark to the xmin of the snapshot it read in: every transaction below that xmin had
-- ended (committed or rolled back) when the snapshot was taken, so all of its rows were visible to
-- that read. Rows at or above the watermark may be read twice; the replica skips the event_ids it
-- already holds.
CREATE TABLE webhook_inbox (
    seq          BIGINT GENERATED ALWAYS AS IDENTITY,
    tx           xid8 NOT NULL DEFAULT pg_current_xact_id(),
    event_id     UUID PRIMARY KEY,  -- set by the receiver: a replayed spool row is stored once
    received_at  TIMESTAMPTZ NOT NULL,
    kind         TEXT NOT NULL,
    http_method  TEXT NOT NULL,
    params       TEXT NOT NULL,     -- canonical JSON text, exactly as the embedded store keeps it
    signature    TEXT NOT NULL,
    duplicate    BOOLEAN NOT NULL,
    params_hash  BIGINT NOT NULL,
    typed        TEXT NOT NULL,     -- the typed copies as JSON, as in DuckDB's webhook_inbox
    receiver     TEXT NOT NULL      -- host:port of the receiver that took it
);
CREATE INDEX webhook_inbox_tx ON webhook_inbox (tx);

-- One row per distinct (kind, parameters): whichever receiver stores a webhook first inserts it,
-- every later copy finds it (a concurrent copy waits for the first one's commit on the key), so
-- `duplicate` is decided the same way whichever receivers took the copies. `deliveries` and
-- `window_start` count repeats: past a few deliveries within minutes a copy is counted in
-- webhook_repeats instead of stored, as the embedded store does.
CREATE TABLE webhook_fingerprints (
    params_hash   BIGINT NOT NULL,
    kind          TEXT NOT NULL,
    first_seen    TIMESTAMPTZ NOT NULL,
    window_start  TIMESTAMPTZ NOT NULL,
    deliveries    INTEGER NOT NULL,
    PRIMARY KEY (params_hash, kind)
);

CREATE TABLE webhook_repeats (
    bucket   TIMESTAMPTZ NOT NULL,
    kind     TEXT NOT NULL,
    repeats  BIGINT NOT NULL,
    PRIMARY KEY (bucket, kind)
);

-- Refused requests, read by replicas the same way as webhook_inbox.
CREATE TABLE rejected_webhooks (
    seq           BIGINT GENERATED ALWAYS AS IDENTITY,
    tx            xid8 NOT NULL DEFAULT pg_current_xact_id(),
    rejected_id   UUID PRIMARY KEY,
    received_at   TIMESTAMPTZ NOT NULL,
    reason        TEXT NOT NULL,
    path          TEXT NOT NULL,
    http_method   TEXT NOT NULL,
    checked_url   TEXT,
    headers       TEXT NOT NULL,
    params        TEXT NOT NULL,
    truncated     BOOLEAN NOT NULL,
    receiver      TEXT NOT NULL
);
CREATE INDEX rejected_webhooks_tx ON rejected_webhooks (tx);

-- Each receiver's heartbeat, for Receiver health on the dashboards.
CREATE TABLE receivers (
    receiver         TEXT PRIMARY KEY,   -- host:port
    started_at       TIMESTAMPTZ NOT NULL,
    seen_at          TIMESTAMPTZ NOT NULL,
    last_webhook_at  TIMESTAMPTZ,
    spool_depth      BIGINT NOT NULL DEFAULT 0,
    stored           BIGINT NOT NULL DEFAULT 0
);
