-- depends: 0009_audit_lock_head
-- Audit events are linked into the chain at commit instead of when they are recorded.
--
-- Before, `audit.record` took the chain's writer lock, read the head, hashed the event in
-- Python and inserted it, and the lock stayed held until the transaction committed: every
-- audited write in every process queued behind a critical section of three client round
-- trips, the Python work between them (waiting for the GIL under load) and the commit's
-- WAL flush. Under placement load most backends were waiting for that lock.
--
-- Now `audit.record` inserts the event's fields into `audit_pending`, together with the
-- canonical JSON of the hashed fields split around the two values only the chain's head
-- decides (`prev_hash` and `seq`; they sort last, with `request_id` between them). A
-- deferred constraint trigger runs at commit, takes the writer lock, reads the head,
-- hashes the event with the same formula (SHA-256 of the canonical JSON, see
-- control_plane/audit/service.py) and appends it to `audit_event`. The critical section
-- is now that trigger and the WAL flush, with no client round trip in it. Events keep
-- their commit order, a rolled-back transaction leaves nothing, and the chain's format
-- and its verification are unchanged.
--
-- `audit_pending` is UNLOGGED: a row lives only inside its own transaction (the trigger
-- deletes it), so it needs no WAL.
--
-- Lock order. The fleet-generation bump (0007) is also a deferred trigger and takes the
-- `fleet_generation` row lock. A transaction that records an event and then changes a
-- node would take the writer lock before that row lock, one that does it the other way
-- round after it, and the two could deadlock. The bump therefore takes the writer lock
-- first as well, so every transaction takes the writer lock before the row lock.

CREATE UNLOGGED TABLE audit_pending (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    occurred_at timestamptz NOT NULL,
    actor_id    text NOT NULL,
    actor_name  text NOT NULL,
    request_id  text,
    action      text NOT NULL,
    object_type text NOT NULL,
    object_id   text NOT NULL,
    before      json,
    after       json,
    -- The canonical JSON that is hashed is hash_head || prev_hash || hash_tail || seq || '}'.
    hash_head   text NOT NULL,
    hash_tail   text NOT NULL
);

CREATE FUNCTION audit_chain_pending() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
    head_seq  bigint;
    head_hash char(64);
    next_seq  bigint;
    prev      char(64);
BEGIN
    PERFORM pg_advisory_xact_lock(7302519406183735296);
    -- Planned on every call (EXECUTE): a plan kept from when the table was small would
    -- be a scan of the whole table. VOLATILE, so this sees the previous holder's commit.
    EXECUTE 'SELECT seq, hash FROM audit_event ORDER BY seq DESC LIMIT 1'
        INTO head_seq, head_hash;
    next_seq := coalesce(head_seq, 0) + 1;
    prev := coalesce(head_hash, repeat('0', 64));
    INSERT INTO audit_event (seq, occurred_at, actor_id, actor_name, request_id, action,
                             object_type, object_id, before, after, prev_hash, hash)
    VALUES (next_seq, NEW.occurred_at, NEW.actor_id, NEW.actor_name, NEW.request_id,
            NEW.action, NEW.object_type, NEW.object_id, NEW.before, NEW.after, prev,
            encode(sha256(convert_to(
                NEW.hash_head || prev || NEW.hash_tail || next_seq::text || '}', 'UTF8')),
                'hex'));
    DELETE FROM audit_pending WHERE id = NEW.id;
    RETURN NULL;
END
$$;

CREATE CONSTRAINT TRIGGER audit_pending_chain
AFTER INSERT ON audit_pending DEFERRABLE INITIALLY DEFERRED
FOR EACH ROW EXECUTE FUNCTION audit_chain_pending();

CREATE OR REPLACE FUNCTION bump_fleet_generation() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
BEGIN
    -- The audit chain's writer lock first (see the lock order above).
    PERFORM pg_advisory_xact_lock(7302519406183735296);
    UPDATE fleet_generation
    SET generation = generation + 1, bumped_by = pg_current_xact_id()
    WHERE bumped_by IS DISTINCT FROM pg_current_xact_id();
    RETURN NULL;
END
$$;

DROP FUNCTION audit_lock_head();

GRANT INSERT ON audit_pending TO sovereign_app;
