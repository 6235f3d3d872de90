"""Celery tasks for compliance: re-evaluate running workloads, send violation webhooks.

Beat enqueues ``compliance.evaluate`` every ``SOVEREIGN_COMPLIANCE_INTERVAL_SECONDS``. It
is a thin wrapper over ``service.run_pending`` (tested without Celery) and idempotent:
with no pending request it reads one index and changes nothing, and a request is handled
once. An evaluation that queued webhooks enqueues ``compliance.deliver`` at once, so the
first attempt goes out within seconds; a delivery task that leaves retries pending
enqueues itself for when the next is due, and beat runs it on the same interval as the
evaluation in case a worker died in between. It is idempotent too: a delivery is claimed
by one sender, and one delivered is never sent again.

``compliance.sweep_pods`` (``eviction.sweep_pods``) judges the running pods the admission
webhooks decided and evicts those that violate a ``revoke`` policy. Beat runs it every
``SOVEREIGN_KUBERNETES__POD_SWEEP_SECONDS`` only when
``SOVEREIGN_KUBERNETES__POD_SWEEP_ENABLED`` is true, and then every evaluation enqueues it
too, so a policy or fleet change reaches the pods as soon as it reaches booked workloads.
It is idempotent (an evicted pod is terminating at the next run, which skips it) and, when
the API server cannot be reached, retried with backoff and then left to the next beat.
"""

import logging
from typing import Any

from celery import Celery

from control_plane.compliance import eviction, service
from control_plane.compliance.webhooks import WebhookSender
from control_plane.core.audit_log import AuditContext
from control_plane.core.db import connect
from control_plane.core.kube import ClusterUnavailableError, api_client
from control_plane.core.settings import Settings
from control_plane.policy.engine import DecisionCache
from control_plane.policy.service import CompiledPolicySets

EVALUATE_TASK = "compliance.evaluate"
DELIVER_TASK = "compliance.deliver"
SWEEP_PODS_TASK = "compliance.sweep_pods"
#: Retries of one pod sweep while the API server is unreachable; beat starts a fresh one.
SWEEP_RETRIES = 3

#: Deliveries tried per task run. Each is one HTTP request of at most the webhook timeout
#: (5 s by default) plus two small transactions; 50 keeps a run to a few seconds against a
#: healthy receiver, and a full batch re-enqueues the task at once for the rest.
DELIVERY_BATCH = 50
#: The shortest wait before a re-enqueued delivery task, so a burst of retries due at
#: nearly the same time is sent by one run.
MIN_REDELIVERY_SECONDS = 0.5

log = logging.getLogger(__name__)

#: How the evaluation appears in the audit log.
COMPLIANCE_ACTOR = AuditContext(actor_id="system:compliance", actor_name="compliance evaluation")
#: How the pod sweep appears in the audit log (``pod.evicted``, ``pod.eviction_blocked``).
POD_SWEEP_ACTOR = AuditContext(actor_id="system:pod-sweep", actor_name="pod sweep")


def register(app: Celery, settings: Settings) -> None:
    """Add the compliance tasks and their beat schedule (the pod sweep's if enabled) to ``app``."""
    # One per worker process, as the API keeps one: each active set is compiled once,
    # and what its decisions work out (CEL verdicts above all) is remembered between runs.
    policy_sets = CompiledPolicySets()
    decisions = DecisionCache()
    kubernetes = settings.kubernetes

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
        if found.notifications:
            app.send_task(DELIVER_TASK)
        if kubernetes.pod_sweep_enabled:
            # What changed for booked workloads changed for pods too: judge them now.
            app.send_task(SWEEP_PODS_TASK)
        return {
            "evaluation_id": str(found.id),
            "trigger_count": found.trigger_count,
            "policy_set_version": found.policy_set_version,
            "workloads_evaluated": found.workloads_evaluated,
            "violating_workloads": found.violating_workloads,
            "warned_workloads": found.warned_workloads,
            "revoked_workloads": found.revoked_workloads,
            "notifications": found.notifications,
        }

    @app.task(name=DELIVER_TASK, bind=True, ignore_result=False, shared=False)
    def deliver(self: object) -> int:
        """Send the violation webhooks that are due; how many were tried.

        Without ``SOVEREIGN_VIOLATION_WEBHOOK_URL`` nothing is sent: the deliveries wait,
        pending, until one is configured.
        """
        url = settings.violation_webhook_url
        secret = settings.violation_webhook_secret
        if url is None or secret is None:
            with connect(settings.database_url) as conn:
                if service.next_delivery_in(conn) is not None:
                    log.warning(
                        "violation webhooks are pending but SOVEREIGN_VIOLATION_WEBHOOK_URL"
                        " is not set; they wait in the delivery log"
                    )
            return 0
        with (
            WebhookSender(
                url,
                secret.get_secret_value().encode("utf-8"),
                timeout_seconds=settings.violation_webhook_timeout_seconds,
            ) as send,
            connect(settings.database_url) as conn,
        ):
            tried = service.deliver_due(
                conn,
                send,
                batch_size=DELIVERY_BATCH,
                max_attempts=settings.violation_webhook_max_attempts,
            )
            due_in = service.next_delivery_in(conn)
        # Only a run that sent something schedules the next: runs that found nothing due
        # (another one had claimed it) end there, so runs never pile up while a receiver
        # is down, and beat restarts the chain if its worker died.
        if tried == DELIVERY_BATCH:
            app.send_task(DELIVER_TASK)
        elif tried and due_in is not None:
            app.send_task(DELIVER_TASK, countdown=max(due_in, MIN_REDELIVERY_SECONDS))
        return tried

    @app.task(
        name=SWEEP_PODS_TASK,
        bind=True,
        ignore_result=False,
        shared=False,
        autoretry_for=(ClusterUnavailableError,),
        max_retries=SWEEP_RETRIES,
        retry_backoff=True,
        retry_backoff_max=int(kubernetes.pod_sweep_seconds),
    )
    def sweep_pods(self: object) -> dict[str, Any]:
        """Judge the running pods Sovereign decided, evict the revoked; the report as JSON.

        Cost: one list of the pods bound to a node (pages of 500), one read of the fleet,
        the policy set and the decisions they name (as an evaluation reads them), and one
        eviction request per pod to evict; judging shares the worker's decision cache.
        """
        with api_client(kubernetes) as api, connect(settings.database_url) as conn:
            report = eviction.sweep_pods(
                conn,
                api,
                POD_SWEEP_ACTOR,
                timeout_seconds=kubernetes.timeout_seconds,
                policy_sets=policy_sets,
                decisions=decisions,
                deny_unselected=settings.default_deny_unselected,
            )
        return report.to_json()

    if kubernetes.pod_sweep_enabled:
        app.conf.beat_schedule = {
            **(app.conf.beat_schedule or {}),
            "sweep-pods": {"task": SWEEP_PODS_TASK, "schedule": kubernetes.pod_sweep_seconds},
        }

    app.conf.beat_schedule = {
        **(app.conf.beat_schedule or {}),
        "evaluate-compliance": {
            "task": EVALUATE_TASK,
            "schedule": settings.compliance_interval_seconds,
        },
        "deliver-violations": {
            "task": DELIVER_TASK,
            "schedule": settings.compliance_interval_seconds,
        },
    }
