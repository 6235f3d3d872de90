-- name: events_after
SELECT * FROM audit_event WHERE seq > %(after_seq)s ORDER BY seq LIMIT %(limit)s;

-- name: list_events_desc
-- Keyset paging on seq: `before_seq` is the previous page's cursor, never an OFFSET.
SELECT * FROM audit_event
WHERE (%(object_type)s::text IS NULL OR object_type = %(object_type)s)
  AND (%(object_id)s::text IS NULL OR object_id = %(object_id)s)
  AND (cardinality(%(actions)s::text[]) = 0 OR action = ANY(%(actions)s::text[]))
  AND (%(since)s::timestamptz IS NULL OR occurred_at >= %(since)s)
  AND (%(until)s::timestamptz IS NULL OR occurred_at < %(until)s)
  AND seq < %(cursor)s
ORDER BY seq DESC
LIMIT %(limit)s;

-- name: list_events_asc
SELECT * FROM audit_event
WHERE (%(object_type)s::text IS NULL OR object_type = %(object_type)s)
  AND (%(object_id)s::text IS NULL OR object_id = %(object_id)s)
  AND (cardinality(%(actions)s::text[]) = 0 OR action = ANY(%(actions)s::text[]))
  AND (%(since)s::timestamptz IS NULL OR occurred_at >= %(since)s)
  AND (%(until)s::timestamptz IS NULL OR occurred_at < %(until)s)
  AND seq > %(cursor)s
ORDER BY seq
LIMIT %(limit)s;

-- name: count_events
SELECT count(*) AS total FROM audit_event
WHERE (%(object_type)s::text IS NULL OR object_type = %(object_type)s)
  AND (%(object_id)s::text IS NULL OR object_id = %(object_id)s)
  AND (cardinality(%(actions)s::text[]) = 0 OR action = ANY(%(actions)s::text[]))
  AND (%(since)s::timestamptz IS NULL OR occurred_at >= %(since)s)
  AND (%(until)s::timestamptz IS NULL OR occurred_at < %(until)s);

-- name: chain_head
SELECT seq, hash FROM audit_event ORDER BY seq DESC LIMIT 1;

-- name: rotation_recorded
SELECT 1 AS found FROM audit_event
WHERE seq > %(after_seq)s AND action = %(action)s AND object_id = %(object_id)s
LIMIT 1;

-- name: lock_checkpoints
SELECT pg_advisory_lock(7302519406183735302);

-- name: unlock_checkpoints
SELECT pg_advisory_unlock(7302519406183735302) AS unlocked;

-- name: newest_checkpoint
SELECT * FROM audit_checkpoint ORDER BY number DESC LIMIT 1;

-- name: insert_checkpoint
INSERT INTO audit_checkpoint (number, head_seq, head_hash, signed_at, prev_checkpoint_hash,
                              key_fingerprint, previous_key_fingerprint, public_key,
                              statement, checkpoint_hash, signature)
VALUES (%(number)s, %(head_seq)s, %(head_hash)s, %(signed_at)s, %(prev_checkpoint_hash)s,
        %(key_fingerprint)s, %(previous_key_fingerprint)s, %(public_key)s, %(statement)s,
        %(checkpoint_hash)s, %(signature)s)
RETURNING *;

-- name: checkpoints_before
SELECT * FROM audit_checkpoint WHERE number < %(before)s ORDER BY number DESC LIMIT %(limit)s;

-- name: checkpoints_in_order
SELECT * FROM audit_checkpoint WHERE number > %(after)s ORDER BY number LIMIT %(limit)s;

-- name: checkpoints_covering
-- The checkpoints whose head lies in [first_seq, last_seq], and the first one at or after
-- last_seq: what an export of those events needs to show its tail is whole.
SELECT * FROM audit_checkpoint
WHERE head_seq >= %(first_seq)s
  AND number <= coalesce(
      (SELECT min(number) FROM audit_checkpoint WHERE head_seq >= %(last_seq)s), 0)
ORDER BY number;

-- name: signing_keys
SELECT key_fingerprint AS fingerprint, min(public_key) AS public_key,
       min(number) AS first_checkpoint, max(number) AS last_checkpoint,
       min(signed_at) AS valid_from
FROM audit_checkpoint GROUP BY key_fingerprint ORDER BY min(number);

-- name: events_between
-- The events of an export: from the first at or after `since` to `last_seq`.
SELECT * FROM audit_event
WHERE seq > %(after_seq)s AND seq <= %(last_seq)s
ORDER BY seq LIMIT %(limit)s;

-- name: seq_range_for_time
SELECT min(seq) AS first_seq, max(seq) AS last_seq FROM audit_event
WHERE (%(since)s::timestamptz IS NULL OR occurred_at >= %(since)s)
  AND (%(until)s::timestamptz IS NULL OR occurred_at < %(until)s);
