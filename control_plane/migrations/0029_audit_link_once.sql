-- depends: 0028_reports
-- A transaction's pending events are linked into the chain by one trigger call.
--
-- Until now `audit_chain_pending` (0010, 0026) did the whole append once per event: a
-- single-row INSERT into `audit_event` and a single-row DELETE from `audit_pending`, each
-- with its own executor start, under the writer lock. Committing a batch of 1,000 took
-- a median of 37 ms so, and takes 22 ms linked at once (docs/benchmarks.md).
--
-- Now the first call of a transaction's commit does it for every event of the
-- transaction: it takes the writer lock, reads the head (after the lock, with a fresh
-- snapshot, as before), walks the transaction's pending rows in `id` order (the order
-- they were recorded in: the identity only grows within a session) computing each hash
-- with the same formula, then appends them all with one INSERT from arrays and deletes
-- them with one DELETE (10,000 at a time). The other calls of that commit find their
-- row in the range just linked and return at once. The format, the hash and the commit
-- order are unchanged.
--
-- Which rows are the transaction's own: every visible row of `audit_pending`. Nobody else
-- has committed one (each transaction's trigger deletes its rows before it commits), other
-- transactions' uncommitted rows are invisible, and so are the rows of a rolled-back
-- savepoint, whose trigger events PostgreSQL discards with them. Rows of a released
-- savepoint are visible and their events fire, like any other.
--
-- The range linked is kept in the transaction-local setting `sovereign.audit_linked`
-- (`low:high`, `id`s). A walk covers every visible row from where it starts, and rows
-- recorded afterwards (another deferred trigger that records at commit, or after `SET
-- CONSTRAINTS ... IMMEDIATE`) get larger `id`s, so a row outside the range has not been
-- linked and starts a new walk from the end of the range (or from itself, were it below
-- it): whatever fires when, each row is linked exactly once. A savepoint rolled back
-- after a walk inside it undoes the walk whole: the events it appended, the rows it
-- deleted, the setting; PostgreSQL fires those rows' trigger events again.
--
-- A new walk reads the head from `audit_event` again, so the head cached in
-- `sovereign.audit_head` since 0026 is no longer read: no value the caller can set decides
-- an event's position or `prev_hash` any more. A caller who sets `sovereign.audit_linked`
-- itself can only make its own events go unrecorded, which a caller holding the
-- application's credentials can do anyway by not recording them.

CREATE OR REPLACE FUNCTION audit_chain_pending() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
    linked    text := current_setting('sovereign.audit_linked', true);
    low       bigint;
    high      bigint;
    walk_from bigint;
    last_id   bigint;
    head_seq  bigint;
    head_hash char(64);
    prev      char(64);
    pending   record;
    linked_n  integer;
    ids       bigint[];
    prevs     text[];
    hashes    text[];
BEGIN
    IF linked <> '' THEN
        low := split_part(linked, ':', 1)::bigint;
        high := split_part(linked, ':', 2)::bigint;
        IF NEW.id BETWEEN low AND high THEN
            RETURN NULL;
        END IF;
    END IF;
    walk_from := CASE WHEN NEW.id > high THEN high + 1 ELSE NEW.id END;
    low := least(low, walk_from);

    PERFORM pg_advisory_xact_lock(7302519406183735296);
    -- Planned on every call (EXECUTE): a plan kept from when the table was small would
    -- be a scan of the whole table. VOLATILE, so this sees the previous holder's commit.
    EXECUTE 'SELECT seq, hash FROM audit_event ORDER BY seq DESC LIMIT 1'
        INTO head_seq, head_hash;
    head_seq := coalesce(head_seq, 0);
    prev := coalesce(head_hash, repeat('0', 64));
    -- In chunks of 10,000 events, so a huge transaction's walk holds a few MB, not
    -- hundreds; a chunk is large enough that its statements cost little per event.
    LOOP
        linked_n := 0;
        ids := '{}';
        prevs := '{}';
        hashes := '{}';
        -- Planned for the table as it is, which between vacuums holds mostly dead rows.
        FOR pending IN EXECUTE 'SELECT id, hash_head, hash_tail FROM audit_pending'
                               ' WHERE id >= $1 ORDER BY id LIMIT 10000'
            USING walk_from
        LOOP
            linked_n := linked_n + 1;
            ids := array_append(ids, pending.id);
            prevs := array_append(prevs, prev::text);
            prev := encode(sha256(convert_to(pending.hash_head || prev || pending.hash_tail
                                             || (head_seq + linked_n)::text || '}', 'UTF8')),
                           'hex');
            hashes := array_append(hashes, prev::text);
        END LOOP;
        EXIT WHEN linked_n = 0;

        -- In seq order, so every index of audit_event keyed by seq grows at its right edge.
        INSERT INTO audit_event (seq, occurred_at, actor_id, actor_name, request_id, action,
                                 object_type, object_id, before, after, prev_hash, hash)
        SELECT head_seq + e.n, p.occurred_at, p.actor_id, p.actor_name, p.request_id,
               p.action, p.object_type, p.object_id, p.before, p.after, e.prev_hash, e.hash
        FROM unnest(ids, prevs, hashes) WITH ORDINALITY AS e(id, prev_hash, hash, n)
        JOIN audit_pending p ON p.id = e.id
        ORDER BY e.n;
        DELETE FROM audit_pending WHERE id = ANY(ids);
        head_seq := head_seq + linked_n;
        last_id := ids[linked_n];
        walk_from := last_id + 1;
        EXIT WHEN linked_n < 10000;
    END LOOP;
    IF last_id IS NOT NULL THEN
        PERFORM set_config('sovereign.audit_linked',
                           low::text || ':' || greatest(high, last_id)::text, true);
    END IF;
    RETURN NULL;
END
$$;
