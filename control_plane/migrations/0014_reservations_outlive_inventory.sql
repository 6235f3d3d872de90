-- depends: 0013_audit_app_role_read_only
-- A booked GPU outlives its node's inventory. Until now a GPU that a report left out was
-- deleted, and its reservation with it (ON DELETE CASCADE): when the node reported the GPU
-- again it came back as a new, free row and a second workload could be admitted on a GPU
-- the first one still held. Now a GPU that holds a reservation is never deleted:
--
-- * a report that leaves it out stamps `missing_since` (the first report without it) and
--   keeps the row, so the reservation and the workload's claim stay where they were;
--   placement, capacity counts, metrics and the fleet snapshot treat a missing GPU as not
--   there; a report that names it again clears the stamp, and the GPU is STILL booked by
--   the workload that held it;
-- * GPUs without a reservation are deleted when a report leaves them out, as before, and a
--   missing GPU is deleted when its workload is released or expires;
-- * the reservation's foreign key refuses the deletion of a booked GPU (RESTRICT instead
--   of CASCADE), so no path can silently drop a reservation again.
--
-- Only a booked GPU is ever missing; that spans two tables, so the application keeps it
-- (inventory's `_apply_gpus`, scheduling's release and lease sweep) rather than a CHECK.

ALTER TABLE gpu ADD COLUMN missing_since timestamptz;

-- A missing GPU keeps its old index, which the GPU that took its slot may now report:
-- the index is unique among the GPUs that are there only. A partial unique index cannot
-- be deferred (and the upserts of one report may swap two indexes midway), so this is an
-- exclusion constraint with the same name, deferred to commit like the old one.
ALTER TABLE gpu DROP CONSTRAINT gpu_node_index_key;
ALTER TABLE gpu ADD CONSTRAINT gpu_node_index_key
    EXCLUDE USING btree (node_id WITH =, index WITH =) WHERE (missing_since IS NULL)
    DEFERRABLE INITIALLY DEFERRED;

ALTER TABLE gpu_reservation DROP CONSTRAINT gpu_reservation_gpu_fkey;
ALTER TABLE gpu_reservation ADD CONSTRAINT gpu_reservation_gpu_fkey
    FOREIGN KEY (gpu_uuid) REFERENCES gpu (uuid) ON DELETE RESTRICT;

-- The fleet snapshot leaves missing GPUs out, so a GPU going missing or coming back moves
-- the fleet generation (0007), like a GPU appearing or disappearing.
DROP TRIGGER gpu_fleet_generation_update ON gpu;
CREATE CONSTRAINT TRIGGER gpu_fleet_generation_update
AFTER UPDATE ON gpu DEFERRABLE INITIALLY DEFERRED
FOR EACH ROW
WHEN (OLD.uuid IS DISTINCT FROM NEW.uuid
      OR OLD.node_id IS DISTINCT FROM NEW.node_id
      OR OLD.index IS DISTINCT FROM NEW.index
      OR OLD.model IS DISTINCT FROM NEW.model
      OR OLD.memory_total_bytes IS DISTINCT FROM NEW.memory_total_bytes
      OR OLD.mig_mode IS DISTINCT FROM NEW.mig_mode
      OR OLD.missing_since IS DISTINCT FROM NEW.missing_since)
EXECUTE FUNCTION bump_fleet_generation();

-- Filtering nodes by GPU model looks at the GPUs that are there (same signature as 0002).
CREATE OR REPLACE FUNCTION node_search(
    p_zone text, p_site text, p_origin_country text, p_status text, p_gpu_model text,
    p_provenance_status text, p_drift_status text
) RETURNS SETOF node
LANGUAGE sql STABLE AS $$
    WITH RECURSIVE zone_scope(slug) AS (
        SELECT slug FROM residency_zone WHERE slug = p_zone
        UNION
        SELECT z.slug FROM residency_zone z JOIN zone_scope s ON z.parent_slug = s.slug
    )
    SELECT n.* FROM node n
    WHERE (p_zone IS NULL OR n.zone_slug IN (SELECT slug FROM zone_scope))
      AND (p_site IS NULL OR n.site_slug = p_site)
      AND (p_origin_country IS NULL OR n.origin_country = p_origin_country)
      AND (p_status IS NULL OR n.status = p_status)
      AND (p_provenance_status IS NULL OR n.provenance_status = p_provenance_status)
      AND (p_drift_status IS NULL OR n.drift_status = p_drift_status)
      AND (p_gpu_model IS NULL OR EXISTS (
            SELECT 1 FROM gpu g
            WHERE g.node_id = n.id AND g.missing_since IS NULL
              AND strpos(lower(g.model), lower(p_gpu_model)) > 0))
$$;
