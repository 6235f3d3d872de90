-- depends: 0021_confirmed_locations
-- MIG slices are inventory, and placement books them one by one. Until now a MIG device
-- was a JSON element of its GPU (`gpu.mig_devices`, 0012) that nothing read, and a
-- workload asking for a `1g.10gb` slice took a whole MIG-enabled GPU: the second such
-- request on a GPU with six slices free was denied for capacity.
--
-- * `mig_device` holds every MIG device an agent reports, one row each, and is the one
--   place they are kept: the node view's `mig_devices` is read from it (the JSON column
--   goes). A device without a UUID or profile (nvidia-smi -q -x names neither) is shown
--   but never booked: there is nothing to hand the workload.
-- * `mig_reservation` books one device for one workload; its primary key, the device's
--   UUID, is what makes booking a slice twice impossible, as `gpu_reservation`'s is for
--   GPUs. It copies the parent GPU, node, zone and tenant, as `gpu_reservation` does.
-- * Booked devices outlive the report as booked GPUs do (0014): a device the report leaves
--   out while booked is stamped `missing_since` and kept, and so is its GPU if that went
--   too; both are deleted when the workload ends. The foreign keys refuse deleting a
--   booked device, or the GPU of one (RESTRICT), so no path can drop a booking silently;
--   an unbooked device goes with its GPU (CASCADE).
-- * Placement now reads devices (UUID, profile, missing or not), so they move the fleet
--   generation (0007) when they appear, go or change in those.

CREATE TABLE mig_device (
    id                  bigint GENERATED ALWAYS AS IDENTITY CONSTRAINT mig_device_pkey PRIMARY KEY,
    gpu_uuid            text NOT NULL
                        CONSTRAINT mig_device_gpu_fkey REFERENCES gpu (uuid) ON DELETE CASCADE,
    -- The device's position among its GPU's MIG devices, as the agent listed them.
    index               smallint NOT NULL,
    -- "MIG-..."; unique where known (several devices without one may share a GPU).
    uuid                text CONSTRAINT mig_device_uuid_key UNIQUE,
    profile             text,
    gpu_instance_id     smallint,
    compute_instance_id smallint,
    memory_total_bytes  bigint,
    missing_since       timestamptz
);

CREATE INDEX mig_device_gpu_idx ON mig_device (gpu_uuid, index);

INSERT INTO mig_device (gpu_uuid, index, uuid, profile, gpu_instance_id, compute_instance_id,
                        memory_total_bytes)
SELECT g.uuid, (d ->> 'index')::smallint, d ->> 'uuid', d ->> 'profile',
       (d ->> 'gpu_instance_id')::smallint, (d ->> 'compute_instance_id')::smallint,
       (d ->> 'memory_total_bytes')::bigint
FROM gpu g, jsonb_array_elements(g.mig_devices) AS d;

ALTER TABLE gpu DROP COLUMN mig_devices;

CREATE TABLE mig_reservation (
    mig_uuid    text CONSTRAINT mig_reservation_pkey PRIMARY KEY
                CONSTRAINT mig_reservation_device_fkey REFERENCES mig_device (uuid)
                ON DELETE RESTRICT,
    gpu_uuid    text NOT NULL
                CONSTRAINT mig_reservation_gpu_fkey REFERENCES gpu (uuid) ON DELETE RESTRICT,
    workload_id uuid NOT NULL
                CONSTRAINT mig_reservation_workload_fkey REFERENCES workload (id),
    node_id     uuid NOT NULL CONSTRAINT mig_reservation_node_fkey REFERENCES node (id),
    zone_slug   text,
    tenant_slug text NOT NULL,
    reserved_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX mig_reservation_gpu_idx ON mig_reservation (gpu_uuid);
CREATE INDEX mig_reservation_workload_idx ON mig_reservation (workload_id);
CREATE INDEX mig_reservation_tenant_zone_idx ON mig_reservation (tenant_slug, zone_slug);

-- What a MIG workload was given, as it was booked: [{"uuid", "profile", "gpu_uuid"}]. Kept
-- after the devices are gone, like `gpu_uuids` (which holds the devices' UUIDs).
ALTER TABLE workload ADD COLUMN mig_slices jsonb NOT NULL DEFAULT '[]'
    CONSTRAINT workload_mig_slices_is_array CHECK (jsonb_typeof(mig_slices) = 'array');

CREATE CONSTRAINT TRIGGER mig_device_fleet_generation_rows
AFTER INSERT OR DELETE ON mig_device DEFERRABLE INITIALLY DEFERRED
FOR EACH ROW EXECUTE FUNCTION bump_fleet_generation();

CREATE CONSTRAINT TRIGGER mig_device_fleet_generation_update
AFTER UPDATE ON mig_device DEFERRABLE INITIALLY DEFERRED
FOR EACH ROW
WHEN (OLD.uuid IS DISTINCT FROM NEW.uuid
      OR OLD.gpu_uuid IS DISTINCT FROM NEW.gpu_uuid
      OR OLD.index IS DISTINCT FROM NEW.index
      OR OLD.profile IS DISTINCT FROM NEW.profile
      OR OLD.missing_since IS DISTINCT FROM NEW.missing_since)
EXECUTE FUNCTION bump_fleet_generation();

GRANT SELECT, INSERT, UPDATE, DELETE ON mig_device TO sovereign_app;
GRANT SELECT, INSERT, DELETE ON mig_reservation TO sovereign_app;

-- A node's bookable slices by profile, `[{"profile", "total", "free"}]`, for the node
-- views (`GET /v1/nodes`, node detail, the audited node snapshots). Bookable: named (UUID
-- and profile), there (neither it nor its GPU missing), on a GPU with MIG enabled; free:
-- and not booked, on a GPU not booked whole. The same test as placement's (`book_slices`).
CREATE FUNCTION node_mig_slices(p_node_id uuid) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT coalesce(jsonb_agg(jsonb_build_object('profile', s.profile, 'total', s.total,
                                                 'free', s.free) ORDER BY s.profile),
                    '[]'::jsonb)
    FROM (
        SELECT d.profile, count(*) AS total,
               count(*) FILTER (
                   WHERE NOT EXISTS (SELECT 1 FROM mig_reservation r WHERE r.mig_uuid = d.uuid)
                     AND NOT EXISTS (SELECT 1 FROM gpu_reservation r WHERE r.gpu_uuid = g.uuid)
               ) AS free
        FROM gpu g JOIN mig_device d ON d.gpu_uuid = g.uuid
        WHERE g.node_id = p_node_id AND g.missing_since IS NULL AND d.missing_since IS NULL
          AND d.uuid IS NOT NULL AND d.profile IS NOT NULL
          AND lower(btrim(g.mig_mode)) = 'enabled'
        GROUP BY d.profile
    ) s
$$;
