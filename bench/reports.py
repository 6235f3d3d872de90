"""Evidence reports at scale: build time and peak memory per kind and format, at two sizes.

Run from the repository root (PostgreSQL as for the integration tests)::

    python bench/reports.py                                   # 1,000,000 decisions, 10,000 nodes
    python bench/reports.py --decisions 100000 --nodes 1000 --json

What it does:

1. creates a scratch database ``sovereign_bench_<random>``, migrates it, and drops it at
   the end (also on Ctrl-C);
2. seeds ``--nodes`` active nodes of 8 GPUs as ``bench/placement.py`` does, their
   registrations spread over the ``--days`` of the period, so the capacity grows in it;
3. inserts ``--decisions`` admission decisions spread evenly over the period, 60 % API
   workloads and 40 % Kubernetes pod decisions, over 20 tenants: 80 % admitted, 10 % with
   a warning and 10 % denied, each of those with two reasons; plus three policy sets, an
   evaluation a day with a sample of 20 violations, and GPU-hours in the metering rollups
   (each node 60 % busy from its registration: daily rows for whole days, hourly ones for
   the period's first and last partial day);
4. builds each report (sovereignty and compliance) in each format (JSON, CSV, PDF) in a
   child process of its own, through ``reports.service.build`` as the worker does, and
   reports its wall time and the child's peak resident memory (``ru_maxrss``), plus the
   file's size.

Run it at two sizes to see how time and memory grow with the data. Goals: JSON or CSV in
at most 10 s and PDF in at most 30 s at a million decisions and 10,000 nodes over 90
days, with memory bounded as the data grows. Results are in docs/benchmarks.md.
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from machine_info import cpu_model
from psycopg import sql

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from placement import ADMIN_URL, _admin, _drop, seed  # noqa: E402

from control_plane.core import migrations  # noqa: E402
from control_plane.core.audit_log import AuditContext  # noqa: E402
from control_plane.core.db import connect, create_pool  # noqa: E402
from control_plane.core.settings import ReportSettings  # noqa: E402
from control_plane.reports import service  # noqa: E402
from control_plane.reports.models import ReportCreate, ReportFormat, ReportKind  # noqa: E402
from control_plane.reports.signing import signer_for  # noqa: E402

ACTOR = AuditContext(actor_id="bench:reports", actor_name="bench")
GOAL_SECONDS = {"json": 10.0, "csv": 10.0, "pdf": 30.0}
HASH = "0" * 64

#: The decisions, in one statement: workloads for 60 %, pod decisions for the rest.
_WORKLOADS = """
INSERT INTO workload (id, tenant_slug, request, strategy, status, outcome, reasons,
                      policy_set_version, policy_set_hash, node_id, zone_slug, gpu_uuids,
                      lease_seconds, lease_expires_at, ended_at, created_at, created_by)
SELECT gen_random_uuid(), 't' || (i %% 20), '{"gpu_count": 1, "datasets": ["tickets"]}',
       'binpack',
       CASE WHEN i %% 10 = 0 THEN 'denied' ELSE 'released' END,
       CASE WHEN i %% 10 = 0 THEN 'denied' WHEN i %% 10 = 1 THEN 'admitted_with_warnings'
            ELSE 'admitted' END,
       CASE WHEN i %% 10 IN (0, 1) THEN jsonb_build_array(
            jsonb_build_object('policy', 'p' || (i %% 7), 'rule', 'compute_zones',
                               'action', CASE WHEN i %% 10 = 0 THEN 'deny' ELSE 'warn' END,
                               'message', 'node outside the allowed zones'),
            jsonb_build_object('policy', null, 'rule', 'capacity', 'action', 'deny',
                               'message', 'no node with 8 free GPUs'))
            ELSE '[]'::jsonb END,
       1 + (i * 3 / %(total)s), %(hash)s,
       CASE WHEN i %% 10 = 0 THEN NULL ELSE (SELECT id FROM node ORDER BY id LIMIT 1) END,
       CASE WHEN i %% 10 = 0 THEN NULL ELSE 'jp' END,
       '{}', 3600,
       CASE WHEN i %% 10 = 0 THEN NULL ELSE %(start)s + (%(span)s * i / %(total)s) END,
       CASE WHEN i %% 10 = 0 THEN NULL ELSE %(start)s + (%(span)s * i / %(total)s) END,
       %(start)s + (%(span)s * i / %(total)s), 'bench'
FROM generate_series(0, %(total)s - 1) AS i
WHERE i %% 5 < 3
"""
_PODS = """
INSERT INTO pod_decision (id, namespace, kind, name, review_uid, webhook, tenant_slug,
                          request, outcome, reasons, eligible_nodes, fleet_generation,
                          policy_set_version, policy_set_hash, username, created_at)
SELECT gen_random_uuid(), 'ns' || (i %% 20), 'Pod', 'pod-' || i, 'uid-' || i, 'mutate',
       't' || (i %% 20), '{"gpu_count": 1}',
       CASE WHEN i %% 10 = 0 THEN 'denied' WHEN i %% 10 = 1 THEN 'admitted_with_warnings'
            ELSE 'admitted' END,
       CASE WHEN i %% 10 IN (0, 1) THEN jsonb_build_array(
            jsonb_build_object('policy', 'p' || (i %% 7), 'rule', 'compute_zones',
                               'action', CASE WHEN i %% 10 = 0 THEN 'deny' ELSE 'warn' END,
                               'message', 'node outside the allowed zones'),
            jsonb_build_object('policy', null, 'rule', 'capacity', 'action', 'deny',
                               'message', 'no node with 8 free GPUs'))
            ELSE '[]'::jsonb END,
       10, 1, 1 + (i * 3 / %(total)s), %(hash)s, 'system:serviceaccount:ci:runner',
       %(start)s + (%(span)s * i / %(total)s)
FROM generate_series(0, %(total)s - 1) AS i
WHERE i %% 5 >= 3
"""
#: GPU-hours: each node busy 60 % of its 8 GPUs from its registration on, for one of the
#: tenants. Whole days in the daily rollup, the period's first and last partial day hour
#: by hour in the hourly one (as one workload per node), as metering leaves them.
_USAGE_DAILY = """
INSERT INTO usage_daily (day, tenant_slug, node_id, zone_slug, zone_country, origin_country,
                         gpu_origin, provenance_status, node_status, mig_profile,
                         gpu_seconds, mig_slice_seconds)
SELECT d::date, 't' || (abs(hashtext(n.id::text)) %% 20), n.id, n.zone_slug, z.country,
       n.origin_country, n.component_origins ->> 'gpu', n.provenance_status, 'active', NULL,
       0.6 * 8 * 86400, 0
FROM node n JOIN residency_zone z ON z.slug = n.zone_slug,
     generate_series(date_trunc('day', greatest(n.registered_at, %(start)s), 'UTC')
                         + interval '1 day',
                     date_trunc('day', %(end)s, 'UTC') - interval '1 day',
                     interval '1 day') AS d
"""
_USAGE_HOURLY = """
INSERT INTO usage_hourly (bucket, workload_id, tenant_slug, node_id, zone_slug, zone_country,
                          origin_country, gpu_origin, provenance_status, node_status,
                          mig_profile, gpu_seconds, mig_slice_seconds)
SELECT b, n.id, 't' || (abs(hashtext(n.id::text)) %% 20), n.id, n.zone_slug, z.country,
       n.origin_country, n.component_origins ->> 'gpu', n.provenance_status, 'active', NULL,
       0.6 * 8 * 3600, 0
FROM node n JOIN residency_zone z ON z.slug = n.zone_slug,
     generate_series(date_trunc('hour', %(start)s, 'UTC'), %(end)s, interval '1 hour') AS b
WHERE b >= date_trunc('hour', n.registered_at, 'UTC')
  AND (b < date_trunc('day', %(start)s, 'UTC') + interval '1 day'
       OR b >= date_trunc('day', %(end)s, 'UTC'))
"""
_EVALUATIONS = """
INSERT INTO compliance_evaluation (id, started_at, finished_at, triggers, trigger_count,
    policy_set_version, policy_set_hash, fleet_generation, workloads_evaluated,
    violating_workloads, warned_workloads, violations_by_rule, violations_by_tenant, sample,
    revoked_workloads, notifications)
SELECT gen_random_uuid(), %(start)s + make_interval(days => d),
       %(start)s + make_interval(days => d, secs => 1), '[]', 1, 1, %(hash)s, 1, 1000, 20, 5,
       '[]', '{}',
       (SELECT jsonb_agg(jsonb_build_object(
            'workload_id', gen_random_uuid(), 'tenant', 't' || k,
            'reasons', jsonb_build_array(jsonb_build_object(
                'policy', 'p1', 'rule', 'compute_zones', 'action', 'deny',
                'message', 'node outside the allowed zones'))))
        FROM generate_series(1, 20) AS k), 0, 0
FROM generate_series(0, %(days)s - 1) AS d
"""


def populate(url: str, nodes: int, decisions: int, days: int) -> dict[str, float]:
    """The fleet and the decisions of the period; seconds each part took."""
    took = {}
    started = time.perf_counter()
    seed(url, nodes, 8)
    took["fleet_seconds"] = time.perf_counter() - started
    end = datetime.now(UTC).replace(microsecond=0)
    start = end - timedelta(days=days)
    span = timedelta(days=days)
    params = {
        "start": start,
        "end": end,
        "span": span,
        "total": decisions,
        "hash": HASH,
        "days": days,
    }
    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        # Registrations spread over the period, so capacity grows in it.
        conn.execute(
            "UPDATE node SET registered_at = %(start)s"
            " + %(span)s * (row_number::float8 / count) FROM ("
            "  SELECT id AS nid, row_number() OVER (ORDER BY id) - 1 AS row_number,"
            "         count(*) OVER () AS count FROM node) AS r WHERE node.id = r.nid",
            params,
        )
        for tenant in range(20):
            conn.execute(
                "INSERT INTO tenant (slug, name) VALUES (%s, %s)", (f"t{tenant}", f"T{tenant}")
            )
        for version in (1, 2, 3):
            conn.execute(
                "INSERT INTO policy_set (version, content_hash, members, activated_at,"
                " activated_by, note) VALUES (%s, %s, '[]', %s, 'bench', %s)",
                (version, HASH, start + span * (version - 1) / 3, f"set {version}"),
            )
        conn.execute(_WORKLOADS, params)
        conn.execute(_PODS, params)
        conn.execute(_EVALUATIONS, params)
        took["decisions_seconds"] = time.perf_counter() - started
        started = time.perf_counter()
        conn.execute(_USAGE_DAILY, params)
        conn.execute(_USAGE_HOURLY, params)
        conn.execute("ANALYZE")
        took["usage_seconds"] = time.perf_counter() - started
    took["period_from"] = start.timestamp()
    took["period_to"] = end.timestamp()
    return took


def build_one(url: str, kind: str, fmt: str, start: float, end: float) -> dict[str, Any]:
    """Ask for and build one report in this process; time, peak RSS and size (child side)."""
    body = ReportCreate(
        kind=ReportKind(kind),
        format=ReportFormat(fmt),
        period_from=datetime.fromtimestamp(start, UTC),
        period_to=datetime.fromtimestamp(end, UTC),
    )
    signer = signer_for(Ed25519PrivateKey.generate())
    with connect(url) as conn:
        job = service.request_report(conn, ACTOR, body)
    started = time.perf_counter()
    done = service.build(url, job.id, signer, ReportSettings())
    seconds = time.perf_counter() - started
    assert done is not None
    if kind == "sovereignty" and fmt == "json":
        # The GPU-hour lines have numbers: the metering rollups were read, not skipped.
        pool = create_pool(url, max_size=1)
        try:
            document = json.loads(b"".join(service.iter_file(pool, job.id)))
        finally:
            pool.close()
        hours = [h for h in document["headline"] if h["measure"] == "gpu_hours_own_zones"]
        assert hours, document["headline"]
        assert hours[0]["whole_period"] is not None, hours
    return {
        "kind": kind,
        "format": fmt,
        "seconds": round(seconds, 2),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "size_mib": round((done.size_bytes or 0) / 2**20, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--decisions", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--json", action="store_true", help="Print the results as JSON.")
    parser.add_argument(
        "--keep", action="store_true", help="Keep the database (its URL is printed) to study it."
    )
    parser.add_argument("--build-one", nargs=5, metavar=("URL", "KIND", "FORMAT", "FROM", "TO"))
    args = parser.parse_args()
    if args.build_one:
        url, kind, fmt, start, end = args.build_one
        print(json.dumps(build_one(url, kind, fmt, float(start), float(end))))
        return 0
    name = f"sovereign_bench_{uuid.uuid4().hex[:8]}"
    _admin(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        migrations.upgrade(url)
        seeded = populate(url, args.nodes, args.decisions, args.days)
        builds = []
        for kind in ("sovereignty", "compliance"):
            for fmt in ("json", "csv", "pdf"):
                command = [
                    sys.executable,
                    __file__,
                    "--build-one",
                    url,
                    kind,
                    fmt,
                    str(seeded["period_from"]),
                    str(seeded["period_to"]),
                ]
                child = subprocess.run(command, capture_output=True, text=True, check=True)
                result = json.loads(child.stdout.strip().splitlines()[-1])
                result["goal_seconds"] = GOAL_SECONDS[fmt]
                result["met"] = result["seconds"] <= GOAL_SECONDS[fmt]
                builds.append(result)
                if not args.json:
                    print(
                        f"{kind:12} {fmt:4} {result['seconds']:7.2f} s"
                        f" (goal {GOAL_SECONDS[fmt]:g} s)  peak RSS {result['peak_rss_mib']:7.1f}"
                        f" MiB  file {result['size_mib']:8.2f} MiB",
                        flush=True,
                    )
    finally:
        if args.keep:
            print(f"kept {url}", file=sys.stderr)
        else:
            _drop(name)
    report = {
        "nodes": args.nodes,
        "gpus": args.nodes * 8,
        "decisions": args.decisions,
        "days": args.days,
        "seed_seconds": {k: round(v, 1) for k, v in seeded.items() if k.endswith("seconds")},
        "builds": builds,
        "machine": {
            "cpu": cpu_model(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
        },
    }
    if args.json:
        print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
