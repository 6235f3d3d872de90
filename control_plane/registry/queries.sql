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

-- name: list_origin_quotas
SELECT tenant_slug AS tenant, origin_country::text AS origin_country,
       gpu_hours_per_period, period, updated_at
FROM tenant_origin_quota ORDER BY tenant_slug, origin_country;

-- name: tenant_origin_quotas
SELECT tenant_slug AS tenant, origin_country::text AS origin_country,
       gpu_hours_per_period, period, updated_at
FROM tenant_origin_quota WHERE tenant_slug = %(tenant)s ORDER BY origin_country;

-- name: get_origin_quota
SELECT tenant_slug AS tenant, origin_country::text AS origin_country,
       gpu_hours_per_period, period, updated_at
FROM tenant_origin_quota WHERE tenant_slug = %(tenant)s AND origin_country = %(origin_country)s;

-- name: upsert_origin_quota
INSERT INTO tenant_origin_quota (tenant_slug, origin_country, gpu_hours_per_period, period)
VALUES (%(tenant)s, %(origin_country)s, %(gpu_hours_per_period)s, %(period)s)
ON CONFLICT (tenant_slug, origin_country) DO UPDATE
SET gpu_hours_per_period = EXCLUDED.gpu_hours_per_period, period = EXCLUDED.period,
    updated_at = now()
RETURNING tenant_slug AS tenant, origin_country::text AS origin_country,
          gpu_hours_per_period, period, updated_at;

-- name: delete_origin_quota
DELETE FROM tenant_origin_quota
WHERE tenant_slug = %(tenant)s AND origin_country = %(origin_country)s;

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
-- whether the tenant exists, the named datasets and models with their storage zones, their
-- owner and the tenants holding a grant in force on them now (absent names are simply
-- missing), and the output destination or null.
SELECT
    EXISTS (SELECT 1 FROM tenant WHERE slug = %(tenant)s) AS tenant_exists,
    coalesce((SELECT jsonb_agg(jsonb_build_object(
                  'name', d.name, 'classification', d.classification, 'labels', d.labels,
                  'zones', ARRAY(SELECT s.zone_slug FROM dataset_storage_zone s
                                 WHERE s.dataset_name = d.name ORDER BY s.zone_slug),
                  'tenant', d.owner_tenant,
                  'granted_to', ARRAY(SELECT DISTINCT g.grantee_tenant FROM asset_grant g
                                      WHERE g.kind = 'dataset' AND g.asset_name = d.name
                                        AND g.revoked_at IS NULL
                                        AND (g.expires_at IS NULL OR g.expires_at > now())
                                      ORDER BY g.grantee_tenant)))
              FROM dataset d WHERE d.name = ANY(%(datasets)s)), '[]'::jsonb) AS datasets,
    coalesce((SELECT jsonb_agg(jsonb_build_object(
                  'name', m.name, 'classification', m.classification, 'labels', m.labels,
                  'zones', ARRAY(SELECT s.zone_slug FROM model_storage_zone s
                                 WHERE s.model_name = m.name ORDER BY s.zone_slug),
                  'supplier', m.supplier, 'origin_country', m.origin_country,
                  'license', m.license,
                  'tenant', m.owner_tenant,
                  'granted_to', ARRAY(SELECT DISTINCT g.grantee_tenant FROM asset_grant g
                                      WHERE g.kind = 'model' AND g.asset_name = m.name
                                        AND g.revoked_at IS NULL
                                        AND (g.expires_at IS NULL OR g.expires_at > now())
                                      ORDER BY g.grantee_tenant)))
              FROM model m WHERE m.name = ANY(%(models)s)), '[]'::jsonb) AS models,
    (SELECT jsonb_build_object('name', a.name, 'zone', a.zone_slug)
     FROM artifact_destination a WHERE a.name = %(output)s) AS destination;

-- name: insert_grant
-- `expires_at` must lie after `created_at` (the database's now()): the same clock that
-- decides, at every decision, whether the grant is in force.
INSERT INTO asset_grant (kind, asset_name, owner_tenant, grantee_tenant, reason,
                         granted_by_id, granted_by_name, expires_at)
VALUES (%(kind)s, %(asset)s, %(owner)s, %(tenant)s, %(reason)s, %(granted_by_id)s,
        %(granted_by)s, %(expires_at)s)
RETURNING id, kind, asset_name AS asset, owner_tenant AS owner, grantee_tenant AS tenant,
          reason, granted_by_name AS granted_by, granted_by_id, created_at, expires_at,
          revoked_at, revoked_by_name AS revoked_by, revoked_by_id,
          revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now()) AS in_force;

-- name: list_grants
-- Every grant of one dataset or model, revoked and expired ones too, oldest first.
SELECT id, kind, asset_name AS asset, owner_tenant AS owner, grantee_tenant AS tenant,
       reason, granted_by_name AS granted_by, granted_by_id, created_at, expires_at,
       revoked_at, revoked_by_name AS revoked_by, revoked_by_id,
       revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now()) AS in_force
FROM asset_grant
WHERE kind = %(kind)s AND asset_name = %(asset)s
ORDER BY created_at, id;

-- name: lock_grant
SELECT id, kind, asset_name AS asset, owner_tenant AS owner, grantee_tenant AS tenant,
       reason, granted_by_name AS granted_by, granted_by_id, created_at, expires_at,
       revoked_at, revoked_by_name AS revoked_by, revoked_by_id,
       revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now()) AS in_force
FROM asset_grant
WHERE id = %(id)s AND kind = %(kind)s AND asset_name = %(asset)s
FOR UPDATE;

-- name: revoke_grant
UPDATE asset_grant
SET revoked_at = now(), revoked_by_id = %(revoked_by_id)s, revoked_by_name = %(revoked_by)s
WHERE id = %(id)s AND revoked_at IS NULL
RETURNING id, kind, asset_name AS asset, owner_tenant AS owner, grantee_tenant AS tenant,
          reason, granted_by_name AS granted_by, granted_by_id, created_at, expires_at,
          revoked_at, revoked_by_name AS revoked_by, revoked_by_id, false AS in_force;

-- name: notice_expired_grants
-- Grants that expired (and were not revoked) since the last look, marked noticed so that
-- each expiry asks for one evaluation. SKIP LOCKED: a grant another worker is noticing is
-- its business, and that worker's evaluation is not waited for.
UPDATE asset_grant g
SET expiry_noticed_at = now()
WHERE g.id IN (SELECT e.id FROM asset_grant e
               WHERE e.expires_at <= now() AND e.revoked_at IS NULL
                 AND e.expiry_noticed_at IS NULL
               ORDER BY e.expires_at, e.id
               FOR UPDATE SKIP LOCKED)
RETURNING g.id, g.kind, g.asset_name AS asset, g.owner_tenant AS owner,
          g.grantee_tenant AS tenant, g.reason, g.granted_by_name AS granted_by,
          g.granted_by_id, g.created_at, g.expires_at, g.revoked_at,
          g.revoked_by_name AS revoked_by, g.revoked_by_id, false AS in_force;
