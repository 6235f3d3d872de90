-- depends: 0005_policies
-- Workload admission and GPU placement. Every decision is a `workload` row, admitted or
-- denied, so decisions can be listed; an admitted workload holds its GPUs through
-- `gpu_reservation` rows until it is released or its lease expires. The primary key of
-- `gpu_reservation` is the GPU's UUID: two transactions can never book the same GPU,
-- whatever the application does. Reservations are deleted when the workload ends; the
-- workload row keeps the GPU UUIDs it held, for the record.

CREATE TABLE workload (
    id                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_slug        text NOT NULL CONSTRAINT workload_tenant_fkey REFERENCES tenant (slug),
    -- The request as validated (datasets, models, output, GPU count and kind, labels).
    request            jsonb NOT NULL,
    strategy           text NOT NULL CONSTRAINT workload_strategy_valid
                       CHECK (strategy IN ('binpack', 'spread')),
    -- Lifecycle: admitted (holds GPUs) -> released | expired; denied is final.
    status             text NOT NULL CONSTRAINT workload_status_valid
                       CHECK (status IN ('admitted', 'denied', 'released', 'expired')),
    -- The policy engine's verdict, as it was when the workload was decided.
    outcome            text NOT NULL CONSTRAINT workload_outcome_valid
                       CHECK (outcome IN ('admitted', 'admitted_with_warnings', 'denied')),
    reasons            jsonb NOT NULL DEFAULT '[]',
    policy_set_version integer NOT NULL,
    policy_set_hash    text NOT NULL CONSTRAINT workload_policy_set_hash_format
                       CHECK (policy_set_hash ~ '^[0-9a-f]{64}$'),
    -- Placement (null when denied): the node, the zone it was in, the GPUs booked.
    node_id            uuid CONSTRAINT workload_node_fkey REFERENCES node (id),
    zone_slug          text,
    gpu_uuids          text[] NOT NULL DEFAULT '{}',
    lease_seconds      integer NOT NULL CONSTRAINT workload_lease_seconds_range
                       CHECK (lease_seconds BETWEEN 30 AND 86400),
    lease_expires_at   timestamptz,
    created_at         timestamptz NOT NULL DEFAULT now(),
    -- The actor's name, copied as the audit log does, so it outlives the token.
    created_by         text NOT NULL,
    ended_at           timestamptz,
    CONSTRAINT workload_placed_when_admitted CHECK (
        status = 'denied' OR (node_id IS NOT NULL AND lease_expires_at IS NOT NULL)
    ),
    CONSTRAINT workload_ended_when_finished CHECK (
        (status IN ('released', 'expired')) = (ended_at IS NOT NULL)
    )
);

CREATE INDEX workload_tenant_created_idx ON workload (tenant_slug, created_at);
CREATE INDEX workload_status_created_idx ON workload (status, created_at);
-- The lease sweep looks only at running workloads, oldest lease first.
CREATE INDEX workload_lease_expires_idx ON workload (lease_expires_at)
    WHERE status = 'admitted';
CREATE INDEX workload_node_id_idx ON workload (node_id);

CREATE TABLE gpu_reservation (
    -- One reservation per GPU, ever: this key is what makes double booking impossible.
    -- A GPU that disappears from its node's inventory takes its reservation with it.
    gpu_uuid    text CONSTRAINT gpu_reservation_pkey PRIMARY KEY
                CONSTRAINT gpu_reservation_gpu_fkey REFERENCES gpu (uuid) ON DELETE CASCADE,
    workload_id uuid NOT NULL
                CONSTRAINT gpu_reservation_workload_fkey REFERENCES workload (id),
    node_id     uuid NOT NULL CONSTRAINT gpu_reservation_node_fkey REFERENCES node (id),
    -- Copies of the node's zone and the workload's tenant when booked: what quotas count.
    zone_slug   text,
    tenant_slug text NOT NULL,
    reserved_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX gpu_reservation_workload_idx ON gpu_reservation (workload_id);
CREATE INDEX gpu_reservation_node_idx ON gpu_reservation (node_id);
CREATE INDEX gpu_reservation_tenant_zone_idx ON gpu_reservation (tenant_slug, zone_slug);

-- Decisions are kept: the application may insert and update workloads, never delete them.
GRANT SELECT, INSERT, UPDATE ON workload TO sovereign_app;
GRANT SELECT, INSERT, DELETE ON gpu_reservation TO sovereign_app;
