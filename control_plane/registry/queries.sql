-- name: insert_tenant
INSERT INTO tenant (slug, name, description)
VALUES (%(slug)s, %(name)s, %(description)s)
RETURNING slug, name, description, created_at;

-- name: list_tenants
SELECT slug, name, description, created_at FROM tenant ORDER BY slug;

-- name: get_tenant
SELECT slug, name, description, created_at FROM tenant WHERE slug = %(slug)s;

-- name: lock_tenant
SELECT slug, name, description, created_at FROM tenant WHERE slug = %(slug)s FOR UPDATE;

-- name: lock_tenant_quotas
-- Serializes quota changes of one tenant without blocking assets that reference it
-- (NO KEY UPDATE does not conflict with the KEY SHARE lock a foreign key check takes).
SELECT slug FROM tenant WHERE slug = %(slug)s FOR NO KEY UPDATE;

-- name: delete_tenant
DELETE FROM tenant WHERE slug = %(slug)s;

-- name: list_quotas
SELECT tenant_slug AS tenant, zone_slug AS zone, max_gpus, gpu_hours_per_period, period,
       updated_at
FROM tenant_quota ORDER BY tenant_slug, zone_slug;

-- name: tenant_quotas
SELECT tenant_slug AS tenant, zone_slug AS zone, max_gpus, gpu_hours_per_period, period,
       updated_at
FROM tenant_quota WHERE tenant_slug = %(tenant)s ORDER BY zone_slug;

-- name: get_quota
SELECT tenant_slug AS tenant, zone_slug AS zone, max_gpus, gpu_hours_per_period, period,
       updated_at
FROM tenant_quota WHERE tenant_slug = %(tenant)s AND zone_slug = %(zone)s;

-- name: upsert_quota
INSERT INTO tenant_quota (tenant_slug, zone_slug, max_gpus, gpu_hours_per_period, period)
VALUES (%(tenant)s, %(zone)s, %(max_gpus)s, %(gpu_hours_per_period)s, %(period)s)
ON CONFLICT (tenant_slug, zone_slug) DO UPDATE
SET max_gpus = EXCLUDED.max_gpus, gpu_hours_per_period = EXCLUDED.gpu_hours_per_period,
    period = EXCLUDED.period, updated_at = now()
RETURNING tenant_slug AS tenant, zone_slug AS zone, max_gpus, gpu_hours_per_period, period,
          updated_at;

-- name: delete_quota
DELETE FROM tenant_quota WHERE tenant_slug = %(tenant)s AND zone_slug = %(zone)s;

-- name: insert_dataset
INSERT INTO dataset (name, owner_tenant, classification, labels, description)
VALUES (%(name)s, %(tenant)s, %(classification)s, %(labels)s, %(description)s);

-- name: get_dataset
SELECT d.name, d.owner_tenant AS tenant, d.classification, d.labels, d.description,
       ARRAY(SELECT s.zone_slug FROM dataset_storage_zone s
             WHERE s.dataset_name = d.name ORDER BY s.zone_slug) AS zones,
       d.created_at, d.updated_at
FROM dataset d WHERE d.name = %(name)s;

-- name: lock_dataset
SELECT d.name, d.owner_tenant AS tenant, d.classification, d.labels, d.description,
       ARRAY(SELECT s.zone_slug FROM dataset_storage_zone s
             WHERE s.dataset_name = d.name ORDER BY s.zone_slug) AS zones,
       d.created_at, d.updated_at
FROM dataset d WHERE d.name = %(name)s FOR UPDATE;

-- name: search_datasets
SELECT d.name, d.owner_tenant AS tenant, d.classification, d.labels, d.description,
       ARRAY(SELECT s.zone_slug FROM dataset_storage_zone s
             WHERE s.dataset_name = d.name ORDER BY s.zone_slug) AS zones,
       d.created_at, d.updated_at
FROM dataset_search(%(tenant)s, %(classification)s, %(zone)s) d
ORDER BY d.name
LIMIT %(limit)s OFFSET %(offset)s;

-- name: count_datasets
SELECT count(*) AS total FROM dataset_search(%(tenant)s, %(classification)s, %(zone)s);

-- name: update_dataset
UPDATE dataset
SET owner_tenant = %(tenant)s, classification = %(classification)s, labels = %(labels)s,
    description = %(description)s, updated_at = now()
WHERE name = %(name)s;

-- name: delete_dataset
-- Its storage zones go with it (ON DELETE CASCADE).
DELETE FROM dataset WHERE name = %(name)s;

-- name: clear_dataset_zones
DELETE FROM dataset_storage_zone WHERE dataset_name = %(name)s;

-- name: add_dataset_zones
INSERT INTO dataset_storage_zone (dataset_name, zone_slug)
SELECT %(name)s, zone FROM unnest(%(zones)s::text[]) AS zone;

-- name: insert_model
INSERT INTO model (name, owner_tenant, classification, labels, description, supplier,
                   origin_country, license)
VALUES (%(name)s, %(tenant)s, %(classification)s, %(labels)s, %(description)s,
        %(supplier)s, %(origin_country)s, %(license)s);

-- name: get_model
SELECT m.name, m.owner_tenant AS tenant, m.classification, m.labels, m.description,
       ARRAY(SELECT s.zone_slug FROM model_storage_zone s
             WHERE s.model_name = m.name ORDER BY s.zone_slug) AS zones,
       m.supplier, m.origin_country, m.license, m.created_at, m.updated_at
FROM model m WHERE m.name = %(name)s;

-- name: lock_model
SELECT m.name, m.owner_tenant AS tenant, m.classification, m.labels, m.description,
       ARRAY(SELECT s.zone_slug FROM model_storage_zone s
             WHERE s.model_name = m.name ORDER BY s.zone_slug) AS zones,
       m.supplier, m.origin_country, m.license, m.created_at, m.updated_at
FROM model m WHERE m.name = %(name)s FOR UPDATE;

-- name: search_models
SELECT m.name, m.owner_tenant AS tenant, m.classification, m.labels, m.description,
       ARRAY(SELECT s.zone_slug FROM model_storage_zone s
             WHERE s.model_name = m.name ORDER BY s.zone_slug) AS zones,
       m.supplier, m.origin_country, m.license, m.created_at, m.updated_at
FROM model_search(%(tenant)s, %(classification)s, %(zone)s, %(origin_country)s) m
ORDER BY m.name
LIMIT %(limit)s OFFSET %(offset)s;

-- name: count_models
SELECT count(*) AS total
FROM model_search(%(tenant)s, %(classification)s, %(zone)s, %(origin_country)s);

-- name: update_model
UPDATE model
SET owner_tenant = %(tenant)s, classification = %(classification)s, labels = %(labels)s,
    description = %(description)s, supplier = %(supplier)s,
    origin_country = %(origin_country)s, license = %(license)s, updated_at = now()
WHERE name = %(name)s;

-- name: delete_model
-- Its storage zones go with it (ON DELETE CASCADE).
DELETE FROM model WHERE name = %(name)s;

-- name: clear_model_zones
DELETE FROM model_storage_zone WHERE model_name = %(name)s;

-- name: add_model_zones
INSERT INTO model_storage_zone (model_name, zone_slug)
SELECT %(name)s, zone FROM unnest(%(zones)s::text[]) AS zone;

-- name: insert_destination
INSERT INTO artifact_destination (name, zone_slug, description)
VALUES (%(name)s, %(zone)s, %(description)s)
RETURNING name, zone_slug AS zone, description, created_at;

-- name: list_destinations
SELECT name, zone_slug AS zone, description, created_at
FROM artifact_destination ORDER BY name;

-- name: get_destination
SELECT name, zone_slug AS zone, description, created_at
FROM artifact_destination WHERE name = %(name)s;

-- name: lock_destination
SELECT name, zone_slug AS zone, description, created_at
FROM artifact_destination WHERE name = %(name)s FOR UPDATE;

-- name: delete_destination
DELETE FROM artifact_destination WHERE name = %(name)s;

-- name: lookup
-- Everything a workload request names, in one round trip (admission runs it per request):
-- whether the tenant exists, the named datasets and models with their storage zones (absent
-- names are simply missing), and the output destination or null.
SELECT
    EXISTS (SELECT 1 FROM tenant WHERE slug = %(tenant)s) AS tenant_exists,
    coalesce((SELECT jsonb_agg(jsonb_build_object(
                  'name', d.name, 'classification', d.classification, 'labels', d.labels,
                  'zones', ARRAY(SELECT s.zone_slug FROM dataset_storage_zone s
                                 WHERE s.dataset_name = d.name ORDER BY s.zone_slug)))
              FROM dataset d WHERE d.name = ANY(%(datasets)s)), '[]'::jsonb) AS datasets,
    coalesce((SELECT jsonb_agg(jsonb_build_object(
                  'name', m.name, 'classification', m.classification, 'labels', m.labels,
                  'zones', ARRAY(SELECT s.zone_slug FROM model_storage_zone s
                                 WHERE s.model_name = m.name ORDER BY s.zone_slug),
                  'supplier', m.supplier, 'origin_country', m.origin_country,
                  'license', m.license))
              FROM model m WHERE m.name = ANY(%(models)s)), '[]'::jsonb) AS models,
    (SELECT jsonb_build_object('name', a.name, 'zone', a.zone_slug)
     FROM artifact_destination a WHERE a.name = %(output)s) AS destination;
