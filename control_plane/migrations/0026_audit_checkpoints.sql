-- depends: 0025_pod_eviction_blocks
-- Signed checkpoints of the audit chain (docs/audit.md#checkpoints).
--
-- The hash chain alone cannot show that its newest events were removed: a shorter chain
-- verifies as intact. A checkpoint is a statement, signed with the control plane's Ed25519
-- key, that the chain reached `head_seq` with `head_hash` at `signed_at`; each names the
-- previous checkpoint's hash, so checkpoints form a chain of their own. Once the head has
-- been signed, removing events after it (or rewriting the chain from any event up to it)
-- no longer verifies, by anyone holding the public key, with or without the database.
--
-- `statement` is the exact byte string signed (canonical JSON, ASCII); the other columns
-- repeat its fields for queries, and the verifier checks they agree. `checkpoint_hash` is
-- SHA-256 of `statement`; `public_key` is the signer's SubjectPublicKeyInfo in PEM, so the
-- keys of past rotations stay readable after the key file changed.
--
-- Append-only like the events: the application may read and append, and triggers refuse
-- UPDATE, DELETE and TRUNCATE to everyone (an owner can disable them; the signatures exist
-- to make that visible). Numbers come without gaps: the signer holds an advisory lock and
-- takes the newest number plus one, and the primary key refuses a second at once.

CREATE TABLE audit_checkpoint (
    number                   bigint CONSTRAINT audit_checkpoint_pkey PRIMARY KEY
                             CONSTRAINT audit_checkpoint_number_range CHECK (number >= 1),
    head_seq                 bigint NOT NULL
                             CONSTRAINT audit_checkpoint_head_seq_range CHECK (head_seq >= 1),
    head_hash                char(64) NOT NULL,
    signed_at                timestamptz NOT NULL,
    prev_checkpoint_hash     char(64) NOT NULL,
    key_fingerprint          char(64) NOT NULL,
    previous_key_fingerprint char(64),
    public_key               text NOT NULL,
    statement                text NOT NULL,
    checkpoint_hash          char(64) NOT NULL CONSTRAINT audit_checkpoint_hash_key UNIQUE,
    signature                text NOT NULL
);

CREATE INDEX audit_checkpoint_head_seq_idx ON audit_checkpoint (head_seq);

CREATE FUNCTION audit_checkpoint_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_checkpoint is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER audit_checkpoint_no_update_delete
    BEFORE UPDATE OR DELETE ON audit_checkpoint
    FOR EACH ROW EXECUTE FUNCTION audit_checkpoint_append_only();

CREATE TRIGGER audit_checkpoint_no_truncate
    BEFORE TRUNCATE ON audit_checkpoint
    FOR EACH STATEMENT EXECUTE FUNCTION audit_checkpoint_append_only();

GRANT SELECT, INSERT ON audit_checkpoint TO sovereign_app;

-- Batched appends: a transaction that records many events (a sweep, `record_changes`)
-- read the head from `audit_event` once per event, planning the query each time. Once the
-- first event of a transaction holds the chain's writer lock, no other transaction can
-- append until this one ends, so the head it wrote is the head: it is kept in a
-- transaction-local setting and the next event of the same transaction starts from it.
-- The setting is `SET LOCAL`-scoped (gone at commit or rollback), and deferred triggers
-- run at commit, outside any savepoint, so it never outlives the lock. The format and the
-- hash are unchanged.
CREATE OR REPLACE FUNCTION audit_chain_pending() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
    head_seq  bigint;
    head_hash char(64);
    next_seq  bigint;
    prev      char(64);
    cached    text;
BEGIN
    PERFORM pg_advisory_xact_lock(7302519406183735296);
    cached := current_setting('sovereign.audit_head', true);
    IF cached IS NOT NULL AND cached <> '' THEN
        head_seq := split_part(cached, ':', 1)::bigint;
        head_hash := split_part(cached, ':', 2);
    ELSE
        -- Planned on every call (EXECUTE): a plan kept from when the table was small would
        -- be a scan of the whole table. VOLATILE, so this sees the previous holder's commit.
        EXECUTE 'SELECT seq, hash FROM audit_event ORDER BY seq DESC LIMIT 1'
            INTO head_seq, head_hash;
    END IF;
    next_seq := coalesce(head_seq, 0) + 1;
    prev := coalesce(head_hash, repeat('0', 64));
    head_hash := encode(sha256(convert_to(
        NEW.hash_head || prev || NEW.hash_tail || next_seq::text || '}', 'UTF8')), 'hex');
    INSERT INTO audit_event (seq, occurred_at, actor_id, actor_name, request_id, action,
                             object_type, object_id, before, after, prev_hash, hash)
    VALUES (next_seq, NEW.occurred_at, NEW.actor_id, NEW.actor_name, NEW.request_id,
            NEW.action, NEW.object_type, NEW.object_id, NEW.before, NEW.after, prev,
            head_hash);
    PERFORM set_config('sovereign.audit_head', next_seq::text || ':' || head_hash, true);
    DELETE FROM audit_pending WHERE id = NEW.id;
    RETURN NULL;
END
$$;
