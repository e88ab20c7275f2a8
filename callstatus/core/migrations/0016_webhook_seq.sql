-- The rollups read webhook_rows from a watermark (callstatus/core/rollups.py). It was the
-- `rowid`, which DuckDB may renumber: after a deletion (retention, erasure) a checkpoint's vacuum
-- packs row groups that lost rows, and not always at the first checkpoint after the delete (a
-- checkpoint while another transaction is open never vacuums; trailing row groups are packed
-- only once enough rows follow them). A watermark left above renumbered rows made the rollups
-- skip new webhooks. `seq` is given by the move from the inbox, in arrival order, and never
-- changes; the last one given is kept in rollup_state under the name 'webhook_rows', so a
-- deletion of the newest rows never lets a number be given twice.
ALTER TABLE webhook_rows ADD COLUMN seq BIGINT;
UPDATE webhook_rows SET seq = rowid;
INSERT INTO rollup_state (name, watermark, refreshed_at)
SELECT 'webhook_rows', greatest(r.top, s.top), now()
FROM (SELECT max(rowid) AS top FROM webhook_rows) r,
     (SELECT max(watermark) AS top FROM rollup_state) s
WHERE greatest(r.top, s.top) IS NOT NULL;

-- Analysts' relation keeps its columns: seq is the rollups' bookkeeping.
CREATE OR REPLACE VIEW webhook_events AS
SELECT * EXCLUDE (seq) FROM webhook_rows
UNION ALL BY NAME
SELECT * FROM webhook_inbox_typed;
