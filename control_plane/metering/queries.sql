-- name: meter_open_workloads
-- Up to `limit` workloads not metered up to `until`, furthest behind first (migration 0027).
SELECT meter_open_workloads(%(until)s, %(limit)s) AS moved;

-- name: meter_capacity
SELECT meter_capacity(%(until)s) AS buckets;

-- name: capacity_position
SELECT metered_until FROM metering_position WHERE name = 'capacity';

-- name: usage_by_day
-- Usage from the daily rollup over whole UTC days [since, until); a dimension not in
-- `group_by` is null in every row. Filters are exact values (a zone's sub-zones are other
-- zones).
SELECT CASE WHEN %(granularity)s = 'day' THEN (day::timestamp AT TIME ZONE 'UTC') END
           AS period_start,
       NULL::uuid AS workload_id,
       CASE WHEN 'tenant' = ANY(%(group_by)s) THEN tenant_slug END AS tenant,
       CASE WHEN 'node' = ANY(%(group_by)s) THEN node_id END AS node_id,
       CASE WHEN 'zone' = ANY(%(group_by)s) THEN zone_slug END AS zone,
       CASE WHEN 'zone_country' = ANY(%(group_by)s) THEN zone_country END AS zone_country,
       CASE WHEN 'origin_country' = ANY(%(group_by)s) THEN origin_country END AS origin_country,
       CASE WHEN 'gpu_origin' = ANY(%(group_by)s) THEN gpu_origin END AS gpu_origin,
       CASE WHEN 'provenance_status' = ANY(%(group_by)s) THEN provenance_status END
           AS provenance_status,
       CASE WHEN 'node_status' = ANY(%(group_by)s) THEN node_status END AS node_status,
       CASE WHEN 'mig_profile' = ANY(%(group_by)s) THEN mig_profile END AS mig_profile,
       sum(gpu_seconds) / 3600.0 AS gpu_hours,
       sum(mig_slice_seconds) / 3600.0 AS mig_slice_hours
FROM usage_daily
WHERE day >= %(since)s::date AND day < %(until)s::date
  AND (%(tenant)s::text IS NULL OR tenant_slug = %(tenant)s)
  AND (%(node_id)s::uuid IS NULL OR node_id = %(node_id)s)
  AND (%(zone)s::text IS NULL OR zone_slug = %(zone)s)
  AND (%(origin_country)s::text IS NULL OR origin_country = %(origin_country)s)
  AND (%(provenance_status)s::text IS NULL OR provenance_status = %(provenance_status)s)
GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11
ORDER BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11
LIMIT %(limit)s;

-- name: usage_by_hour
-- Usage from the hourly rollup (per workload) over whole UTC hours [since, until).
SELECT CASE %(granularity)s WHEN 'hour' THEN bucket
                            WHEN 'day' THEN date_trunc('day', bucket, 'UTC') END
           AS period_start,
       CASE WHEN 'workload' = ANY(%(group_by)s) THEN workload_id END AS workload_id,
       CASE WHEN 'tenant' = ANY(%(group_by)s) THEN tenant_slug END AS tenant,
       CASE WHEN 'node' = ANY(%(group_by)s) THEN node_id END AS node_id,
       CASE WHEN 'zone' = ANY(%(group_by)s) THEN zone_slug END AS zone,
       CASE WHEN 'zone_country' = ANY(%(group_by)s) THEN zone_country END AS zone_country,
       CASE WHEN 'origin_country' = ANY(%(group_by)s) THEN origin_country END AS origin_country,
       CASE WHEN 'gpu_origin' = ANY(%(group_by)s) THEN gpu_origin END AS gpu_origin,
       CASE WHEN 'provenance_status' = ANY(%(group_by)s) THEN provenance_status END
           AS provenance_status,
       CASE WHEN 'node_status' = ANY(%(group_by)s) THEN node_status END AS node_status,
       CASE WHEN 'mig_profile' = ANY(%(group_by)s) THEN mig_profile END AS mig_profile,
       sum(gpu_seconds) / 3600.0 AS gpu_hours,
       sum(mig_slice_seconds) / 3600.0 AS mig_slice_hours
FROM usage_hourly
WHERE bucket >= %(since)s AND bucket < %(until)s
  AND (%(workload_id)s::uuid IS NULL OR workload_id = %(workload_id)s)
  AND (%(tenant)s::text IS NULL OR tenant_slug = %(tenant)s)
  AND (%(node_id)s::uuid IS NULL OR node_id = %(node_id)s)
  AND (%(zone)s::text IS NULL OR zone_slug = %(zone)s)
  AND (%(origin_country)s::text IS NULL OR origin_country = %(origin_country)s)
  AND (%(provenance_status)s::text IS NULL OR provenance_status = %(provenance_status)s)
GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11
ORDER BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11
LIMIT %(limit)s;

-- name: capacity_by_hour
-- GPU-hours the fleet had (GPUs there × time, whatever their status: group or filter by
-- `node_status` for what was in service) over whole UTC hours [since, until).
SELECT CASE %(granularity)s WHEN 'hour' THEN bucket
                            WHEN 'day' THEN date_trunc('day', bucket, 'UTC') END
           AS period_start,
       NULL::uuid AS workload_id, NULL::text AS tenant, NULL::uuid AS node_id,
       CASE WHEN 'zone' = ANY(%(group_by)s) THEN zone_slug END AS zone,
       CASE WHEN 'zone_country' = ANY(%(group_by)s) THEN zone_country END AS zone_country,
       CASE WHEN 'origin_country' = ANY(%(group_by)s) THEN origin_country END AS origin_country,
       CASE WHEN 'gpu_origin' = ANY(%(group_by)s) THEN gpu_origin END AS gpu_origin,
       CASE WHEN 'provenance_status' = ANY(%(group_by)s) THEN provenance_status END
           AS provenance_status,
       CASE WHEN 'node_status' = ANY(%(group_by)s) THEN node_status END AS node_status,
       NULL::text AS mig_profile,
       sum(gpu_seconds) / 3600.0 AS gpu_hours,
       0.0::float8 AS mig_slice_hours
FROM capacity_hourly
WHERE bucket >= %(since)s AND bucket < %(until)s
  AND (%(zone)s::text IS NULL OR zone_slug = %(zone)s)
  AND (%(origin_country)s::text IS NULL OR origin_country = %(origin_country)s)
  AND (%(provenance_status)s::text IS NULL OR provenance_status = %(provenance_status)s)
GROUP BY 1, 5, 6, 7, 8, 9, 10
ORDER BY 1, 5, 6, 7, 8, 9, 10
LIMIT %(limit)s;

-- name: charged_seconds
-- What a GPU-hour quota charges a tenant in the current `period` (day, week or month,
-- UTC calendar: `date_trunc`, weeks from Monday), in a zone or on servers of an origin
-- country (one of the two given): the metered GPU-seconds in the daily rollup since the
-- period began, plus, for each running workload, the rest of its lease from where it is
-- metered (or the period's start) to its end: what admission has already promised.
-- Slices weigh their share of the GPU (`mig_slice_weight`). A running workload counts in
-- the zone it was booked in and on its node's origin now.
WITH period AS (SELECT date_trunc(%(period)s, now(), 'UTC') AS since
), metered AS (
    SELECT coalesce(sum(d.gpu_seconds), 0) AS seconds
    FROM usage_daily d, period p
    WHERE d.tenant_slug = %(tenant)s AND d.day >= (p.since AT TIME ZONE 'UTC')::date
      AND (%(zone)s::text IS NULL OR d.zone_slug = %(zone)s)
      AND (%(origin_country)s::text IS NULL OR d.origin_country = %(origin_country)s)
), promised AS (
    SELECT coalesce(sum(
               CASE WHEN jsonb_array_length(w.mig_slices) = 0 THEN cardinality(w.gpu_uuids)
                    ELSE (SELECT sum(mig_slice_weight(e ->> 'profile'))
                          FROM jsonb_array_elements(w.mig_slices) AS e) END
               * greatest(0, extract(epoch FROM w.lease_expires_at
                                      - greatest(m.metered_until, p.since)))
           ), 0) AS seconds
    FROM period p, workload w JOIN usage_watermark m ON m.workload_id = w.id
         JOIN node n ON n.id = w.node_id
    WHERE w.tenant_slug = %(tenant)s AND w.status = 'admitted'
      AND (%(zone)s::text IS NULL OR w.zone_slug = %(zone)s)
      AND (%(origin_country)s::text IS NULL OR n.origin_country = %(origin_country)s)
)
SELECT (metered.seconds + promised.seconds)::float8 AS seconds FROM metered, promised;
