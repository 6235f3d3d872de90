-- name: kubernetes_node_names
-- The Kubernetes node name each node's agent reported (migration 0024), for the nodes the
-- fleet snapshot holds (not decommissioned). One small indexed read per sync.
SELECT id::text AS node_id, kubernetes_node_name
FROM node
WHERE kubernetes_node_name IS NOT NULL AND status <> 'decommissioned';
