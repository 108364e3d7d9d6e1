-- Events as accepted, one row per (tenant, event id), and the transactional outbox beside them.

CREATE TABLE events (
    tenant_id       TEXT        NOT NULL,
    event_id        TEXT        NOT NULL,
    event_type      TEXT        NOT NULL,
    event_ts        TIMESTAMPTZ NOT NULL,
    received_at     TIMESTAMPTZ NOT NULL,
    source          TEXT,
    payload         JSONB       NOT NULL,
    payload_sha256  TEXT        NOT NULL,
    metadata        JSONB,
    correlation_id  TEXT,
    PRIMARY KEY (tenant_id, event_id)
);

CREATE INDEX events_tenant_received ON events (tenant_id, received_at);

CREATE TABLE outbox (
    tenant_id        TEXT        NOT NULL,
    event_id         TEXT        NOT NULL,
    status           TEXT        NOT NULL
        CHECK (status IN ('PENDING', 'PUBLISHED', 'DONE', 'FAILED', 'DEAD')),
    attempts         INTEGER     NOT NULL DEFAULT 0,
    -- For a claimed row this is its lease expiry: it is not due again before.
    next_attempt_at  TIMESTAMPTZ NOT NULL,
    last_error       TEXT,
    lease_owner      TEXT,
    lease_expires_at TIMESTAMPTZ,
    published_at     TIMESTAMPTZ,
    done_at          TIMESTAMPTZ,
    created_at       TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant_id, event_id),
    FOREIGN KEY (tenant_id, event_id) REFERENCES events (tenant_id, event_id) ON DELETE CASCADE
);

-- The claim reads due PENDING rows, oldest first; a partial index keeps it small.
CREATE INDEX outbox_claim ON outbox (next_attempt_at) WHERE status = 'PENDING';
-- Status counts, failed-event listings and retention purges.
CREATE INDEX outbox_status_updated ON outbox (status, updated_at);
