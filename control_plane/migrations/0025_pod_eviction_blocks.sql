-- depends: 0024_kubernetes_node_name
-- Pods the pod sweep must evict (a deny policy with on_violation: revoke breaks on their
-- node) but whose eviction the API server refused because a PodDisruptionBudget allows no
-- disruption now (429). The sweep asks again on every run; this row is what keeps it from
-- auditing `pod.eviction_blocked` every time: the event is recorded when the row is made
-- or its revoking policies change. The row goes once a sweep no longer finds the pod
-- blocked (evicted, gone, compliant again), so a later refusal is recorded afresh.
-- Keyed by the pod's uid: a new pod with the same name is another pod.

CREATE TABLE pod_eviction_block (
    pod_uid         text CONSTRAINT pod_eviction_block_pkey PRIMARY KEY,
    namespace       text NOT NULL,
    name            text NOT NULL,
    decision_id     uuid NOT NULL CONSTRAINT pod_eviction_block_decision_fkey
                    REFERENCES pod_decision (id),
    -- The deny policies with on_violation: revoke it breaks, sorted.
    policies        text[] NOT NULL,
    -- The API server's message for the last refusal.
    refusal         text NOT NULL,
    first_refused_at timestamptz NOT NULL DEFAULT now(),
    last_refused_at timestamptz NOT NULL DEFAULT now(),
    refusals        integer NOT NULL DEFAULT 1 CONSTRAINT pod_eviction_block_refusals_range
                    CHECK (refusals >= 1)
);

-- State of the sweep, not evidence (the audit log holds that): the worker keeps it current.
GRANT SELECT, INSERT, UPDATE, DELETE ON pod_eviction_block TO sovereign_app;
