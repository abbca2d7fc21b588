-- V10: per-job retention (POST /v1/jobs/{task}?retention_ms=, shared/src/retention.rs).
-- A job submitted with its own retention gets a `job_retention` row before it is queued (so
-- whichever process writes its record later finds it). Its record, when it succeeded or was
-- cancelled, carries `keep_until` (its finish plus that retention, set by the record upsert),
-- and the sweep deletes it then instead of after HOPPER_RECORD_RETENTION_DAYS; records without
-- one (the rest, and dead jobs) keep the global retention. A `job_retention` row goes with its
-- record, or, when no record ever comes (its job was purged), long after every delay is over.
CREATE TABLE IF NOT EXISTS job_retention (
    job_id       uuid PRIMARY KEY,
    retention_ms int8 NOT NULL CHECK (retention_ms > 0),
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS job_retention_created_at ON job_retention (created_at);

ALTER TABLE job_records ADD COLUMN IF NOT EXISTS keep_until timestamptz;
CREATE INDEX IF NOT EXISTS job_records_keep_until ON job_records (keep_until)
    WHERE keep_until IS NOT NULL;
