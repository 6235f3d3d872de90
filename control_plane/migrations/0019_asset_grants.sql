-- depends: 0018_workload_other_nodes
-- Grants: a tenant uses another tenant's dataset or model only through a grant.
--
-- A dataset or model belongs to its owner tenant (`owner_tenant`). Admission and the
-- compliance evaluation deny a workload of any other tenant that names it, unless a grant
-- in force names that tenant: not revoked, and not past `expires_at` at decision time.
--
-- Grants are evidence, so rows are never deleted and only their end is written after
-- insertion: the application role may UPDATE the revocation columns and the moment the
-- expiry was noticed, nothing else (column privileges), and the trigger below makes both
-- final once set. There is no foreign key to the asset (one table serves both kinds); the
-- registry refuses to delete an asset while a grant on it is in force, so a name
-- registered again later never inherits a grant.

CREATE TABLE asset_grant (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    kind            text NOT NULL CONSTRAINT asset_grant_kind_valid
                    CHECK (kind IN ('dataset', 'model')),
    asset_name      text NOT NULL,
    -- The asset's owner when the grant was made (evidence: an owner may change later).
    owner_tenant    text NOT NULL,
    grantee_tenant  text NOT NULL
                    CONSTRAINT asset_grant_grantee_fkey REFERENCES tenant (slug),
    reason          text NOT NULL CONSTRAINT asset_grant_reason_nonempty
                    CHECK (btrim(reason) <> ''),
    granted_by_id   text NOT NULL,
    granted_by_name text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz,
    revoked_at      timestamptz,
    revoked_by_id   text,
    revoked_by_name text,
    -- When the compliance task noticed the expiry and asked for an evaluation.
    expiry_noticed_at timestamptz,
    CONSTRAINT asset_grant_not_to_owner CHECK (grantee_tenant <> owner_tenant),
    CONSTRAINT asset_grant_expires_after_creation
        CHECK (expires_at IS NULL OR expires_at > created_at),
    CONSTRAINT asset_grant_revocation_complete CHECK (
        (revoked_at IS NULL) = (revoked_by_id IS NULL)
        AND (revoked_at IS NULL) = (revoked_by_name IS NULL))
);

CREATE INDEX asset_grant_asset_idx ON asset_grant (kind, asset_name);
CREATE INDEX asset_grant_grantee_idx ON asset_grant (grantee_tenant);
-- What the compliance task looks at on every beat: grants that may expire unnoticed.
CREATE INDEX asset_grant_unnoticed_expiry_idx ON asset_grant (expires_at)
    WHERE expires_at IS NOT NULL AND revoked_at IS NULL AND expiry_noticed_at IS NULL;

CREATE FUNCTION asset_grant_end_is_final() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.revoked_at IS NOT NULL AND NEW.revoked_at IS DISTINCT FROM OLD.revoked_at THEN
        RAISE EXCEPTION 'asset_grant % is revoked: a revocation is final', OLD.id;
    END IF;
    IF OLD.expiry_noticed_at IS NOT NULL
       AND NEW.expiry_noticed_at IS DISTINCT FROM OLD.expiry_noticed_at THEN
        RAISE EXCEPTION 'asset_grant % expired: its expiry is final', OLD.id;
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER asset_grant_end_is_final BEFORE UPDATE ON asset_grant
    FOR EACH ROW EXECUTE FUNCTION asset_grant_end_is_final();

GRANT SELECT, INSERT ON asset_grant TO sovereign_app;
GRANT UPDATE (revoked_at, revoked_by_id, revoked_by_name, expiry_noticed_at)
    ON asset_grant TO sovereign_app;
