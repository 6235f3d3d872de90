"""Admission webhooks, server-side: AdmissionReviews per second and p50/p99 per review.

Run from the repository root (PostgreSQL as for the integration tests)::

    python bench/admission.py                    # 5,000 nodes x 8 GPUs, 20 policies, 4 threads
    python bench/admission.py --nodes 500 --seconds 5 --json
    python bench/admission.py --compute-zones jp   # only jp's nodes (a third) eligible
    python bench/admission.py --http --clients 1   # through `sovctl serve-webhooks`, mTLS

What it does:

1. creates a scratch database ``sovereign_bench_<random>``, migrates it, and drops it at
   the end (also on Ctrl-C);
2. seeds the fleet and registry as ``bench/placement.py`` does (zones jp, tw, us; tenant
   ``research``; dataset ``tickets`` in all three; ``--nodes`` active nodes), then applies
   and activates the 20 policies of ``bench/policy_engine.py`` through the policy service
   (with ``--compute-zones``, one more that keeps compute in those zones, so only their
   nodes are eligible);
3. builds one process's caches (``FleetCache``, ``DecisionCache``, ``CompiledPolicySets``)
   and warms them with one review, as an API process's first request would;
4. runs ``--clients`` threads, each on its own connection, calling
   ``admission.service.review_workload`` back to back with a Pod AdmissionReview (one
   container asking for 1 GPU, declared with ``sovereign.io/datasets: tickets``) for
   ``--seconds``, alternating ``mutate`` (records the decision and its audit event, and
   builds the JSONPatch) and ``validate`` (records nothing when it admits);
5. reports reviews per second and the p50/p90/p99 of each review's time in the service
   (server-side: from the parsed review to the answer, database round trips included; the
   HTTP stack and JSON parsing are not in it), per webhook, with the median CPU time of
   the review's own thread (not PostgreSQL's, nor waiting for a core: the figure a busy
   machine disturbs least), and the size of the mutating answer's JSONPatch (base64, as
   it goes to the API server) with its affinity terms.

Results, beside Kyverno's published figure, are in docs/benchmarks.md.
"""

import argparse
import base64
import json
import os
import platform
import ssl
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
from machine_info import cpu_model
from psycopg import sql

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from placement import ADMIN_URL, _admin, _drop, seed  # noqa: E402
from policy_engine import policy_documents  # noqa: E402

from control_plane.admission import service  # noqa: E402
from control_plane.admission.models import AdmissionRequest  # noqa: E402
from control_plane.admission.trust import UNAUTHENTICATED  # noqa: E402
from control_plane.core import migrations  # noqa: E402
from control_plane.core.audit_log import AuditContext  # noqa: E402
from control_plane.core.db import connect  # noqa: E402
from control_plane.core.settings import AdmissionSettings, Settings  # noqa: E402
from control_plane.policy import service as policies  # noqa: E402
from control_plane.policy.engine import DecisionCache  # noqa: E402
from control_plane.policy.service import CompiledPolicySets  # noqa: E402
from control_plane.policy.store_models import PolicySetActivate  # noqa: E402
from control_plane.scheduling.fleet import FleetCache  # noqa: E402
from tests.certificates import make_client_files, make_tls_files  # noqa: E402
from tests.support import webhook_process  # noqa: E402

ACTOR = AuditContext(actor_id="bench:admission", actor_name="bench")
#: Kyverno's published average at 100 concurrent users (docs/benchmarks.md).
KYVERNO_AVERAGE_MS = 42.7


def documents(compute_zones: list[str]) -> list[dict[str, Any]]:
    """The 20 policies of bench/policy_engine.py, ``cost-center-required`` as a warning.

    Pods carry no workload labels, so that CEL rule would deny every review; as a warn
    policy it is still evaluated on each, and its reason comes back as a warning. With
    ``compute_zones``, a 21st keeps compute in those zones.
    """
    found = policy_documents()
    for document in found:
        if document["name"] == "cost-center-required":
            document["enforcement_action"] = "warn"
    if compute_zones:
        found.append(
            {"name": "bench-compute-zones", "requirements": {"compute_zones": compute_zones}}
        )
    return found


def affinity_terms(answer: Any) -> list[Any]:
    """The required node-affinity terms the mutating answer's patch sets."""
    for operation in json.loads(base64.b64decode(answer.patch)):
        value = operation["value"]
        if operation["path"].endswith("/affinity"):
            value = value["nodeAffinity"]
        if operation["path"].endswith(("/affinity", "/nodeAffinity")):
            value = value["requiredDuringSchedulingIgnoredDuringExecution"]
        if isinstance(value, dict) and "nodeSelectorTerms" in value:
            return list(value["nodeSelectorTerms"])
    return []


def review() -> AdmissionRequest:
    """A Pod CREATE as the kube-apiserver sends it, with a fresh uid."""
    return AdmissionRequest.model_validate(review_document())


def review_document() -> dict[str, Any]:
    """The AdmissionReview ``request`` of ``review`` as JSON, with a fresh uid."""
    return {
        "uid": str(uuid.uuid4()),
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "namespace": "research",
        "operation": "CREATE",
        "userInfo": {"username": "bench@example.com", "groups": ["system:authenticated"]},
        "object": {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "train",
                "namespace": "research",
                "annotations": {"sovereign.io/datasets": "tickets"},
            },
            "spec": {
                "containers": [
                    {
                        "name": "main",
                        "image": "x",
                        "resources": {"limits": {"nvidia.com/gpu": 1}},
                    }
                ]
            },
        },
        "dryRun": False,
    }


@contextmanager
def listener(url: str, affinity: str, directory: Path) -> Iterator[tuple[str, ssl.SSLContext]]:
    """``sovctl serve-webhooks`` on ``url``'s database, as the chart runs it: HTTPS, a
    client CA, one process. Yields its base URL and a client context with the
    kube-apiserver's certificate."""
    server = make_tls_files(directory / "server", name="bench-webhooks", hosts=("127.0.0.1",))
    apiserver = make_client_files(directory / "apiserver", "kube-apiserver")
    context = ssl.create_default_context(cafile=server.ca_cert)
    context.load_cert_chain(apiserver.cert, apiserver.key)
    with webhook_process(
        Settings(database_url=url, log_level="WARNING"),
        directory,
        verify=context,
        SOVEREIGN_ADMISSION__TLS_CERT_FILE=str(server.cert),
        SOVEREIGN_ADMISSION__TLS_KEY_FILE=str(server.key),
        SOVEREIGN_ADMISSION__CLIENT_CA_FILE=str(apiserver.ca_cert),
        SOVEREIGN_ADMISSION__AFFINITY=affinity,
    ) as listening:
        yield listening.url, context


def percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    assert __doc__ is not None
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--gpus-per-node", type=int, default=8)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--compute-zones", default="", help="comma-separated zones compute must stay in"
    )
    parser.add_argument(
        "--http",
        action="store_true",
        help="post each review to a real `sovctl serve-webhooks` over mTLS, timed by the client",
    )
    parser.add_argument(
        "--affinity",
        choices=["node_ids", "zones"],
        default="zones",
        help="SOVEREIGN_ADMISSION__AFFINITY (the setting's default is node_ids)",
    )
    args = parser.parse_args()

    name = f"sovereign_bench_{uuid.uuid4().hex[:12]}"
    _admin(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = psycopg_url(name)
    try:
        migrations.upgrade(url)
        seeded = seed(url, args.nodes, args.gpus_per_node)
        compute_zones = [zone for zone in args.compute_zones.split(",") if zone]
        with connect(url) as conn:
            policies.apply_policies(conn, ACTOR, documents(compute_zones))
            policies.activate(conn, ACTOR, PolicySetActivate())
        deps = service.Deps(
            AdmissionSettings(affinity=args.affinity),
            CompiledPolicySets(),
            FleetCache(),
            DecisionCache(),
            False,
        )
        with connect(url) as conn:
            warm = service.review_workload(conn, ACTOR, review(), "mutate", deps, UNAUTHENTICATED)
        times: dict[str, list[float]] = {"mutate": [], "validate": []}
        cpu_times: dict[str, list[float]] = {"mutate": [], "validate": []}
        outcomes: dict[str, int] = {}
        lock = threading.Lock()

        stack = ExitStack()
        if args.http:
            base, context = stack.enter_context(
                listener(
                    url, args.affinity, Path(stack.enter_context(tempfile.TemporaryDirectory()))
                )
            )

        def one_review(webhook: service.Webhook) -> Callable[[], bool]:
            """One review, in-process or over HTTPS; whether it was allowed."""
            if not args.http:
                conn = stack.enter_context(connect(url))
                return lambda: (
                    service.review_workload(
                        conn, ACTOR, review(), webhook, deps, UNAUTHENTICATED
                    ).allowed
                )
            http = stack.enter_context(httpx.Client(verify=context, timeout=10))
            path = f"{base}/k8s/{webhook}"

            def over_https() -> bool:
                body = {
                    "apiVersion": "admission.k8s.io/v1",
                    "kind": "AdmissionReview",
                    "request": review_document(),
                }
                answer = http.post(path, json=body)
                answer.raise_for_status()
                return bool(answer.json()["response"]["allowed"])

            return over_https

        def client(number: int) -> None:
            webhook: service.Webhook = "mutate" if number % 2 == 0 else "validate"
            mine: list[float] = []
            cpu_mine: list[float] = []
            seen: dict[str, int] = {}
            with lock:
                call = one_review(webhook)
            while time.perf_counter() < deadline:
                started, cpu = time.perf_counter(), time.thread_time()
                allowed = call()
                mine.append(time.perf_counter() - started)
                cpu_mine.append(time.thread_time() - cpu)
                key = f"{webhook}:{'allowed' if allowed else 'denied'}"
                seen[key] = seen.get(key, 0) + 1
            with lock:
                times[webhook].extend(mine)
                cpu_times[webhook].extend(cpu_mine)
                for key, n in seen.items():
                    outcomes[key] = outcomes.get(key, 0) + n

        threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
        began = time.perf_counter()
        deadline = began + args.seconds
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - began
        stack.close()
        result: dict[str, Any] = {
            "machine": {"cpu": cpu_model(), "cores": _cores(), "python": platform.python_version()},
            "fleet": seeded,
            "policies": len(documents(compute_zones)),
            "compute_zones": compute_zones,
            "clients": args.clients,
            "measured": "client side, over HTTPS with a client certificate"
            if args.http
            else "server side, in the service",
            "warm_review_allowed": warm.allowed,
            "mutate_patch_bytes": len(warm.patch or ""),
            "affinity_terms": affinity_terms(warm) if warm.patch else [],
            "outcomes": outcomes,
            "reviews_per_second": sum(len(t) for t in times.values()) / elapsed,
        }
        for webhook, found in times.items():
            ordered = sorted(found)
            if ordered:
                result[webhook] = {
                    "reviews": len(ordered),
                    "mean_ms": statistics.fmean(ordered) * 1000,
                    "p50_ms": percentile(ordered, 0.50) * 1000,
                    "p90_ms": percentile(ordered, 0.90) * 1000,
                    "p99_ms": percentile(ordered, 0.99) * 1000,
                    "cpu_p50_ms": statistics.median(cpu_times[webhook]) * 1000,
                }
        if args.json:
            print(json.dumps(result, indent=2))
        else:
            print(f"{seeded['nodes']} nodes, {result['policies']} policies, {args.clients} threads")
            print(f"reviews/s: {result['reviews_per_second']:.0f}  outcomes: {outcomes}")
            terms = json.dumps(result["affinity_terms"])
            print(
                f"patch: {result['mutate_patch_bytes']} bytes (base64); affinity terms:"
                f" {terms if len(terms) < 300 else terms[:300] + '...'}"
            )
            for webhook in ("mutate", "validate"):
                if webhook in result:
                    r = result[webhook]
                    print(
                        f"{webhook:9} n={r['reviews']:6d}  mean {r['mean_ms']:.2f} ms  p50"
                        f" {r['p50_ms']:.2f} ms  p90 {r['p90_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms"
                        f"  (CPU p50 {r['cpu_p50_ms']:.2f} ms)"
                    )
            print(f"(Kyverno, published: {KYVERNO_AVERAGE_MS} ms average at 100 concurrent users)")
    finally:
        _drop(name)
    return 0


def psycopg_url(dbname: str) -> str:
    return psycopg.conninfo.make_conninfo(ADMIN_URL, dbname=dbname)


def _cores() -> int:
    return os.cpu_count() or 0


if __name__ == "__main__":
    sys.exit(main())
