"""The FastAPI application factory: ``create_app()`` builds a fully wired API.

Nothing is built at import time: settings, the pool and metrics are created here (pool in
the lifespan), so ``uvicorn --factory control_plane.app:create_app`` and tests can each make
their own.
"""

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractContextManager, asynccontextmanager
from typing import Any

from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from psycopg_pool import ConnectionPool

import control_plane
from control_plane.access.http import FailedLogins
from control_plane.admission.api import router as admission_router
from control_plane.audit.api import router as audit_router
from control_plane.cluster.api import router as cluster_router
from control_plane.cluster.metrics import LabelSyncCollector
from control_plane.compliance.api import router as compliance_router
from control_plane.compliance.metrics import ComplianceCollector
from control_plane.core.db import DbConnection, create_pool
from control_plane.core.http import (
    RETRY_AFTER_SECONDS,
    RequestIdMiddleware,
    install_error_handlers,
)
from control_plane.core.metrics import ApiMetrics, HttpMetricsMiddleware
from control_plane.core.openapi import document_errors
from control_plane.core.readiness import Readiness, ReadinessStatus, probe, redis_client
from control_plane.core.settings import Settings, load_settings
from control_plane.inventory.api import router as inventory_router
from control_plane.inventory.metrics import FleetCollector
from control_plane.metering.api import router as metering_router
from control_plane.policy.api import router as policy_router
from control_plane.policy.engine import DecisionCache
from control_plane.policy.service import CompiledPolicySets
from control_plane.provenance.api import router as provenance_router
from control_plane.registry.api import router as registry_router
from control_plane.reports.api import router as reports_router
from control_plane.scheduling.api import router as scheduling_router
from control_plane.scheduling.fleet import FleetCache


def _base_app(
    settings: Settings, *, title: str, description: str, docs: bool
) -> tuple[FastAPI, Callable[[], AbstractContextManager[DbConnection]]]:
    """What both listeners share: the pool, Redis, the per-app caches, errors, health.

    The API and the webhook listener decide admissions with the same kind of state (one
    compiled policy set, one decision cache, one fleet snapshot per process), built here
    once so the two cannot drift apart. Returns the app and its probe connection factory.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = create_pool(
            settings.database_url,
            min_size=settings.db_pool_min_size,
            max_size=settings.db_pool_max_size,
        )
        app.state.pool = pool
        app.state.redis = redis_client(settings.redis_url)
        try:
            yield
        finally:
            app.state.redis.close()
            pool.close()

    common: dict[str, Any] = {
        "title": title,
        "version": control_plane.__version__,
        "description": description,
        "lifespan": lifespan,
    }
    # FastAPIOffline is FastAPI with /docs and /redoc served from the package's own copies
    # of Swagger UI, ReDoc and the favicon: an air-gapped network reaches no CDN.
    app = (
        FastAPIOffline(**common)
        if docs
        else FastAPI(**common, docs_url=None, redoc_url=None, openapi_url=None)
    )
    app.state.settings = settings
    # One per app: each active policy set is compiled once, not per admission request.
    app.state.policy_sets = CompiledPolicySets()
    # One per app: what admissions' decisions work out (a policy's node masks on the
    # current snapshot, CEL verdicts, a repeated workload's plan) is shared by requests.
    app.state.decisions = DecisionCache()
    # One per app: the fleet snapshot is rebuilt when the fleet changes, not per admission.
    app.state.fleet = FleetCache()

    def probe_connection() -> AbstractContextManager[DbConnection]:
        """A pooled connection for a probe or a scrape, which gives up after 2 s."""
        pool: ConnectionPool[DbConnection] = app.state.pool
        return pool.connection(timeout=2)

    install_error_handlers(app)

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        """Liveness: the process is up and serving."""
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["health"],
        response_model=Readiness,
        responses={
            503: {
                "model": Readiness,
                "description": "The database does not answer.",
                "headers": {"Retry-After": {"schema": {"type": "integer"}, "required": True}},
            }
        },
    )
    def readyz() -> Response:
        """Readiness: the database answers (else 503); Redis is reported, by name, too."""
        readiness = probe(probe_connection, app.state.redis)
        if readiness.status is ReadinessStatus.UNAVAILABLE:
            return JSONResponse(
                status_code=503,
                content=readiness.model_dump(mode="json"),
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
        return JSONResponse(content=readiness.model_dump(mode="json"))

    return app, probe_connection


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the API for ``settings`` (read from the environment when omitted)."""
    settings = settings or load_settings()
    app, probe_connection = _base_app(
        settings,
        title="Sovereign control plane",
        description="GPU inventory with provenance and residency, policy and audit evidence.",
        docs=True,
    )
    # One per app: failed authentications per client address, for the 429 (access.http).
    app.state.failed_logins = FailedLogins(
        settings.auth_failure_limit, settings.auth_failure_window_seconds
    )
    registry = CollectorRegistry()
    metrics = ApiMetrics(registry)
    registry.register(FleetCollector(probe_connection))
    registry.register(ComplianceCollector(probe_connection))
    registry.register(LabelSyncCollector(probe_connection))

    # Outermost last: the request id is set before the metrics middleware times the rest.
    app.add_middleware(HttpMetricsMiddleware, metrics=metrics)
    app.add_middleware(RequestIdMiddleware)

    @app.get(
        "/metrics",
        tags=["health"],
        response_class=Response,
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
    )
    def prometheus_metrics() -> Response:
        """Prometheus metrics: HTTP traffic, fleet and compliance gauges."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    # Routes are matched one by one in this order: the busiest come first (agents'
    # heartbeats in inventory, workload admission in scheduling). No two routers share a
    # path, so the order changes nothing else.
    app.include_router(inventory_router)
    app.include_router(scheduling_router)
    app.include_router(provenance_router)
    app.include_router(registry_router)
    app.include_router(policy_router)
    app.include_router(compliance_router)
    app.include_router(audit_router)
    app.include_router(reports_router)
    app.include_router(metering_router)
    app.include_router(cluster_router)
    document_errors(app)
    return app


def create_webhook_app(settings: Settings | None = None) -> FastAPI:
    """Build the admission webhook listener (``sovctl serve-webhooks``; docs/kubernetes.md).

    Only ``/k8s/*`` and the health routes: the kube-apiserver is its one caller, on its
    own port with its own TLS (and, with a client CA, only with the API server's client
    certificate), so none of the API's routes, bearer tokens or /docs are reachable there.
    It decides with the same engine, facts and kind of per-process caches as the API.
    The kube-apiserver measures each call itself
    (``apiserver_admission_webhook_admission_duration_seconds``), so no /metrics here.
    """
    settings = settings or load_settings()
    app, _ = _base_app(
        settings,
        title="Sovereign admission webhooks",
        description="Kubernetes admission webhooks: GPU pods and Node labels.",
        docs=False,
    )
    app.add_middleware(RequestIdMiddleware)
    app.include_router(admission_router)
    # Its schema is not served (no /openapi.json there) but stays true: tests read it.
    document_errors(app)
    return app
