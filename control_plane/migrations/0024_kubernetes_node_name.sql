-- depends: 0023_pod_decisions
-- The Kubernetes Node a GPU server is, as its agent reports it (the DaemonSet passes the
-- downward API's spec.nodeName). The node label sync matches Nodes by it, and by hostname
-- for nodes whose agent does not report one. Not unique: two nodes claiming one name are
-- both left unlabelled (and reported) by the sync rather than refused at registration.
ALTER TABLE node ADD COLUMN kubernetes_node_name text;
CREATE INDEX node_kubernetes_node_name_idx ON node (kubernetes_node_name)
    WHERE kubernetes_node_name IS NOT NULL;
