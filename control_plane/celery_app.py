"""The Celery application factory for the worker and beat (``sovctl worker|beat``).

An entry point, like ``app.py`` for the API: it sits above the features and gathers their
tasks. Built from settings on demand, not at import time. Each feature's ``tasks.py``
exposes a ``register(app, settings)`` that adds its tasks and beat entries.
"""

from celery import Celery

from control_plane.audit import tasks as audit_tasks
from control_plane.cluster import tasks as cluster_tasks
from control_plane.compliance import tasks as compliance_tasks
from control_plane.core.settings import Settings
from control_plane.inventory import tasks as inventory_tasks
from control_plane.metering import tasks as metering_tasks
from control_plane.reports import tasks as report_tasks
from control_plane.scheduling import tasks as scheduling_tasks


def create_celery(settings: Settings) -> Celery:
    """Build the Celery app on Redis with every feature's tasks registered."""
    app = Celery("sovereign", broker=settings.redis_url, backend=settings.redis_url)
    app.conf.update(
        task_default_queue=settings.celery_queue,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        result_expires=3600,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        timezone="UTC",
    )
    inventory_tasks.register(app, settings)
    scheduling_tasks.register(app, settings)
    compliance_tasks.register(app, settings)
    cluster_tasks.register(app, settings)
    audit_tasks.register(app, settings)
    report_tasks.register(app, settings)
    metering_tasks.register(app, settings)
    return app
