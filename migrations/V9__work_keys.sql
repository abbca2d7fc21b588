-- V9: work keys. A key with the `work` scope serves tasks over the HTTP worker protocol
-- (/v1/work/*) for its tenant; `queues` limits it to the named queues (NULL: any queue its
-- tenant may serve).
ALTER TABLE api_keys ADD COLUMN IF NOT EXISTS queues text[];
