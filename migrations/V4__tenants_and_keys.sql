-- Tenants on job records, and API keys.
-- Every job belongs to the tenant of the key that submitted it (or `default`
-- in open mode); listings and lookups are scoped to it.
ALTER TABLE job_records ADD COLUMN tenant text NOT NULL DEFAULT 'default';
DROP INDEX job_records_kind_state;
CREATE INDEX job_records_tenant_kind_state ON job_records (tenant, kind, state, finished_at DESC);
CREATE INDEX job_records_tenant_finished ON job_records (tenant, finished_at DESC);

-- An API key is `hop_<prefix>_<secret>`: the prefix finds the row, the
-- secret's SHA-256 is compared in constant time. The secret itself is never
-- stored (it is shown once, at creation).
CREATE TABLE api_keys (
    id           uuid PRIMARY KEY,
    prefix       text        NOT NULL UNIQUE,
    secret_sha256 bytea      NOT NULL,
    tenant       text        NOT NULL,
    name         text        NOT NULL DEFAULT '',
    scopes       text[]      NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at   timestamptz
);
CREATE INDEX api_keys_tenant ON api_keys (tenant, created_at DESC);
