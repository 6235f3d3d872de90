-- name: lock_head
-- Takes the chain's writer lock (held until the surrounding transaction ends, so events are
-- linked in commit order, across every API process) and then reads the newest event's seq
-- and hash, in one round trip (migration 0009). Both are null for an empty chain.
SELECT seq, hash FROM audit_lock_head();

-- name: insert_event
INSERT INTO audit_event (seq, occurred_at, actor_id, actor_name, request_id, action,
                         object_type, object_id, before, after, prev_hash, hash)
VALUES (%(seq)s, %(occurred_at)s, %(actor_id)s, %(actor_name)s, %(request_id)s, %(action)s,
        %(object_type)s, %(object_id)s, %(before)s::json, %(after)s::json, %(prev_hash)s,
        %(hash)s)
RETURNING *;

-- name: events_after
SELECT * FROM audit_event WHERE seq > %(after_seq)s ORDER BY seq LIMIT %(limit)s;

-- name: list_events
SELECT * FROM audit_event
WHERE (%(object_type)s::text IS NULL OR object_type = %(object_type)s)
  AND (%(object_id)s::text IS NULL OR object_id = %(object_id)s)
  AND (%(action)s::text IS NULL OR action = %(action)s)
ORDER BY seq
LIMIT %(limit)s OFFSET %(offset)s;

-- name: count_events
SELECT count(*) AS total FROM audit_event
WHERE (%(object_type)s::text IS NULL OR object_type = %(object_type)s)
  AND (%(object_id)s::text IS NULL OR object_id = %(object_id)s)
  AND (%(action)s::text IS NULL OR action = %(action)s);
