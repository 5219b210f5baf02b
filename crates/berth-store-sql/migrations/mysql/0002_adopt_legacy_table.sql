-- Brings a berth_leases table created by the original implementation (Berth 0.4) up to this
-- schema: the record version column (an existing one is left alone), 64-bit fencing tokens,
-- byte-order keys, microsecond times.
ALTER TABLE berth_leases ADD COLUMN version BIGINT NOT NULL DEFAULT 1;
ALTER TABLE berth_leases
    MODIFY namespace     VARCHAR(253) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    MODIFY name          VARCHAR(253) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    MODIFY holder        VARCHAR(253) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL DEFAULT '',
    MODIFY acquired_at   DATETIME(6) NOT NULL,
    MODIFY renewed_at    DATETIME(6) NOT NULL,
    MODIFY fencing_token BIGINT NOT NULL;
