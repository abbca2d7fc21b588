-- Vectors of large `embed` jobs, stored here instead of inline in the job's
-- result (which lives in Redis and in job_records): f32 little-endian, `count`
-- vectors of `dim` floats, read back through GET /v1/jobs/{id}/vectors.
CREATE TABLE embed_results (
    job_id     uuid PRIMARY KEY,
    tenant     text        NOT NULL,
    model      text        NOT NULL,
    dim        integer     NOT NULL,
    count      integer     NOT NULL,
    vectors    bytea       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
