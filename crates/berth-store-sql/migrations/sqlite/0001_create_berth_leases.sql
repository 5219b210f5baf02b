-- Lease records (reference §3.2). Times are RFC 3339 text in UTC with six fractional digits;
-- the default BINARY collation orders keys byte-wise.
CREATE TABLE IF NOT EXISTS berth_leases (
    namespace     TEXT NOT NULL,
    name          TEXT NOT NULL,
    holder        TEXT NOT NULL DEFAULT '',
    ttl_ms        INTEGER NOT NULL,
    acquired_at   TEXT NOT NULL,
    renewed_at    TEXT NOT NULL,
    fencing_token INTEGER NOT NULL,
    version       INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (namespace, name)
) WITHOUT ROWID;
