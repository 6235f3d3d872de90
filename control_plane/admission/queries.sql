-- name: insert_pod_decision
INSERT INTO pod_decision (id, namespace, kind, name, review_uid, webhook, tenant_slug, request,
                          outcome, reasons, explanation, eligible_nodes, fleet_generation,
                          policy_set_version, policy_set_hash, username)
VALUES (%(id)s, %(namespace)s, %(kind)s, %(name)s, %(review_uid)s, %(webhook)s, %(tenant)s,
        %(request)s, %(outcome)s, %(reasons)s, %(explanation)s, %(eligible_nodes)s,
        %(fleet_generation)s, %(policy_set_version)s, %(policy_set_hash)s, %(username)s)
RETURNING id, namespace, kind, name, review_uid, webhook, tenant_slug AS tenant, request, outcome,
          reasons, explanation, eligible_nodes, fleet_generation, policy_set_version,
          policy_set_hash, username, created_at;

-- name: get_pod_decision
SELECT id, namespace, kind, name, review_uid, webhook, tenant_slug AS tenant, request, outcome,
       reasons, explanation, eligible_nodes, fleet_generation, policy_set_version,
       policy_set_hash, username, created_at
FROM pod_decision
WHERE id = %(id)s;

-- name: find_reinvoked_decision
-- The mutating webhook's recent admit that a reinvoked call for the same object made
-- (admission.service._reinvoked says why each column must match).
SELECT id, namespace, kind, name, review_uid, webhook, tenant_slug AS tenant, request, outcome,
       reasons, explanation, eligible_nodes, fleet_generation, policy_set_version,
       policy_set_hash, username, created_at
FROM pod_decision
WHERE id = %(id)s
  AND webhook = 'mutate'
  AND outcome IN ('admitted', 'admitted_with_warnings')
  AND outcome = %(outcome)s
  AND namespace = %(namespace)s
  AND kind = %(kind)s
  AND name IS NOT DISTINCT FROM %(name)s
  AND username = %(username)s
  AND request = %(request)s
  AND eligible_nodes = %(eligible_nodes)s
  AND fleet_generation = %(fleet_generation)s
  AND policy_set_version = %(policy_set_version)s
  AND policy_set_hash = %(policy_set_hash)s
  AND created_at >= now() - make_interval(secs => %(window_seconds)s);
