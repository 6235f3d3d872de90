"""Celery task for the cluster: the periodic node label sync.

A thin wrapper over ``service.sync_node_labels`` (tested without Celery) and idempotent:
a run that finds every Node's labels right sends no patch. Beat schedules it every
``SOVEREIGN_KUBERNETES__LABEL_SYNC_SECONDS`` only when
``SOVEREIGN_KUBERNETES__LABEL_SYNC_ENABLED`` is true. When the API server cannot be
reached the run is retried with backoff (then left to the next beat), never a crash loop.
"""

from typing import Any

from celery import Celery

from control_plane.cluster import service
from control_plane.core.audit_log import AuditContext
from control_plane.core.db import connect
from control_plane.core.kube import ClusterUnavailableError, api_client
from control_plane.core.settings import Settings

SYNC_LABELS_TASK = "cluster.sync_node_labels"
#: Who the audit log says changed a Node's labels.
LABEL_SYNC_ACTOR = AuditContext(actor_id="system:label-sync", actor_name="node label sync")
#: Retries of one run while the API server is unreachable; beat starts a fresh run anyway.
SYNC_RETRIES = 3


def register(app: Celery, settings: Settings) -> None:
    """Add the label sync task, and its beat entry when the sync is enabled, to ``app``."""
    kubernetes = settings.kubernetes

    # shared=False: a shared task would be added to every Celery app built later in the
    # process too, with this app's settings in its closure.
    @app.task(
        name=SYNC_LABELS_TASK,
        bind=True,
        ignore_result=False,
        shared=False,
        autoretry_for=(ClusterUnavailableError,),
        max_retries=SYNC_RETRIES,
        retry_backoff=True,
        retry_backoff_max=int(kubernetes.label_sync_seconds),
    )
    def sync_node_labels(self: object) -> dict[str, Any]:
        """Sync every Node's ``sovereign.io/*`` labels; the report as JSON.

        Cost: one list of all Nodes (pages of 500) and one patch per Node whose labels
        changed; the fleet is read once, as the admission webhooks read it.
        """
        with api_client(kubernetes) as api, connect(settings.database_url) as conn:
            report = service.sync_node_labels(
                conn, LABEL_SYNC_ACTOR, api, timeout_seconds=kubernetes.timeout_seconds
            )
        return report.to_json()

    if kubernetes.label_sync_enabled:
        app.conf.beat_schedule = {
            **(app.conf.beat_schedule or {}),
            "sync-node-labels": {
                "task": SYNC_LABELS_TASK,
                "schedule": kubernetes.label_sync_seconds,
            },
        }
