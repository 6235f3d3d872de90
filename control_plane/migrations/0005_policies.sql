-- depends: 0004_registry
-- The policy store. Every policy document ever applied is kept as a numbered version of its
-- name; a policy set is a list of (name, version) members made active together. Activating
-- or rolling back always inserts a new set, so the history is a line and the active set is
-- simply the one with the highest version. Both tables are append-only for the application
-- role: it may read and insert, never change or delete.

CREATE TABLE policy_version (
    name         text NOT NULL
                 CONSTRAINT policy_version_name_format
                 CHECK (name ~ '^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$'),
    version      integer NOT NULL CONSTRAINT policy_version_version_positive CHECK (version >= 1),
    -- The validated PolicyDocument as JSON (defaults filled in, slugs and countries normalised).
    document     jsonb NOT NULL,
    -- SHA-256 of the document's canonical JSON, as a one-document set would hash it.
    content_hash text NOT NULL
                 CONSTRAINT policy_version_content_hash_format
                 CHECK (content_hash ~ '^[0-9a-f]{64}$'),
    created_at   timestamptz NOT NULL DEFAULT now(),
    -- The actor's name, copied (as the audit log does) so it outlives the token; the
    -- policy.applied audit event has the actor's id.
    created_by   text NOT NULL,
    CONSTRAINT policy_version_pkey PRIMARY KEY (name, version)
);

CREATE TABLE policy_set (
    -- Numbered 1, 2, 3, ... with no gaps (assigned under a lock, not from a sequence).
    version          integer NOT NULL CONSTRAINT policy_set_version_positive
                     CHECK (version >= 1),
    -- SHA-256 of the members' documents, as compile_policy_set computes it.
    content_hash     text NOT NULL
                     CONSTRAINT policy_set_content_hash_format
                     CHECK (content_hash ~ '^[0-9a-f]{64}$'),
    -- [{"name": ..., "version": ...}, ...] by name.
    members          jsonb NOT NULL
                     CONSTRAINT policy_set_members_array CHECK (jsonb_typeof(members) = 'array'),
    activated_at     timestamptz NOT NULL DEFAULT now(),
    activated_by     text NOT NULL,
    note             text NOT NULL DEFAULT '',
    -- The set that was active until this one was activated (null for the first).
    previous_version integer CONSTRAINT policy_set_previous_version_fkey
                     REFERENCES policy_set (version),
    -- For a rollback: the earlier set whose members this one restores.
    restores_version integer CONSTRAINT policy_set_restores_version_fkey
                     REFERENCES policy_set (version),
    CONSTRAINT policy_set_pkey PRIMARY KEY (version)
);

GRANT SELECT, INSERT ON policy_version, policy_set TO sovereign_app;
