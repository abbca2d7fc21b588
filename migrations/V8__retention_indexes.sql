-- V8: indexes for the retention sweep (shared/src/retention.rs). The API deletes job records
-- whose job finished longer ago than HOPPER_RECORD_RETENTION_DAYS, and stored embed results
-- older than HOPPER_EMBED_RESULT_RETENTION_DAYS, a batch at a time: each batch is a range scan
-- on one of these indexes instead of a scan of the whole table.
CREATE INDEX IF NOT EXISTS job_records_finished_at ON job_records (finished_at);
CREATE INDEX IF NOT EXISTS embed_results_created_at ON embed_results (created_at);
