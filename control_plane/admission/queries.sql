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
