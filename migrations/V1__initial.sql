-- Hopper's first schema: documents, their chunks with embeddings, and the
-- finished-job records that outlive Redis' retention.
-- The `vector` extension is created (in schema public) before migrations run.

CREATE TABLE documents (
    id              uuid PRIMARY KEY,
    tenant          text        NOT NULL DEFAULT 'default',
    name            text        NOT NULL,
    document_set    text,
    content_type    text        NOT NULL,
    version         integer     NOT NULL DEFAULT 1,
    content_sha256  text        NOT NULL,
    body            bytea,
    metadata        jsonb       NOT NULL DEFAULT '{}'::jsonb,
    options         jsonb       NOT NULL DEFAULT '{}'::jsonb,
    status          text        NOT NULL DEFAULT 'queued',
    chunks_total    integer,
    chunks_embedded integer     NOT NULL DEFAULT 0,
    summary         text,
    error           text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX documents_tenant_set ON documents (tenant, document_set, created_at DESC);

CREATE TABLE chunks (
    id            uuid PRIMARY KEY,
    document_id   uuid    NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    ordinal       integer NOT NULL,
    text          text    NOT NULL,
    token_count   integer NOT NULL,
    embedding     vector(384),
    model_version text,
    UNIQUE (document_id, ordinal)
);
CREATE INDEX chunks_embedding_hnsw ON chunks USING hnsw (embedding vector_cosine_ops);

-- One row per job, written when a job finishes (succeeded, dead, cancelled)
-- and upserted by id, so a re-run after a crash never adds a second row.
CREATE TABLE job_records (
    id           uuid PRIMARY KEY,
    kind         text        NOT NULL,
    state        text        NOT NULL,
    attempts     integer     NOT NULL,
    max_attempts integer     NOT NULL,
    args         jsonb       NOT NULL,
    result       jsonb,
    error        text,
    worker       text,
    enqueued_at  timestamptz NOT NULL,
    started_at   timestamptz,
    finished_at  timestamptz,
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX job_records_kind_state ON job_records (kind, state, finished_at DESC);
