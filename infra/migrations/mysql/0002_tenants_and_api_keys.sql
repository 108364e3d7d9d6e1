-- Tenants and their API keys. A key is shown once when it is made and stored only as the
-- SHA-256 of the whole key: the key holds 256 random bits, so a fast hash is enough (a
-- password KDF protects guessable secrets; nothing here is guessable).
-- No last_used_at column: a write per authenticated request would cost the hot path more
-- than the column is worth.

-- Tenant ids compare byte for byte, as in events (see 0001 for why the NO PAD collation).
SET @fluxgate_id_type = CONCAT(
    'VARCHAR(128) CHARACTER SET utf8mb4 COLLATE ',
    COALESCE(
        (SELECT COLLATION_NAME FROM information_schema.COLLATIONS
         WHERE COLLATION_NAME IN ('utf8mb4_0900_bin', 'utf8mb4_nopad_bin')
         ORDER BY COLLATION_NAME LIMIT 1),
        'utf8mb4_bin'));

SET @fluxgate_ddl = REPLACE('
CREATE TABLE tenants (
    id          ID_TYPE      NOT NULL,
    created_at  DATETIME(6)  NOT NULL,
    PRIMARY KEY (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin', 'ID_TYPE', @fluxgate_id_type);
PREPARE fluxgate_ddl FROM @fluxgate_ddl;
EXECUTE fluxgate_ddl;
DEALLOCATE PREPARE fluxgate_ddl;

SET @fluxgate_ddl = REPLACE('
CREATE TABLE api_keys (
    key_id         VARCHAR(32)  CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    tenant_id      ID_TYPE      NOT NULL,
    name           VARCHAR(255),
    secret_sha256  CHAR(64)     CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    created_at     DATETIME(6)  NOT NULL,
    revoked_at     DATETIME(6),
    PRIMARY KEY (key_id),
    KEY api_keys_tenant (tenant_id, created_at),
    CONSTRAINT api_keys_tenant_fk FOREIGN KEY (tenant_id) REFERENCES tenants (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin', 'ID_TYPE', @fluxgate_id_type);
PREPARE fluxgate_ddl FROM @fluxgate_ddl;
EXECUTE fluxgate_ddl;
DEALLOCATE PREPARE fluxgate_ddl;

SET @fluxgate_id_type = NULL, @fluxgate_ddl = NULL;
