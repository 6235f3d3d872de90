-- name: insert_zone
INSERT INTO residency_zone (slug, name, country, parent_slug, description)
VALUES (%(slug)s, %(name)s, %(country)s, %(parent)s, %(description)s)
RETURNING slug, name, country, parent_slug AS parent, description, created_at, updated_at;

-- name: list_zones
SELECT slug, name, country, parent_slug AS parent, description, created_at, updated_at
FROM residency_zone ORDER BY slug;

-- name: get_zone
SELECT slug, name, country, parent_slug AS parent, description, created_at, updated_at
FROM residency_zone WHERE slug = %(slug)s;

-- name: lock_zone
SELECT slug, name, country, parent_slug AS parent, description, created_at, updated_at
FROM residency_zone WHERE slug = %(slug)s FOR UPDATE;

-- name: share_zone
-- A parent being built on: its country cannot change until the child is stored.
SELECT slug, name, country, parent_slug AS parent, description, created_at, updated_at
FROM residency_zone WHERE slug = %(slug)s FOR SHARE;

-- name: zone_children
SELECT slug, name, country, parent_slug AS parent, description, created_at, updated_at
FROM residency_zone WHERE parent_slug = %(slug)s ORDER BY slug;

-- name: zone_ancestors
-- The zone itself and every zone above it, nearest first.
WITH RECURSIVE up(slug, parent_slug, depth) AS (
    SELECT slug, parent_slug, 0 FROM residency_zone WHERE slug = %(slug)s
    UNION ALL
    SELECT z.slug, z.parent_slug, up.depth + 1
    FROM residency_zone z JOIN up ON z.slug = up.parent_slug
    WHERE up.depth < 64
)
SELECT slug FROM up ORDER BY depth;

-- name: update_zone
UPDATE residency_zone
SET name = %(name)s, country = %(country)s, parent_slug = %(parent)s,
    description = %(description)s, updated_at = now()
WHERE slug = %(slug)s
RETURNING slug, name, country, parent_slug AS parent, description, created_at, updated_at;

-- name: delete_zone
DELETE FROM residency_zone WHERE slug = %(slug)s RETURNING slug;

-- name: insert_site
INSERT INTO site (slug, name, zone_slug, description)
VALUES (%(slug)s, %(name)s, %(zone)s, %(description)s)
RETURNING slug, name, zone_slug AS zone, description, created_at;

-- name: list_sites
SELECT slug, name, zone_slug AS zone, description, created_at FROM site ORDER BY slug;

-- name: get_site
SELECT slug, name, zone_slug AS zone, description, created_at FROM site WHERE slug = %(slug)s;

-- name: search_nodes
SELECT n.*, (SELECT count(*) FROM gpu g WHERE g.node_id = n.id AND g.missing_since IS NULL)
       AS gpu_count, node_mig_slices(n.id) AS mig_slices
FROM node_search(%(zone)s, %(site)s, %(origin_country)s, %(status)s, %(gpu_model)s,
                 %(provenance_status)s, %(drift_status)s) n
ORDER BY n.hostname, n.id
LIMIT %(limit)s OFFSET %(offset)s;

-- name: count_nodes
SELECT count(*) AS total
FROM node_search(%(zone)s, %(site)s, %(origin_country)s, %(status)s, %(gpu_model)s,
                 %(provenance_status)s, %(drift_status)s);

-- name: get_node
SELECT n.*, (SELECT count(*) FROM gpu g WHERE g.node_id = n.id AND g.missing_since IS NULL)
       AS gpu_count, node_mig_slices(n.id) AS mig_slices
FROM node n WHERE n.id = %(id)s;

-- name: find_nodes_by_hostname
SELECT id FROM node WHERE hostname = %(hostname)s ORDER BY registered_at;

-- name: lock_node
SELECT n.*, (SELECT count(*) FROM gpu g WHERE g.node_id = n.id AND g.missing_since IS NULL)
       AS gpu_count, node_mig_slices(n.id) AS mig_slices
FROM node n WHERE n.id = %(id)s FOR UPDATE;

-- name: lock_node_by_machine_id
SELECT n.*, (SELECT count(*) FROM gpu g WHERE g.node_id = n.id AND g.missing_since IS NULL)
       AS gpu_count, node_mig_slices(n.id) AS mig_slices
FROM node n WHERE n.machine_id = %(machine_id)s FOR UPDATE;

-- name: insert_node
-- A node whose location nobody confirmed waits planned (the table's CHECK refuses it active).
INSERT INTO node (hostname, machine_id, site_slug, zone_slug, labels, last_heartbeat_at,
                  agent_version, os_name, kernel_version, cpu_model, cpu_count, memory_bytes,
                  system_manufacturer, system_model, system_serial, board_vendor, board_name,
                  asset_tag, origin_country, component_origins, provenance_status,
                  provenance_evidence, inventory_hash, identity_baseline, status,
                  location_confirmed_at, location_confirmed_by, location_confirmed_via,
                  kubernetes_node_name)
VALUES (%(hostname)s, %(machine_id)s, %(site)s, %(zone)s, %(labels)s, now(),
        %(agent_version)s, %(os_name)s, %(kernel_version)s, %(cpu_model)s, %(cpu_count)s,
        %(memory_bytes)s, %(system_manufacturer)s, %(system_model)s, %(system_serial)s,
        %(board_vendor)s, %(board_name)s, %(asset_tag)s, %(origin_country)s,
        %(component_origins)s, %(provenance_status)s, %(provenance_evidence)s,
        %(inventory_hash)s, %(identity_baseline)s,
        CASE WHEN %(confirmed_via)s::text IS NULL THEN 'planned' ELSE 'active' END,
        CASE WHEN %(confirmed_via)s::text IS NULL THEN NULL ELSE now() END,
        %(confirmed_by)s, %(confirmed_via)s, %(kubernetes_node_name)s)
RETURNING id;

-- name: update_host_facts
UPDATE node
SET hostname = %(hostname)s, agent_version = %(agent_version)s, os_name = %(os_name)s,
    kernel_version = %(kernel_version)s, cpu_model = %(cpu_model)s,
    cpu_count = %(cpu_count)s, memory_bytes = %(memory_bytes)s,
    system_manufacturer = %(system_manufacturer)s, system_model = %(system_model)s,
    system_serial = %(system_serial)s, board_vendor = %(board_vendor)s,
    board_name = %(board_name)s, asset_tag = coalesce(asset_tag, %(asset_tag)s),
    inventory_hash = %(inventory_hash)s, updated_at = now()
WHERE id = %(id)s;

-- name: refresh_registration
-- A re-registered agent starts a new credential and a new heartbeat sequence; the
-- registration itself is a sign of life (but a drifted node stays out of placement, and
-- one whose location nobody confirmed keeps waiting). The Kubernetes node name is what
-- the agent reports now (a node moved to another cluster node name is matched by it).
UPDATE node
SET last_heartbeat_seq = 0, last_heartbeat_at = now(),
    kubernetes_node_name = %(kubernetes_node_name)s,
    status = CASE WHEN status <> 'offline' THEN status
                  WHEN drift_status = 'drifted' THEN 'quarantined'
                  WHEN location_confirmed_at IS NULL THEN 'planned'
                  ELSE 'active' END
WHERE id = %(id)s;

-- name: update_node_admin
UPDATE node
SET zone_slug = %(zone)s, site_slug = %(site)s, status = %(status)s, labels = %(labels)s,
    origin_country = %(origin_country)s, component_origins = %(component_origins)s,
    asset_tag = %(asset_tag)s, provenance_status = %(provenance_status)s,
    provenance_evidence = %(provenance_evidence)s, updated_at = now(),
    -- An admin who sets the zone confirms the node's location.
    location_confirmed_at = CASE WHEN %(confirmed_by)s::text IS NULL THEN location_confirmed_at
                                 ELSE now() END,
    location_confirmed_by = coalesce(%(confirmed_by)s, location_confirmed_by),
    location_confirmed_via = CASE WHEN %(confirmed_by)s::text IS NULL
                                  THEN location_confirmed_via ELSE 'admin' END
WHERE id = %(id)s;

-- name: record_heartbeat
-- An offline node is back; a drifted one comes back quarantined, not eligible for placement,
-- and one whose location nobody confirmed comes back planned.
UPDATE node
SET last_heartbeat_at = now(), last_heartbeat_seq = %(seq)s,
    heartbeats_received = heartbeats_received + 1,
    status = CASE WHEN status <> 'offline' THEN status
                  WHEN drift_status = 'drifted' THEN 'quarantined'
                  WHEN location_confirmed_at IS NULL THEN 'planned'
                  ELSE 'active' END
WHERE id = %(id)s
RETURNING status;

-- name: mark_drifted
-- Quarantine: only active nodes are eligible for placement.
UPDATE node
SET drift_status = 'drifted', drift_detected_at = now(), drift_evidence = %(drift_evidence)s,
    status = 'quarantined', updated_at = now()
WHERE id = %(id)s;

-- name: acknowledge_drift
-- Ends the quarantine the drift caused; a status an admin set since then is kept. A node
-- whose location nobody confirmed goes back to waiting (planned), not active.
UPDATE node
SET identity_baseline = %(identity_baseline)s, drift_status = 'none', drift_detected_at = NULL,
    drift_evidence = '{}',
    status = CASE WHEN status <> 'quarantined' THEN status
                  WHEN location_confirmed_at IS NULL THEN 'planned'
                  ELSE 'active' END,
    updated_at = now()
WHERE id = %(id)s;

-- name: set_provenance_status
-- Only the verdict and its evidence: origins stay as declared or filled from a BOM.
UPDATE node
SET provenance_status = %(provenance_status)s, provenance_evidence = %(provenance_evidence)s,
    updated_at = now()
WHERE id = %(id)s;

-- name: mark_stale_nodes_offline
-- SKIP LOCKED: a node being updated by its own heartbeat right now is not stale.
UPDATE node SET status = 'offline', updated_at = now()
WHERE id IN (
    SELECT id FROM node
    WHERE status = 'active'
      AND last_heartbeat_at < now() - make_interval(secs => %(threshold_seconds)s)
    ORDER BY last_heartbeat_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
RETURNING id, hostname, last_heartbeat_at;

-- name: node_gpus
-- Missing GPUs too (after those that are there): a booked GPU its node stopped reporting.
-- Each with its MIG devices (table mig_device), missing ones last, and whether booked.
SELECT g.*,
       coalesce(
           (SELECT jsonb_agg(jsonb_build_object(
                       'index', d.index, 'uuid', d.uuid, 'profile', d.profile,
                       'gpu_instance_id', d.gpu_instance_id,
                       'compute_instance_id', d.compute_instance_id,
                       'memory_total_bytes', d.memory_total_bytes,
                       'booked', EXISTS (SELECT 1 FROM mig_reservation r
                                         WHERE r.mig_uuid = d.uuid),
                       'missing_since', d.missing_since)
                   ORDER BY d.missing_since IS NOT NULL, d.index, d.id)
            FROM mig_device d WHERE d.gpu_uuid = g.uuid),
           '[]'::jsonb) AS mig_devices
FROM gpu g WHERE g.node_id = %(node_id)s
ORDER BY g.missing_since IS NOT NULL, g.index, g.uuid;

-- name: upsert_gpu
-- Only the node that owns a UUID may update it; no row back means another node owns it.
INSERT INTO gpu (uuid, node_id, index, model, serial, board_part_number, vbios_version,
                 pci_bus_id, memory_total_bytes, mig_mode, driver_version,
                 cuda_version, ecc_mode, compute_capability, power_limit_w,
                 confidential_compute, health)
VALUES (%(uuid)s, %(node_id)s, %(index)s, %(model)s, %(serial)s, %(board_part_number)s,
        %(vbios_version)s, %(pci_bus_id)s, %(memory_total_bytes)s, %(mig_mode)s,
        %(driver_version)s, %(cuda_version)s, %(ecc_mode)s,
        %(compute_capability)s, %(power_limit_w)s, %(confidential_compute)s, %(health)s)
ON CONFLICT (uuid) DO UPDATE
SET index = EXCLUDED.index, model = EXCLUDED.model, serial = EXCLUDED.serial,
    board_part_number = EXCLUDED.board_part_number, vbios_version = EXCLUDED.vbios_version,
    pci_bus_id = EXCLUDED.pci_bus_id, memory_total_bytes = EXCLUDED.memory_total_bytes,
    mig_mode = EXCLUDED.mig_mode,
    driver_version = EXCLUDED.driver_version, cuda_version = EXCLUDED.cuda_version,
    ecc_mode = EXCLUDED.ecc_mode, compute_capability = EXCLUDED.compute_capability,
    power_limit_w = EXCLUDED.power_limit_w,
    confidential_compute = EXCLUDED.confidential_compute, health = EXCLUDED.health,
    missing_since = NULL
WHERE gpu.node_id = EXCLUDED.node_id
RETURNING uuid;

-- name: gpu_missing_elsewhere
-- Whether a GPU another node owns is one that node stopped reporting (kept, as booked).
SELECT missing_since IS NOT NULL AS missing FROM gpu
WHERE uuid = %(uuid)s AND node_id <> %(node_id)s;

-- name: mark_gpus_missing
-- A booked GPU the report leaves out is kept, and so is its reservation (migration 0014);
-- the stamp is the first report without it. The node is locked by the caller, and a
-- booking share-locks it, so no reservation appears or goes on this node meanwhile
-- (release and the lease sweep share-lock it too before deleting missing GPUs).
-- A GPU with a booked MIG slice is kept the same way (its slice is marked missing by
-- `mark_mig_devices_missing`).
UPDATE gpu g SET missing_since = now()
WHERE g.node_id = %(node_id)s AND NOT (g.uuid = ANY(%(uuids)s)) AND g.missing_since IS NULL
  AND (EXISTS (SELECT 1 FROM gpu_reservation r WHERE r.gpu_uuid = g.uuid)
       OR EXISTS (SELECT 1 FROM mig_reservation r WHERE r.gpu_uuid = g.uuid));

-- name: delete_unbooked_gpus_not_in
-- A GPU without a reservation that the report leaves out is gone.
-- Its unbooked MIG devices go with it (ON DELETE CASCADE).
DELETE FROM gpu g
WHERE g.node_id = %(node_id)s AND NOT (g.uuid = ANY(%(uuids)s))
  AND NOT EXISTS (SELECT 1 FROM gpu_reservation r WHERE r.gpu_uuid = g.uuid)
  AND NOT EXISTS (SELECT 1 FROM mig_reservation r WHERE r.gpu_uuid = g.uuid);

-- name: share_lock_nodes
-- Waits for an inventory report being applied to these nodes (which locks its node FOR
-- UPDATE) and keeps the next one out until commit; in id order, so two callers cannot
-- deadlock.
SELECT id FROM node WHERE id = ANY(%(ids)s) ORDER BY id FOR SHARE;

-- name: delete_missing_gpus
-- Missing GPUs whose reservation has just been deleted: nothing holds them any more.
-- `uuids` may name MIG devices too: their GPU is deleted if it is missing and no slice of
-- it is booked any more (the freed slices are deleted just before, `delete_missing_mig_devices`).
DELETE FROM gpu g
WHERE (g.uuid = ANY(%(uuids)s) OR g.uuid = ANY(%(gpu_uuids)s)) AND g.missing_since IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM gpu_reservation r WHERE r.gpu_uuid = g.uuid)
  AND NOT EXISTS (SELECT 1 FROM mig_reservation r WHERE r.gpu_uuid = g.uuid)
RETURNING g.uuid;

-- name: delete_missing_mig_devices
-- Freed MIG devices that are missing themselves, or whose GPU is: nothing holds them.
DELETE FROM mig_device d
USING gpu g
WHERE d.uuid = ANY(%(uuids)s) AND g.uuid = d.gpu_uuid
  AND (d.missing_since IS NOT NULL OR g.missing_since IS NOT NULL)
  AND NOT EXISTS (SELECT 1 FROM mig_reservation r WHERE r.mig_uuid = d.uuid)
RETURNING d.uuid, d.gpu_uuid;

-- name: mark_mig_devices_missing
-- A booked MIG device the report leaves out is kept, with its reservation (migration 0022),
-- stamped with the first report without it; the caller holds the node locked.
UPDATE mig_device d SET missing_since = now()
FROM gpu g
WHERE g.uuid = d.gpu_uuid AND g.node_id = %(node_id)s AND d.missing_since IS NULL
  AND NOT (d.uuid = ANY(%(uuids)s))
  AND EXISTS (SELECT 1 FROM mig_reservation r WHERE r.mig_uuid = d.uuid);

-- name: delete_unbooked_mig_devices_not_in
-- An unbooked MIG device the report leaves out (or one without a UUID, which every report
-- lists afresh) is gone.
DELETE FROM mig_device d
USING gpu g
WHERE g.uuid = d.gpu_uuid AND g.node_id = %(node_id)s
  AND (d.uuid IS NULL OR NOT (d.uuid = ANY(%(uuids)s)))
  AND NOT EXISTS (SELECT 1 FROM mig_reservation r WHERE r.mig_uuid = d.uuid);

-- name: upsert_mig_devices
-- The reported MIG devices of a node, one array element each. A device known by its UUID
-- is updated only under the GPU it was stored with (no row back: another GPU has that
-- UUID), and a missing one is back; one without a UUID is inserted (the previous ones were
-- deleted by `delete_unbooked_mig_devices_not_in`).
INSERT INTO mig_device (gpu_uuid, index, uuid, profile, gpu_instance_id, compute_instance_id,
                        memory_total_bytes)
SELECT * FROM unnest(%(gpu_uuids)s::text[], %(indexes)s::smallint[], %(uuids)s::text[],
                     %(profiles)s::text[], %(gpu_instance_ids)s::smallint[],
                     %(compute_instance_ids)s::smallint[], %(memory_total_bytes)s::bigint[])
ON CONFLICT (uuid) DO UPDATE
SET index = EXCLUDED.index, profile = EXCLUDED.profile,
    gpu_instance_id = EXCLUDED.gpu_instance_id,
    compute_instance_id = EXCLUDED.compute_instance_id,
    memory_total_bytes = EXCLUDED.memory_total_bytes, missing_since = NULL
WHERE mig_device.gpu_uuid = EXCLUDED.gpu_uuid
RETURNING uuid;

-- name: update_gpu_telemetry
UPDATE gpu AS g
SET utilization_pct = t.utilization_pct, memory_used_bytes = t.memory_used_bytes,
    temperature_c = t.temperature_c, power_w = t.power_w,
    ecc_uncorrected_errors = t.ecc_uncorrected_errors, process_count = t.process_count,
    fan_speed_pct = t.fan_speed_pct, telemetry_at = now()
FROM unnest(%(uuids)s::text[], %(utilization_pct)s::real[], %(memory_used_bytes)s::bigint[],
            %(temperature_c)s::real[], %(power_w)s::real[], %(ecc_uncorrected_errors)s::bigint[],
            %(process_count)s::integer[], %(fan_speed_pct)s::real[])
     AS t(uuid, utilization_pct, memory_used_bytes, temperature_c, power_w,
          ecc_uncorrected_errors, process_count, fan_speed_pct)
WHERE g.uuid = t.uuid AND g.node_id = %(node_id)s
RETURNING g.uuid;

-- name: fleet_node_counts
SELECT coalesce(zone_slug, '') AS zone, status, coalesce(origin_country, '') AS origin_country,
       count(*) AS nodes
FROM node GROUP BY 1, 2, 3;

-- name: fleet_gpu_counts
SELECT coalesce(n.zone_slug, '') AS zone, g.model, count(*) AS gpus
FROM gpu g JOIN node n ON n.id = g.node_id
WHERE n.status <> 'decommissioned' AND g.missing_since IS NULL
GROUP BY 1, 2;

-- name: fleet_mig_slice_counts
-- Bookable MIG slices (as `node_mig_slices` counts them) by zone, GPU model and profile.
SELECT coalesce(n.zone_slug, '') AS zone, g.model, d.profile, count(*) AS slices,
       count(*) FILTER (
           WHERE NOT EXISTS (SELECT 1 FROM mig_reservation r WHERE r.mig_uuid = d.uuid)
             AND NOT EXISTS (SELECT 1 FROM gpu_reservation r WHERE r.gpu_uuid = g.uuid)
       ) AS free
FROM mig_device d JOIN gpu g ON g.uuid = d.gpu_uuid JOIN node n ON n.id = g.node_id
WHERE n.status <> 'decommissioned' AND g.missing_since IS NULL AND d.missing_since IS NULL
  AND d.uuid IS NOT NULL AND d.profile IS NOT NULL AND lower(btrim(g.mig_mode)) = 'enabled'
GROUP BY 1, 2, 3;

-- name: get_replacement_approval
SELECT node_id, approved_by, approved_at, expires_at, reason
FROM node_replacement_approval WHERE node_id = %(node_id)s;

-- name: approve_replacement
INSERT INTO node_replacement_approval (node_id, approved_by, approved_at, expires_at, reason)
VALUES (%(node_id)s, %(approved_by)s, now(),
        now() + make_interval(secs => %(expires_in_seconds)s), %(reason)s)
ON CONFLICT (node_id) DO UPDATE
SET approved_by = EXCLUDED.approved_by, approved_at = EXCLUDED.approved_at,
    expires_at = EXCLUDED.expires_at, reason = EXCLUDED.reason
RETURNING node_id, approved_by, approved_at, expires_at, reason;

-- name: use_replacement_approval
DELETE FROM node_replacement_approval
WHERE node_id = %(node_id)s AND expires_at > now()
RETURNING node_id, approved_by, approved_at, expires_at, reason;
