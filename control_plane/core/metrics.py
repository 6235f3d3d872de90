"""Prometheus plumbing for the control plane: the HTTP metrics and their middleware.

Each app gets its own registry (no global state), so several apps in one process (tests)
do not collide. Features add their own collectors to it (``inventory.metrics``,
``compliance.metrics``); ``ProbeConnection`` is what those collectors are given to read
the database at scrape time.
"""

import time
from collections.abc import Callable
from contextlib import AbstractContextManager

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from control_plane.core.db import DbConnection

#: A pooled connection for a probe or a scrape, which gives up quickly when none is free.
ProbeConnection = Callable[[], AbstractContextManager[DbConnection]]


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
