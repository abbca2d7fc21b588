-- V11: keyword search beside the vector index (POST /v1/search `mode`: keyword, hybrid).
-- A document has a language, a text search configuration (`english` unless its upload's
-- `options.language` or its set's documents say another), which its chunks carry as `lang`
-- (copied when they are stored). Postgres keeps each chunk's `tsv` from its text in that
-- language: a stored generated column, so the rows already here are filled by this migration
-- and no write path can forget it. The GIN index serves `tsv @@ websearch_to_tsquery(lang, q)`.
ALTER TABLE documents ADD COLUMN IF NOT EXISTS language regconfig NOT NULL DEFAULT 'english';
ALTER TABLE chunks ADD COLUMN IF NOT EXISTS lang regconfig NOT NULL DEFAULT 'english';
ALTER TABLE chunks ADD COLUMN IF NOT EXISTS tsv tsvector
    GENERATED ALWAYS AS (to_tsvector(lang, text)) STORED;
CREATE INDEX IF NOT EXISTS chunks_tsv ON chunks USING gin (tsv);
