-- name: insert_token
INSERT INTO api_token (name, role, token_hash, token_prefix, node_id, zone_slug, site_slug,
                       created_by)
VALUES (%(name)s, %(role)s, %(token_hash)s, %(token_prefix)s, %(node_id)s, %(zone)s, %(site)s,
        %(created_by)s)
RETURNING id, name, role, token_prefix, node_id, zone_slug AS zone, site_slug AS site,
          created_by, created_at, revoked_at;

-- name: active_token_by_hash
SELECT id AS token_id, name, role, node_id, zone_slug AS zone, site_slug AS site FROM api_token
WHERE token_hash = %(token_hash)s AND revoked_at IS NULL;

-- name: list_tokens
SELECT id, name, role, token_prefix, node_id, zone_slug AS zone, site_slug AS site, created_by,
       created_at, revoked_at
FROM api_token
WHERE (%(include_revoked)s OR revoked_at IS NULL)
  AND (%(include_agents)s OR role <> 'agent')
ORDER BY created_at, name;

-- name: find_token
SELECT id, name, role, token_prefix, node_id, zone_slug AS zone, site_slug AS site, created_by,
       created_at, revoked_at
FROM api_token
WHERE (id::text = %(ref)s OR name = %(ref)s OR token_prefix = %(ref)s) AND revoked_at IS NULL
ORDER BY created_at;

-- name: revoke_token
UPDATE api_token SET revoked_at = now()
WHERE id = %(id)s AND revoked_at IS NULL
RETURNING id, name, role, token_prefix, node_id, zone_slug AS zone, site_slug AS site,
          created_by, created_at, revoked_at;

-- name: revoke_node_tokens
UPDATE api_token SET revoked_at = now()
WHERE node_id = %(node_id)s AND revoked_at IS NULL
RETURNING id;
