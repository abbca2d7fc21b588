-- V6: the lease token (claim number) of the attempt a job record describes. Record writes are
-- fenced by it: an attempt that lost its lease (its worker was frozen, presumed dead, and the
-- job ran again elsewhere) never overwrites the record of a later claim.
ALTER TABLE job_records ADD COLUMN IF NOT EXISTS lease bigint NOT NULL DEFAULT 0;
