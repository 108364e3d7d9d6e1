-- Events as accepted, one row per (tenant, event id), and the transactional outbox beside them.
-- Timestamps are RFC 3339 text in UTC, written by the application, so they sort as they compare.

CREATE TABLE events (
    tenant_id       TEXT NOT NULL,
    event_id        TEXT NOT NULL,
    event_type      TEXT NOT NULL,
    event_ts        TEXT NOT NULL,
    received_at     TEXT NOT NULL,
    source          TEXT,
    payload         TEXT NOT NULL CHECK (json_valid(payload)),
    payload_sha256  TEXT NOT NULL,
    metadata        TEXT CHECK (metadata IS NULL OR json_valid(metadata)),
    correlation_id  TEXT,
    PRIMARY KEY (tenant_id, event_id)
);

CREATE INDEX events_tenant_received ON events (tenant_id, received_at);

CREATE TABLE outbox (
    tenant_id        TEXT    NOT NULL,
    event_id         TEXT    NOT NULL,
    status           TEXT    NOT NULL
        CHECK (status IN ('PENDING', 'PUBLISHED', 'DONE', 'FAILED', 'DEAD')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    -- For a claimed row this is its lease expiry: it is not due again before.
    next_attempt_at  TEXT    NOT NULL,
    last_error       TEXT,
    lease_owner      TEXT,
    lease_expires_at TEXT,
    published_at     TEXT,
    done_at          TEXT,
    created_at       TEXT    NOT NULL,
    updated_at       TEXT    NOT NULL,
    PRIMARY KEY (tenant_id, event_id),
    FOREIGN KEY (tenant_id, event_id) REFERENCES events (tenant_id, event_id) ON DELETE CASCADE
);

CREATE INDEX outbox_claim ON outbox (next_attempt_at) WHERE status = 'PENDING';
CREATE INDEX outbox_status_updated ON outbox (status, updated_at);
