-- depends: 0006_workloads
-- A counter that goes up whenever something the policy engine and placement read about
-- the fleet changes: a node's zone, status, drift, provenance, origins, labels or
-- hostname; a GPU appearing, disappearing or changing kind; the zone tree. API processes
-- keep one fleet snapshot (node views and their index) per generation, instead of
-- reloading 5,000 nodes and 40,000 GPUs for every admission, and rebuild it when the
-- generation they read is newer. Heartbeats that change only telemetry leave it alone.
--
-- The bump is a deferred constraint trigger: it runs at commit, after everything else
-- the transaction locked, so taking the counter's row lock last cannot deadlock with the
-- node and GPU row locks, and it happens at most once per transaction (bumped_by).
-- Readers see the new generation only together with the change it stands for.

CREATE TABLE fleet_generation (
    singleton  boolean PRIMARY KEY DEFAULT true CONSTRAINT fleet_generation_singleton
               CHECK (singleton),
    generation bigint NOT NULL,
    bumped_by  xid8
);

INSERT INTO fleet_generation (singleton, generation) VALUES (true, 1);

CREATE FUNCTION bump_fleet_generation() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
BEGIN
    UPDATE fleet_generation
    SET generation = generation + 1, bumped_by = pg_current_xact_id()
    WHERE bumped_by IS DISTINCT FROM pg_current_xact_id();
    RETURN NULL;
END
$$;

CREATE CONSTRAINT TRIGGER node_fleet_generation_rows
AFTER INSERT OR DELETE ON node DEFERRABLE INITIALLY DEFERRED
FOR EACH ROW EXECUTE FUNCTION bump_fleet_generation();

CREATE CONSTRAINT TRIGGER node_fleet_generation_update
AFTER UPDATE ON node DEFERRABLE INITIALLY DEFERRED
FOR EACH ROW
WHEN (OLD.hostname IS DISTINCT FROM NEW.hostname
      OR OLD.zone_slug IS DISTINCT FROM NEW.zone_slug
      OR OLD.status IS DISTINCT FROM NEW.status
      OR OLD.drift_status IS DISTINCT FROM NEW.drift_status
      OR OLD.origin_country IS DISTINCT FROM NEW.origin_country
      OR OLD.component_origins IS DISTINCT FROM NEW.component_origins
      OR OLD.provenance_status IS DISTINCT FROM NEW.provenance_status
      OR OLD.labels IS DISTINCT FROM NEW.labels)
EXECUTE FUNCTION bump_fleet_generation();

CREATE CONSTRAINT TRIGGER gpu_fleet_generation_rows
AFTER INSERT OR DELETE ON gpu DEFERRABLE INITIALLY DEFERRED
FOR EACH ROW EXECUTE FUNCTION bump_fleet_generation();

CREATE CONSTRAINT TRIGGER gpu_fleet_generation_update
AFTER UPDATE ON gpu DEFERRABLE INITIALLY DEFERRED
FOR EACH ROW
WHEN (OLD.uuid IS DISTINCT FROM NEW.uuid
      OR OLD.node_id IS DISTINCT FROM NEW.node_id
      OR OLD.index IS DISTINCT FROM NEW.index
      OR OLD.model IS DISTINCT FROM NEW.model
      OR OLD.memory_total_bytes IS DISTINCT FROM NEW.memory_total_bytes
      OR OLD.mig_mode IS DISTINCT FROM NEW.mig_mode)
EXECUTE FUNCTION bump_fleet_generation();

CREATE CONSTRAINT TRIGGER residency_zone_fleet_generation_rows
AFTER INSERT OR DELETE ON residency_zone DEFERRABLE INITIALLY DEFERRED
FOR EACH ROW EXECUTE FUNCTION bump_fleet_generation();

CREATE CONSTRAINT TRIGGER residency_zone_fleet_generation_update
AFTER UPDATE ON residency_zone DEFERRABLE INITIALLY DEFERRED
FOR EACH ROW
WHEN (OLD.slug IS DISTINCT FROM NEW.slug
      OR OLD.parent_slug IS DISTINCT FROM NEW.parent_slug
      OR OLD.country IS DISTINCT FROM NEW.country)
EXECUTE FUNCTION bump_fleet_generation();

GRANT SELECT ON fleet_generation TO sovereign_app;
