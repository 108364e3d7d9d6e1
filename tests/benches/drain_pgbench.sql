-- One round of the raw SQL drain baseline (tests/benches/drain.rs), run by pgbench with one
-- client: the outbox transitions fluxgate's drain and worker make, with the same row writes
-- (shared/src/store/postgres.rs, rows.rs, sql_store.rs), for :batch events at a time and
-- without a queue or a warehouse between them.
SELECT clock_timestamp() AS now, clock_timestamp() + interval '2 minutes' AS expires \gset

-- Claim (postgres.rs LEASE_DUE).
WITH due AS (
    SELECT tenant_id, event_id FROM outbox
    WHERE status = 'PENDING' AND next_attempt_at <= ':now'
    ORDER BY next_attempt_at
    LIMIT :batch
    FOR UPDATE SKIP LOCKED
)
UPDATE outbox o
SET lease_owner = 'pgbench', lease_expires_at = ':expires', next_attempt_at = ':expires', updated_at = ':now'
FROM due
WHERE o.tenant_id = due.tenant_id AND o.event_id = due.event_id;

-- Read the claimed events (rows.rs select_claimed).
SELECT e.tenant_id, e.event_id, e.event_type, e.event_ts, e.received_at, e.source, e.payload,
       e.payload_sha256, e.metadata, e.correlation_id, o.attempts
FROM outbox o JOIN events e ON e.tenant_id = o.tenant_id AND e.event_id = o.event_id
WHERE o.status = 'PENDING' AND o.lease_owner = 'pgbench' AND o.lease_expires_at = ':expires'
  AND o.next_attempt_at = ':expires'
ORDER BY o.created_at, o.tenant_id, o.event_id;

-- Published (rows.rs mark_published; the same rows, found by their lease instead of keys).
UPDATE outbox
SET status = 'PUBLISHED', published_at = ':now', updated_at = ':now', lease_owner = NULL, lease_expires_at = NULL
WHERE status = 'PENDING' AND lease_owner = 'pgbench' AND next_attempt_at = ':expires';

-- The worker reads their statuses (rows.rs select_statuses; found by (status, updated_at)).
SELECT tenant_id, event_id, status FROM outbox WHERE status = 'PUBLISHED' AND updated_at = ':now';

-- And records them DONE in a transaction (sql_store.rs record_outcomes, rows.rs mark_done).
BEGIN;
UPDATE outbox
SET status = 'DONE', done_at = clock_timestamp(), updated_at = clock_timestamp(), last_error = NULL,
    lease_owner = NULL, lease_expires_at = NULL
WHERE status = 'PUBLISHED' AND updated_at = ':now';
COMMIT;
