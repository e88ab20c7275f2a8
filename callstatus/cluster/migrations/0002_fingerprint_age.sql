-- Fingerprints are pruned once their last window is old (callstatus.cluster.writer): Plivo's
-- retries come within minutes, and keeping one row per distinct webhook forever grew the table
-- with every webhook ever taken. The index finds the old ones without reading the table.
CREATE INDEX webhook_fingerprints_window_start ON webhook_fingerprints (window_start);
