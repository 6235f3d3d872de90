-- name: lock_store
-- Serializes every write to the policy store (apply, activate, rollback) until commit, so
-- version numbers are assigned without gaps or races. The key is arbitrary but fixed.
SELECT pg_advisory_xact_lock(7302519406183735301);

-- name: zone_slugs
SELECT slug FROM residency_zone;

-- name: latest_version
SELECT name, version, content_hash, created_at, created_by
FROM policy_version WHERE name = %(name)s ORDER BY version DESC LIMIT 1;

-- name: latest_versions
SELECT DISTINCT ON (name) name, version, content_hash, created_at, created_by, document
FROM policy_version ORDER BY name, version DESC;

-- name: insert_version
INSERT INTO policy_version (name, version, document, content_hash, created_by)
VALUES (%(name)s, %(version)s, %(document)s, %(content_hash)s, %(created_by)s)
RETURNING name, version, content_hash, created_at, created_by;

-- name: policy_versions
SELECT name, version, content_hash, created_at, created_by, document
FROM policy_version WHERE name = %(name)s ORDER BY version;

-- name: get_version
SELECT name, version, content_hash, created_at, created_by, document
FROM policy_version WHERE name = %(name)s AND version = %(version)s;

-- name: member_documents
-- The documents of a set's members (a JSON array of {name, version}), by name.
SELECT p.name, p.version, p.document
FROM policy_version p
JOIN jsonb_to_recordset(%(members)s::jsonb) AS m(name text, version integer)
  ON p.name = m.name AND p.version = m.version
ORDER BY p.name;

-- name: active_set
-- The active set is the one activated last: every activation inserts a new, higher version.
SELECT version, content_hash, members, activated_at, activated_by, note, previous_version,
       restores_version
FROM policy_set ORDER BY version DESC LIMIT 1;

-- name: get_set
SELECT version, content_hash, members, activated_at, activated_by, note, previous_version,
       restores_version
FROM policy_set WHERE version = %(version)s;

-- name: list_sets
SELECT version, content_hash, members, activated_at, activated_by, note, previous_version,
       restores_version
FROM policy_set ORDER BY version DESC LIMIT %(limit)s OFFSET %(offset)s;

-- name: count_sets
SELECT count(*) AS total FROM policy_set;

-- name: insert_set
INSERT INTO policy_set (version, content_hash, members, activated_by, note, previous_version,
                        restores_version)
VALUES (%(version)s, %(content_hash)s, %(members)s, %(activated_by)s, %(note)s,
        %(previous_version)s, %(restores_version)s)
RETURNING version, content_hash, members, activated_at, activated_by, note, previous_version,
          restores_version;
