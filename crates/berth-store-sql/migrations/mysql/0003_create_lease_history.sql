-- Ended grants of each lease (GET …/leases/{name}/history). One row per grant: the fencing
-- token identifies it, so a repeated append is a no-op. The store keeps the newest rows per key
-- and deletes older ones as it appends.
CREATE TABLE IF NOT EXISTS berth_lease_history (
    namespace     VARCHAR(253) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    name          VARCHAR(253) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    fencing_token BIGINT NOT NULL,
    holder        VARCHAR(1024) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    acquired_at   DATETIME(6) NOT NULL,
    ended_at      DATETIME(6) NOT NULL,
    reason        VARCHAR(16) NOT NULL,
    PRIMARY KEY (namespace, name, fencing_token)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
