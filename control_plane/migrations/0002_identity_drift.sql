-- depends: 0001_foundation
-- Identity drift: each node keeps the hardware identity an admin last accepted (its
-- system serial and the (GPU UUID, serial) pairs); an agent reporting anything else marks
-- the node drifted, with the evidence, until an admin acknowledges the new identity.

ALTER TABLE node
    -- {"system_serial": ..., "gpus": [{"uuid": ..., "serial": ...}, ...]}, GPUs by UUID.
    ADD COLUMN identity_baseline jsonb,
    ADD COLUMN drift_status      text NOT NULL DEFAULT 'none' CONSTRAINT node_drift_status_valid
                                 CHECK (drift_status IN ('none', 'drifted')),
    ADD COLUMN drift_detected_at timestamptz,
    -- {"before": baseline, "after": reported identity, "differences": [sentences], ...}
    ADD COLUMN drift_evidence    jsonb NOT NULL DEFAULT '{}';

-- Nodes registered before this migration accept what they have now. COLLATE "C" sorts
-- UUIDs by code point, as the application does.
UPDATE node n
SET identity_baseline = jsonb_build_object(
    'system_serial', n.system_serial,
    'gpus', coalesce(
        (SELECT jsonb_agg(jsonb_build_object('uuid', g.uuid, 'serial', g.serial)
                          ORDER BY g.uuid COLLATE "C")
         FROM gpu g WHERE g.node_id = n.id),
        '[]'::jsonb));

-- Every node has a baseline from its first registration on.
ALTER TABLE node ALTER COLUMN identity_baseline SET NOT NULL;

-- A new filter argument changes the function's signature, which CREATE OR REPLACE cannot do.
DROP FUNCTION node_search(text, text, text, text, text, text);

CREATE FUNCTION node_search(
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
            WHERE g.node_id = n.id AND strpos(lower(g.model), lower(p_gpu_model)) > 0))
$$;
