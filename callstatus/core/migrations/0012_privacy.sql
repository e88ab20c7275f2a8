-- Personal data (docs/privacy.md): the runs of the retention job and the erasures done.
--
-- retention_runs: one row per run of callstatus/privacy/retention.py. A run is first recorded as
-- 'running' (committed before any archive file is written), and its final row replaces that one
-- in the transaction that removes the rows: a run still 'running' after a crash wrote archive
-- files whose rows were never removed, and the next run deletes those files before writing anew
-- (nothing lost, nothing stored twice). Rows are replaced by delete and insert, never updated
-- (callstatus/core/rollups.py says why updates are avoided).
CREATE TABLE retention_runs (
    run_id             BIGINT NOT NULL,       -- 1, 2, ... (no sequence: a compacted copy keeps it)
    started_at         TIMESTAMPTZ NOT NULL,
    finished_at        TIMESTAMPTZ,
    trigger            VARCHAR NOT NULL,      -- 'job' or 'compaction'
    horizon            TIMESTAMPTZ NOT NULL,  -- raw rows before it go
    aggregate_horizon  TIMESTAMPTZ,           -- aggregate rows before it go (NULL: kept)
    status             VARCHAR NOT NULL,      -- 'running', 'ok', 'error'
    removed            JSON,                  -- {"table": rows removed}
    archived           JSON,                  -- {"webhook_events": rows, ...} written to Parquet
    archive_dir        VARCHAR,
    file_bytes         BIGINT,                -- the database file's size after the run
    error              VARCHAR
);

-- erasures: one row per `callstatus erase`, holding a pseudonym of the number, never the number.
CREATE TABLE erasures (
    erased_at  TIMESTAMPTZ NOT NULL,
    pseudonym  VARCHAR NOT NULL,  -- keyed (CALLSTATUS_NUMBER_KEY) when set, else 'sha256:…'
    keyed      BOOLEAN NOT NULL,
    dry_run    BOOLEAN NOT NULL,
    trigger    VARCHAR NOT NULL,  -- 'server' or 'file'
    counts     JSON NOT NULL      -- {"table": rows removed (or that a dry run would remove)}
);
