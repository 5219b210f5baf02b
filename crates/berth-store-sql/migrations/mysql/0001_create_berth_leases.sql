-- Lease records (reference §3.2). utf8mb4_bin compares code points, which for UTF-8 is byte
-- order, so ORDER BY and the primary-key index agree with list pagination.
CREATE TABLE IF NOT EXISTS berth_leases (
    namespace     VARCHAR(253) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    name          VARCHAR(253) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    holder        VARCHAR(253) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL DEFAULT '',
    ttl_ms        BIGINT NOT NULL,
    acquired_at   DATETIME(6) NOT NULL,
    renewed_at    DATETIME(6) NOT NULL,
    fencing_token BIGINT NOT NULL,
    version       BIGINT NOT NULL DEFAULT 1,
    PRIMARY KEY (namespace, name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
