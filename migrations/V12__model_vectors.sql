-- V12: vectors of any dimension, per (chunk, model); document sets that name their model;
-- re-embedding a set with another model while search keeps answering.
--
-- Why one table with an untyped `vector` column rather than a table per model: a model
-- is data (a worker registers it when it starts), not a migration, and one table keeps one
-- write path, one delete cascade and one join for search. An HNSW index needs a typed
-- column, so each model gets a partial expression index of its own,
--   CREATE INDEX chunk_vectors_m<id>_hnsw ON chunk_vectors
--       USING hnsw ((embedding::vector(<dim>)) vector_cosine_ops) WHERE model_id = <id>
-- (created by `documents::register_models`), and a search names the same expression and
-- predicate, so the planner picks that model's index and no other model's rows are seen.

-- Every model a worker has served: `model` is `name@version` (the first 12 hex of the
-- weights' sha256), so two weights of one name never share vectors. `seen_at` is renewed
-- while a worker serves it (the API names the served models from it).
CREATE TABLE embedding_models (
    id       integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    model    text        NOT NULL UNIQUE,
    name     text        NOT NULL,
    dim      integer     NOT NULL CHECK (dim BETWEEN 1 AND 16000),
    seen_at  timestamptz NOT NULL DEFAULT now()
);

-- One vector per chunk and model.
CREATE TABLE chunk_vectors (
    chunk_id  uuid    NOT NULL REFERENCES chunks (id) ON DELETE CASCADE,
    model_id  integer NOT NULL REFERENCES embedding_models (id),
    embedding vector  NOT NULL,
    PRIMARY KEY (chunk_id, model_id)
);
CREATE INDEX chunk_vectors_model ON chunk_vectors (model_id);

-- A tenant's document set: the model its vectors (and search's query vector) come from —
-- NULL until its first chunks are embedded, `name@version` from then on — and, after a
-- re-embed switched it, the model it had, whose vectors are kept until `previous_until`.
CREATE TABLE document_sets (
    tenant         text        NOT NULL,
    name           text        NOT NULL,
    model          text,
    previous_model text,
    previous_until timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, name)
);

-- A re-embed of a set with another model: its batches are `embed` jobs; the set flips to
-- `model` when every chunk has a vector of it, and keeps `from_model`'s vectors `grace_s`
-- seconds more. One running re-embed per set.
CREATE TABLE reembeds (
    id            uuid PRIMARY KEY,
    tenant        text        NOT NULL,
    document_set  text        NOT NULL,
    model         text        NOT NULL,
    from_model    text,
    state         text        NOT NULL DEFAULT 'running'
                  CHECK (state IN ('running', 'done', 'cancelled')),
    batches       integer     NOT NULL DEFAULT 0,
    batches_done  integer     NOT NULL DEFAULT 0,
    chunks_total  integer     NOT NULL DEFAULT 0,
    chunks_done   integer     NOT NULL DEFAULT 0,
    grace_s       integer     NOT NULL DEFAULT 3600,
    created_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz,
    FOREIGN KEY (tenant, document_set) REFERENCES document_sets (tenant, name) ON DELETE CASCADE
);
CREATE UNIQUE INDEX reembeds_one_running ON reembeds (tenant, document_set)
    WHERE state = 'running';
CREATE INDEX reembeds_set ON reembeds (tenant, document_set, created_at DESC);

-- One row per batch of a re-embed; `done` flips once, so a re-run never counts twice.
CREATE TABLE reembed_batches (
    reembed_id uuid    NOT NULL REFERENCES reembeds (id) ON DELETE CASCADE,
    batch_no   integer NOT NULL,
    chunk_ids  uuid[]  NOT NULL,
    done       boolean NOT NULL DEFAULT false,
    PRIMARY KEY (reembed_id, batch_no)
);

-- What was there: 384-d vectors in chunks.embedding, their model in chunks.model_version.
INSERT INTO embedding_models (model, name, dim)
SELECT model_version, split_part(model_version, '@', 1), min(vector_dims(embedding))
FROM chunks WHERE embedding IS NOT NULL AND model_version IS NOT NULL
GROUP BY model_version;

INSERT INTO chunk_vectors (chunk_id, model_id, embedding)
SELECT c.id, m.id, c.embedding
FROM chunks c JOIN embedding_models m ON m.model = c.model_version
WHERE c.embedding IS NOT NULL;

INSERT INTO document_sets (tenant, name, model)
SELECT tenant, document_set, max(model)
FROM documents WHERE document_set IS NOT NULL
GROUP BY tenant, document_set;

DO $$
DECLARE m record;
BEGIN
    FOR m IN SELECT id, dim FROM embedding_models LOOP
        EXECUTE format(
            'CREATE INDEX chunk_vectors_m%s_hnsw ON chunk_vectors '
            'USING hnsw ((embedding::vector(%s)) vector_cosine_ops) WHERE model_id = %s',
            m.id, m.dim, m.id);
    END LOOP;
END $$;

DROP INDEX IF EXISTS chunks_embedding_hnsw;
ALTER TABLE chunks DROP COLUMN embedding, DROP COLUMN model_version;
