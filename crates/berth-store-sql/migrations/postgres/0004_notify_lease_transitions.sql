-- Wake the watchers of every replica when a lease changes hands: a NOTIFY on channel
-- `berth_leases` with payload `namespace/name` for every new row and for every update that
-- changes the holder or the fencing token (grants, takeovers, releases). Renewals change
-- neither and send nothing: they are the hot path, and watchers that ask for them learn of them
-- by polling. A notification is sent when the writing transaction commits.
CREATE OR REPLACE FUNCTION berth_leases_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('berth_leases', NEW.namespace || '/' || NEW.name);
    RETURN NULL;
END
$$;
DROP TRIGGER IF EXISTS berth_leases_notify_insert ON berth_leases;
CREATE TRIGGER berth_leases_notify_insert AFTER INSERT ON berth_leases
    FOR EACH ROW EXECUTE FUNCTION berth_leases_notify();
DROP TRIGGER IF EXISTS berth_leases_notify_update ON berth_leases;
CREATE TRIGGER berth_leases_notify_update AFTER UPDATE ON berth_leases
    FOR EACH ROW
    WHEN (OLD.holder IS DISTINCT FROM NEW.holder OR OLD.fencing_token IS DISTINCT FROM NEW.fencing_token)
    EXECUTE FUNCTION berth_leases_notify();
