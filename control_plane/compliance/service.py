"""Compliance use cases: evaluate running workloads and record it, read evaluations, what-if.

``run_pending`` is the evaluation the Celery task runs. One transaction: it notices the
grants that expired since the last beat (each asks for an evaluation and is audited as
``asset_grant.expired``), claims the pending requests (``FOR UPDATE SKIP LOCKED``, so
two workers never evaluate for the same requests), reads the fleet snapshot, the active
policy set and every running workload, judges them all (``evaluation.assess``), acts on
the violations of deny policies whose ``on_violation`` asks for it (revokes workloads,
queues signed webhooks: ``_act``), stores one ``compliance_evaluation`` with exact counts
and a capped sample, marks the requests handled, deletes the requests handled more than
the retention ago (the evaluations that handled them keep their ``triggers``) and audits
``compliance.evaluated``, last. Nothing pending, nothing done: the task is idempotent.

``whatif`` judges the same running workloads, on the same kind of snapshot, under the
active set and under the candidate set that applying some documents and activating them
would make (``policy.service.candidate_set``), and stores nothing.

``deliver_due`` sends the queued webhooks (the Celery task ``compliance.deliver``).
"""

from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

from agents.protocol import canonical_json
from control_plane.compliance import evaluation, repository, webhooks
from control_plane.compliance.evaluation import Assessment, Enforcement, Finding, RunningWorkload
from control_plane.compliance.models import (
    CandidateSetPublic,
    ComplianceRequestPublic,
    DeliveryFilters,
    DeliveryPage,
    EvaluationPage,
    EvaluationPublic,
    EvaluationRecorded,
    NodeSetChange,
    RuleCount,
    TenantCapacityChange,
    TriggerCounts,
    WhatIfResult,
    WhatIfViolation,
    WhatIfViolations,
    WorkloadHeld,
    WorkloadRevoked,
)
from control_plane.core.audit_log import AuditContext, record_change, transaction
from control_plane.core.db import DbConnection
from control_plane.core.errors import NotFoundError
from control_plane.core.outbox import EvaluationRequest, request_evaluation
from control_plane.domain.audit import AuditAction
from control_plane.domain.compliance import EvaluationTrigger
from control_plane.domain.decisions import EnforcementPoint, ViolationAction
from control_plane.facts.fleet import load_snapshot
from control_plane.facts.workloads import RegistryViews, WorkloadRequest, WorkloadRevocation
from control_plane.inventory import repository as inventory
from control_plane.policy import service as policies
from control_plane.policy.engine import DecisionCache
from control_plane.policy.service import CompiledPolicySets, active_policy_set
from control_plane.policy.store_models import PolicySetRef
from control_plane.registry import service as registry

#: Requests listed on an evaluation (its ``trigger_count`` is exact). A burst of drift or
#: node edits can pile up thousands; the first ones say enough about why it ran.
TRIGGERS_KEPT = 100
#: Hostnames listed per tenant for the nodes a candidate set takes away or adds.
HOSTNAMES_LISTED = 20


# -- the engine's views of running workloads -------------------------------------------


def running_workloads(conn: DbConnection) -> list[RunningWorkload]:
    """Every workload that holds GPUs now, by id, with the engine's view of its request.

    Stored requests are read with ``WorkloadRequest``, not the API's input model, so rows
    written under older API rules keep loading; each name they give is read from the
    registry once per evaluation (``facts.workloads.RegistryViews``).
    """
    views = RegistryViews(conn)
    found = []
    for row in repository.running_workloads(conn):
        view = views.view(WorkloadRequest.model_validate(row.request))
        found.append(
            RunningWorkload(
                id=str(row.id),
                tenant=row.tenant,
                node_id=str(row.node_id),
                view=None if isinstance(view, str) else view,
                problem=view if isinstance(view, str) else None,
                hostname=row.hostname,
                node_status=row.node_status,
                zone=row.zone,
            )
        )
    return found


# -- requesting and reading evaluations ------------------------------------------------


def request_by_admin(conn: DbConnection, ctx: AuditContext) -> ComplianceRequestPublic:
    """Ask for an evaluation now (an admin, through the API); the task runs it next beat."""
    with transaction(conn):
        request = request_evaluation(
            conn,
            EvaluationTrigger.REQUESTED,
            {
                "actor_id": ctx.actor_id,
                "requested_by": ctx.actor_name,
                "request_id": ctx.request_id,
            },
        )
    return ComplianceRequestPublic(
        id=request.id,
        reason=request.reason,
        subject=request.subject,
        requested_at=request.requested_at,
        evaluation_id=None,
    )


def get_request(conn: DbConnection, request_id: int) -> ComplianceRequestPublic:
    """One request, with the evaluation that handled it once one has, or 404.

    Handled requests are deleted after ``SOVEREIGN_COMPLIANCE_REQUEST_RETENTION_DAYS``, so
    an old one is 404 too; the evaluation that handled it still counts it.
    """
    found = repository.get_request(conn, request_id)
    if found is None:
        raise NotFoundError(
            f"compliance request {request_id} does not exist (handled requests are deleted"
            " after SOVEREIGN_COMPLIANCE_REQUEST_RETENTION_DAYS)"
        )
    return found


def get_evaluation(conn: DbConnection, evaluation_id: UUID) -> EvaluationPublic:
    """One evaluation with its sample, or 404."""
    found = repository.get_evaluation(conn, evaluation_id)
    if found is None:
        raise NotFoundError(f"compliance evaluation {evaluation_id} does not exist")
    return found


def latest_evaluation(conn: DbConnection) -> EvaluationPublic:
    """The evaluation that finished last, or 404 when none has run yet."""
    found = repository.latest_evaluation(conn)
    if found is None:
        raise NotFoundError("no compliance evaluation has run yet")
    return found


def list_evaluations(conn: DbConnection, limit: int, offset: int) -> EvaluationPage:
    """A page of evaluations, newest first, without their samples."""
    items, total = repository.list_evaluations(conn, limit, offset)
    return EvaluationPage(items=items, total=total, limit=limit, offset=offset)


# -- evaluating ------------------------------------------------------------------------


def _trigger_json(request: EvaluationRequest) -> dict[str, Any]:
    return {
        "id": request.id,
        "reason": request.reason.value,
        "subject": request.subject,
        "requested_at": request.requested_at.isoformat(),
    }


def _counts(found: Assessment) -> dict[str, Any]:
    """The exact counts of an assessment, as stored and audited."""
    return {
        "workloads_evaluated": found.evaluated,
        "violating_workloads": len(found.violations),
        "warned_workloads": found.warned,
        "violations_by_rule": [count.to_json() for count in found.by_rule],
        "violations_by_tenant": found.by_tenant,
    }


def run_pending(
    conn: DbConnection,
    ctx: AuditContext,
    *,
    sample_size: int,
    request_retention_days: int,
    policy_sets: CompiledPolicySets | None = None,
    decisions: DecisionCache | None = None,
    deny_unselected: bool = False,
) -> EvaluationPublic | None:
    """Evaluate every running workload if any evaluation request is pending; record it.

    Returns the evaluation, or None when nothing was pending (or another worker holds
    every pending request). ``sample_size`` caps the violating workloads kept with their
    reasons; the counts are exact. Requests handled more than ``request_retention_days``
    ago are deleted in the same transaction, so the outbox does not grow forever. Violations
    of deny policies with ``on_violation`` ``revoke`` end their workloads (audited
    ``workload.revoked`` each), and with ``notify`` or ``revoke`` queue a webhook (see
    ``_act``). Audited as ``compliance.evaluated``, last. ``decisions``: the worker's
    cache of what decisions remember (a policy's node masks, CEL verdicts); without it,
    one for this evaluation. ``deny_unselected``: ``SOVEREIGN_DEFAULT_DENY_UNSELECTED``, as
    admission applies it.
    """
    started_at = datetime.now(UTC)
    with transaction(conn):
        # Expiry is a change no one makes: noticed here, each asks for this evaluation.
        registry.notice_expired_grants(conn, ctx)
        claimed = repository.claim_pending(conn)
        if not claimed:
            return None
        # Read after claiming: every change whose request was claimed has committed.
        snapshot = load_snapshot(conn)
        policy_set = active_policy_set(conn, policy_sets)
        found = evaluation.assess(
            running_workloads(conn),
            snapshot.index,
            policy_set,
            point=EnforcementPoint.SWEEP,
            cache=decisions or DecisionCache(),
            deny_unselected=deny_unselected,
        )
        sample = found.violations[:sample_size]
        evaluation_id = uuid4()
        counts = _counts(found)
        # Acting comes before storing the evaluation, which counts what it did; the
        # deliveries' reference to it is checked at commit.
        revoked, notifications = _act(
            conn,
            ctx,
            evaluation.enforcements(found, policy_set),
            evaluation_id=evaluation_id,
            policy_set=PolicySetRef(
                version=policy_set.version, content_hash=policy_set.content_hash
            ),
            detected_at=started_at,
        )
        stored = repository.insert_evaluation(
            conn,
            {
                "id": evaluation_id,
                "started_at": started_at,
                "finished_at": datetime.now(UTC),
                "triggers": [_trigger_json(request) for request in claimed[:TRIGGERS_KEPT]],
                "trigger_count": len(claimed),
                "policy_set_version": policy_set.version,
                "policy_set_hash": policy_set.content_hash,
                "fleet_generation": snapshot.generation,
                **counts,
                "sample": [finding.to_json() for finding in sample],
                "revoked_workloads": len(revoked),
                "notifications": notifications,
            },
        )
        repository.mark_handled(conn, [request.id for request in claimed], evaluation_id)
        repository.prune_handled(conn, request_retention_days)
        record_change(
            conn,
            ctx,
            AuditAction.COMPLIANCE_EVALUATED,
            str(evaluation_id),
            after=EvaluationRecorded(
                policy_set=PolicySetRef(
                    version=policy_set.version, content_hash=policy_set.content_hash
                ),
                fleet_generation=snapshot.generation,
                workloads_evaluated=found.evaluated,
                violating_workloads=len(found.violations),
                warned_workloads=found.warned,
                violations_by_rule=[RuleCount(**count.to_json()) for count in found.by_rule],
                violations_by_tenant=found.by_tenant,
                sampled_workload_ids=[finding.workload_id for finding in sample],
                triggers=TriggerCounts(
                    count=len(claimed),
                    reasons=dict(sorted(Counter(r.reason.value for r in claimed).items())),
                ),
                revoked_workload_ids=revoked,
                notifications=notifications,
            ),
        )
    return stored


# -- acting on violations: revoke, notify ------------------------------------------------


def _act(
    conn: DbConnection,
    ctx: AuditContext,
    planned: Sequence[Enforcement],
    *,
    evaluation_id: UUID,
    policy_set: PolicySetRef,
    detected_at: datetime,
) -> tuple[list[str], int]:
    """Revoke and announce what ``planned`` says, in the evaluation's transaction.

    Returns the ids of the workloads revoked (by id) and how many deliveries were queued.
    Each revoked workload ends (status ``revoked``, ``ended_at``, its ``revocation``), its
    GPU reservations are deleted and ``workload.revoked`` is audited. A workload released
    or expired meanwhile is left as it is. Each (workload, policy) is announced once: a
    violation still there at the next evaluation queues nothing new.
    """
    if not planned:
        return [], 0
    revocations = {
        UUID(plan.finding.workload_id): {
            "evaluation_id": str(evaluation_id),
            "policies": list(plan.revoke_by),
            "reasons": [reason.to_json() for reason in plan.finding.reasons],
        }
        for plan in planned
        if plan.revoke
    }
    revoked = repository.revoke_workloads(conn, revocations) if revocations else []
    freed = repository.free_reservations(conn, [row.id for row in revoked]) if revoked else {}
    # A booked GPU its node stopped reporting was kept only for the workload holding it.
    freed_uuids = [uuid for uuids in freed.values() for uuid in uuids]
    removed = set(
        inventory.delete_missing_gpus(
            conn, [row.node_id for row in revoked if row.node_id is not None], freed_uuids
        )
        if freed_uuids
        else []
    )
    for row in revoked:
        record_change(
            conn,
            ctx,
            AuditAction.WORKLOAD_REVOKED,
            str(row.id),
            before=WorkloadHeld(
                status="admitted",
                node_id=row.node_id,
                gpu_uuids=row.gpu_uuids,
                lease_expires_at=row.lease_expires_at,
            ),
            after=WorkloadRevoked(
                status="revoked",
                ended_at=row.ended_at,
                freed_gpu_uuids=sorted(freed.get(row.id, [])),
                removed_gpu_uuids=sorted(removed.intersection(freed.get(row.id, []))),
                revocation=WorkloadRevocation.model_validate(
                    {**revocations[row.id], "revoked_at": row.ended_at}
                ),
            ),
        )
    revoked_ids = {row.id for row in revoked}
    seen = repository.announced(conn, [UUID(plan.finding.workload_id) for plan in planned])
    deliveries = []
    for plan in planned:
        workload_id = UUID(plan.finding.workload_id)
        for policy, action in plan.notify:
            if (workload_id, policy) in seen:
                continue
            delivery_id = uuid4()
            body = _payload(
                plan.finding,
                delivery_id=delivery_id,
                policy=policy,
                action=action,
                evaluation_id=evaluation_id,
                policy_set=policy_set,
                detected_at=detected_at,
                revoked=workload_id in revoked_ids,
            )
            deliveries.append(
                {
                    "id": delivery_id,
                    "workload_id": workload_id,
                    "policy": policy,
                    "action": action.value,
                    "body": canonical_json(body),
                }
            )
    queued = repository.insert_deliveries(conn, evaluation_id, deliveries) if deliveries else 0
    return sorted(str(workload_id) for workload_id in revoked_ids), queued


def _payload(
    finding: Finding,
    *,
    delivery_id: UUID,
    policy: str,
    action: ViolationAction,
    evaluation_id: UUID,
    policy_set: PolicySetRef,
    detected_at: datetime,
    revoked: bool,
) -> dict[str, Any]:
    """The webhook body announcing one workload's violation of one policy (docs/policy.md)."""
    return {
        "event": webhooks.VIOLATION_EVENT,
        "delivery_id": str(delivery_id),
        "action": action.value,
        "policy": policy,
        "evaluation_id": str(evaluation_id),
        "detected_at": detected_at.isoformat(),
        "policy_set": policy_set.model_dump(mode="json"),
        "workload": {
            "id": finding.workload_id,
            "tenant": finding.tenant,
            "node_id": finding.node_id,
            "hostname": finding.hostname,
            "zone": finding.zone,
            "revoked": revoked,
        },
        "reasons": [reason.to_json() for reason in finding.reasons],
    }


#: Seconds a claimed delivery is hidden from other senders: far beyond one attempt's
#: timeout (at most 30 s), so only a sender that died leaves it to be claimed again.
CLAIM_SECONDS = 120.0


def deliver_due(
    conn: DbConnection, send: webhooks.Sender, *, batch_size: int, max_attempts: int
) -> int:
    """Send up to ``batch_size`` due violation webhooks once each; how many were tried.

    The claim commits before anything is sent (no transaction stays open across HTTP);
    each outcome is recorded in its own transaction: delivered, or retried after
    ``webhooks.retry_delay``, or ``failed`` after ``max_attempts``. Attempts are the
    delivery log, not audit events, as heartbeats and renewals are not audited either.
    """
    with transaction(conn):
        claimed = repository.claim_due_deliveries(conn, batch_size, CLAIM_SECONDS)
    for delivery in claimed:
        attempt = send(delivery)
        with transaction(conn):
            if attempt.delivered:
                assert attempt.status is not None
                repository.delivery_succeeded(conn, delivery.id, attempt.status)
            else:
                repository.delivery_failed(
                    conn,
                    delivery.id,
                    status=attempt.status,
                    error=attempt.error or "failed",
                    max_attempts=max_attempts,
                    delay=webhooks.retry_delay(delivery.attempts),
                )
    return len(claimed)


def next_delivery_in(conn: DbConnection) -> float | None:
    """Seconds until the next pending delivery is due (negative: overdue), or None."""
    return repository.next_due_in(conn)


def list_deliveries(
    conn: DbConnection, filters: DeliveryFilters, limit: int, offset: int
) -> DeliveryPage:
    """A page of violation deliveries, newest first, filtered by status and workload."""
    items, total = repository.list_deliveries(conn, filters.model_dump(mode="json"), limit, offset)
    return DeliveryPage(items=items, total=total, limit=limit, offset=offset)


# -- what-if ---------------------------------------------------------------------------


def whatif(
    conn: DbConnection,
    documents: Sequence[Mapping[str, Any]],
    *,
    sample_size: int,
    policy_sets: CompiledPolicySets | None = None,
    deny_unselected: bool = False,
) -> WhatIfResult:
    """What activating ``documents`` (as ``policy apply`` then ``policy activate``) would do.

    Validated as applying validates (422 naming every problem); nothing is stored. Every
    running workload is judged under the active set and the candidate, as the compliance
    evaluation judges them; every tenant's probe (one GPU, nothing named) is placed under
    both. ``sample_size`` caps the violations listed; counts are exact. Decisions share
    a cache of this call's own: the snapshot is read afresh, and a candidate set is
    seen once, so nothing would be reused by a longer-lived one. ``deny_unselected`` as
    for the evaluation, so what-if predicts it.
    """
    with transaction(conn):
        repository.consistent_read(conn)
        candidate = policies.candidate_set(conn, documents)
        # The active set candidate_set already read, rather than reading it again.
        current = policies.compiled_set(conn, candidate.active, policy_sets)
        snapshot = load_snapshot(conn)
        workloads = running_workloads(conn)
        tenants = registry.tenant_slugs(conn)
    result = evaluation.what_if(
        workloads,
        snapshot.index,
        current,
        candidate.policy_set,
        tenants,
        limit=HOSTNAMES_LISTED,
        cache=DecisionCache(),
        deny_unselected=deny_unselected,
    )
    new_ids = result.new_ids
    return WhatIfResult(
        active_set=PolicySetRef(
            version=candidate.active.version, content_hash=candidate.active.content_hash
        ),
        candidate_set=CandidateSetPublic(
            version=candidate.policy_set.version,
            content_hash=candidate.policy_set.content_hash,
            members=candidate.members,
            unchanged=candidate.policy_set.content_hash == candidate.active.content_hash,
        ),
        fleet_generation=snapshot.generation,
        workloads_evaluated=result.candidate.evaluated,
        violations=WhatIfViolations(
            count=len(result.candidate.violations),
            new=len(new_ids),
            fixed=len(result.fixed_ids),
            warned=result.candidate.warned,
            items=[
                WhatIfViolation.model_validate(
                    {**finding.to_json(), "new": finding.workload_id in new_ids}
                )
                for finding in result.candidate.violations[:sample_size]
            ],
        ),
        tenants=[
            TenantCapacityChange(
                tenant=change.tenant,
                eligible_nodes_now=change.nodes_now,
                eligible_nodes_candidate=change.nodes_candidate,
                nodes_lost=NodeSetChange(
                    count=change.lost.count, hostnames=list(change.lost.hostnames)
                ),
                nodes_gained=NodeSetChange(
                    count=change.gained.count, hostnames=list(change.gained.hostnames)
                ),
                usable_gpus_now=change.gpus_now,
                usable_gpus_candidate=change.gpus_candidate,
                change=change.change,
                usable_mig_slices_now=dict(change.slices_now),
                usable_mig_slices_candidate=dict(change.slices_candidate),
            )
            for change in result.capacity
        ],
    )
