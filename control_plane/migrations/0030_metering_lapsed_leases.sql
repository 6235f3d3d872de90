-- Metering: a workload metered up to its lease's end is not picked again (docs/metering.md).
-- depends: 0029_audit_link_once
--
-- A workload whose lease has lapsed but that the lease sweep has not yet marked expired
-- stays open (the lease may still be renewed), metered up to the lease's end. The
-- periodic roll-up picked it again on every run, oldest first, and counted it as moved:
-- a backlog of a batch of such workloads took the whole batch every time, starved the
-- others and re-enqueued the task with nothing to do. Only a workload with time left to
-- meter (before `p_until`, its end and its lease's end) is picked now; a renewed lease
-- makes it one again.
CREATE OR REPLACE FUNCTION meter_open_workloads(p_until timestamptz, p_limit integer)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
BEGIN
    RETURN meter_workloads(ARRAY(
        SELECT m.workload_id
        FROM usage_watermark m JOIN workload w ON w.id = m.workload_id
        WHERE NOT m.closed
          AND m.metered_until < least(p_until, now(), coalesce(w.ended_at, 'infinity'),
                                      w.lease_expires_at)
        ORDER BY m.metered_until
        LIMIT p_limit
        FOR UPDATE OF m SKIP LOCKED
    ), p_until);
END
$$;
