-- The document pipeline: extracted text, embed fan-out bookkeeping, and the
-- model version of each stored vector.

ALTER TABLE documents
    ADD COLUMN text               text,
    ADD COLUMN embed_batches      integer NOT NULL DEFAULT 0,
    ADD COLUMN embed_batches_done integer NOT NULL DEFAULT 0,
    ADD COLUMN model              text,
    ADD COLUMN truncated_chunks   integer NOT NULL DEFAULT 0;

-- One row per embed batch of a document version; `done` flips once, so a
-- re-run of an embed job never counts twice and the fan-in fires exactly once.
CREATE TABLE document_embed_batches (
    document_id uuid    NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    version     integer NOT NULL,
    batch_no    integer NOT NULL,
    chunk_ids   uuid[]  NOT NULL,
    done        boolean NOT NULL DEFAULT false,
    PRIMARY KEY (document_id, version, batch_no)
);

ALTER TABLE chunks ADD COLUMN version integer NOT NULL DEFAULT 1;
CREATE INDEX chunks_document ON chunks (document_id, ordinal);
