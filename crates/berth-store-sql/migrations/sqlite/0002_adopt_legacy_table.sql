-- Brings a berth_leases table created by the original implementation (Berth 0.4) up to this
-- schema: the record version column (an existing one is left alone). SQLite integers are
-- already 64-bit and its times are RFC 3339 text in both implementations.
ALTER TABLE berth_leases ADD COLUMN version INTEGER NOT NULL DEFAULT 1;
