-- Replay records and the indexes the admin API's aggregations read (replay and metrics).
-- Every range the admin API takes ("from", "to") is on the time an event was received, which
-- is the outbox row's created_at.

-- How often an event was replayed, and when last: a replayed event shows its history.
ALTER TABLE outbox ADD COLUMN replay_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE outbox ADD COLUMN last_replayed_at TIMESTAMPTZ;

-- One row per replay request: when, by whom, what it asked for and how many rows it moved.
-- `replayed` grows batch by batch in the same transaction as the rows it counts, so a replay
-- that stops half-way is recorded with what it really did.
CREATE TABLE replays (
    id            TEXT        PRIMARY KEY,
    requested_at  TIMESTAMPTZ NOT NULL,
    requested_by  TEXT        NOT NULL,
    tenant_id     TEXT,
    event_id      TEXT,
    filter        JSONB       NOT NULL,
    replayed      BIGINT      NOT NULL DEFAULT 0
);
CREATE INDEX replays_requested ON replays (requested_at);

-- Per tenant: counts by status in a range, lag (oldest PENDING), failed listings, replay by
-- filter. All read (tenant_id, status, created_at) from the front.
CREATE INDEX outbox_tenant_status_created ON outbox (tenant_id, status, created_at);
-- The same across tenants.
CREATE INDEX outbox_status_created ON outbox (status, created_at);
-- Latency and throughput over a recent window of completions: a range on done_at that also
-- carries created_at, so neither needs the table.
CREATE INDEX outbox_done ON outbox (done_at, created_at) WHERE done_at IS NOT NULL;
-- Counts by event type in a range of receive times, per tenant and across tenants.
CREATE INDEX events_received_type ON events (received_at, event_type);
CREATE INDEX events_tenant_received_type ON events (tenant_id, received_at, event_type);
