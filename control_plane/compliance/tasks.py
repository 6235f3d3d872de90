"""Celery task for compliance: re-evaluate running workloads when something asked for it.

Beat enqueues it every ``SOVEREIGN_COMPLIANCE_INTERVAL_SECONDS``. It is a thin wrapper
over ``service.run_pending`` (tested without Celery) and idempotent: with no pending
request it reads one index and changes nothing, and a request is handled once.
"""

from typing import Any

from celery import Celery

from control_plane.compliance import service
from control_plane.core.audit_log import AuditContext
from control_plane.core.db import connect
from control_plane.core.settings import Settings
from control_plane.policy.engine import DecisionCache
from control_plane.policy.service import CompiledPolicySets

EVALUATE_TASK = "compliance.evaluate"

#: How the evaluation appears in the audit log.
COMPLIANCE_ACTOR = AuditContext(actor_id="system:compliance", actor_name="compliance evaluation")


def register(app: Celery, settings: Settings) -> None:
    """Add the compliance evaluation task and its beat schedule to ``app``."""
    # One per worker process, as the API keeps one: each active set is compiled once,
    # and what its decisions work out (CEL verdicts above all) is remembered between runs.
    policy_sets = CompiledPolicySets()
    decisions = DecisionCache()

    # shared=False: a shared task would be added to every Celery app built later in the
    # process too, with this app's settings in its closure.
    @app.task(name=EVALUATE_TASK, bind=True, ignore_result=False, shared=False)
    def evaluate(self: object) -> dict[str, Any] | None:
        """Evaluate every running workload if a request is pending; a summary, or None.

        Cost: one evaluation reads the whole fleet and every running workload (a few
        hundred milliseconds at 5,000 nodes) and handles every pending request at once,
        so a burst of changes costs one evaluation, not one per change.
        """
        with connect(settings.database_url) as conn:
            found = service.run_pending(
                conn,
                COMPLIANCE_ACTOR,
                sample_size=settings.compliance_sample_size,
                request_retention_days=settings.compliance_request_retention_days,
                policy_sets=policy_sets,
                decisions=decisions,
                deny_unselected=settings.default_deny_unselected,
            )
        if found is None:
            return None
        return {
            "evaluation_id": str(found.id),
            "trigger_count": found.trigger_count,
            "policy_set_version": found.policy_set_version,
            "workloads_evaluated": found.workloads_evaluated,
            "violating_workloads": found.violating_workloads,
            "warned_workloads": found.warned_workloads,
        }

    app.conf.beat_schedule = {
        **(app.conf.beat_schedule or {}),
        "evaluate-compliance": {
            "task": EVALUATE_TASK,
            "schedule": settings.compliance_interval_seconds,
        },
    }
