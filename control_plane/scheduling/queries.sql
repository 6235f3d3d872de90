-- name: reserved_gpu_uuids
-- Every unit booked now: whole GPUs and MIG slices (by MIG device UUID).
SELECT gpu_uuid FROM gpu_reservation
UNION ALL
SELECT mig_uuid FROM mig_reservation;

-- name: lock_quotas
-- The tenant's quotas in the zones placement may use, locked in zone order (the same
-- order in every transaction, so two admissions cannot deadlock on them). Held until
-- commit: admissions of one tenant in one zone are serialized, and each counts the
-- reservations the previous one committed.
SELECT zone_slug AS zone, max_gpus, gpu_hours_per_period, period
FROM tenant_quota
WHERE tenant_slug = %(tenant)s AND zone_slug = ANY(%(zones)s)
ORDER BY zone_slug
FOR UPDATE;

-- name: reserved_gpus
-- GPUs the tenant holds now in one zone (booked while the node was in that zone); a MIG
-- slice counts as one, as a request's `gpu_count` does.
SELECT (SELECT count(*) FROM gpu_reservation
        WHERE tenant_slug = %(tenant)s AND zone_slug = %(zone)s)
     + (SELECT count(*) FROM mig_reservation
        WHERE tenant_slug = %(tenant)s AND zone_slug = %(zone)s) AS reserved;

-- name: lock_origin_quotas
-- The tenant's GPU-hour quotas on the server origins placement may use, locked in country
-- order after the zone quotas (the same order in every transaction, so no deadlock):
-- admissions of one tenant on servers of one origin are serialized like those in a zone.
SELECT origin_country, gpu_hours_per_period, period
FROM tenant_origin_quota
WHERE tenant_slug = %(tenant)s AND origin_country = ANY(%(origins)s)
ORDER BY origin_country
FOR UPDATE;

-- name: book
-- One round trip per node tried. Share-locks the node if it is still active, undrifted
-- and in the zone the decision was taken for (a status or zone change waits for the
-- booking to commit; a node that changed since the snapshot is skipped); locks up to
-- `count` of its free GPUs of the kind asked for, those this process claimed for the
-- request first, SKIP LOCKED (a GPU another admission is booking right now is not free
-- for this one; a GPU its node stopped reporting is not there); and only when there are
-- `count` of them,
-- stores the workload and its reservations. Always one row: `id` is null when the node
-- could not take it, and then `lockable` says which of the GPUs asked for were free and
-- not being booked by anyone else (so the caller's belief learns about bookings still in
-- flight in other processes, not only committed ones). A GPU booked by a transaction that
-- committed after this statement looked is skipped by ON CONFLICT: `booked` comes back
-- short of `count` and the caller rolls back. `outcome`, `reasons` and `other_nodes` are
-- the verdict on this node (the engine's `evaluate_placement`), worked out per node tried.
WITH target AS (
    SELECT id FROM node
    WHERE id = %(node_id)s AND status = 'active' AND drift_status = 'none'
      AND zone_slug IS NOT DISTINCT FROM %(zone)s
    FOR SHARE
), locked AS (
    SELECT g.uuid, g.index FROM gpu g JOIN target t ON t.id = g.node_id
    WHERE g.uuid = ANY(%(uuids)s) AND g.missing_since IS NULL
      AND NOT EXISTS (SELECT 1 FROM gpu_reservation r WHERE r.gpu_uuid = g.uuid)
      -- Never a GPU a MIG slice of which is booked (migration 0022).
      AND NOT EXISTS (SELECT 1 FROM mig_reservation r WHERE r.gpu_uuid = g.uuid)
    ORDER BY g.uuid = ANY(%(claimed)s) DESC, g.index
    LIMIT %(count)s
    FOR UPDATE OF g SKIP LOCKED
), chosen AS (
    SELECT array_agg(uuid ORDER BY index) AS uuids FROM locked HAVING count(*) = %(count)s
), stored AS (
    INSERT INTO workload (id, tenant_slug, request, strategy, status, outcome, reasons,
                          other_nodes, explanation, policy_set_version, policy_set_hash, node_id, zone_slug,
                          gpu_uuids, lease_seconds, lease_expires_at, created_by)
    SELECT %(id)s, %(tenant)s, %(request)s, %(strategy)s, %(status)s, %(outcome)s,
           %(reasons)s, %(other_nodes)s, %(explanation)s, %(policy_set_version)s, %(policy_set_hash)s,
           %(node_id)s, %(zone)s, chosen.uuids, %(lease_seconds)s,
           now() + make_interval(secs => %(lease_seconds)s), %(created_by)s
    FROM chosen
    RETURNING *
), reserved AS (
    INSERT INTO gpu_reservation (gpu_uuid, workload_id, node_id, zone_slug, tenant_slug)
    SELECT uuid, s.id, s.node_id, s.zone_slug, s.tenant_slug
    FROM stored s, unnest(s.gpu_uuids) AS uuid
    ON CONFLICT (gpu_uuid) DO NOTHING
    RETURNING gpu_uuid
)
SELECT s.id, s.tenant_slug AS tenant, s.status, s.outcome, s.reasons, s.other_nodes, s.explanation,
       s.policy_set_version, s.policy_set_hash, s.strategy, s.request, s.node_id,
       %(hostname)s AS hostname, s.zone_slug AS zone, s.gpu_uuids, s.mig_slices, s.lease_seconds,
       s.lease_expires_at, s.created_at, s.created_by, s.ended_at,
       (SELECT count(*) FROM reserved) AS booked,
       (SELECT coalesce(array_agg(uuid), '{}') FROM locked) AS lockable
FROM (SELECT 1) AS one LEFT JOIN stored s ON true;

-- name: book_slices
-- `book` for a request with a MIG profile: the units are MIG slices (`uuids`, `claimed`:
-- MIG device UUIDs of the profile on the node's fitting GPUs). Locks up to `count` free
-- slices, SKIP LOCKED, those claimed first, never one that is booked, missing, or on a GPU
-- that is missing or booked whole; stores the workload with the slices it was given
-- (`gpu_uuids`: their MIG device UUIDs; `mig_slices`: each with its profile and GPU) and
-- their reservations. The `mig_reservation` primary key (the MIG device UUID) is the last
-- line, as `gpu_reservation`'s is for `book`: a slice booked by a transaction that
-- committed after this statement looked comes back short in `booked`.
WITH target AS (
    SELECT id FROM node
    WHERE id = %(node_id)s AND status = 'active' AND drift_status = 'none'
      AND zone_slug IS NOT DISTINCT FROM %(zone)s
    FOR SHARE
), locked AS (
    SELECT d.uuid, d.profile, d.gpu_uuid, g.index AS gpu_index, d.index
    FROM mig_device d JOIN gpu g ON g.uuid = d.gpu_uuid JOIN target t ON t.id = g.node_id
    WHERE d.uuid = ANY(%(uuids)s) AND d.missing_since IS NULL AND g.missing_since IS NULL
      AND NOT EXISTS (SELECT 1 FROM mig_reservation r WHERE r.mig_uuid = d.uuid)
      AND NOT EXISTS (SELECT 1 FROM gpu_reservation r WHERE r.gpu_uuid = g.uuid)
    ORDER BY d.uuid = ANY(%(claimed)s) DESC, g.index, d.index
    LIMIT %(count)s
    FOR UPDATE OF d SKIP LOCKED
), chosen AS (
    SELECT array_agg(uuid ORDER BY gpu_index, index) AS uuids,
           jsonb_agg(jsonb_build_object('uuid', uuid, 'profile', profile, 'gpu_uuid', gpu_uuid)
                     ORDER BY gpu_index, index) AS slices
    FROM locked HAVING count(*) = %(count)s
), stored AS (
    INSERT INTO workload (id, tenant_slug, request, strategy, status, outcome, reasons,
                          other_nodes, explanation, policy_set_version, policy_set_hash, node_id, zone_slug,
                          gpu_uuids, mig_slices, lease_seconds, lease_expires_at, created_by)
    SELECT %(id)s, %(tenant)s, %(request)s, %(strategy)s, %(status)s, %(outcome)s,
           %(reasons)s, %(other_nodes)s, %(explanation)s, %(policy_set_version)s, %(policy_set_hash)s,
           %(node_id)s, %(zone)s, chosen.uuids, chosen.slices, %(lease_seconds)s,
           now() + make_interval(secs => %(lease_seconds)s), %(created_by)s
    FROM chosen
    RETURNING *
), reserved AS (
    INSERT INTO mig_reservation (mig_uuid, gpu_uuid, workload_id, node_id, zone_slug, tenant_slug)
    SELECT l.uuid, l.gpu_uuid, s.id, s.node_id, s.zone_slug, s.tenant_slug
    FROM stored s, locked l
    ON CONFLICT (mig_uuid) DO NOTHING
    RETURNING mig_uuid
)
SELECT s.id, s.tenant_slug AS tenant, s.status, s.outcome, s.reasons, s.other_nodes, s.explanation,
       s.policy_set_version, s.policy_set_hash, s.strategy, s.request, s.node_id,
       %(hostname)s AS hostname, s.zone_slug AS zone, s.gpu_uuids, s.mig_slices, s.lease_seconds,
       s.lease_expires_at, s.created_at, s.created_by, s.ended_at,
       (SELECT count(*) FROM reserved) AS booked,
       (SELECT coalesce(array_agg(uuid), '{}') FROM locked) AS lockable
FROM (SELECT 1) AS one LEFT JOIN stored s ON true;

-- name: insert_denied
INSERT INTO workload (id, tenant_slug, request, strategy, status, outcome, reasons,
                      explanation, policy_set_version, policy_set_hash, lease_seconds,
                      created_by)
VALUES (%(id)s, %(tenant)s, %(request)s, %(strategy)s, 'denied', %(outcome)s, %(reasons)s,
        %(explanation)s, %(policy_set_version)s, %(policy_set_hash)s, %(lease_seconds)s,
        %(created_by)s)
RETURNING id, tenant_slug AS tenant, status, outcome, reasons, other_nodes, explanation, policy_set_version,
          policy_set_hash, strategy, request, node_id, NULL::text AS hostname,
          zone_slug AS zone, gpu_uuids, mig_slices, lease_seconds, lease_expires_at, created_at,
          created_by, ended_at;

-- name: get_workload
SELECT w.id, w.tenant_slug AS tenant, w.status, w.outcome, w.reasons, w.other_nodes, w.explanation,
       w.policy_set_version,
       w.policy_set_hash, w.strategy, w.request, w.node_id, n.hostname, w.zone_slug AS zone,
       w.gpu_uuids, w.mig_slices, w.lease_seconds, w.lease_expires_at, w.created_at, w.created_by,
       w.ended_at, w.revocation
FROM workload w LEFT JOIN node n ON n.id = w.node_id
WHERE w.id = %(id)s;

-- name: lock_workload
SELECT w.id, w.tenant_slug AS tenant, w.status, w.outcome, w.reasons, w.other_nodes, w.explanation,
       w.policy_set_version, w.policy_set_hash, w.strategy, w.request, w.node_id, n.hostname,
       w.zone_slug AS zone, w.gpu_uuids, w.mig_slices, w.lease_seconds, w.lease_expires_at, w.created_at,
       w.created_by, w.ended_at, w.revocation,
       coalesce(w.lease_expires_at <= now(), false) AS lease_expired
FROM workload w LEFT JOIN node n ON n.id = w.node_id
WHERE w.id = %(id)s
FOR UPDATE OF w;

-- name: list_workloads
SELECT w.id, w.tenant_slug AS tenant, w.status, w.outcome, w.reasons, w.other_nodes, w.explanation,
       w.policy_set_version, w.policy_set_hash, w.strategy, w.request, w.node_id, n.hostname,
       w.zone_slug AS zone, w.gpu_uuids, w.mig_slices, w.lease_seconds, w.lease_expires_at, w.created_at,
       w.created_by, w.ended_at, w.revocation
FROM workload w LEFT JOIN node n ON n.id = w.node_id
WHERE (%(tenant)s::text IS NULL OR w.tenant_slug = %(tenant)s)
  AND (%(status)s::text IS NULL OR w.status = %(status)s)
ORDER BY w.created_at DESC, w.id
LIMIT %(limit)s OFFSET %(offset)s;

-- name: count_workloads
SELECT count(*) AS total FROM workload w
WHERE (%(tenant)s::text IS NULL OR w.tenant_slug = %(tenant)s)
  AND (%(status)s::text IS NULL OR w.status = %(status)s);

-- name: end_workload
UPDATE workload SET status = %(status)s, ended_at = now()
WHERE id = %(id)s AND status = 'admitted';

-- name: renew_lease
UPDATE workload
SET lease_seconds = %(lease_seconds)s,
    lease_expires_at = now() + make_interval(secs => %(lease_seconds)s)
WHERE id = %(id)s AND status = 'admitted';

-- name: expire_due
-- SKIP LOCKED: a workload being released or renewed right now is left to that request.
UPDATE workload SET status = 'expired', ended_at = now()
WHERE id IN (
    SELECT id FROM workload
    WHERE status = 'admitted' AND lease_expires_at <= now()
    ORDER BY lease_expires_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
RETURNING id, tenant_slug AS tenant, node_id, zone_slug AS zone, gpu_uuids, lease_expires_at,
          ended_at;

-- name: delete_reservations
-- Whole GPUs and MIG slices alike (a slice by its MIG device UUID).
WITH gpus AS (
    DELETE FROM gpu_reservation WHERE workload_id = ANY(%(ids)s) RETURNING gpu_uuid
), slices AS (
    DELETE FROM mig_reservation WHERE workload_id = ANY(%(ids)s) RETURNING mig_uuid
)
SELECT gpu_uuid FROM gpus UNION ALL SELECT mig_uuid FROM slices;
