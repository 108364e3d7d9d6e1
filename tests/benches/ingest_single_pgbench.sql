-- The raw SQL side of `scripts/bench.sh ingest`, one event per transaction: the rows fluxgate
-- writes for one event (the event and its PENDING outbox row), as INSERT + INSERT + COMMIT.
-- The payload and hash have the size of the wrk side's.
\set id random(1, 9223372036854775806)
\set t random(0, 7)
BEGIN;
INSERT INTO events (tenant_id, event_id, event_type, event_ts, received_at, source, payload,
                    payload_sha256, metadata, correlation_id)
VALUES ('tenant-' || :t, 'p' || :id, 'page.viewed', now(), now(), NULL,
        '{"ms":123.4,"path":"/pricing","tags":["a","b"],"userId":1234}',
        '5f2b0c1f8e3a4d6b7c9e0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f', NULL, NULL);
INSERT INTO outbox (tenant_id, event_id, status, attempts, next_attempt_at, created_at, updated_at)
VALUES ('tenant-' || :t, 'p' || :id, 'PENDING', 0, now(), now(), now());
END;
