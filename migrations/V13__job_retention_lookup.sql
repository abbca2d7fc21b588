-- V13: the record upsert (shared/src/db.rs, upsert_job_records) reads a job's own retention
-- (V10) through this function instead of joining `job_retention`. With the join, Postgres never
-- settled on a generic plan for the prepared upsert (a generic plan must assume 10 records and
-- so 10 index probes, dearer than one custom plan for the usual single record) and planned it
-- afresh on every write: 0.13 ms of planning per finished job, a sixth of a concurrency-1
-- worker's time per job. A PL/pgSQL call is opaque to the planner, so the upsert's generic plan
-- is cheap, chosen after five executions, and planned once per connection.
CREATE OR REPLACE FUNCTION job_own_retention_ms(job uuid) RETURNS int8
    LANGUAGE plpgsql STABLE STRICT PARALLEL SAFE AS
$$
BEGIN
    RETURN (SELECT r.retention_ms FROM job_retention r WHERE r.job_id = job);
END
$$;
