"""Placement with reservations through the real API: admissions per second, no double-booking.

Run from the repository root (PostgreSQL and Redis as for the integration tests)::

    python bench/placement.py                          # 5,000 nodes x 8 GPUs, 16 clients, 20 s
    python bench/placement.py --nodes 500 --seconds 10
    python bench/placement.py --json
    python bench/placement.py --direct                 # no HTTP: service.admit in threads

What it does:

1. creates a scratch database ``sovereign_bench_<random>`` (``ensure_database`` +
   ``upgrade``) and drops it at the end, also on Ctrl-C;
2. seeds zones (jp, tw, us), a tenant, a dataset stored in all three zones and a
   destination in jp, then ``--nodes`` active, undrifted, registered-looking nodes spread
   over the zones with ``--gpus-per-node`` H100s each, by ``COPY`` as the database owner;
3. issues an admin token (``control_plane.access.service.create_token``);
4. starts the real API, ``python -m control_plane.cli serve --workers N`` on a free port;
5. runs ``--clients`` threads, each with its own keep-alive ``httpx.Client``, sending
   ``POST /v1/workloads`` (``gpu_count`` 1) back to back for ``--seconds`` (or until
   ``--requests`` in all);
6. reports admitted placements per second, latency p50/p90/p99 over every request,
   denials and errors (non-2xx, transport errors), then checks the database: no GPU UUID
   in ``gpu_reservation`` twice, no GPU in two admitted workloads, every admitted
   workload's GPUs distinct, and the admitted count the clients saw equal to the rows.

``--direct`` skips steps 3-4: the client threads call ``scheduling.service.admit`` on their
own connections, sharing one ``FleetCache`` and one ``DecisionCache`` per simulated API
process (``--workers`` of them, threads dealt round-robin), so the policy engine,
placement and the database are measured without the HTTP stack.

The goal (issue anchor): >= 500 placements/s at 5,000 nodes x 8 GPUs with 16 clients, zero
double-bookings. Results are in docs/benchmarks.md.
"""

import argparse
import io
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
from machine_info import cpu_model
from psycopg import sql

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from control_plane.access import service as access  # noqa: E402
from control_plane.access.models import Role  # noqa: E402
from control_plane.core import migrations  # noqa: E402
from control_plane.core.audit_log import AuditContext  # noqa: E402
from control_plane.core.db import connect  # noqa: E402
from control_plane.policy.engine import DecisionCache  # noqa: E402
from control_plane.policy.service import CompiledPolicySets  # noqa: E402
from control_plane.scheduling import service  # noqa: E402
from control_plane.scheduling.fleet import FleetCache  # noqa: E402
from control_plane.scheduling.models import WorkloadCreate  # noqa: E402

GOAL_PER_SECOND = 500.0
ADMIN_URL = os.environ.get("SOVBENCH_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("SOVBENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
SECRET = "bench-secret-key-0123456789abcdef"
ZONES = (("jp", "Japan", "JP"), ("tw", "Taiwan", "TW"), ("us", "United States", "US"))
H100 = "NVIDIA H100 80GB HBM3"
H100_MEMORY = 85_520_809_984
ACTOR = AuditContext(actor_id="bench:placement", actor_name="bench")


def _admin(statement: sql.Composed) -> None:
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(statement)


def _drop(name: str) -> None:
    _admin(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _copy(conn: psycopg.Connection[Any], table: str, columns: list[str], rows: io.StringIO) -> None:
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    with conn.cursor().copy(statement) as copy:
        copy.write(rows.getvalue())


def seed(url: str, nodes: int, gpus_per_node: int) -> dict[str, Any]:
    """Registry rows and the fleet, as the owner; returns counts and the seconds it took."""
    started = time.perf_counter()
    with psycopg.connect(url, autocommit=False) as conn:
        for slug, name, country in ZONES:
            conn.execute(
                "INSERT INTO residency_zone (slug, name, country) VALUES (%s, %s, %s)",
                (slug, name, country),
            )
        conn.execute("INSERT INTO tenant (slug, name) VALUES ('research', 'Research')")
        conn.execute(
            "INSERT INTO dataset (name, owner_tenant, classification)"
            " VALUES ('tickets', 'research', 'confidential')"
        )
        conn.cursor().executemany(
            "INSERT INTO dataset_storage_zone (dataset_name, zone_slug) VALUES ('tickets', %s)",
            [(slug,) for slug, _, _ in ZONES],
        )
        conn.execute(
            "INSERT INTO artifact_destination (name, zone_slug) VALUES ('results-jp', 'jp')"
        )
        node_rows, gpu_rows = io.StringIO(), io.StringIO()
        # Active nodes have a confirmed location (migration 0021): as if an admin set it.
        confirmed_at = datetime.now(UTC).isoformat()
        for i in range(nodes):
            node_id = uuid.uuid4()
            zone, _, country = ZONES[i % len(ZONES)]
            hostname = f"gpu-{i:05d}"
            node_rows.write(
                f"{node_id}\t{hostname}\tmid-bench-{i:05d}\t{zone}\tactive\t"
                f'{{"rack": "r{i % 40}"}}\t{country}\t{{"gpu": "TW"}}\tdeclared\tnone\t'
                f"bench-agent\t{i + 1}\t{{}}\t{confirmed_at}\tbench\tadmin\n"
            )
            for g in range(gpus_per_node):
                gpu_rows.write(
                    f"GPU-{hostname}-{g:02d}\t{node_id}\t{g}\t{H100}\t{H100_MEMORY}\tDisabled\t"
                    f"1652{i:05d}{g:02d}\thealthy\n"
                )
        _copy(
            conn,
            "node",
            [
                "id",
                "hostname",
                "machine_id",
                "zone_slug",
                "status",
                "labels",
                "origin_country",
                "component_origins",
                "provenance_status",
                "drift_status",
                "agent_version",
                "last_heartbeat_seq",
                "identity_baseline",
                "location_confirmed_at",
                "location_confirmed_by",
                "location_confirmed_via",
            ],
            node_rows,
        )
        conn.execute("UPDATE node SET last_heartbeat_at = now()")
        _copy(
            conn,
            "gpu",
            [
                "uuid",
                "node_id",
                "index",
                "model",
                "memory_total_bytes",
                "mig_mode",
                "serial",
                "health",
            ],
            gpu_rows,
        )
        # The identity an admin accepted at registration, as migration 0002 builds it.
        conn.execute(
            """UPDATE node n SET identity_baseline = jsonb_build_object(
                   'system_serial', n.system_serial,
                   'gpus', coalesce((SELECT jsonb_agg(jsonb_build_object('uuid', g.uuid,
                                                                         'serial', g.serial)
                                                      ORDER BY g.uuid COLLATE "C")
                                     FROM gpu g WHERE g.node_id = n.id), '[]'::jsonb))"""
        )
        conn.commit()
        conn.autocommit = True
        # Statistics for what was just loaded, as autovacuum would gather after such a
        # load. Not for the tables the run fills (workloads, reservations, audit events):
        # analyzed while empty, they would make PostgreSQL plan their reads as scans of a
        # tiny table and keep those plans in every prepared statement for the whole run,
        # which a live installation, analyzed by autovacuum as they grow, does not do.
        conn.execute(
            "ANALYZE residency_zone, tenant, dataset, dataset_storage_zone,"
            " artifact_destination, node, gpu"
        )
    return {"nodes": nodes, "gpus": nodes * gpus_per_node, "seconds": time.perf_counter() - started}


def admin_token(url: str) -> str:
    """An admin token for the clients, issued as the service issues one."""
    with connect(url) as conn:
        return access.create_token(
            conn, ACTOR, name="bench-admin", role=Role.ADMIN, secret_key=SECRET
        ).token


def free_port() -> int:
    """A TCP port nothing listens on now, for the API."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_api(url: str, port: int, workers: int, pool: int) -> subprocess.Popen[bytes]:
    """``control_plane.cli serve`` on the scratch database; returns once ``/readyz`` answers."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SOVEREIGN_", "SOVCTL_"))}
    env.update(
        {
            "SOVEREIGN_DATABASE_URL": url,
            "SOVEREIGN_REDIS_URL": REDIS_URL,
            "SOVEREIGN_SECRET_KEY": SECRET,
            "SOVEREIGN_CELERY_QUEUE": f"sovereign-bench-{uuid.uuid4().hex[:8]}",
            "SOVEREIGN_DB_POOL_MAX_SIZE": str(pool),
            "SOVEREIGN_LOG_LEVEL": "WARNING",
            "PYTHONUNBUFFERED": "1",
        }
    )
    command = [sys.executable, "-m", "control_plane.cli", "serve", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--workers", str(workers)]
    process = subprocess.Popen(command, env=env, cwd=ROOT, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the API exited with {process.returncode} before it was ready")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    stop_api(process)
    raise RuntimeError("the API was not ready within 60 s")


def stop_api(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the API's process group; SIGKILL if it has not exited within 15 s."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


class Load:
    """Shared counters for the client threads."""

    def __init__(self, requests: int | None, deadline: float) -> None:
        self.lock = threading.Lock()
        self.left = requests
        self.deadline = deadline
        self.latencies: list[float] = []
        self.admitted: list[tuple[str, list[str]]] = []
        self.denied = 0
        self.errors: dict[str, int] = {}
        self.elapsed = 0.0

    def drive(self, clients: list[threading.Thread]) -> None:
        """Run the client threads to the end and record how long they took."""
        started = time.perf_counter()
        for t in clients:
            t.start()
        for t in clients:
            t.join()
        self.elapsed = time.perf_counter() - started

    def take(self) -> bool:
        """Whether a client may send one more request (time and request count left)."""
        if time.perf_counter() >= self.deadline:
            return False
        with self.lock:
            if self.left is None:
                return True
            if self.left <= 0:
                return False
            self.left -= 1
            return True


def client(base: str, token: str, load: Load) -> None:
    """One client thread: ``POST /v1/workloads`` back to back, recording each outcome."""
    body = {"tenant": "research", "datasets": ["tickets"], "output": "results-jp", "gpu_count": 1}
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base, headers=headers, timeout=60) as http:
        while load.take():
            start = time.perf_counter()
            try:
                response = http.post("/v1/workloads", json=body)
            except httpx.HTTPError as exc:
                with load.lock:
                    key = type(exc).__name__
                    load.errors[key] = load.errors.get(key, 0) + 1
                continue
            elapsed = time.perf_counter() - start
            with load.lock:
                load.latencies.append(elapsed)
                if response.status_code != 201:
                    key = str(response.status_code)
                    load.errors[key] = load.errors.get(key, 0) + 1
                    continue
                result = response.json()
                if result["status"] == "admitted":
                    load.admitted.append((result["id"], result["gpu_uuids"]))
                else:
                    load.denied += 1


def direct_client(url: str, fleet: FleetCache, decisions: DecisionCache, load: Load) -> None:
    """Like ``client``, through ``service.admit`` on its own connection, without HTTP."""
    body = {"tenant": "research", "datasets": ["tickets"], "output": "results-jp", "gpu_count": 1}
    request = WorkloadCreate.model_validate(body)
    policy_sets = CompiledPolicySets()
    with connect(url) as conn:
        while load.take():
            start = time.perf_counter()
            try:
                result = service.admit(conn, ACTOR, request, policy_sets, fleet, decisions)
            except Exception as exc:  # counted, like transport errors
                with load.lock:
                    key = type(exc).__name__
                    load.errors[key] = load.errors.get(key, 0) + 1
                continue
            elapsed = time.perf_counter() - start
            with load.lock:
                load.latencies.append(elapsed)
                if result.status.value == "admitted":
                    load.admitted.append((str(result.id), list(result.gpu_uuids)))
                else:
                    load.denied += 1


def run_direct(url: str, clients: int, workers: int, seconds: float, requests: int | None) -> Load:
    """Run the load through ``service.admit`` in threads, one fleet cache per "worker".

    Each "worker" also has its decision cache, as each API process has one.
    """
    fleets = [FleetCache() for _ in range(workers)]
    decisions = [DecisionCache() for _ in range(workers)]
    with connect(url) as conn:
        for fleet in fleets:  # warm each snapshot, as an API worker's first request would
            fleet.current(conn)
    load = Load(requests, time.perf_counter() + seconds)
    load.drive(
        [
            threading.Thread(
                target=direct_client,
                args=(url, fleets[i % workers], decisions[i % workers], load),
                daemon=True,
            )
            for i in range(clients)
        ]
    )
    return load


def run_load(base: str, token: str, clients: int, seconds: float, requests: int | None) -> Load:
    """Run the client threads against the API at ``base``, after a short warm-up."""
    # Warm-up: a few requests that touch the database. No admission: the first one in
    # each API worker (which builds that worker's fleet snapshot) is in the measured window.
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}) as http:
        for _ in range(4):
            http.get("/readyz")
    load = Load(requests, time.perf_counter() + seconds)
    load.drive(
        [
            threading.Thread(target=client, args=(base, token, load), daemon=True)
            for _ in range(clients)
        ]
    )
    return load


def verify(url: str, load: Load) -> dict[str, Any]:
    """Double-booking checks in the database and against what the clients were told."""
    with psycopg.connect(url, autocommit=True) as conn:
        twice = conn.execute(
            "SELECT gpu_uuid, count(*) FROM gpu_reservation GROUP BY 1 HAVING count(*) > 1"
        ).fetchall()
        in_two_workloads = conn.execute(
            "SELECT g, count(*) FROM workload, unnest(gpu_uuids) AS g"
            " WHERE status = 'admitted' GROUP BY 1 HAVING count(*) > 1"
        ).fetchall()
        admitted_rows = conn.execute(
            "SELECT count(*) FROM workload WHERE status = 'admitted'"
        ).fetchone()
        reservations = conn.execute("SELECT count(*) FROM gpu_reservation").fetchone()
        mismatched = conn.execute(
            "SELECT count(*) FROM workload w WHERE status = 'admitted' AND cardinality(gpu_uuids)"
            " <> (SELECT count(*) FROM gpu_reservation r WHERE r.workload_id = w.id)"
        ).fetchone()
    seen = [u for _, uuids in load.admitted for u in uuids]
    client_twice = len(seen) - len(set(seen))
    within = sum(1 for _, uuids in load.admitted if len(set(uuids)) != len(uuids))
    result: dict[str, Any] = {
        "gpu_reservation_duplicates": len(twice),
        "gpus_in_two_admitted_workloads": len(in_two_workloads),
        "client_seen_duplicate_gpus": client_twice,
        "workloads_with_repeated_gpu": within,
        "admitted_rows": admitted_rows[0] if admitted_rows else None,
        "admitted_seen_by_clients": len(load.admitted),
        "reservation_rows": reservations[0] if reservations else None,
        "workloads_not_matching_reservations": mismatched[0] if mismatched else None,
    }
    result["ok"] = (
        not twice
        and not in_two_workloads
        and client_twice == 0
        and within == 0
        and result["admitted_rows"] == len(load.admitted)
        and result["reservation_rows"] == len(seen)
        and result["workloads_not_matching_reservations"] == 0
    )
    return result


def percentile(ordered: list[float], q: float) -> float:
    """The ``q`` quantile of sorted values (NaN when there are none)."""
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def main() -> int:
    """Create and seed the scratch database, run the load, check it, print, drop it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--gpus-per-node", type=int, default=8)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=20.0, help="measured window")
    parser.add_argument("--requests", type=int, default=None, help="stop after this many")
    parser.add_argument("--workers", type=int, default=2, help="API worker processes")
    parser.add_argument("--pool", type=int, default=16, help="DB pool size per API worker")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--direct", action="store_true", help="call service.admit in threads, without HTTP"
    )
    args = parser.parse_args()

    name = f"sovereign_bench_{uuid.uuid4().hex[:10]}"
    url = psycopg.conninfo.make_conninfo(ADMIN_URL, dbname=name)
    process: subprocess.Popen[bytes] | None = None
    # Ctrl-C and SIGTERM both unwind through the finally below.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        migrations.ensure_database(url)
        migrations.upgrade(url)
        seeded = seed(url, args.nodes, args.gpus_per_node)
        seconds = args.seconds if args.requests is None else 3600.0
        if args.direct:
            load = run_direct(url, args.clients, args.workers, seconds, args.requests)
        else:
            token = admin_token(url)
            port = free_port()
            process = start_api(url, port, args.workers, args.pool)
            load = run_load(f"http://127.0.0.1:{port}", token, args.clients, seconds, args.requests)
            stop_api(process)
            process = None
        checks = verify(url, load)
    except KeyboardInterrupt:
        print("interrupted; dropping the scratch database", file=sys.stderr)
        return 130
    finally:
        if process is not None:
            stop_api(process)
        _drop(name)

    elapsed = load.elapsed
    ordered = sorted(load.latencies)
    total = len(load.latencies) + sum(v for k, v in load.errors.items() if not k.isdigit())
    result: dict[str, Any] = {
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "processor": cpu_model(),
            "cpus": os.cpu_count(),
        },
        "config": {
            "nodes": args.nodes,
            "gpus_per_node": args.gpus_per_node,
            "clients": args.clients,
            "api_workers": args.workers,
            "mode": "direct" if args.direct else "http",
            "db_pool_per_worker": args.pool,
            "seconds": args.seconds,
            "requests": args.requests,
        },
        "seed": seeded,
        "elapsed_s": elapsed,
        "requests": total,
        "admitted": len(load.admitted),
        "denied": load.denied,
        "errors": load.errors,
        "placements_per_s": len(load.admitted) / elapsed if elapsed else 0.0,
        "requests_per_s": total / elapsed if elapsed else 0.0,
        "latency_ms": {
            "p50": statistics.median(ordered) * 1e3 if ordered else float("nan"),
            "p90": percentile(ordered, 0.9) * 1e3,
            "p99": percentile(ordered, 0.99) * 1e3,
            "max": ordered[-1] * 1e3 if ordered else float("nan"),
        },
        "double_booking_checks": checks,
        "goal_placements_per_s": GOAL_PER_SECOND,
        "goal_met": checks["ok"] and len(load.admitted) / elapsed >= GOAL_PER_SECOND,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0 if checks["ok"] else 1
    m, c, lat = result["machine"], result["config"], result["latency_ms"]
    print(f"python {m['python']} on {m['processor']} ({m['cpus']} CPUs)")
    print(
        f"{c['nodes']} nodes x {c['gpus_per_node']} GPUs seeded in {seeded['seconds']:.1f} s;"
        f" {c['clients']} clients, {c['api_workers']} API workers ({c['mode']})"
    )
    print(
        f"{result['requests']} requests in {elapsed:.1f} s: {result['admitted']} admitted,"
        f" {result['denied']} denied, errors {load.errors or 0}"
    )
    print(f"placements/s   {result['placements_per_s']:10.1f}   (goal >= {GOAL_PER_SECOND:g})")
    print(f"latency ms     p50 {lat['p50']:.1f}  p90 {lat['p90']:.1f}  p99 {lat['p99']:.1f}")
    print(
        "double-bookings:",
        "none" if checks["ok"] else f"CHECK FAILED {json.dumps(checks)}",
    )
    print(f"goal met: {result['goal_met']}")
    return 0 if checks["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
