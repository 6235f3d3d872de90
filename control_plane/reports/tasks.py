"""Celery tasks for reports: send due jobs to the worker, and build one.

Beat runs ``reports.dispatch`` every ``SOVEREIGN_REPORTS__DISPATCH_SECONDS``: it marks the
jobs that are queued (or running with a silent builder) and enqueues ``reports.build``
for each. ``reports.build`` is a thin wrapper over ``service.build`` and idempotent: a job
done, failed or held by another builder is left alone. Acks are late and a lost worker's
task is rejected back to the queue (the app's defaults, repeated here because the retry of
a killed report depends on them); beat's dispatcher covers a worker whose message the
broker would only restore after its visibility timeout.
"""

from typing import Any
from uuid import UUID

from celery import Celery

from control_plane.core.db import connect
from control_plane.core.settings import Settings
from control_plane.reports import service
from control_plane.reports.signing import Signer, load_signer

DISPATCH_TASK = "reports.dispatch"
BUILD_TASK = "reports.build"


def register(app: Celery, settings: Settings) -> None:
    """Add the report tasks and the dispatcher's beat entry to ``app``."""
    signer: Signer | None = None

    def signing_key() -> Signer:
        # Loaded at the first build, not at registration: beat never signs anything.
        nonlocal signer
        if signer is None:
            signer = load_signer(settings)
        return signer

    @app.task(name=DISPATCH_TASK, ignore_result=True, shared=False)
    def dispatch() -> int:
        """Enqueue a build for each due job; how many.

        Cost: one indexed UPDATE of at most ``service.DISPATCH_BATCH`` rows; a full batch
        leaves the rest to the next run, seconds later.
        """
        with connect(settings.database_url) as conn:
            due = service.dispatch(conn, settings.reports.lease_seconds)
        for job_id in due:
            app.send_task(BUILD_TASK, args=[str(job_id)])
        return len(due)

    @app.task(
        name=BUILD_TASK,
        ignore_result=False,
        shared=False,
        acks_late=True,
        reject_on_worker_lost=True,
    )
    def build(job_id: str) -> dict[str, Any] | None:
        """Build one report job; its sha256 and size, or None when there was nothing to do.

        Cost: the report's queries in one read-only snapshot (seconds at a million
        decisions, docs/benchmarks.md) and one INSERT per MiB of file.
        """
        job = service.build(settings.database_url, UUID(job_id), signing_key(), settings.reports)
        if job is None:
            return None
        return {"id": str(job.id), "sha256": job.sha256, "size_bytes": job.size_bytes}

    app.conf.beat_schedule = {
        **(app.conf.beat_schedule or {}),
        "dispatch-reports": {"task": DISPATCH_TASK, "schedule": settings.reports.dispatch_seconds},
    }
