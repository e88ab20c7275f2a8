-- webhook_repeats: deliveries of a webhook that were acknowledged but not stored.
--
-- The receiver stores the first few deliveries of the same webhook (same kind and parameters,
-- webhook_events.params_hash) within a few minutes: a delivery and Plivo's retry. Past that
-- (callstatus.events.MAX_STORED_DELIVERIES) a repeat is a replay: it gets its 200, since a
-- stored copy has the same content, and is only counted here, per 5-minute bucket of its
-- received_at (time_bucket(INTERVAL 5 MINUTE, received_at), UTC) and kind. The writer adds a
-- batch's repeats in the transaction that stores the batch.
CREATE TABLE webhook_repeats (
    bucket   TIMESTAMPTZ NOT NULL,
    kind     VARCHAR NOT NULL,
    repeats  BIGINT NOT NULL,
    PRIMARY KEY (bucket, kind)
);
