-- Brings a berth_leases table created by the original implementation (Berth 0.4) up to this
-- schema: the record version column, 64-bit fencing tokens, byte-order keys. On a table created
-- by 0001 every statement is a no-op.
ALTER TABLE berth_leases ADD COLUMN IF NOT EXISTS version BIGINT NOT NULL DEFAULT 1;
ALTER TABLE berth_leases ALTER COLUMN fencing_token TYPE BIGINT;
ALTER TABLE berth_leases ALTER COLUMN namespace TYPE TEXT COLLATE "C";
ALTER TABLE berth_leases ALTER COLUMN name TYPE TEXT COLLATE "C";
