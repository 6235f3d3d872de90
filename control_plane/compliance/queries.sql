-- name: claim_pending
-- Every pending request, oldest first, locked until the evaluation that handles them
-- commits. SKIP LOCKED: requests another worker is evaluating right now are its business,
-- so two workers never evaluate for the same requests.
SELECT id, reason, subject, requested_at
FROM compliance_request
WHERE evaluation_id IS NULL
ORDER BY id
FOR UPDATE SKIP LOCKED;

-- name: mark_handled
UPDATE compliance_request SET evaluation_id = %(evaluation_id)s, handled_at = now()
WHERE id = ANY(%(ids)s);

-- name: get_request
SELECT id, reason, subject, requested_at, evaluation_id
FROM compliance_request WHERE id = %(id)s;

-- name: prune_handled
-- Requests handled more than the retention ago: the evaluation that handled them keeps
-- what it needs (`triggers`, `trigger_count`). Pending requests have no `handled_at`, so
-- they are never deleted. No index on `handled_at`: the table holds only the retention's
-- worth of requests, and this runs once per evaluation.
DELETE FROM compliance_request
WHERE evaluation_id IS NOT NULL
  AND handled_at < now() - make_interval(days => %(retention_days)s);

-- name: pending_count
SELECT count(*) AS pending FROM compliance_request WHERE evaluation_id IS NULL;

-- name: running_workloads
-- Every workload that holds GPUs now, by id, with its node as stored (hostname and
-- status, for a node that left the fleet snapshot, e.g. decommissioned).
SELECT w.id, w.tenant_slug AS tenant, w.request, w.node_id, w.zone_slug AS zone,
       n.hostname, n.status AS node_status
FROM workload w LEFT JOIN node n ON n.id = w.node_id
WHERE w.status = 'admitted'
ORDER BY w.id;

-- name: consistent_read
-- What-if reads the fleet, the policy store, the registry and the running workloads in
-- several statements; one snapshot makes them agree with each other.
SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY;

-- name: insert_evaluation
INSERT INTO compliance_evaluation (
    id, started_at, finished_at, triggers, trigger_count, policy_set_version,
    policy_set_hash, fleet_generation, workloads_evaluated, violating_workloads,
    warned_workloads, violations_by_rule, violations_by_tenant, sample)
VALUES (
    %(id)s, %(started_at)s, %(finished_at)s, %(triggers)s, %(trigger_count)s,
    %(policy_set_version)s, %(policy_set_hash)s, %(fleet_generation)s,
    %(workloads_evaluated)s, %(violating_workloads)s, %(warned_workloads)s,
    %(violations_by_rule)s, %(violations_by_tenant)s, %(sample)s)
RETURNING id, started_at, finished_at, triggers, trigger_count, policy_set_version,
          policy_set_hash, fleet_generation, workloads_evaluated, violating_workloads,
          warned_workloads, violations_by_rule, violations_by_tenant, sample;

-- name: get_evaluation
SELECT id, started_at, finished_at, triggers, trigger_count, policy_set_version,
       policy_set_hash, fleet_generation, workloads_evaluated, violating_workloads,
       warned_workloads, violations_by_rule, violations_by_tenant, sample
FROM compliance_evaluation WHERE id = %(id)s;

-- name: latest_evaluation
SELECT id, started_at, finished_at, triggers, trigger_count, policy_set_version,
       policy_set_hash, fleet_generation, workloads_evaluated, violating_workloads,
       warned_workloads, violations_by_rule, violations_by_tenant, sample
FROM compliance_evaluation ORDER BY finished_at DESC, id LIMIT 1;

-- name: list_evaluations
SELECT id, started_at, finished_at, triggers, trigger_count, policy_set_version,
       policy_set_hash, fleet_generation, workloads_evaluated, violating_workloads,
       warned_workloads, violations_by_rule, violations_by_tenant
FROM compliance_evaluation
ORDER BY finished_at DESC, id
LIMIT %(limit)s OFFSET %(offset)s;

-- name: count_evaluations
SELECT count(*) AS total FROM compliance_evaluation;
