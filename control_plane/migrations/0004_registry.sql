-- depends: 0003_heartbeat_telemetry
-- The registry: what AI workloads touch. Tenants (departments or projects) with GPU quotas
-- per residency zone; datasets and models with their owner, classification, labels and the
-- zones they are stored in (models also with provenance and license); and artifact
-- destinations, where outputs are written. Storage zones are join tables so that a zone
-- cannot be deleted while something is stored in it.

CREATE TABLE tenant (
    slug        text PRIMARY KEY
                CONSTRAINT tenant_slug_format
                CHECK (slug ~ '^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$'),
    name        text NOT NULL CONSTRAINT tenant_name_nonempty CHECK (name <> ''),
    description text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE tenant_quota (
    tenant_slug          text NOT NULL
                         CONSTRAINT tenant_quota_tenant_fkey REFERENCES tenant (slug)
                         ON DELETE CASCADE,
    zone_slug            text NOT NULL
                         CONSTRAINT tenant_quota_zone_fkey REFERENCES residency_zone (slug),
    -- GPUs the tenant may hold at once in the zone.
    max_gpus             integer NOT NULL
                         CONSTRAINT tenant_quota_max_gpus_nonnegative CHECK (max_gpus >= 0),
    -- GPU-hours per period; null means no limit on hours, only on GPUs at once.
    gpu_hours_per_period numeric
                         CONSTRAINT tenant_quota_gpu_hours_nonnegative
                         CHECK (gpu_hours_per_period >= 0 AND gpu_hours_per_period <> 'NaN'),
    period               text NOT NULL DEFAULT 'month' CONSTRAINT tenant_quota_period_valid
                         CHECK (period IN ('day', 'week', 'month')),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT tenant_quota_pkey PRIMARY KEY (tenant_slug, zone_slug)
);

CREATE INDEX tenant_quota_zone_slug_idx ON tenant_quota (zone_slug);

CREATE TABLE dataset (
    name           text PRIMARY KEY
                   CONSTRAINT dataset_name_format
                   CHECK (name ~ '^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$'),
    owner_tenant   text NOT NULL CONSTRAINT dataset_owner_tenant_fkey REFERENCES tenant (slug),
    classification text NOT NULL CONSTRAINT dataset_classification_valid
                   CHECK (classification IN ('public', 'internal', 'confidential', 'restricted')),
    labels         jsonb NOT NULL DEFAULT '{}',
    description    text NOT NULL DEFAULT '',
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX dataset_owner_tenant_idx ON dataset (owner_tenant);

CREATE TABLE dataset_storage_zone (
    dataset_name text NOT NULL
                 CONSTRAINT dataset_storage_zone_dataset_fkey REFERENCES dataset (name)
                 ON DELETE CASCADE,
    zone_slug    text NOT NULL
                 CONSTRAINT dataset_storage_zone_zone_fkey REFERENCES residency_zone (slug),
    CONSTRAINT dataset_storage_zone_pkey PRIMARY KEY (dataset_name, zone_slug)
);

CREATE INDEX dataset_storage_zone_zone_slug_idx ON dataset_storage_zone (zone_slug);

CREATE TABLE model (
    name           text PRIMARY KEY
                   CONSTRAINT model_name_format
                   CHECK (name ~ '^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$'),
    owner_tenant   text NOT NULL CONSTRAINT model_owner_tenant_fkey REFERENCES tenant (slug),
    classification text NOT NULL CONSTRAINT model_classification_valid
                   CHECK (classification IN ('public', 'internal', 'confidential', 'restricted')),
    labels         jsonb NOT NULL DEFAULT '{}',
    description    text NOT NULL DEFAULT '',
    -- Provenance of the weights: who supplied them and the supplier's country.
    supplier       text NOT NULL CONSTRAINT model_supplier_nonempty CHECK (supplier <> ''),
    origin_country char(2) NOT NULL CONSTRAINT model_origin_country_format
                   CHECK (origin_country ~ '^[A-Z]{2}$'),
    license        text NOT NULL CONSTRAINT model_license_nonempty CHECK (license <> ''),
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX model_owner_tenant_idx ON model (owner_tenant);
CREATE INDEX model_origin_country_idx ON model (origin_country);

CREATE TABLE model_storage_zone (
    model_name text NOT NULL
               CONSTRAINT model_storage_zone_model_fkey REFERENCES model (name)
               ON DELETE CASCADE,
    zone_slug  text NOT NULL
               CONSTRAINT model_storage_zone_zone_fkey REFERENCES residency_zone (slug),
    CONSTRAINT model_storage_zone_pkey PRIMARY KEY (model_name, zone_slug)
);

CREATE INDEX model_storage_zone_zone_slug_idx ON model_storage_zone (zone_slug);

CREATE TABLE artifact_destination (
    name        text PRIMARY KEY
                CONSTRAINT artifact_destination_name_format
                CHECK (name ~ '^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$'),
    zone_slug   text NOT NULL
                CONSTRAINT artifact_destination_zone_fkey REFERENCES residency_zone (slug),
    description text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX artifact_destination_zone_slug_idx ON artifact_destination (zone_slug);

-- One definition of "datasets (models) matching these filters" for both the page and its
-- total. A zone filter matches assets stored in that zone or any zone nested below it.
CREATE FUNCTION dataset_search(p_tenant text, p_classification text, p_zone text)
RETURNS SETOF dataset
LANGUAGE sql STABLE AS $$
    WITH RECURSIVE zone_scope(slug) AS (
        SELECT slug FROM residency_zone WHERE slug = p_zone
        UNION
        SELECT z.slug FROM residency_zone z JOIN zone_scope s ON z.parent_slug = s.slug
    )
    SELECT d.* FROM dataset d
    WHERE (p_tenant IS NULL OR d.owner_tenant = p_tenant)
      AND (p_classification IS NULL OR d.classification = p_classification)
      AND (p_zone IS NULL OR EXISTS (
            SELECT 1 FROM dataset_storage_zone s
            WHERE s.dataset_name = d.name AND s.zone_slug IN (SELECT slug FROM zone_scope)))
$$;

CREATE FUNCTION model_search(
    p_tenant text, p_classification text, p_zone text, p_origin_country text
) RETURNS SETOF model
LANGUAGE sql STABLE AS $$
    WITH RECURSIVE zone_scope(slug) AS (
        SELECT slug FROM residency_zone WHERE slug = p_zone
        UNION
        SELECT z.slug FROM residency_zone z JOIN zone_scope s ON z.parent_slug = s.slug
    )
    SELECT m.* FROM model m
    WHERE (p_tenant IS NULL OR m.owner_tenant = p_tenant)
      AND (p_classification IS NULL OR m.classification = p_classification)
      AND (p_origin_country IS NULL OR m.origin_country = p_origin_country)
      AND (p_zone IS NULL OR EXISTS (
            SELECT 1 FROM model_storage_zone s
            WHERE s.model_name = m.name AND s.zone_slug IN (SELECT slug FROM zone_scope)))
$$;

GRANT SELECT, INSERT, UPDATE, DELETE
    ON tenant, tenant_quota, dataset, dataset_storage_zone, model, model_storage_zone,
       artifact_destination
    TO sovereign_app;
