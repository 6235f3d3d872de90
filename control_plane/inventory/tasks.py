"""Celery tasks for inventory: the periodic sweep that marks silent nodes offline.

Tasks are thin wrappers over service functions (tested without Celery) and idempotent: a
second run finds nothing stale and changes nothing.
"""

from celery import Celery

from control_plane.core.audit_log import AuditContext
from control_plane.core.db import connect
from control_plane.core.settings import Settings
from control_plane.inventory import agents

#: Nodes marked per transaction. Each one costs an UPDATE row and an audit event, linked
#: under the chain lock at commit, so 500 keeps one transaction (and that commit) well
#: under a second; a larger backlog re-enqueues the task rather than holding the chain
#: lock for long.
OFFLINE_SWEEP_BATCH = 500

MARK_OFFLINE_TASK = "inventory.mark_offline_nodes"

#: How the sweep appears in the audit log.
SWEEP_ACTOR = AuditContext(actor_id="system:offline-sweep", actor_name="offline sweep")


def register(app: Celery, settings: Settings) -> None:
    """Add the offline sweep task and its beat schedule to ``app``."""

    # shared=False: a shared task would be added to every Celery app built later in the
    # process too, with this app's settings in its closure.
    @app.task(name=MARK_OFFLINE_TASK, bind=True, ignore_result=False, shared=False)
    def mark_offline_nodes(self: object) -> int:
        """Mark nodes that missed three heartbeats offline; re-enqueue if a batch was full."""
        with connect(settings.database_url) as conn:
            marked = agents.mark_stale_nodes_offline(
                conn,
                SWEEP_ACTOR,
                heartbeat_interval_seconds=settings.heartbeat_interval_seconds,
                batch_size=OFFLINE_SWEEP_BATCH,
            )
        if marked == OFFLINE_SWEEP_BATCH:
            app.send_task(MARK_OFFLINE_TASK)
        return marked

    app.conf.beat_schedule = {
        **(app.conf.beat_schedule or {}),
        "mark-offline-nodes": {
            "task": MARK_OFFLINE_TASK,
            "schedule": settings.offline_sweep_seconds,
        },
    }
