-- depends: 0008_compliance
-- Appending to the audit chain takes the chain's writer lock and then reads the chain's
-- head; the lock is held until commit, so everything between taking it and committing is
-- a critical section every audited write in every process queues on. This function does
-- both in one round trip instead of two. It is VOLATILE PL/pgSQL, so the SELECT after the
-- lock runs with a fresh snapshot and sees the event the previous holder committed (a
-- single SQL statement would read the head as of before it waited for the lock).

CREATE FUNCTION audit_lock_head(OUT seq bigint, OUT hash char(64))
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(7302519406183735296);
    SELECT e.seq, e.hash INTO seq, hash FROM audit_event e ORDER BY e.seq DESC LIMIT 1;
END
$$;

GRANT EXECUTE ON FUNCTION audit_lock_head() TO sovereign_app;
