"""Celery task for metering: the periodic roll-up that carries running workloads forward.

Thin and idempotent: a second run meters only what passed since the first.
"""

from datetime import UTC, datetime, timedelta

from celery import Celery

from control_plane.core.db import connect
from control_plane.core.settings import Settings
from control_plane.metering import service

#: Workloads metered per transaction. Each costs a few rows in two rollups (one per hour
#: and state its span crosses, usually one or two); 1 000 keeps a transaction well under a
#: second, and a larger backlog re-enqueues the task instead of holding locks for long.
ROLL_UP_BATCH = 1000

ROLL_UP_TASK = "metering.roll_up"


def register(app: Celery, settings: Settings) -> None:
    """Add the roll-up task and its beat schedule to ``app``."""

    @app.task(name=ROLL_UP_TASK, bind=True, ignore_result=False, shared=False)
    def roll_up(self: object, until: str | None = None) -> int:
        """Meter running workloads and capacity up to ``until``; re-enqueue if a batch was full.

        Beat calls it without ``until``: now minus the lag. A full batch re-enqueues the
        task with the same ``until``, so a backlog is worked off up to one point in time
        (a workload metered up to it is not picked again) instead of chasing the clock.
        """
        point = (
            datetime.fromisoformat(until)
            if until is not None
            else datetime.now(UTC) - timedelta(seconds=settings.metering_lag_seconds)
        )
        with connect(settings.database_url) as conn:
            done = service.roll_up(conn, until=point, batch_size=ROLL_UP_BATCH)
        if done.workloads == ROLL_UP_BATCH:
            app.send_task(ROLL_UP_TASK, kwargs={"until": point.isoformat()})
        return done.workloads

    app.conf.beat_schedule = {
        **(app.conf.beat_schedule or {}),
        "metering-roll-up": {"task": ROLL_UP_TASK, "schedule": settings.metering_interval_seconds},
    }
