-- Ended grants of each lease (GET …/leases/{name}/history). One row per grant: the fencing
-- token identifies it, so a repeated append is a no-op. The store keeps the newest rows per key
-- and deletes older ones as it appends.
CREATE TABLE IF NOT EXISTS berth_lease_history (
    namespace     TEXT COLLATE "C" NOT NULL,
    name          TEXT COLLATE "C" NOT NULL,
    fencing_token BIGINT NOT NULL,
    holder        TEXT NOT NULL,
    acquired_at   TIMESTAMPTZ NOT NULL,
    ended_at      TIMESTAMPTZ NOT NULL,
    reason        TEXT NOT NULL,
    PRIMARY KEY (namespace, name, fencing_token)
);
