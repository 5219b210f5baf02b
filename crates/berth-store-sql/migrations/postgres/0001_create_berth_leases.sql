-- Lease records (reference §3.2). Keys use the "C" collation so that ORDER BY and the
-- primary-key index agree with byte order, which list pagination relies on.
CREATE TABLE IF NOT EXISTS berth_leases (
    namespace     TEXT COLLATE "C" NOT NULL,
    name          TEXT COLLATE "C" NOT NULL,
    holder        TEXT NOT NULL DEFAULT '',
    ttl_ms        BIGINT NOT NULL,
    acquired_at   TIMESTAMPTZ NOT NULL,
    renewed_at    TIMESTAMPTZ NOT NULL,
    fencing_token BIGINT NOT NULL,
    version       BIGINT NOT NULL DEFAULT 1,
    PRIMARY KEY (namespace, name)
);
