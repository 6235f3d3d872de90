"""Metering: roll-up throughput, and usage reports over 90 days of a 10,000-node fleet.

Run from the repository root (PostgreSQL as for the integration tests)::

    python bench/metering.py                       # the sizes of issue 13
    python bench/metering.py --nodes 1000 --days 10 --workloads 5000

What it does, in a scratch database ``sovereign_bench_<random>`` (dropped at the end):

1. **Roll-up.** Inserts ``--nodes`` active nodes (8 GPUs each, zones in three countries,
   four origins, three provenance statuses; the triggers record their state history) and
   ``--workloads`` running workloads of 1-8 GPUs that started 6 hours ago, then calls
   ``metering.service.roll_up`` (batches of ``tasks.ROLL_UP_BATCH``) until none is left:
   the first roll-up of six hours each (6-7 hourly buckets per workload). Then it rolls
   up again to the time the first one ended, which is what beat does every
   ``SOVEREIGN_METERING_INTERVAL_SECONDS``, and ends 500 workloads in one UPDATE (as the
   lease sweep does), which meters each in the ending transaction.
2. **Reports.** Fills the rollups as 90 days (``--days``) of that fleet would: one
   ``usage_daily`` row per node, tenant and day (each node runs 1-2 tenants a day, some
   nodes change provenance status and some days are spent offline), ``capacity_hourly``
   per hour and state, and ``--hourly-days`` days of ``usage_hourly`` (per workload). It
   then times ``metering.service.usage`` for the board's questions: GPU-hours by zone
   country, origin and provenance per day over the whole period; the same for capacity;
   one row per node over the period; a week of one tenant per workload and hour.
3. Prints, as JSON, wall time, rows and the process's peak memory (``ru_maxrss``) per step.

Results are in docs/benchmarks.md.
"""

import argparse
import json
import os
import platform
import resource
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from machine_info import cpu_model
from psycopg import sql

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from placement import ADMIN_URL, _admin, _drop  # noqa: E402

from control_plane.core import migrations  # noqa: E402
from control_plane.core.db import connect  # noqa: E402
from control_plane.metering import service  # noqa: E402
from control_plane.metering.models import UsageQuery  # noqa: E402
from control_plane.metering.tasks import ROLL_UP_BATCH  # noqa: E402

ZONES = (("jp-east", "JP"), ("jp-west", "JP"), ("tw", "TW"), ("us-east", "US"), ("us-west", "US"))
ORIGINS = ("JP", "TW", "US", "CN")
PROVENANCE = ("verified", "declared", "unknown")
TENANTS = tuple(f"tenant-{i:02d}" for i in range(20))
HASH = "0" * 64


def _peak_mib() -> float:
    """The process's peak resident memory so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def seed_fleet(conn: psycopg.Connection[Any], nodes: int) -> None:
    """Zones, tenants and ``nodes`` active nodes with 8 GPUs each (history by trigger)."""
    for slug, country in ZONES:
        conn.execute(
            "INSERT INTO residency_zone (slug, name, country) VALUES (%s, %s, %s)",
            (slug, slug, country),
        )
    for tenant in TENANTS:
        conn.execute("INSERT INTO tenant (slug, name) VALUES (%s, %s)", (tenant, tenant))
    conn.execute(
        """
        INSERT INTO node (hostname, machine_id, zone_slug, status, origin_country,
                          component_origins, provenance_status, identity_baseline,
                          location_confirmed_at, location_confirmed_by, location_confirmed_via)
        SELECT 'gpu-' || i, 'mid-' || i, (%(zones)s::text[])[1 + i %% 5], 'active',
               (%(origins)s::text[])[1 + i %% 4],
               jsonb_build_object('gpu', (%(origins)s::text[])[1 + (i / 4) %% 4]),
               (%(provenance)s::text[])[1 + (i / 16) %% 3], '{}', now(), 'bench', 'admin'
        FROM generate_series(1, %(nodes)s) AS i
        """,
        {
            "zones": [z for z, _ in ZONES],
            "origins": list(ORIGINS),
            "provenance": list(PROVENANCE),
            "nodes": nodes,
        },
    )
    # The GPUs without their per-row trigger (80 000 calls would time the seeding, not
    # metering); the node's history is then written once, from -infinity, as migration
    # 0027 does for nodes that existed before it.
    conn.execute("SET session_replication_role = replica")
    conn.execute(
        """
        INSERT INTO gpu (uuid, node_id, index, model)
        SELECT 'GPU-' || n.id || '-' || g, n.id, g, 'NVIDIA H100 80GB HBM3'
        FROM node n, generate_series(0, 7) AS g
        """
    )
    conn.execute("SET session_replication_role = origin")
    conn.execute("UPDATE node_state_history SET valid_from = '-infinity', gpu_count = 8")


def seed_workloads(conn: psycopg.Connection[Any], workloads: int, started: datetime) -> None:
    """``workloads`` running workloads of 1-8 GPUs on random nodes, started at ``started``."""
    conn.execute(
        """
        INSERT INTO workload (tenant_slug, request, strategy, status, outcome,
                              policy_set_version, policy_set_hash, node_id, zone_slug,
                              gpu_uuids, lease_seconds, lease_expires_at, created_at,
                              created_by)
        SELECT (%(tenants)s::text[])[1 + i %% 20], '{}', 'binpack', 'admitted', 'admitted',
               1, %(hash)s, n.id, n.zone_slug,
               (SELECT array_agg('GPU-' || n.id || '-' || g) FROM generate_series(0, i %% 8) g),
               86400, now() + interval '1 day', %(started)s, 'bench'
        FROM generate_series(1, %(workloads)s) AS i
        JOIN (SELECT id, zone_slug, row_number() OVER (ORDER BY id) - 1 AS k FROM node) n
             ON n.k = (i::bigint * 7919) %% (SELECT count(*) FROM node)
        """,
        {"tenants": list(TENANTS), "hash": HASH, "started": started, "workloads": workloads},
    )


def bench_roll_up(url: str, nodes: int, workloads: int) -> dict[str, Any]:
    """Seed, then time the first roll-up, the next one, and metering at the end of 500."""
    now = datetime.now(UTC)
    with connect(url, as_app=False) as conn:
        started = time.perf_counter()
        seed_fleet(conn, nodes)
        seed_workloads(conn, workloads, now - timedelta(hours=6))
        conn.commit()
        seeded = time.perf_counter() - started
    with connect(url) as conn:
        results: dict[str, Any] = {"seed_seconds": round(seeded, 1)}
        # Fixed points in the past, as the task's re-enqueued batches keep one `until`.
        for name in ("first", "next"):
            until = now if name == "first" else datetime.now(UTC)
            metered, batches, started = 0, 0, time.perf_counter()
            while True:
                done = service.roll_up(conn, until=until, batch_size=ROLL_UP_BATCH)
                metered += done.workloads
                batches += 1
                if done.workloads < ROLL_UP_BATCH:
                    break
            elapsed = time.perf_counter() - started
            results[f"{name}_roll_up"] = {
                "workloads": metered,
                "batches": batches,
                "seconds": round(elapsed, 2),
                "workloads_per_second": round(metered / elapsed) if elapsed else None,
            }
        rows = conn.execute("SELECT count(*) AS n FROM usage_hourly").fetchone()
        results["usage_hourly_rows"] = rows["n"] if rows else 0
        started = time.perf_counter()
        with conn.transaction():
            conn.execute(
                "UPDATE workload SET status = 'released', ended_at = now() WHERE id IN"
                " (SELECT id FROM workload WHERE status = 'admitted' ORDER BY id LIMIT 500)"
            )
        results["end_500_seconds"] = round(time.perf_counter() - started, 3)
    results["peak_mib"] = round(_peak_mib())
    return results


def fill_rollups(url: str, days: int, hourly_days: int) -> dict[str, Any]:
    """Fill the rollups as ``days`` of the seeded fleet would, straight in SQL."""
    end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    start = end - timedelta(days=days)
    with connect(url, as_app=False) as conn:
        conn.execute("TRUNCATE usage_daily, usage_hourly, capacity_hourly")
        began = time.perf_counter()
        # Each node: one tenant a day, a second one on every third node; provenance moves
        # to verified on some nodes half way; every 30th node-day is spent offline.
        conn.execute(
            """
            INSERT INTO usage_daily (day, tenant_slug, node_id, zone_slug, zone_country,
                                     origin_country, gpu_origin, provenance_status,
                                     node_status, mig_profile, gpu_seconds, mig_slice_seconds)
            SELECT d::date, (%(tenants)s::text[])[1 + (h.k + t) %% 20], h.node_id,
                   h.zone_slug, h.zone_country, h.origin_country, h.gpu_origin,
                   CASE WHEN h.k %% 7 = 0 AND d > %(half)s THEN 'verified'
                        ELSE h.provenance_status END,
                   CASE WHEN (h.k + extract(doy FROM d)::int) %% 30 = 0 THEN 'offline'
                        ELSE 'active' END,
                   NULL, 8 * 86400 * 0.7 / (1 + t), 0
            FROM (SELECT *, row_number() OVER (ORDER BY node_id) AS k FROM node_state_history) h,
                 generate_series(%(start)s::timestamptz, %(end)s::timestamptz - interval '1 day',
                                 interval '1 day') AS d,
                 generate_series(0, 1) AS t
            WHERE t = 0 OR h.k %% 3 = 0
            """,
            {
                "tenants": list(TENANTS),
                "start": start,
                "end": end,
                "half": start + (end - start) / 2,
            },
        )
        conn.execute(
            """
            INSERT INTO capacity_hourly (bucket, zone_slug, zone_country, origin_country,
                                         gpu_origin, provenance_status, node_status, gpu_seconds)
            SELECT b, zone_slug, zone_country, origin_country, gpu_origin, provenance_status,
                   status, sum(gpu_count) * 3600.0
            FROM node_state_history,
                 generate_series(%(start)s::timestamptz, %(end)s::timestamptz - interval '1 hour',
                                 interval '1 hour') AS b
            GROUP BY b, zone_slug, zone_country, origin_country, gpu_origin,
                     provenance_status, status
            """,
            {"start": start, "end": end},
        )
        conn.execute(
            """
            INSERT INTO usage_hourly (bucket, workload_id, tenant_slug, node_id, zone_slug,
                                      zone_country, origin_country, gpu_origin,
                                      provenance_status, node_status, mig_profile,
                                      gpu_seconds, mig_slice_seconds)
            SELECT b, gen_random_uuid(), (%(tenants)s::text[])[1 + h.k %% 20], h.node_id,
                   h.zone_slug, h.zone_country, h.origin_country, h.gpu_origin,
                   h.provenance_status, 'active', NULL, 8 * 3600.0, 0
            FROM (SELECT *, row_number() OVER (ORDER BY node_id) AS k FROM node_state_history) h,
                 generate_series(%(end)s::timestamptz - make_interval(days => %(days)s),
                                 %(end)s::timestamptz - interval '1 hour', interval '1 hour') AS b
            """,
            {"tenants": list(TENANTS), "end": end, "days": hourly_days},
        )
        conn.commit()
        conn.execute("ANALYZE usage_daily")
        conn.execute("ANALYZE usage_hourly")
        conn.execute("ANALYZE capacity_hourly")
        counts = {
            table: conn.execute(
                sql.SQL("SELECT count(*) AS n FROM {}").format(sql.Identifier(table))
            ).fetchone()["n"]  # type: ignore[index]
            for table in ("usage_daily", "usage_hourly", "capacity_hourly")
        }
        size = conn.execute(
            "SELECT pg_total_relation_size('usage_daily') + pg_total_relation_size('usage_hourly')"
            " + pg_total_relation_size('capacity_hourly') AS bytes"
        ).fetchone()
    return {
        "seconds": round(time.perf_counter() - began, 1),
        "rows": counts,
        "mib_on_disk": round(size["bytes"] / 2**20) if size else None,
        "since": start,
        "until": end,
    }


def bench_reports(url: str, since: datetime, until: datetime) -> dict[str, Any]:
    """Time the board's questions through ``metering.service.usage`` (rollups only)."""
    week = until - timedelta(days=7)
    board = ["zone_country", "origin_country", "provenance_status"]
    queries: dict[str, dict[str, Any]] = {
        "usage by zone country, origin, provenance, per day": {
            "group_by": board,
            "granularity": "day",
            "limit": 10_000,
        },
        "capacity by zone country, origin, provenance, status, per day": {
            "measure": "capacity",
            "group_by": [*board, "node_status"],
            "granularity": "day",
            "limit": 10_000,
        },
        "usage per node, whole period": {"group_by": ["node"], "limit": 10_000},
        "one tenant per workload and hour, last week": {
            "since": week,
            "tenant": "tenant-03",
            "group_by": ["workload"],
            "granularity": "hour",
            "limit": 10_000,
        },
    }
    results: dict[str, Any] = {}
    with connect(url) as conn:
        for name, params in queries.items():
            query = UsageQuery.model_validate({"since": since, "until": until, **params})
            timings = []
            for _ in range(3):
                started = time.perf_counter()
                report = service.usage(conn, query)
                timings.append(time.perf_counter() - started)
            results[name] = {
                "source": report.source,
                "rows": len(report.rows),
                "truncated": report.truncated,
                "gpu_hours": round(report.gpu_hours),
                "seconds_best_of_3": round(min(timings), 3),
                "seconds_first": round(timings[0], 3),
                "json_bytes": len(report.model_dump_json()),
                "peak_mib": round(_peak_mib()),
            }
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--workloads", type=int, default=50_000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--hourly-days", type=int, default=7)
    args = parser.parse_args()
    name = f"sovereign_bench_{uuid.uuid4().hex[:8]}"
    _admin(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    try:
        migrations.upgrade(url)
        roll_up = bench_roll_up(url, args.nodes, args.workloads)
        filled = fill_rollups(url, args.days, args.hourly_days)
        reports = bench_reports(url, filled["since"], filled["until"])
    finally:
        _drop(name)
    result = {
        "machine": {
            "cpu": cpu_model(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
        },
        "nodes": args.nodes,
        "workloads": args.workloads,
        "days": args.days,
        "roll_up": roll_up,
        "rollups": {k: v for k, v in filled.items() if k not in {"since", "until"}},
        "reports": reports,
    }
    print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
