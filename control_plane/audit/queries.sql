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
