-- name: zones
SELECT slug, parent_slug, country FROM residency_zone;

-- name: fleet_generation
-- Goes up with every committed change to what ``fleet`` returns (migration 0007).
SELECT generation FROM fleet_generation;

-- name: fleet
-- Every node placement could consider, with ALL its GPUs that are there (not a booked GPU
-- its node stopped reporting, migration 0014), as the policy engine wants them; which
-- GPUs are booked is read separately (scheduling's ``reserved_gpu_uuids``),
-- because that changes with every admission while this changes rarely. Decommissioned
-- nodes are left out: they are not part of the fleet any more and would only clutter the
-- reasons.
SELECT n.id, n.hostname, n.zone_slug AS zone, n.status, n.drift_status, n.origin_country,
       n.component_origins, n.provenance_status, n.labels,
       coalesce(
           (SELECT jsonb_agg(jsonb_build_object('uuid', g.uuid, 'model', g.model,
                                                'memory_total_bytes', g.memory_total_bytes,
                                                'mig_mode', g.mig_mode,
                                                -- The bookable MIG slices (named, there)
                                                -- of a MIG-enabled GPU as [uuid, profile]
                                                -- pairs, looked up only for such GPUs
                                                -- (migration 0022).
                                                'mig_slices',
                                                CASE WHEN lower(btrim(g.mig_mode)) = 'enabled'
                                                THEN (SELECT jsonb_agg(
                                                                 jsonb_build_array(d.uuid, d.profile)
                                                                 ORDER BY d.index, d.id)
                                                      FROM mig_device d
                                                      WHERE d.gpu_uuid = g.uuid
                                                        AND d.missing_since IS NULL
                                                        AND d.uuid IS NOT NULL
                                                        AND d.profile IS NOT NULL)
                                                END)
                             ORDER BY g.index)
            FROM gpu g
            WHERE g.node_id = n.id AND g.missing_since IS NULL),
           '[]'::jsonb) AS gpus
FROM node n
WHERE n.status <> 'decommissioned'
ORDER BY n.hostname, n.id;

-- name: kubernetes_node_names
-- The Kubernetes node name each node's agent reported (migration 0024), for the nodes the
-- fleet snapshot holds (not decommissioned). One small indexed read per label sync or
-- pod sweep.
SELECT id::text AS node_id, kubernetes_node_name
FROM node
WHERE kubernetes_node_name IS NOT NULL AND status <> 'decommissioned';
