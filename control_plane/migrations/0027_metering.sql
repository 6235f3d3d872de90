-- depends: 0026_audit_checkpoints
-- Metering (issue 13): GPU-hours and MIG-slice-hours per workload, tenant, node, zone (and
-- its country), server origin, GPU origin, provenance status, node status and MIG profile,
-- rolled up incrementally so that a report reads rollups only, never the raw rows.
--
-- * `node_state_history` keeps what a node was, over time: zone, the zone's country,
--   status, origin country, GPU origin, provenance status and how many GPUs it had there.
--   Triggers on `node`, `gpu` and `residency_zone` write a row whenever one of those
--   changes, so usage is attributed to the state of the time of use, not today's. The
--   rows of nodes that existed before this migration start at -infinity (no history was
--   kept before: their current state is the best there is).
-- * `usage_watermark` is the metering position of one admitted workload: its usage is in
--   the rollups up to `metered_until`, and `closed` once its whole interval is.
--   `meter_workloads` moves it in the same statement that adds the interval to the
--   rollups, under a lock on the watermark rows: running it twice never counts twice.
-- * A workload holds its units from `created_at` until `least(ended_at,
--   lease_expires_at)`: release and revocation end it when they happen, an expired lease
--   at its expiry (the sweep's delay is not the tenant's), and a running one is counted up
--   to `least(now, lease_expires_at)`. A node going offline ends nothing (the
--   reservation stays until release, expiry or revocation); the time it was offline is
--   counted with `node_status = 'offline'`, so a report can tell it apart.
-- * A trigger meters every workload that ends (release, expiry, revocation: any UPDATE
--   that takes it out of `admitted`) in the ending transaction; the periodic roll-up
--   (`metering.roll_up`) meters running workloads up to now and the fleet capacity.
-- * `usage_hourly` (per workload and UTC hour) and `usage_daily` (per node, tenant and UTC
--   day, no workload) hold the same seconds at two grains; `capacity_hourly` holds the
--   GPU-seconds the fleet had, per zone, origin, provenance and node status.
-- * `gpu_seconds` is GPU-equivalent seconds: a whole GPU counts 1 per second, a MIG slice
--   its share of the GPU (`mig_slice_weight`: g/7 for a `<g>g.<memory>` profile, 1 for
--   a profile of another shape). `mig_slice_seconds` is slice-seconds, unweighted.
-- * `tenant_origin_quota` is a GPU-hour quota per tenant and origin country of the
--   server, beside the per-zone `tenant_quota`.
-- * The application role reads the ledger; it writes it only through the metering
--   functions (SECURITY DEFINER), as it writes the audit chain only through its trigger.

CREATE TABLE node_state_history (
    node_id           uuid NOT NULL,
    valid_from        timestamptz NOT NULL,
    -- Null while it is the node's current state.
    valid_to          timestamptz,
    zone_slug         text,
    zone_country      text,
    status            text NOT NULL,
    origin_country    text,
    -- The GPU's origin as the inventory records it (`component_origins.gpu`).
    gpu_origin        text,
    provenance_status text NOT NULL,
    -- GPUs the node had there (not missing): what capacity counts.
    gpu_count         integer NOT NULL,
    CONSTRAINT node_state_history_pkey PRIMARY KEY (node_id, valid_from),
    CONSTRAINT node_state_history_span CHECK (valid_to IS NULL OR valid_to >= valid_from)
);

CREATE UNIQUE INDEX node_state_history_current_idx ON node_state_history (node_id)
    WHERE valid_to IS NULL;
CREATE INDEX node_state_history_valid_to_idx ON node_state_history (valid_to);

-- Record the node's current state if it differs from its open history row. The change
-- takes effect at the transaction's time, or at the open row's start if a transaction
-- that began later recorded one first (so rows never overlap).
CREATE FUNCTION record_node_state(p_node_id uuid) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
    cur record;
    prev node_state_history%ROWTYPE;
    at timestamptz;
BEGIN
    SELECT * INTO prev FROM node_state_history
    WHERE node_id = p_node_id AND valid_to IS NULL FOR UPDATE;
    SELECT n.zone_slug, z.country::text AS zone_country, n.status,
           n.origin_country::text AS origin_country,
           n.component_origins ->> 'gpu' AS gpu_origin, n.provenance_status,
           (SELECT count(*) FROM gpu g
            WHERE g.node_id = n.id AND g.missing_since IS NULL)::integer AS gpu_count
    INTO cur
    FROM node n LEFT JOIN residency_zone z ON z.slug = n.zone_slug
    WHERE n.id = p_node_id;
    at := greatest(now(), prev.valid_from);
    IF NOT FOUND THEN
        -- The node is gone: its last state ends here.
        UPDATE node_state_history SET valid_to = at
        WHERE node_id = p_node_id AND valid_to IS NULL;
        RETURN;
    END IF;
    IF prev.node_id IS NOT NULL
       AND (prev.zone_slug, prev.zone_country, prev.status, prev.origin_country,
            prev.gpu_origin, prev.provenance_status, prev.gpu_count)
           IS NOT DISTINCT FROM
           (cur.zone_slug, cur.zone_country, cur.status, cur.origin_country,
            cur.gpu_origin, cur.provenance_status, cur.gpu_count) THEN
        RETURN;
    END IF;
    IF prev.node_id IS NOT NULL AND prev.valid_from = at THEN
        -- Changed again at the same instant (one transaction): the row is rewritten.
        UPDATE node_state_history
        SET zone_slug = cur.zone_slug, zone_country = cur.zone_country, status = cur.status,
            origin_country = cur.origin_country, gpu_origin = cur.gpu_origin,
            provenance_status = cur.provenance_status, gpu_count = cur.gpu_count
        WHERE node_id = p_node_id AND valid_from = at;
        RETURN;
    END IF;
    UPDATE node_state_history SET valid_to = at WHERE node_id = p_node_id AND valid_to IS NULL;
    INSERT INTO node_state_history (node_id, valid_from, zone_slug, zone_country, status,
                                    origin_country, gpu_origin, provenance_status, gpu_count)
    VALUES (p_node_id, at, cur.zone_slug, cur.zone_country, cur.status, cur.origin_country,
            cur.gpu_origin, cur.provenance_status, cur.gpu_count);
END
$$;

CREATE FUNCTION node_state_changed() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
BEGIN
    IF TG_TABLE_NAME = 'gpu' THEN
        IF TG_OP <> 'INSERT' THEN
            PERFORM record_node_state(OLD.node_id);
        END IF;
        IF TG_OP <> 'DELETE' AND (TG_OP = 'INSERT' OR NEW.node_id <> OLD.node_id) THEN
            PERFORM record_node_state(NEW.node_id);
        END IF;
    ELSIF TG_TABLE_NAME = 'residency_zone' THEN
        PERFORM record_node_state(n.id) FROM node n WHERE n.zone_slug = NEW.slug;
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM record_node_state(OLD.id);
    ELSE
        PERFORM record_node_state(NEW.id);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER node_state_inserted AFTER INSERT OR DELETE ON node
FOR EACH ROW EXECUTE FUNCTION node_state_changed();

CREATE TRIGGER node_state_updated AFTER UPDATE ON node
FOR EACH ROW
WHEN (OLD.zone_slug IS DISTINCT FROM NEW.zone_slug
      OR OLD.status IS DISTINCT FROM NEW.status
      OR OLD.origin_country IS DISTINCT FROM NEW.origin_country
      OR OLD.component_origins IS DISTINCT FROM NEW.component_origins
      OR OLD.provenance_status IS DISTINCT FROM NEW.provenance_status)
EXECUTE FUNCTION node_state_changed();

CREATE TRIGGER node_state_gpu_rows AFTER INSERT OR DELETE ON gpu
FOR EACH ROW EXECUTE FUNCTION node_state_changed();

CREATE TRIGGER node_state_gpu_updated AFTER UPDATE ON gpu
FOR EACH ROW
WHEN (OLD.missing_since IS DISTINCT FROM NEW.missing_since OR OLD.node_id <> NEW.node_id)
EXECUTE FUNCTION node_state_changed();

CREATE TRIGGER node_state_zone_country AFTER UPDATE ON residency_zone
FOR EACH ROW WHEN (OLD.country IS DISTINCT FROM NEW.country)
EXECUTE FUNCTION node_state_changed();

INSERT INTO node_state_history (node_id, valid_from, zone_slug, zone_country, status,
                                origin_country, gpu_origin, provenance_status, gpu_count)
SELECT n.id, '-infinity', n.zone_slug, z.country, n.status, n.origin_country,
       n.component_origins ->> 'gpu', n.provenance_status,
       (SELECT count(*) FROM gpu g WHERE g.node_id = n.id AND g.missing_since IS NULL)
FROM node n LEFT JOIN residency_zone z ON z.slug = n.zone_slug;

-- A MIG slice's share of its GPU: g/7 for a profile `<g>g.<memory>` (the GPU instance's
-- compute slices out of the seven of an A100/H100/H200), capped at 1; 1 (a whole GPU) for
-- a profile of any other shape. `domain.metering.mig_slice_weight` is the same rule.
CREATE FUNCTION mig_slice_weight(p_profile text) RETURNS double precision
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN p_profile ~ '^[1-7]g\.'
                THEN least(1.0, split_part(p_profile, 'g', 1)::double precision / 7.0)
                ELSE 1.0 END
$$;

CREATE TABLE usage_watermark (
    workload_id   uuid CONSTRAINT usage_watermark_pkey PRIMARY KEY
                  CONSTRAINT usage_watermark_workload_fkey REFERENCES workload (id),
    metered_until timestamptz NOT NULL,
    closed        boolean NOT NULL DEFAULT false
);

CREATE INDEX usage_watermark_open_idx ON usage_watermark (metered_until) WHERE NOT closed;

CREATE TABLE usage_hourly (
    -- The start of the UTC hour.
    bucket            timestamptz NOT NULL,
    workload_id       uuid NOT NULL,
    tenant_slug       text NOT NULL,
    node_id           uuid NOT NULL,
    zone_slug         text,
    zone_country      text,
    origin_country    text,
    gpu_origin        text,
    provenance_status text NOT NULL,
    node_status       text NOT NULL,
    -- Null for whole GPUs.
    mig_profile       text,
    gpu_seconds       double precision NOT NULL,
    mig_slice_seconds double precision NOT NULL
);

CREATE UNIQUE INDEX usage_hourly_key ON usage_hourly (
    bucket, workload_id, zone_slug, zone_country, origin_country, gpu_origin,
    provenance_status, node_status, mig_profile
) NULLS NOT DISTINCT;
CREATE INDEX usage_hourly_workload_idx ON usage_hourly (workload_id, bucket);
CREATE INDEX usage_hourly_tenant_idx ON usage_hourly (tenant_slug, bucket);

CREATE TABLE usage_daily (
    -- The UTC day.
    day               date NOT NULL,
    tenant_slug       text NOT NULL,
    node_id           uuid NOT NULL,
    zone_slug         text,
    zone_country      text,
    origin_country    text,
    gpu_origin        text,
    provenance_status text NOT NULL,
    node_status       text NOT NULL,
    mig_profile       text,
    gpu_seconds       double precision NOT NULL,
    mig_slice_seconds double precision NOT NULL
);

CREATE UNIQUE INDEX usage_daily_key ON usage_daily (
    day, tenant_slug, node_id, zone_slug, zone_country, origin_country, gpu_origin,
    provenance_status, node_status, mig_profile
) NULLS NOT DISTINCT;
-- What quotas read: one tenant's GPU-seconds since the start of a period.
CREATE INDEX usage_daily_tenant_idx ON usage_daily (tenant_slug, day);

CREATE TABLE capacity_hourly (
    bucket            timestamptz NOT NULL,
    zone_slug         text,
    zone_country      text,
    origin_country    text,
    gpu_origin        text,
    provenance_status text NOT NULL,
    node_status       text NOT NULL,
    gpu_seconds       double precision NOT NULL
);

CREATE UNIQUE INDEX capacity_hourly_key ON capacity_hourly (
    bucket, zone_slug, zone_country, origin_country, gpu_origin, provenance_status,
    node_status
) NULLS NOT DISTINCT;

-- How far the fleet capacity is in `capacity_hourly`: one row.
CREATE TABLE metering_position (
    name          text CONSTRAINT metering_position_pkey PRIMARY KEY,
    metered_until timestamptz NOT NULL
);

INSERT INTO metering_position (name, metered_until) VALUES ('capacity', now());

-- Add the workloads' usage from their watermark up to `p_until` (or their end, if
-- sooner) to the rollups, and move the watermarks. The watermark rows are locked first,
-- and the usage is computed by a statement that starts after the lock is held, so it
-- reads the position the last metering committed: a workload is never counted twice.
-- JIT off: the planner's guess of rows per generate_series makes the cost look large
-- enough to compile, and compiling (about a second) costs more than the statement.
CREATE FUNCTION meter_workloads(p_ids uuid[], p_until timestamptz) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public SET jit = off AS $$
DECLARE
    moved integer;
BEGIN
    -- Never into the future: what has not happened yet is not usage.
    p_until := least(p_until, now());
    PERFORM 1 FROM usage_watermark WHERE workload_id = ANY(p_ids)
    ORDER BY workload_id FOR UPDATE;
    WITH spans AS (
        SELECT w.id, w.tenant_slug, w.node_id, w.mig_slices, w.gpu_uuids,
               m.metered_until AS span_from,
               least(p_until, coalesce(w.ended_at, 'infinity'), w.lease_expires_at) AS span_to,
               w.status <> 'admitted'
                   AND least(p_until, coalesce(w.ended_at, 'infinity'), w.lease_expires_at)
                       >= least(w.ended_at, w.lease_expires_at) AS finished
        FROM usage_watermark m JOIN workload w ON w.id = m.workload_id
        WHERE m.workload_id = ANY(p_ids) AND NOT m.closed
    ), units AS (
        SELECT s.id, NULL::text AS mig_profile,
               cardinality(s.gpu_uuids)::double precision AS gpus, 0.0::double precision AS slices
        FROM spans s WHERE jsonb_array_length(s.mig_slices) = 0
        UNION ALL
        SELECT s.id, e ->> 'profile', sum(mig_slice_weight(e ->> 'profile')), count(*)
        FROM spans s, jsonb_array_elements(s.mig_slices) AS e
        GROUP BY s.id, e ->> 'profile'
    ), pieces AS (
        SELECT s.id, s.tenant_slug, s.node_id, h.zone_slug, h.zone_country,
               h.origin_country, h.gpu_origin, h.provenance_status, h.status AS node_status,
               greatest(s.span_from, h.valid_from) AS piece_from,
               least(s.span_to, coalesce(h.valid_to, 'infinity')) AS piece_to
        FROM spans s JOIN node_state_history h ON h.node_id = s.node_id
             AND h.valid_from < s.span_to AND coalesce(h.valid_to, 'infinity') > s.span_from
        WHERE s.span_to > s.span_from
    ), hours AS (
        SELECT p.*, u.mig_profile, u.gpus, u.slices, b.bucket,
               extract(epoch FROM least(p.piece_to, b.bucket + interval '1 hour')
                                  - greatest(p.piece_from, b.bucket))::double precision AS seconds
        FROM pieces p JOIN units u ON u.id = p.id,
             generate_series(date_trunc('hour', p.piece_from, 'UTC'), p.piece_to,
                             interval '1 hour') AS b (bucket)
        WHERE b.bucket < p.piece_to
    ), hourly AS (
        INSERT INTO usage_hourly AS t (bucket, workload_id, tenant_slug, node_id, zone_slug,
                                       zone_country, origin_country, gpu_origin,
                                       provenance_status, node_status, mig_profile,
                                       gpu_seconds, mig_slice_seconds)
        SELECT bucket, id, tenant_slug, node_id, zone_slug, zone_country, origin_country,
               gpu_origin, provenance_status, node_status, mig_profile,
               sum(seconds * gpus), sum(seconds * slices)
        FROM hours
        GROUP BY bucket, id, tenant_slug, node_id, zone_slug, zone_country, origin_country,
                 gpu_origin, provenance_status, node_status, mig_profile
        ON CONFLICT (bucket, workload_id, zone_slug, zone_country, origin_country, gpu_origin,
                     provenance_status, node_status, mig_profile)
        DO UPDATE SET gpu_seconds = t.gpu_seconds + EXCLUDED.gpu_seconds,
                      mig_slice_seconds = t.mig_slice_seconds + EXCLUDED.mig_slice_seconds
    ), daily AS (
        INSERT INTO usage_daily AS t (day, tenant_slug, node_id, zone_slug, zone_country,
                                      origin_country, gpu_origin, provenance_status,
                                      node_status, mig_profile, gpu_seconds, mig_slice_seconds)
        SELECT (bucket AT TIME ZONE 'UTC')::date, tenant_slug, node_id, zone_slug,
               zone_country, origin_country, gpu_origin, provenance_status, node_status,
               mig_profile, sum(seconds * gpus), sum(seconds * slices)
        FROM hours
        GROUP BY 1, tenant_slug, node_id, zone_slug, zone_country, origin_country,
                 gpu_origin, provenance_status, node_status, mig_profile
        ON CONFLICT (day, tenant_slug, node_id, zone_slug, zone_country, origin_country,
                     gpu_origin, provenance_status, node_status, mig_profile)
        DO UPDATE SET gpu_seconds = t.gpu_seconds + EXCLUDED.gpu_seconds,
                      mig_slice_seconds = t.mig_slice_seconds + EXCLUDED.mig_slice_seconds
    ), moved AS (
        UPDATE usage_watermark m
        SET metered_until = greatest(m.metered_until, s.span_to), closed = s.finished
        FROM spans s WHERE m.workload_id = s.id
        RETURNING 1
    )
    SELECT count(*) INTO moved FROM moved;
    RETURN moved;
END
$$;

-- The periodic roll-up's half for workloads: lock up to `p_limit` workloads not metered
-- up to `p_until`, the furthest behind first (SKIP LOCKED: one being ended right now is
-- metered by the transaction ending it, or by the next roll-up), and meter them.
CREATE FUNCTION meter_open_workloads(p_until timestamptz, p_limit integer) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
BEGIN
    RETURN meter_workloads(ARRAY(
        SELECT workload_id FROM usage_watermark
        WHERE NOT closed AND metered_until < least(p_until, now())
        ORDER BY metered_until
        LIMIT p_limit
        FOR UPDATE SKIP LOCKED
    ), p_until);
END
$$;

-- Add the fleet's GPU-seconds from the capacity position up to `p_until` to
-- `capacity_hourly` and move the position (returns the buckets touched); the position row's lock makes two roll-ups
-- run one after the other, and the second finds nothing left.
CREATE FUNCTION meter_capacity(p_until timestamptz) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public SET jit = off AS $$
DECLARE
    since timestamptz;
    added integer;
BEGIN
    p_until := least(p_until, now());
    SELECT metered_until INTO since FROM metering_position WHERE name = 'capacity' FOR UPDATE;
    IF p_until <= since THEN
        RETURN 0;
    END IF;
    WITH pieces AS (
        SELECT h.zone_slug, h.zone_country, h.origin_country, h.gpu_origin,
               h.provenance_status, h.status AS node_status, h.gpu_count,
               greatest(since, h.valid_from) AS piece_from,
               least(p_until, coalesce(h.valid_to, 'infinity')) AS piece_to
        FROM node_state_history h
        WHERE (h.valid_to IS NULL OR h.valid_to > since) AND h.valid_from < p_until
          AND h.gpu_count > 0
    ), hours AS (
        SELECT p.*, b.bucket,
               extract(epoch FROM least(p.piece_to, b.bucket + interval '1 hour')
                                  - greatest(p.piece_from, b.bucket))::double precision AS seconds
        FROM pieces p,
             generate_series(date_trunc('hour', p.piece_from, 'UTC'), p.piece_to,
                             interval '1 hour') AS b (bucket)
        WHERE b.bucket < p.piece_to
    ), added AS (
        INSERT INTO capacity_hourly AS t (bucket, zone_slug, zone_country, origin_country,
                                          gpu_origin, provenance_status, node_status,
                                          gpu_seconds)
        SELECT bucket, zone_slug, zone_country, origin_country, gpu_origin,
               provenance_status, node_status, sum(seconds * gpu_count)
        FROM hours
        GROUP BY bucket, zone_slug, zone_country, origin_country, gpu_origin,
                 provenance_status, node_status
        ON CONFLICT (bucket, zone_slug, zone_country, origin_country, gpu_origin,
                     provenance_status, node_status)
        DO UPDATE SET gpu_seconds = t.gpu_seconds + EXCLUDED.gpu_seconds
        RETURNING 1
    )
    SELECT count(*) INTO added FROM added;
    UPDATE metering_position SET metered_until = p_until WHERE name = 'capacity';
    RETURN added;
END
$$;

-- Every admitted workload gets its watermark at its start; every workload that ends is
-- metered to its end in the ending transaction (release, expiry, revocation alike).
CREATE FUNCTION workload_metering() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
    ended uuid[];
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO usage_watermark (workload_id, metered_until)
        SELECT id, created_at FROM new_rows WHERE status = 'admitted';
        RETURN NULL;
    END IF;
    ended := ARRAY(SELECT n.id FROM new_rows n JOIN old_rows o ON o.id = n.id
                   WHERE o.status = 'admitted' AND n.status <> 'admitted');
    -- Most updates (a renewal) end nothing: they cost only this look.
    IF cardinality(ended) > 0 THEN
        PERFORM meter_workloads(ended, 'infinity');
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER workload_metering_started AFTER INSERT ON workload
REFERENCING NEW TABLE AS new_rows
FOR EACH STATEMENT EXECUTE FUNCTION workload_metering();

CREATE TRIGGER workload_metering_ended AFTER UPDATE ON workload
REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
FOR EACH STATEMENT EXECUTE FUNCTION workload_metering();

INSERT INTO usage_watermark (workload_id, metered_until)
SELECT id, created_at FROM workload WHERE node_id IS NOT NULL AND status <> 'denied';

-- GPU-hour quotas charge a tenant's running workloads: found by tenant, not by lease.
CREATE INDEX workload_running_tenant_idx ON workload (tenant_slug) WHERE status = 'admitted';

CREATE TABLE tenant_origin_quota (
    tenant_slug          text NOT NULL
                         CONSTRAINT tenant_origin_quota_tenant_fkey REFERENCES tenant (slug)
                         ON DELETE CASCADE,
    -- The server's origin country (`node.origin_country`) at the time of use.
    origin_country       char(2) NOT NULL CONSTRAINT tenant_origin_quota_country_format
                         CHECK (origin_country ~ '^[A-Z]{2}$'),
    gpu_hours_per_period numeric NOT NULL
                         CONSTRAINT tenant_origin_quota_gpu_hours_nonnegative
                         CHECK (gpu_hours_per_period >= 0 AND gpu_hours_per_period <> 'NaN'),
    period               text NOT NULL DEFAULT 'month'
                         CONSTRAINT tenant_origin_quota_period_valid
                         CHECK (period IN ('day', 'week', 'month')),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT tenant_origin_quota_pkey PRIMARY KEY (tenant_slug, origin_country)
);

GRANT SELECT ON node_state_history, usage_watermark, usage_hourly, usage_daily,
    capacity_hourly, metering_position TO sovereign_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON tenant_origin_quota TO sovereign_app;
