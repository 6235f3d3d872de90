"""Celery task for the audit chain: sign a checkpoint of its head on a beat schedule.

Beat enqueues ``audit.checkpoint`` every ``SOVEREIGN_AUDIT__CHECKPOINT_SECONDS``. A thin
wrapper over ``checkpoints.take_checkpoint`` (tested without Celery), idempotent: when the
head has not moved since the newest checkpoint it signs nothing. Cost: it verifies only the
events since the previous checkpoint (one round trip per 1000), then one insert. The key is
read on every run, so a rotated key file (a Secret updated in place) is picked up, and the
rotation audited, at the next run without a restart.
"""

import logging

from celery import Celery

from control_plane.audit import checkpoints
from control_plane.audit.keys import load_signing_key
from control_plane.core.audit_log import AuditContext
from control_plane.core.db import connect
from control_plane.core.errors import ConfigurationError
from control_plane.core.settings import Environment, Settings

CHECKPOINT_TASK = "audit.checkpoint"

#: How a scheduled checkpoint (and the key rotation it may record) appears in the log.
CHECKPOINT_ACTOR = AuditContext(actor_id="system:audit-checkpoint", actor_name="audit checkpoint")

log = logging.getLogger(__name__)


def register(app: Celery, settings: Settings) -> None:
    """Add the checkpoint task and its beat entry to ``app``.

    In prod a worker or beat whose ``SOVEREIGN_AUDIT__SIGNING_KEY_FILE`` is unset refuses to
    start, with the one-line ``ConfigurationError`` naming it. Only the worker reads the
    file (beat schedules, it never signs), so the file is read when a checkpoint is signed.
    """
    if settings.env is Environment.PROD and settings.audit.signing_key_file is None:
        raise ConfigurationError(
            "SOVEREIGN_AUDIT__SIGNING_KEY_FILE is not set: audit checkpoints need an Ed25519 "
            "signing key (PEM PKCS#8; in Kubernetes the Secret the chart mounts) with "
            "SOVEREIGN_ENV=prod"
        )

    # shared=False: see compliance.tasks (the closure holds this app's settings).
    @app.task(name=CHECKPOINT_TASK, ignore_result=False, shared=False)
    def checkpoint() -> int | None:
        """Sign the head if it moved; the new checkpoint's number, or None."""
        key = load_signing_key(settings)
        with connect(settings.database_url) as conn:
            signed = checkpoints.take_checkpoint(conn, key, CHECKPOINT_ACTOR, only_if_moved=True)
        if signed is None:
            return None
        log.info("audit checkpoint %d signed seq %d", signed.number, signed.head_seq)
        return signed.number

    app.conf.beat_schedule = {
        **(app.conf.beat_schedule or {}),
        "audit-checkpoint": {
            "task": CHECKPOINT_TASK,
            "schedule": settings.audit.checkpoint_seconds,
        },
    }
