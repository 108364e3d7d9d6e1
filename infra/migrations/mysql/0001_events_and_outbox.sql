-- Events as accepted, one row per (tenant, event id), and the transactional outbox beside them.
-- MySQL 8 / MariaDB >= 10.6 (older servers work too, claiming without SKIP LOCKED).
-- Timestamps are DATETIME(6) in UTC, always bound by the application (never NOW()), so the
-- session time zone cannot shift them.

-- Ids must compare byte for byte like in Postgres. utf8mb4_bin is a PAD SPACE collation: it
-- treats 'a' and 'a ' as the same key, and event ids may end in spaces. So the id columns
-- take the server's NO PAD binary collation (MySQL >= 8.0.17: utf8mb4_0900_bin, MariaDB:
-- utf8mb4_nopad_bin); only servers that have neither fall back to utf8mb4_bin. A collation
-- cannot be a variable in DDL, hence the two prepared CREATE TABLE statements below, in
-- which ID_TYPE is the only substitution.
SET @fluxgate_id_type = CONCAT(
    'VARCHAR(128) CHARACTER SET utf8mb4 COLLATE ',
    COALESCE(
        (SELECT COLLATION_NAME FROM information_schema.COLLATIONS
         WHERE COLLATION_NAME IN ('utf8mb4_0900_bin', 'utf8mb4_nopad_bin')
         ORDER BY COLLATION_NAME LIMIT 1),
        'utf8mb4_bin'));

SET @fluxgate_ddl = REPLACE('
CREATE TABLE events (
    tenant_id       ID_TYPE        NOT NULL,
    event_id        ID_TYPE        NOT NULL,
    event_type      VARCHAR(255)   NOT NULL,
    event_ts        DATETIME(6)    NOT NULL,
    received_at     DATETIME(6)    NOT NULL,
    source          VARCHAR(255),
    payload         JSON           NOT NULL,
    payload_sha256  CHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    metadata        JSON,
    correlation_id  VARCHAR(255),
    PRIMARY KEY (tenant_id, event_id),
    KEY events_tenant_received (tenant_id, received_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin', 'ID_TYPE', @fluxgate_id_type);
PREPARE fluxgate_ddl FROM @fluxgate_ddl;
EXECUTE fluxgate_ddl;
DEALLOCATE PREPARE fluxgate_ddl;

SET @fluxgate_ddl = REPLACE('
CREATE TABLE outbox (
    tenant_id        ID_TYPE      NOT NULL,
    event_id         ID_TYPE      NOT NULL,
    status           VARCHAR(16)  NOT NULL,
    attempts         INT          NOT NULL DEFAULT 0,
    -- For a claimed row this is its lease expiry: it is not due again before.
    next_attempt_at  DATETIME(6)  NOT NULL,
    last_error       TEXT,
    lease_owner      VARCHAR(255),
    lease_expires_at DATETIME(6),
    published_at     DATETIME(6),
    done_at          DATETIME(6),
    created_at       DATETIME(6)  NOT NULL,
    updated_at       DATETIME(6)  NOT NULL,
    PRIMARY KEY (tenant_id, event_id),
    -- No partial indexes here: the claim reads (status, next_attempt_at) from the front.
    KEY outbox_claim (status, next_attempt_at),
    -- Status counts, failed-event listings and retention purges.
    KEY outbox_status_updated (status, updated_at),
    CONSTRAINT outbox_event FOREIGN KEY (tenant_id, event_id)
        REFERENCES events (tenant_id, event_id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin', 'ID_TYPE', @fluxgate_id_type);
PREPARE fluxgate_ddl FROM @fluxgate_ddl;
EXECUTE fluxgate_ddl;
DEALLOCATE PREPARE fluxgate_ddl;

-- Outside the prepared text so the quotes stay plain. Enforced by MySQL >= 8.0.16 and MariaDB;
-- the binary collation of the table makes it case-sensitive, as in Postgres.
ALTER TABLE outbox ADD CONSTRAINT outbox_status
    CHECK (status IN ('PENDING', 'PUBLISHED', 'DONE', 'FAILED', 'DEAD'));

SET @fluxgate_id_type = NULL, @fluxgate_ddl = NULL;
