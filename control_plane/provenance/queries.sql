-- name: lock_nodes_for_bom
-- Every node a BOM could name, locked in id order so concurrent imports cannot deadlock.
SELECT n.*, (SELECT count(*) FROM gpu g WHERE g.node_id = n.id AND g.missing_since IS NULL)
       AS gpu_count, node_mig_slices(n.id) AS mig_slices
FROM node n
WHERE n.system_serial = ANY(%(system_serials)s) OR n.asset_tag = ANY(%(asset_tags)s)
ORDER BY n.id
FOR UPDATE OF n;

-- name: gpu_identities
-- What the agents read (in their latest reports: a booked GPU left out of one is kept, as
-- missing, but was not read); null where a GPU did not report its serial.
SELECT node_id, uuid, serial FROM gpu
WHERE node_id = ANY(%(node_ids)s) AND missing_since IS NULL
ORDER BY node_id, index;

-- name: record_provenance_check
UPDATE node
SET origin_country = %(origin_country)s, component_origins = %(component_origins)s,
    provenance_status = %(provenance_status)s, provenance_evidence = %(provenance_evidence)s,
    updated_at = now()
WHERE id = %(id)s
RETURNING *,
          (SELECT count(*) FROM gpu g WHERE g.node_id = node.id AND g.missing_since IS NULL)
          AS gpu_count, node_mig_slices(node.id) AS mig_slices;
