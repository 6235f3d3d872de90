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
    warned_workloads, violations_by_rule, violations_by_tenant, sample, revoked_workloads,
    notifications)
VALUES (
    %(id)s, %(started_at)s, %(finished_at)s, %(triggers)s, %(trigger_count)s,
    %(policy_set_version)s, %(policy_set_hash)s, %(fleet_generation)s,
    %(workloads_evaluated)s, %(violating_workloads)s, %(warned_workloads)s,
    %(violations_by_rule)s, %(violations_by_tenant)s, %(sample)s, %(revoked_workloads)s,
    %(notifications)s)
RETURNING id, started_at, finished_at, triggers, trigger_count, policy_set_version,
          policy_set_hash, fleet_generation, workloads_evaluated, violating_workloads,
          warned_workloads, violations_by_rule, violations_by_tenant, sample, revoked_workloads,
          notifications;

-- name: get_evaluation
SELECT id, started_at, finished_at, triggers, trigger_count, policy_set_version,
       policy_set_hash, fleet_generation, workloads_evaluated, violating_workloads,
       warned_workloads, violations_by_rule, violations_by_tenant, sample, revoked_workloads,
       notifications
FROM compliance_evaluation WHERE id = %(id)s;

-- name: latest_evaluation
SELECT id, started_at, finished_at, triggers, trigger_count, policy_set_version,
       policy_set_hash, fleet_generation, workloads_evaluated, violating_workloads,
       warned_workloads, violations_by_rule, violations_by_tenant, sample, revoked_workloads,
       notifications
FROM compliance_evaluation ORDER BY finished_at DESC, id LIMIT 1;

-- name: list_evaluations
SELECT id, started_at, finished_at, triggers, trigger_count, policy_set_version,
       policy_set_hash, fleet_generation, workloads_evaluated, violating_workloads,
       warned_workloads, violations_by_rule, violations_by_tenant, revoked_workloads,
       notifications
FROM compliance_evaluation
ORDER BY finished_at DESC, id
LIMIT %(limit)s OFFSET %(offset)s;

-- name: count_evaluations
SELECT count(*) AS total FROM compliance_evaluation;

-- name: revoke_workloads
-- Ends the running workloads an evaluation revokes, each with its own `revocation`, and
-- stamps it with the transaction's time (the workload's `ended_at`). The UPDATE locks each
-- row and re-checks its status: a workload released or expired by a transaction that
-- committed meanwhile is left as that one left it, and not returned.
UPDATE workload w
SET status = 'revoked', ended_at = now(),
    revocation = r.revocation || jsonb_build_object('revoked_at', now())
FROM unnest(%(ids)s::uuid[], %(revocations)s::jsonb[]) AS r (id, revocation)
WHERE w.id = r.id AND w.status = 'admitted'
RETURNING w.id, w.node_id, w.gpu_uuids, w.lease_expires_at, w.ended_at;

-- name: free_reservations
-- The GPUs (and MIG slices, by MIG device UUID) of revoked workloads, free for the next
-- admission once this commits.
WITH gpus AS (
    DELETE FROM gpu_reservation WHERE workload_id = ANY(%(ids)s)
    RETURNING workload_id, gpu_uuid
), slices AS (
    DELETE FROM mig_reservation WHERE workload_id = ANY(%(ids)s)
    RETURNING workload_id, mig_uuid
)
SELECT workload_id, gpu_uuid FROM gpus
UNION ALL
SELECT workload_id, mig_uuid FROM slices;

-- name: announced
-- Which of these workloads' violations have a delivery already, by policy: one
-- notification per workload and policy, however many evaluations find it again.
SELECT workload_id, policy FROM violation_delivery WHERE workload_id = ANY(%(ids)s);

-- name: insert_deliveries
-- ON CONFLICT: an evaluation running beside this one may have announced it first.
INSERT INTO violation_delivery (id, workload_id, policy, action, evaluation_id, body)
SELECT d.id, d.workload_id, d.policy, d.action, %(evaluation_id)s, d.body
FROM unnest(%(ids)s::uuid[], %(workload_ids)s::uuid[], %(policies)s::text[],
            %(actions)s::text[], %(bodies)s::text[]) AS d (id, workload_id, policy, action, body)
ON CONFLICT ON CONSTRAINT violation_delivery_once DO NOTHING
RETURNING id;

-- name: claim_due_deliveries
-- Pending deliveries whose time has come, the most overdue first, each claimed for one
-- attempt: counted, and hidden from other senders for `claim_seconds` (far longer than an
-- attempt's timeout), so the claim commits before anything is sent and no transaction
-- stays open across the HTTP call. A sender that dies mid-attempt leaves the delivery to
-- be tried again when the claim runs out. SKIP LOCKED: two senders never claim one row.
UPDATE violation_delivery
SET attempts = attempts + 1, last_attempt_at = now(),
    next_attempt_at = now() + make_interval(secs => %(claim_seconds)s)
WHERE id IN (
    SELECT id FROM violation_delivery
    WHERE status = 'pending' AND next_attempt_at <= now()
    ORDER BY next_attempt_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
RETURNING id, body, attempts;

-- name: delivery_succeeded
UPDATE violation_delivery
SET status = 'delivered', delivered_at = now(), last_status = %(status)s, last_error = NULL
WHERE id = %(id)s AND status = 'pending';

-- name: delivery_failed
-- After the last attempt the delivery is `failed`; before, it waits `delay` seconds.
UPDATE violation_delivery
SET last_status = %(status)s, last_error = %(error)s,
    status = CASE WHEN attempts >= %(max_attempts)s THEN 'failed' ELSE 'pending' END,
    next_attempt_at = now() + make_interval(secs => %(delay)s)
WHERE id = %(id)s AND status = 'pending';

-- name: next_due_in
-- Seconds until the next pending delivery is due (negative: overdue), or null.
SELECT extract(epoch FROM min(next_attempt_at) - clock_timestamp())::float8 AS seconds
FROM violation_delivery WHERE status = 'pending';

-- name: list_deliveries
SELECT id, workload_id, policy, action, evaluation_id, body::jsonb AS payload, created_at,
       status, attempts, CASE WHEN status = 'pending' THEN next_attempt_at END AS next_attempt_at,
       last_attempt_at, last_status, last_error, delivered_at
FROM violation_delivery
WHERE (%(status)s::text IS NULL OR status = %(status)s)
  AND (%(workload_id)s::uuid IS NULL OR workload_id = %(workload_id)s)
ORDER BY created_at DESC, id
LIMIT %(limit)s OFFSET %(offset)s;

-- name: count_deliveries
SELECT count(*) AS total FROM violation_delivery
WHERE (%(status)s::text IS NULL OR status = %(status)s)
  AND (%(workload_id)s::uuid IS NULL OR workload_id = %(workload_id)s);

-- name: pod_decisions
-- The stored webhook decisions that running pods name in their sovereign.io/decision-id
-- annotation (migration 0023), for the pod sweep to check each is really the pod's own.
SELECT id, namespace, kind, name, webhook, outcome, tenant_slug AS tenant, request
FROM pod_decision
WHERE id = ANY(%(ids)s::uuid[]);

-- name: note_eviction_refused
-- One more refusal of a pod's eviction; `previous_policies` is null for the first one, so
-- the caller audits a refusal only when it is new or its revoking policies changed.
WITH previous AS (
    SELECT policies FROM pod_eviction_block WHERE pod_uid = %(pod_uid)s
)
INSERT INTO pod_eviction_block (pod_uid, namespace, name, decision_id, policies, refusal)
VALUES (%(pod_uid)s, %(namespace)s, %(name)s, %(decision_id)s, %(policies)s, %(refusal)s)
ON CONFLICT ON CONSTRAINT pod_eviction_block_pkey DO UPDATE
SET policies = EXCLUDED.policies, refusal = EXCLUDED.refusal, last_refused_at = now(),
    refusals = pod_eviction_block.refusals + 1
RETURNING (SELECT policies FROM previous) AS previous_policies;

-- name: forget_eviction_blocks
-- After a complete sweep: the pods it did not find blocked (evicted, gone, compliant
-- again) are no longer waiting on a disruption budget. The table holds only blocked pods.
DELETE FROM pod_eviction_block WHERE NOT (pod_uid = ANY(%(still_blocked)s::text[]));

-- name: try_pod_sweep_lock
-- One pod sweep at a time (beat's and an evaluation's may overlap): a session lock, held
-- by the sweep's own connection until it unlocks or closes, so a second sweep returns at
-- once instead of evicting (and auditing) the same pods again.
SELECT pg_try_advisory_lock(%(key)s) AS locked;

-- name: pod_sweep_unlock
SELECT pg_advisory_unlock(%(key)s) AS unlocked;
