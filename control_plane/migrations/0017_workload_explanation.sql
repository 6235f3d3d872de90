-- depends: 0015_node_replacement_approval
-- What a decision recorded of the policy set: the policies selected (name, version,
-- content hash) with each rule's result, and the policies that did not apply and why
-- (`Explanation` in control_plane/policy/models.py). Stored with the workload so the
-- record shows what was decided, never recomputed. Null for workloads decided before
-- decisions were explained. The application already may insert and update workloads.

ALTER TABLE workload ADD COLUMN explanation jsonb;
