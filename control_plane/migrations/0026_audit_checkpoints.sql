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
