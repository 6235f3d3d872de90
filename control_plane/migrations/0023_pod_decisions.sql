-- depends: 0022_mig_slices
-- Decisions of the Kubernetes admission webhooks on pods (and the pod templates of Jobs
-- and CronJobs). Not `workload` rows: a webhook books no GPUs (kube-scheduler places the
-- pod, on the nodes the decision allowed), so such a decision has no node, no lease and
-- no reservation, and must not be counted by quotas, expired by the lease sweep or
-- re-evaluated on a node it does not hold. Its id is the pod's `sovereign.io/decision-id`
-- annotation. Dry runs are never stored.

CREATE TABLE pod_decision (
    id                 uuid CONSTRAINT pod_decision_pkey PRIMARY KEY,
    namespace          text NOT NULL,
    kind               text NOT NULL CONSTRAINT pod_decision_kind_valid
                       CHECK (kind IN ('Pod', 'Job', 'CronJob')),
    -- The object's name, or its generateName when the API server has not named it yet.
    name               text,
    -- AdmissionReview.request.uid: ties the decision to the API server's audit log.
    review_uid         text NOT NULL,
    webhook            text NOT NULL CONSTRAINT pod_decision_webhook_valid
                       CHECK (webhook IN ('mutate', 'validate')),
    -- No foreign key: an unknown tenant is a denial, recorded with the name it gave.
    tenant_slug        text NOT NULL,
    -- The declaration as decided (the workload request of facts.workloads).
    request            jsonb NOT NULL,
    outcome            text NOT NULL CONSTRAINT pod_decision_outcome_valid
                       CHECK (outcome IN ('admitted', 'admitted_with_warnings', 'denied')),
    reasons            jsonb NOT NULL DEFAULT '[]',
    explanation        jsonb,
    -- How many nodes the injected affinity allows, at which fleet generation.
    eligible_nodes     integer NOT NULL CONSTRAINT pod_decision_eligible_nodes_range
                       CHECK (eligible_nodes >= 0),
    fleet_generation   bigint NOT NULL,
    policy_set_version integer NOT NULL,
    policy_set_hash    text NOT NULL CONSTRAINT pod_decision_policy_set_hash_format
                       CHECK (policy_set_hash ~ '^[0-9a-f]{64}$'),
    -- AdmissionReview.request.userInfo.username, copied as the audit log copies actors.
    username           text NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX pod_decision_namespace_created_idx ON pod_decision (namespace, created_at);
CREATE INDEX pod_decision_tenant_created_idx ON pod_decision (tenant_slug, created_at);

-- Evidence: the application inserts and reads, never changes or deletes.
GRANT SELECT, INSERT ON pod_decision TO sovereign_app;
