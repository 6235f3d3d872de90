"""Prometheus metrics for the control plane.

Each app gets its own registry (no global state), so several apps in one process (tests)
do not collide. Fleet and compliance gauges are read from the database at scrape time:
always current, and no background loop to keep in step.
"""

import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from control_plane.compliance import repository as compliance
from control_plane.core.db import DbConnection
from control_plane.inventory import repository as inventory


class FleetCollector(Collector):
    """Node and GPU counts by zone, status, origin country and model, read per scrape."""

    def __init__(self, connection: Callable[[], AbstractContextManager[DbConnection]]):
        self._connection = connection

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """Yield the fleet gauges; nothing when the database cannot be reached."""
        nodes = GaugeMetricFamily(
            "sovereign_fleet_nodes",
            "GPU servers by residency zone, lifecycle status and country of origin.",
            labels=["zone", "status", "origin_country"],
        )
        gpus = GaugeMetricFamily(
            "sovereign_fleet_gpus",
            "GPUs on servers that are not decommissioned, by residency zone and model.",
            labels=["zone", "model"],
        )
        try:
            with self._connection() as conn:
                for row in inventory.fleet_node_counts(conn):
                    nodes.add_metric(
                        [row["zone"], row["status"], row["origin_country"]], row["nodes"]
                    )
                for row in inventory.fleet_gpu_counts(conn):
                    gpus.add_metric([row["zone"], row["model"]], row["gpus"])
        except Exception:
            return
        yield nodes
        yield gpus


class ComplianceCollector(Collector):
    """The latest compliance evaluation's counts, and the requests still waiting, per scrape.

    Before the first evaluation only the pending requests are reported. Labels are policy
    and rule names, which a deployment has tens of, not workload or node ids.
    """

    def __init__(self, connection: Callable[[], AbstractContextManager[DbConnection]]):
        self._connection = connection

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """Yield the compliance gauges; nothing when the database cannot be reached."""
        evaluated = GaugeMetricFamily(
            "sovereign_compliance_workloads_evaluated",
            "Running workloads the latest compliance evaluation judged.",
        )
        violating = GaugeMetricFamily(
            "sovereign_compliance_violating_workloads",
            "Running workloads a deny policy breaks, at the latest compliance evaluation.",
        )
        warned = GaugeMetricFamily(
            "sovereign_compliance_warned_workloads",
            "Running workloads admitted only with warnings, at the latest evaluation.",
        )
        by_rule = GaugeMetricFamily(
            "sovereign_compliance_violations",
            "Violating workloads per policy and rule at the latest evaluation "
            '(policy "" for reasons of no policy: node gone, registry entry gone).',
            labels=["policy", "rule"],
        )
        finished = GaugeMetricFamily(
            "sovereign_compliance_last_evaluation_timestamp_seconds",
            "When the latest compliance evaluation finished (Unix time).",
        )
        pending = GaugeMetricFamily(
            "sovereign_compliance_pending_requests",
            "Changes waiting for a compliance evaluation.",
        )
        try:
            with self._connection() as conn:
                latest = compliance.latest_evaluation(conn)
                pending.add_metric([], compliance.pending_count(conn))
        except Exception:
            return
        yield pending
        if latest is None:
            return
        evaluated.add_metric([], latest["workloads_evaluated"])
        violating.add_metric([], latest["violating_workloads"])
        warned.add_metric([], latest["warned_workloads"])
        for count in latest["violations_by_rule"]:
            by_rule.add_metric([count["policy"] or "", count["rule"]], count["workloads"])
        finished.add_metric([], latest["finished_at"].timestamp())
        yield evaluated
        yield violating
        yield warned
        yield by_rule
        yield finished


class ApiMetrics:
    """The HTTP metrics every request updates."""

    def __init__(self, registry: CollectorRegistry):
        self.registry = registry
        self.requests = Counter(
            "sovereign_http_requests",
            "HTTP requests served, by method, route template and status code.",
            ["method", "route", "status"],
            registry=registry,
        )
        self.duration = Histogram(
            "sovereign_http_request_duration_seconds",
            "Time to serve an HTTP request, by method and route template.",
            ["method", "route"],
            registry=registry,
        )


class HttpMetricsMiddleware:
    """Count and time every HTTP request by method, route template and status code.

    A plain ASGI middleware (not ``BaseHTTPMiddleware``): it only watches the response
    start go by. The route template (``/v1/nodes/{node_id}``, not the concrete path, so
    label sets stay bounded) is known once routing has run; unrouted requests are
    ``unmatched``.
    """

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        """Wrap ``app``; record into ``metrics``."""
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve the request and record it, whatever the outcome."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def watched(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watched)
        finally:
            template = getattr(scope.get("route"), "path", "unmatched")
            method = scope["method"]
            self.metrics.duration.labels(method, template).observe(time.perf_counter() - started)
            self.metrics.requests.labels(method, template, str(status)).inc()
