-- Attempt history and priority on finished-job records, so a job's timeline
-- survives Redis' retention.
ALTER TABLE job_records
    ADD COLUMN priority text,
    ADD COLUMN history  jsonb NOT NULL DEFAULT '[]'::jsonb;
