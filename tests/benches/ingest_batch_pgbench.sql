-- The raw SQL side of `scripts/bench.sh ingest`, :batch events per transaction: the event rows
-- and their PENDING outbox rows, each table by one INSERT … SELECT of :batch generated rows.
\set id random(1, 9223372036854775806)
\set t random(0, 7)
BEGIN;
INSERT INTO events (tenant_id, event_id, event_type, event_ts, received_at, source, payload,
                    payload_sha256, metadata, correlation_id)
SELECT 'tenant-' || :t, 'p' || :id || '-' || g, 'page.viewed', now(), now(), NULL,
       jsonb_build_object('ms', 123.4, 'path', '/pricing', 'tags', jsonb_build_array('a', 'b'),
                          'userId', g),
       '5f2b0c1f8e3a4d6b7c9e0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f', NULL, NULL
FROM generate_series(1, :batch) AS g;
INSERT INTO outbox (tenant_id, event_id, status, attempts, next_attempt_at, created_at, updated_at)
SELECT 'tenant-' || :t, 'p' || :id || '-' || g, 'PENDING', 0, now(), now(), now()
FROM generate_series(1, :batch) AS g;
END;
