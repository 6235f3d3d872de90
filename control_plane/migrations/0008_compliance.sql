-- depends: 0007_fleet_generation
-- Continuous compliance. A change that can make a running workload break the active
-- policy set (a policy set activated or rolled back; a node's zone, provenance, status or
-- labels changed; drift detected or acknowledged; a zone moved; a dataset's or model's
-- storage, classification or labels changed, or one deleted) inserts a
-- `compliance_request` row in the same transaction as the change: an outbox, so no trigger
-- is lost when the worker is down or busy. The compliance task claims the pending requests,
-- re-evaluates every running workload and stores one `compliance_evaluation` row: the
-- exact counts and a capped sample of the violating workloads. Evaluations are evidence,
-- so the application role may only read and insert them.

CREATE TABLE compliance_evaluation (
    id                   uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    started_at           timestamptz NOT NULL,
    finished_at          timestamptz NOT NULL,
    -- The requests it handled, oldest first, capped: [{id, reason, subject, requested_at}].
    triggers             jsonb NOT NULL CONSTRAINT compliance_evaluation_triggers_array
                         CHECK (jsonb_typeof(triggers) = 'array'),
    -- How many requests it handled (exact; `triggers` may hold fewer).
    trigger_count        integer NOT NULL CONSTRAINT compliance_evaluation_trigger_count_positive
                         CHECK (trigger_count >= 1),
    -- The policy set and the fleet generation the workloads were judged under.
    policy_set_version   integer NOT NULL,
    policy_set_hash      text NOT NULL CONSTRAINT compliance_evaluation_policy_set_hash_format
                         CHECK (policy_set_hash ~ '^[0-9a-f]{64}$'),
    fleet_generation     bigint NOT NULL,
    -- Exact counts: running workloads judged, denied under the set, admitted with warnings.
    workloads_evaluated  integer NOT NULL,
    violating_workloads  integer NOT NULL,
    warned_workloads     integer NOT NULL,
    -- Exact: [{policy, rule, workloads}] and {tenant: workloads}, over violating workloads.
    violations_by_rule   jsonb NOT NULL,
    violations_by_tenant jsonb NOT NULL,
    -- The first violating workloads by id, capped: [{workload_id, tenant, node_id,
    -- hostname, zone, reasons}].
    sample               jsonb NOT NULL CONSTRAINT compliance_evaluation_sample_array
                         CHECK (jsonb_typeof(sample) = 'array'),
    CONSTRAINT compliance_evaluation_counts CHECK (
        violating_workloads BETWEEN 0 AND workloads_evaluated
        AND warned_workloads BETWEEN 0 AND workloads_evaluated
    )
);

CREATE INDEX compliance_evaluation_finished_idx ON compliance_evaluation (finished_at DESC, id);

CREATE TABLE compliance_request (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    reason        text NOT NULL CONSTRAINT compliance_request_reason_valid CHECK (reason IN (
                      'policy_set.activated', 'policy_set.rolled_back', 'node.zone_changed',
                      'node.provenance_changed', 'node.status_changed', 'node.labels_changed',
                      'node.drift_detected', 'node.drift_acknowledged', 'zone.changed',
                      'registry.changed', 'requested')),
    -- What changed, as the caller saw it (node id and hostname, before and after, ...).
    subject       jsonb NOT NULL DEFAULT '{}' CONSTRAINT compliance_request_subject_object
                  CHECK (jsonb_typeof(subject) = 'object'),
    requested_at  timestamptz NOT NULL DEFAULT now(),
    -- Set when an evaluation handled it; pending until then.
    evaluation_id uuid CONSTRAINT compliance_request_evaluation_fkey
                  REFERENCES compliance_evaluation (id),
    handled_at    timestamptz,
    CONSTRAINT compliance_request_handled CHECK ((evaluation_id IS NULL) = (handled_at IS NULL))
);

-- The task looks only at pending requests.
CREATE INDEX compliance_request_pending_idx ON compliance_request (id)
    WHERE evaluation_id IS NULL;
CREATE INDEX compliance_request_evaluation_idx ON compliance_request (evaluation_id);

-- Requests are marked handled (UPDATE), never deleted; evaluations are append-only.
GRANT SELECT, INSERT, UPDATE ON compliance_request TO sovereign_app;
GRANT SELECT, INSERT ON compliance_evaluation TO sovereign_app;
