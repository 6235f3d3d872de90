-- The node label sync's latest report, kept where admins and auditors can read it.
-- depends: 0030_metering_lapsed_leases
--
-- Until now what a run found (above all the Kubernetes Nodes the inventory has no node
-- for, which get no labels) lived only in the worker's log and the Celery result. One
-- row, replaced by every run (`GET /v1/cluster/label-sync`, the metric
-- `sovereign_kubernetes_unknown_nodes`); the labels each run changed are audited as
-- `kubernetes_node.labels_synced`, in the same transaction.

CREATE TABLE label_sync_report (
    only_row      boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    finished_at   timestamptz NOT NULL,
    nodes_seen    integer NOT NULL CHECK (nodes_seen >= 0),
    patched       integer NOT NULL CHECK (patched >= 0),
    unchanged     integer NOT NULL CHECK (unchanged >= 0),
    unknown_count integer NOT NULL CHECK (unknown_count >= 0),
    -- A sample (at most 100 names, `cluster.models.UNKNOWN_SAMPLE`); the count is exact.
    unknown       text[] NOT NULL,
    CHECK (cardinality(unknown) <= unknown_count),
    CHECK (patched + unchanged <= nodes_seen AND unknown_count <= nodes_seen)
);

GRANT SELECT, INSERT, UPDATE ON label_sync_report TO sovereign_app;
