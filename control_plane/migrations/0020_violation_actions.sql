-- depends: 0019_asset_grants
-- What continuous compliance does to a running workload that violates a policy, per the
-- policy's `on_violation`: `record` (what it always did), `notify` (a signed webhook) or
-- `revoke` (the workload ends, its GPUs are freed).
--
-- A revoked workload is a fifth, final status. It ends like a release (`ended_at` set, its
-- reservations deleted) and keeps why in `revocation`: the evaluation, the policies that
-- revoked it and the reasons, which its owner reads back with the workload.

ALTER TABLE workload DROP CONSTRAINT workload_status_valid;
ALTER TABLE workload ADD CONSTRAINT workload_status_valid
    CHECK (status IN ('admitted', 'denied', 'released', 'expired', 'revoked'));
ALTER TABLE workload DROP CONSTRAINT workload_ended_when_finished;
ALTER TABLE workload ADD CONSTRAINT workload_ended_when_finished
    CHECK ((status IN ('released', 'expired', 'revoked')) = (ended_at IS NOT NULL));
-- {revoked_at, evaluation_id, policies, reasons}: set once, when the workload is revoked.
ALTER TABLE workload ADD COLUMN revocation jsonb;
ALTER TABLE workload ADD CONSTRAINT workload_revocation_when_revoked
    CHECK ((status = 'revoked') = (revocation IS NOT NULL)
           AND (revocation IS NULL OR jsonb_typeof(revocation) = 'object'));

-- What each evaluation did, beside what it found (exact).
ALTER TABLE compliance_evaluation
    ADD COLUMN revoked_workloads integer NOT NULL DEFAULT 0
        CONSTRAINT compliance_evaluation_revoked_workloads_range
        CHECK (revoked_workloads BETWEEN 0 AND violating_workloads),
    ADD COLUMN notifications integer NOT NULL DEFAULT 0
        CONSTRAINT compliance_evaluation_notifications_positive CHECK (notifications >= 0);

-- The delivery log of violation webhooks, and their outbox: a row is written in the
-- evaluation's transaction (so a notification is never lost, nor sent for an evaluation
-- that rolled back) and the delivery task sends it, retrying with backoff. One row per
-- workload and policy: a workload still in violation at the next evaluation is not
-- announced again.
CREATE TABLE violation_delivery (
    id              uuid PRIMARY KEY,
    workload_id     uuid NOT NULL CONSTRAINT violation_delivery_workload_fkey
                    REFERENCES workload (id),
    policy          text NOT NULL,
    action          text NOT NULL CONSTRAINT violation_delivery_action_valid
                    CHECK (action IN ('notify', 'revoke')),
    -- Deferred: the evaluation's row is inserted last, with the count of these.
    evaluation_id   uuid NOT NULL CONSTRAINT violation_delivery_evaluation_fkey
                    REFERENCES compliance_evaluation (id) DEFERRABLE INITIALLY DEFERRED,
    -- The exact bytes sent and signed (canonical JSON, UTF-8).
    body            text NOT NULL CONSTRAINT violation_delivery_body_size
                    CHECK (octet_length(body) <= 1048576),
    created_at      timestamptz NOT NULL DEFAULT now(),
    status          text NOT NULL DEFAULT 'pending' CONSTRAINT violation_delivery_status_valid
                    CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        integer NOT NULL DEFAULT 0
                    CONSTRAINT violation_delivery_attempts_positive CHECK (attempts >= 0),
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_attempt_at timestamptz,
    -- The receiver's HTTP status, or null when no answer came (timeout, refused, ...).
    last_status     integer,
    -- Bounded: a hostile or broken receiver's answer is cut, never stored whole.
    last_error      text CONSTRAINT violation_delivery_last_error_size
                    CHECK (char_length(last_error) <= 1000),
    delivered_at    timestamptz,
    CONSTRAINT violation_delivery_once UNIQUE (workload_id, policy),
    CONSTRAINT violation_delivery_delivered
        CHECK ((status = 'delivered') = (delivered_at IS NOT NULL))
);

-- The delivery task looks only at pending deliveries, the most overdue first.
CREATE INDEX violation_delivery_due_idx ON violation_delivery (next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX violation_delivery_created_idx ON violation_delivery (created_at DESC, id);
CREATE INDEX violation_delivery_evaluation_idx ON violation_delivery (evaluation_id);

-- Deliveries are inserted and their attempts recorded; the log is never deleted from.
GRANT SELECT, INSERT, UPDATE ON violation_delivery TO sovereign_app;
