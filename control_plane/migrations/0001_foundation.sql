-- Foundation: residency zones, sites, nodes, GPUs, API tokens and the audit chain.

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'sovereign_app') THEN
        CREATE ROLE sovereign_app NOLOGIN;
    END IF;
    -- A non-superuser owner must be a member to SET ROLE on its pooled connections.
    IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        EXECUTE format('GRANT sovereign_app TO %I', current_user);
    END IF;
END
$$;

CREATE TABLE residency_zone (
    slug        text PRIMARY KEY
                CONSTRAINT residency_zone_slug_format
                CHECK (slug ~ '^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$'),
    name        text NOT NULL CONSTRAINT residency_zone_name_nonempty CHECK (name <> ''),
    country     char(2) NOT NULL CONSTRAINT residency_zone_country_format
                CHECK (country ~ '^[A-Z]{2}$'),
    parent_slug text CONSTRAINT residency_zone_parent_fkey REFERENCES residency_zone (slug),
    description text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT residency_zone_not_own_parent CHECK (parent_slug IS DISTINCT FROM slug)
);

CREATE TABLE site (
    slug        text PRIMARY KEY
                CONSTRAINT site_slug_format
                CHECK (slug ~ '^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$'),
    name        text NOT NULL,
    zone_slug   text NOT NULL CONSTRAINT site_zone_fkey REFERENCES residency_zone (slug),
    description text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE node (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    hostname            text NOT NULL,
    machine_id          text NOT NULL CONSTRAINT node_machine_id_key UNIQUE,
    site_slug           text CONSTRAINT node_site_fkey REFERENCES site (slug),
    zone_slug           text CONSTRAINT node_zone_fkey REFERENCES residency_zone (slug),
    status              text NOT NULL DEFAULT 'active' CONSTRAINT node_status_valid
                        CHECK (status IN ('planned', 'active', 'maintenance', 'offline',
                                          'quarantined', 'decommissioned')),
    labels              jsonb NOT NULL DEFAULT '{}',
    last_heartbeat_at   timestamptz,
    last_heartbeat_seq  bigint NOT NULL DEFAULT 0,
    agent_version       text,
    os_name             text,
    kernel_version      text,
    cpu_model           text,
    cpu_count           integer,
    memory_bytes        bigint,
    system_manufacturer text,
    system_model        text,
    system_serial       text,
    board_vendor        text,
    board_name          text,
    asset_tag           text,
    -- Declared country of final assembly, and per component class (gpu, cpu, board, nic).
    origin_country      char(2) CONSTRAINT node_origin_country_format
                        CHECK (origin_country ~ '^[A-Z]{2}$'),
    component_origins   jsonb NOT NULL DEFAULT '{}',
    provenance_status   text NOT NULL DEFAULT 'unknown' CONSTRAINT node_provenance_status_valid
                        CHECK (provenance_status IN ('declared', 'verified', 'mismatch', 'unknown')),
    provenance_evidence jsonb NOT NULL DEFAULT '{}',
    inventory_hash      text,
    registered_at       timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX node_zone_slug_idx ON node (zone_slug);
CREATE INDEX node_origin_country_idx ON node (origin_country);
CREATE INDEX node_status_idx ON node (status);
CREATE INDEX node_hostname_idx ON node (hostname);

CREATE TABLE gpu (
    -- NVML's GPU UUID is globally unique; a second node claiming one is a conflict.
    uuid               text CONSTRAINT gpu_pkey PRIMARY KEY,
    node_id            uuid NOT NULL CONSTRAINT gpu_node_fkey REFERENCES node (id) ON DELETE CASCADE,
    index              integer NOT NULL CONSTRAINT gpu_index_nonnegative CHECK (index >= 0),
    model              text NOT NULL,
    serial             text,
    board_part_number  text,
    vbios_version      text,
    memory_total_bytes bigint,
    mig_mode           text,
    driver_version     text,
    cuda_version       text,
    ecc_mode           text,
    health             text NOT NULL DEFAULT 'unknown',
    -- Latest telemetry, overwritten by each heartbeat: current state, not history.
    utilization_pct    real,
    memory_used_bytes  bigint,
    temperature_c      real,
    power_w            real,
    telemetry_at       timestamptz,
    CONSTRAINT gpu_node_index_key UNIQUE (node_id, index) DEFERRABLE INITIALLY DEFERRED
);

CREATE INDEX gpu_model_idx ON gpu (model);

-- One definition of "nodes matching these filters" for both the page and its total.
-- A zone filter includes every zone nested below it.
CREATE FUNCTION node_search(
    p_zone text, p_site text, p_origin_country text, p_status text, p_gpu_model text,
    p_provenance_status text
) RETURNS SETOF node
LANGUAGE sql STABLE AS $$
    WITH RECURSIVE zone_scope(slug) AS (
        SELECT slug FROM residency_zone WHERE slug = p_zone
        UNION
        SELECT z.slug FROM residency_zone z JOIN zone_scope s ON z.parent_slug = s.slug
    )
    SELECT n.* FROM node n
    WHERE (p_zone IS NULL OR n.zone_slug IN (SELECT slug FROM zone_scope))
      AND (p_site IS NULL OR n.site_slug = p_site)
      AND (p_origin_country IS NULL OR n.origin_country = p_origin_country)
      AND (p_status IS NULL OR n.status = p_status)
      AND (p_provenance_status IS NULL OR n.provenance_status = p_provenance_status)
      AND (p_gpu_model IS NULL OR EXISTS (
            SELECT 1 FROM gpu g
            WHERE g.node_id = n.id AND strpos(lower(g.model), lower(p_gpu_model)) > 0))
$$;

CREATE TABLE api_token (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name         text NOT NULL CONSTRAINT api_token_name_nonempty CHECK (name <> ''),
    role         text NOT NULL CONSTRAINT api_token_role_valid
                 CHECK (role IN ('admin', 'operator', 'auditor', 'bootstrap', 'agent')),
    -- HMAC-SHA256 of the token under the server secret; the token itself is never stored.
    token_hash   text NOT NULL CONSTRAINT api_token_hash_key UNIQUE,
    token_prefix text NOT NULL,
    node_id      uuid CONSTRAINT api_token_node_fkey REFERENCES node (id) ON DELETE CASCADE,
    created_by   text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz,
    CONSTRAINT api_token_agent_has_node CHECK ((role = 'agent') = (node_id IS NOT NULL))
);

CREATE UNIQUE INDEX api_token_active_name_key ON api_token (name)
    WHERE revoked_at IS NULL AND role <> 'agent';

CREATE TABLE audit_event (
    seq         bigint PRIMARY KEY CONSTRAINT audit_event_seq_positive CHECK (seq > 0),
    occurred_at timestamptz NOT NULL,
    actor_id    text NOT NULL,
    actor_name  text NOT NULL,
    request_id  text,
    action      text NOT NULL,
    object_type text NOT NULL,
    object_id   text NOT NULL,
    -- json, not jsonb: the stored text is exactly what was hashed.
    before      json,
    after       json,
    prev_hash   char(64) NOT NULL,
    hash        char(64) NOT NULL CONSTRAINT audit_event_hash_key UNIQUE
);

CREATE INDEX audit_event_object_idx ON audit_event (object_type, object_id);
CREATE INDEX audit_event_occurred_at_idx ON audit_event (occurred_at);

CREATE FUNCTION audit_event_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_event is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER audit_event_no_update_delete
    BEFORE UPDATE OR DELETE ON audit_event
    FOR EACH ROW EXECUTE FUNCTION audit_event_append_only();

CREATE TRIGGER audit_event_no_truncate
    BEFORE TRUNCATE ON audit_event
    FOR EACH STATEMENT EXECUTE FUNCTION audit_event_append_only();

GRANT USAGE ON SCHEMA public TO sovereign_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON residency_zone, site, node, gpu, api_token
    TO sovereign_app;
-- The application may read and append evidence, never rewrite or remove it.
GRANT SELECT, INSERT ON audit_event TO sovereign_app;
