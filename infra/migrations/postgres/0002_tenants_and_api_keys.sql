-- Tenants and their API keys. A key is shown once when it is made and stored only as the
-- SHA-256 of the whole key: the key holds 256 random bits, so a fast hash is enough (a
-- password KDF protects guessable secrets; nothing here is guessable).
-- No last_used_at column: a write per authenticated request would cost the hot path more
-- than the column is worth.

CREATE TABLE tenants (
    id          TEXT        PRIMARY KEY,
    created_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE api_keys (
    -- Public and short: printed in listings and logs, the handle for revoking.
    key_id         TEXT        PRIMARY KEY,
    tenant_id      TEXT        NOT NULL REFERENCES tenants (id),
    name           TEXT,
    secret_sha256  TEXT        NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL,
    revoked_at     TIMESTAMPTZ
);

CREATE INDEX api_keys_tenant ON api_keys (tenant_id, created_at);
