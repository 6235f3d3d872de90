-- Queries of the reports feature: report jobs and their chunks, then the measures.
-- Every measure reads one period, `[%(start)s, %(end)s)`, and returns rows already grouped,
-- so what crosses into Python is as small as the report, not as the data behind it.

-- name: insert_job
-- ON CONFLICT: the same report over the same checkpoint exists; the stored job is returned.
INSERT INTO report_job (id, kind, period_from, period_to, format, checkpoint, requested_by)
VALUES (%(id)s, %(kind)s, %(period_from)s, %(period_to)s, %(format)s, %(checkpoint)s,
        %(requested_by)s)
ON CONFLICT ON CONSTRAINT report_job_once DO NOTHING
RETURNING *;

-- name: find_job
SELECT * FROM report_job
WHERE kind = %(kind)s AND period_from = %(period_from)s AND period_to = %(period_to)s
  AND format = %(format)s AND checkpoint IS NOT DISTINCT FROM %(checkpoint)s;

-- name: get_job
SELECT * FROM report_job WHERE id = %(id)s;

-- name: list_jobs
SELECT * FROM report_job ORDER BY requested_at DESC, id LIMIT %(limit)s OFFSET %(offset)s;

-- name: count_jobs
SELECT count(*) AS total FROM report_job;

-- name: requeue_failed
-- A failed job asked for again is tried again, from the start.
UPDATE report_job
SET status = 'queued', percent = 0, step = 'queued', error = NULL, dispatched_at = NULL
WHERE id = %(id)s AND status = 'failed'
RETURNING *;

-- name: try_build_lock
-- The builder's session lock on one job: held by its connection, so it goes with a dead
-- worker, and a second delivery of the same job sees it taken and leaves.
SELECT pg_try_advisory_lock(hashtextextended('report_job:' || %(id)s::text, 0)) AS locked;

-- name: release_build_lock
SELECT pg_advisory_unlock(hashtextextended('report_job:' || %(id)s::text, 0));

-- name: dispatch_due
-- Jobs to send to the queue: queued ones not sent in the last lease, and running ones
-- whose builder has been silent for the lease (its worker died). Each is marked sent.
UPDATE report_job SET dispatched_at = now()
WHERE id IN (
    SELECT id FROM report_job
    WHERE status IN ('queued', 'running')
      AND (dispatched_at IS NULL
           OR dispatched_at < now() - make_interval(secs => %(lease_seconds)s))
      AND (status = 'queued'
           OR heartbeat_at < now() - make_interval(secs => %(lease_seconds)s))
    ORDER BY requested_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
RETURNING id;

-- name: claim_job
-- The builder's claim, under its lock: a queued job, or a running one whose worker died.
UPDATE report_job
SET status = 'running', attempts = attempts + 1, percent = 0, step = 'starting',
    started_at = now(), heartbeat_at = now(), error = NULL
WHERE id = %(id)s AND status IN ('queued', 'running')
RETURNING *;

-- name: delete_chunks
DELETE FROM report_chunk WHERE job_id = %(id)s;

-- name: set_progress
UPDATE report_job SET percent = %(percent)s, step = %(step)s, heartbeat_at = now()
WHERE id = %(id)s;

-- name: insert_chunk
INSERT INTO report_chunk (job_id, seq, data) VALUES (%(id)s, %(seq)s, %(data)s);

-- name: finish_job
UPDATE report_job
SET status = 'done', percent = 100, step = 'done', finished_at = now(),
    size_bytes = %(size_bytes)s, sha256 = %(sha256)s, content_sha256 = %(content_sha256)s,
    signature = %(signature)s, key_fingerprint = %(key_fingerprint)s
WHERE id = %(id)s
RETURNING *;

-- name: fail_job
UPDATE report_job SET status = 'failed', step = 'failed', error = %(error)s,
                      finished_at = now()
WHERE id = %(id)s;

-- name: chunk_seqs
SELECT seq FROM report_chunk WHERE job_id = %(id)s ORDER BY seq;

-- name: get_chunk
SELECT data FROM report_chunk WHERE job_id = %(id)s AND seq = %(seq)s;

-- name: covered_checkpoint
-- The checkpoint a report covers: the newest one, provided it was signed at or after the
-- period's end (an older one does not vouch for the end of the period).
SELECT number, head_seq, head_hash, checkpoint_hash, signed_at
FROM audit_checkpoint
WHERE signed_at >= %(end)s
ORDER BY number DESC
LIMIT 1;

-- name: get_checkpoint
SELECT number, head_seq, head_hash, checkpoint_hash, signed_at
FROM audit_checkpoint WHERE number = %(number)s;

-- -- sovereignty -------------------------------------------------------------------------

-- name: capacity_at
-- The fleet at one moment, grouped by where it stands and what it is made of. A node is
-- in the fleet at `at` if it registered before and is not decommissioned now; a GPU
-- counts if it is there now (not missing), or went missing only after `at`. Zone, its
-- country, the server's and the GPUs' origin and the provenance status are the node's at
-- `at` (`node_state_history`, migration 0027), today's where the history does not reach
-- back that far; the CPU, board and NIC origins are today's (the history keeps none).
-- `own` is whether the zone is one of the company's (its country among `home_countries`,
-- or any zone when that list is empty).
WITH fleet AS (
    SELECT n.id,
           CASE WHEN h.node_id IS NULL THEN n.zone_slug ELSE h.zone_slug END AS zone,
           CASE WHEN h.node_id IS NULL THEN z.country::text ELSE h.zone_country END
               AS zone_country,
           CASE WHEN h.node_id IS NULL THEN n.origin_country::text ELSE h.origin_country END
               AS origin_country,
           CASE WHEN h.node_id IS NULL THEN n.component_origins ->> 'gpu' ELSE h.gpu_origin END
               AS gpu_origin,
           n.component_origins,
           coalesce(h.provenance_status, n.provenance_status::text) AS provenance_status
    FROM node n
    LEFT JOIN residency_zone z ON z.slug = n.zone_slug
    LEFT JOIN node_state_history h ON h.node_id = n.id AND h.valid_from <= %(at)s
         AND (h.valid_to IS NULL OR h.valid_to > %(at)s)
    WHERE n.registered_at <= %(at)s AND n.status <> 'decommissioned'
)
SELECT f.zone, f.zone_country,
       (f.zone IS NOT NULL
        AND (cardinality(%(home_countries)s::text[]) = 0
             OR f.zone_country = ANY(%(home_countries)s::text[]))) AS own,
       coalesce(f.origin_country, 'unknown') AS origin_country,
       coalesce(f.gpu_origin, 'unknown') AS gpu_origin,
       coalesce(f.component_origins ->> 'cpu', 'unknown') AS cpu_origin,
       coalesce(f.component_origins ->> 'board', 'unknown') AS board_origin,
       coalesce(f.component_origins ->> 'nic', 'unknown') AS nic_origin,
       f.provenance_status,
       count(DISTINCT f.id)::bigint AS servers,
       count(g.uuid)::bigint AS gpus,
       coalesce(sum(g.memory_total_bytes), 0)::bigint AS gpu_memory_bytes
FROM fleet f
LEFT JOIN gpu g ON g.node_id = f.id AND (g.missing_since IS NULL OR g.missing_since > %(at)s)
GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9
ORDER BY 1, 4, 5, 9;

-- name: node_events
-- Audited node events of the period of the given actions, oldest first.
SELECT e.occurred_at, e.action, e.object_id AS node_id,
       coalesce(e.after ->> 'hostname', e.before ->> 'hostname', n.hostname) AS hostname,
       coalesce(e.after ->> 'zone', n.zone_slug) AS zone,
       e.actor_name
FROM audit_event e LEFT JOIN node n ON n.id::text = e.object_id
WHERE e.occurred_at >= %(start)s AND e.occurred_at < %(end)s
  AND e.action = ANY(%(actions)s::text[])
ORDER BY e.occurred_at, e.seq;

-- -- compliance --------------------------------------------------------------------------

-- name: policy_sets_in_force
-- Every policy set active at some moment of the period: activated before its end and not
-- replaced before its start.
SELECT s.version, s.content_hash, s.activated_by, s.activated_at, s.note,
       s.restores_version,
       (SELECT min(n.activated_at) FROM policy_set n WHERE n.version > s.version)
           AS replaced_at
FROM policy_set s
WHERE s.activated_at < %(end)s
  AND coalesce((SELECT min(n.activated_at) FROM policy_set n WHERE n.version > s.version),
               'infinity') > %(start)s
ORDER BY s.version;

-- name: decisions_grouped
-- Admission decisions of the period (the API's workloads and the webhooks' pods) by
-- source, outcome, tenant and policy set.
SELECT 'workload' AS source, outcome, tenant_slug AS tenant, policy_set_version,
       count(*)::bigint AS decisions
FROM workload WHERE created_at >= %(start)s AND created_at < %(end)s
GROUP BY 1, 2, 3, 4
UNION ALL
SELECT 'pod', outcome, tenant_slug, policy_set_version, count(*)::bigint
FROM pod_decision WHERE created_at >= %(start)s AND created_at < %(end)s
GROUP BY 1, 2, 3, 4
ORDER BY 1, 2, 3, 4;

-- name: decisions_by_policy
-- How many decisions of the period each policy's findings appear in, by the finding's
-- action (deny, warn, dryrun); "(baseline)" for reasons no policy gave.
SELECT coalesce(r ->> 'policy', '(baseline)') AS policy, r ->> 'action' AS action,
       count(DISTINCT d.id)::bigint AS decisions
FROM (
    SELECT id, reasons FROM workload
    WHERE created_at >= %(start)s AND created_at < %(end)s AND reasons <> '[]'
    UNION ALL
    SELECT id, reasons FROM pod_decision
    WHERE created_at >= %(start)s AND created_at < %(end)s AND reasons <> '[]'
) d, jsonb_array_elements(d.reasons) r
GROUP BY 1, 2
ORDER BY 1, 2;

-- name: denials_and_warnings
-- Every denial and every admission with warnings of the period, with its reasons, oldest
-- first (read through a server-side cursor: there may be millions).
SELECT d.created_at, d.source, d.id, d.tenant, d.outcome, d.policy_set_version,
       (SELECT string_agg(coalesce(r ->> 'policy', '(baseline)') || '/' || (r ->> 'rule')
                          || ' [' || (r ->> 'action') || ']: ' || (r ->> 'message'), '; ')
        FROM jsonb_array_elements(d.reasons) r) AS reasons
FROM (
    SELECT created_at, 'workload' AS source, id::text AS id, tenant_slug AS tenant, outcome,
           policy_set_version, reasons
    FROM workload
    WHERE created_at >= %(start)s AND created_at < %(end)s AND outcome <> 'admitted'
    UNION ALL
    SELECT created_at, 'pod', namespace || '/' || coalesce(name, review_uid), tenant_slug,
           outcome, policy_set_version, reasons
    FROM pod_decision
    WHERE created_at >= %(start)s AND created_at < %(end)s AND outcome <> 'admitted'
) d
ORDER BY d.created_at, d.id;

-- name: evaluations
-- The compliance evaluations of the period with their exact counts.
SELECT id, finished_at, policy_set_version, workloads_evaluated, violating_workloads,
       warned_workloads, revoked_workloads, notifications
FROM compliance_evaluation
WHERE finished_at >= %(start)s AND finished_at < %(end)s
ORDER BY finished_at, id;

-- name: violations
-- Each workload an evaluation of the period found violating (from the evaluations'
-- samples, capped at SOVEREIGN_COMPLIANCE_SAMPLE_SIZE each; the exact counts are in
-- `evaluations`), once per workload and policy: when first found, what was done (the
-- policy's violation action as delivered, else `record`) and how it ended (the workload's
-- status now, when it ended and, if revoked, why).
SELECT min(e.finished_at) AS found_at, (v ->> 'workload_id') AS workload_id,
       v ->> 'tenant' AS tenant, coalesce(r ->> 'policy', '(baseline)') AS policy,
       coalesce(max(vd.action), 'record') AS action,
       max(vd.status) AS delivery_status,
       w.status AS workload_status, w.ended_at,
       w.revocation ->> 'reason' AS revocation_reason
FROM compliance_evaluation e
CROSS JOIN jsonb_array_elements(e.sample) v
CROSS JOIN jsonb_array_elements(v -> 'reasons') r
LEFT JOIN workload w ON w.id = (v ->> 'workload_id')::uuid
LEFT JOIN violation_delivery vd
       ON vd.workload_id = w.id AND vd.policy = coalesce(r ->> 'policy', '')
WHERE e.finished_at >= %(start)s AND e.finished_at < %(end)s
  AND r ->> 'action' = 'deny'
GROUP BY 2, 3, 4, w.status, w.ended_at, w.revocation
ORDER BY 1, 2, 4;

-- name: assets_processed
-- Each dataset and model that admitted workloads of the period used: by whom, where they
-- ran, how many workloads, and the grants (by id) that let a tenant other than the owner
-- use it, as they stood when the workload was admitted.
WITH used AS (
    SELECT w.id, w.created_at, w.tenant_slug, w.zone_slug, 'dataset' AS kind, a.name
    FROM workload w, jsonb_array_elements_text(w.request -> 'datasets') a (name)
    WHERE w.created_at >= %(start)s AND w.created_at < %(end)s AND w.outcome <> 'denied'
    UNION ALL
    SELECT w.id, w.created_at, w.tenant_slug, w.zone_slug, 'model', a.name
    FROM workload w, jsonb_array_elements_text(w.request -> 'models') a (name)
    WHERE w.created_at >= %(start)s AND w.created_at < %(end)s AND w.outcome <> 'denied'
)
SELECT u.kind, u.name, coalesce(ds.owner_tenant, m.owner_tenant) AS owner,
       u.tenant_slug AS tenant, coalesce(u.zone_slug, '(none)') AS zone,
       count(DISTINCT u.id)::bigint AS workloads,
       coalesce(string_agg(DISTINCT g.id::text, ' '), '') AS grants
FROM used u
LEFT JOIN dataset ds ON u.kind = 'dataset' AND ds.name = u.name
LEFT JOIN model m ON u.kind = 'model' AND m.name = u.name
LEFT JOIN asset_grant g
       ON g.kind = u.kind AND g.asset_name = u.name AND g.grantee_tenant = u.tenant_slug
      AND g.created_at <= u.created_at
      AND (g.revoked_at IS NULL OR g.revoked_at > u.created_at)
      AND (g.expires_at IS NULL OR g.expires_at > u.created_at)
GROUP BY 1, 2, 3, 4, 5
ORDER BY 1, 2, 4, 5;

-- name: consistent_read
-- A report reads many tables in several statements; one snapshot makes them agree.
SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY;

-- name: no_jit
-- The planner's row estimates for JSON arrays (100 elements each) make report queries look
-- costly enough to JIT-compile, which then takes seconds (4 s of 6 for the assets at a
-- million decisions, bench/reports.py) to save a fraction of that: report reads go without.
SET LOCAL jit = off;
