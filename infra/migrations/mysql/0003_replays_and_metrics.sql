-- Replay records and the indexes the admin API's aggregations read (replay and metrics).
-- Every range the admin API takes ("from", "to") is on the time an event was received, which
-- is the outbox row's created_at.

-- How often an event was replayed, and when last: a replayed event shows its history.
ALTER TABLE outbox
    ADD COLUMN replay_count INT NOT NULL DEFAULT 0,
    ADD COLUMN last_replayed_at DATETIME(6),
    -- Per tenant: counts by status in a range, lag (oldest PENDING), failed listings, replay
    -- by filter. All read (tenant_id, status, created_at) from the front.
    ADD KEY outbox_tenant_status_created (tenant_id, status, created_at),
    -- The same across tenants.
    ADD KEY outbox_status_created (status, created_at),
    -- Latency and throughput over a recent window of completions (no partial indexes here;
    -- rows not yet done sit together under NULL).
    ADD KEY outbox_done (done_at, created_at);

ALTER TABLE events
    ADD KEY events_received_type (received_at, event_type),
    ADD KEY events_tenant_received_type (tenant_id, received_at, event_type);

-- One row per replay request: when, by whom, what it asked for and how many rows it moved.
-- `replayed` grows batch by batch in the same transaction as the rows it counts, so a replay
-- that stops half-way is recorded with what it really did. An audit table: ids are kept as
-- given (binary collation) and never joined on.
CREATE TABLE replays (
    id            VARCHAR(64)  CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,
    requested_at  DATETIME(6)  NOT NULL,
    requested_by  VARCHAR(255) NOT NULL,
    tenant_id     VARCHAR(128),
    event_id      VARCHAR(128),
    filter        JSON         NOT NULL,
    replayed      BIGINT       NOT NULL DEFAULT 0,
    KEY replays_requested (requested_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
