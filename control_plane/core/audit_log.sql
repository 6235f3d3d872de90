-- name: insert_pending
-- Queues an event; the deferred trigger audit_pending_chain (migration 0010) links it into
-- audit_event at commit, under the chain's writer lock.
INSERT INTO audit_pending (occurred_at, actor_id, actor_name, request_id, action,
                           object_type, object_id, before, after, hash_head, hash_tail)
VALUES (%(occurred_at)s, %(actor_id)s, %(actor_name)s, %(request_id)s, %(action)s,
        %(object_type)s, %(object_id)s, %(before)s::json, %(after)s::json, %(hash_head)s,
        %(hash_tail)s);

-- name: copy_pending
-- A batch of events queued at once (`record_changes`): the same rows as insert_pending,
-- in this column order, with the same trigger per row.
COPY audit_pending (occurred_at, actor_id, actor_name, request_id, action, object_type,
                    object_id, before, after, hash_head, hash_tail) FROM STDIN;
