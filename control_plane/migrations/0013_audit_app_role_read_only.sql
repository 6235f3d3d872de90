-- depends: 0012_gpu_protocol_fields
-- The application role may read the audit log, never write it directly.
--
-- Since 0010 every event reaches `audit_event` through `audit_pending`: the application
-- inserts an event's fields there and the SECURITY DEFINER trigger `audit_chain_pending`
-- links it into the chain at commit, computing `seq`, `prev_hash` and `hash` itself. The
-- INSERT grant on `audit_event` that 0001 gave the role was left over, and it let anyone
-- holding the application's credentials append a row they computed themselves (an
-- activation attributed to an admin, say) that `sovctl audit verify` accepted and later
-- events chained onto. With it gone, the only way into the chain is the trigger, which
-- decides the position and the hash; UPDATE, DELETE and TRUNCATE were never granted and
-- the append-only triggers refuse them to the owner as well.

REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON audit_event FROM sovereign_app;
