"""Celery tasks for scheduling: the periodic sweep that expires leases nobody renewed.

Thin and idempotent, like the offline sweep: a second run finds nothing due and changes
nothing.
"""

from celery import Celery

from control_plane.core.audit_log import AuditContext
from control_plane.core.db import connect
from control_plane.core.settings import Settings
from control_plane.scheduling import service

#: Workloads expired per transaction. Each costs an UPDATE, a DELETE of its reservations and
#: an audit event, linked under the chain lock at commit; 500 keeps a transaction (and that
#: commit) well under a second, and a larger backlog re-enqueues the task rather than
#: holding the chain lock for long.
LEASE_SWEEP_BATCH = 500

#: How often beat runs the sweep. A lease is freed at most this long after it passed.
LEASE_SWEEP_SECONDS = 30.0

EXPIRE_LEASES_TASK = "scheduling.expire_leases"

#: How the sweep appears in the audit log.
LEASE_SWEEP_ACTOR = AuditContext(actor_id="system:lease-sweep", actor_name="lease sweep")


def register(app: Celery, settings: Settings) -> None:
    """Add the lease sweep task and its beat schedule to ``app``."""

    # shared=False: a shared task would be added to every Celery app built later in the
    # process too, with this app's settings in its closure.
    @app.task(name=EXPIRE_LEASES_TASK, bind=True, ignore_result=False, shared=False)
    def expire_leases(self: object) -> int:
        """Expire leases that passed and free their GPUs; re-enqueue if a batch was full."""
        with connect(settings.database_url) as conn:
            expired = service.expire_leases(conn, LEASE_SWEEP_ACTOR, batch_size=LEASE_SWEEP_BATCH)
        if expired == LEASE_SWEEP_BATCH:
            app.send_task(EXPIRE_LEASES_TASK)
        return expired

    app.conf.beat_schedule = {
        **(app.conf.beat_schedule or {}),
        "expire-leases": {"task": EXPIRE_LEASES_TASK, "schedule": LEASE_SWEEP_SECONDS},
    }
