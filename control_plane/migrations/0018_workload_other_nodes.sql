-- depends: 0017_workload_explanation
-- An admitted workload records the verdict on the node it was placed on: its `outcome` and
-- `reasons` are what the engine finds on that node, as compliance judges it later. What
-- warn and dryrun policies found about the other eligible nodes, which the workload does
-- not use, is kept apart here, labelled as such: `{"eligible": n, "reasons": [...]}`, with
-- `eligible` the number of other eligible nodes. Null for denied workloads (no placement),
-- and for workloads admitted before this column, whose outcome and reasons still speak of
-- every eligible node at once.

ALTER TABLE workload ADD COLUMN other_nodes jsonb
    CONSTRAINT workload_other_nodes_object
    CHECK (other_nodes IS NULL OR jsonb_typeof(other_nodes) = 'object');
