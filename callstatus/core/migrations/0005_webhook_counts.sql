-- webhook_counts: how many webhooks arrived per 5-minute bucket of received_at, kind, duplicate
-- and signature, kept by the rollup job beside the other rollups (callstatus/rollups.py), so the
-- receiver's health page counts a month of webhooks from a few thousand rows instead of
-- scanning every webhook. bucket_at is time_bucket(INTERVAL 5 MINUTE, received_at): the start,
-- in UTC, of the bucket [bucket_at, bucket_at + 5 minutes).
CREATE TABLE webhook_counts (
    bucket_at  TIMESTAMPTZ NOT NULL,
    kind       VARCHAR NOT NULL,
    duplicate  BOOLEAN NOT NULL,
    signature  VARCHAR NOT NULL,
    webhooks   BIGINT NOT NULL,
    PRIMARY KEY (bucket_at, kind, duplicate, signature)
);

-- It has no watermark in rollup_state yet, so the rollups count as never built: the next
-- refresh rebuilds every rollup, this table included (and the dashboard reads the views and
-- webhook_events until it has).
