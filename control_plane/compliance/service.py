"""Compliance use cases: evaluate running workloads and record it, read evaluations, what-if.

``run_pending`` is the evaluation the Celery task runs. One transaction: it notices the
grants that expired since the last beat (each asks for an evaluation and is audited as
``asset_grant.expired``), claims the pending requests (``FOR UPDATE SKIP LOCKED``, so
two workers never evaluate for the same requests), reads the fleet snapshot, the active
policy set and every running workload, judges them all (``evaluation.assess``), stores
one ``compliance_evaluation`` with exact counts and a capped sample, marks the requests
handled, deletes the requests handled more than the retention ago (the evaluations that
handled them keep their ``triggers``) and audits ``compliance.evaluated``, last. Nothing
pending, nothing done: the task is idempotent.

``whatif`` judges the same running workloads, on the same kind of snapshot, under the
active set and under the candidate set that applying some documents and activating them
would make (``policy.service.candidate_set``), and stores nothing.
"""

from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

from control_plane.compliance import evaluation, repository
from control_plane.compliance.evaluation import Assessment, RunningWorkload
from control_plane.compliance.models import (
    CandidateSetPublic,
    ComplianceRequestPublic,
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
)
from control_plane.core.audit_log import AuditContext, record_change, transaction
from control_plane.core.db import DbConnection
from control_plane.core.errors import NotFoundError
from control_plane.core.outbox import EvaluationRequest, request_evaluation
from control_plane.domain.audit import AuditAction
from control_plane.domain.compliance import EvaluationTrigger
from control_plane.domain.decisions import EnforcementPoint
from control_plane.facts.fleet import load_snapshot
from control_plane.facts.workloads import RegistryViews, WorkloadRequest
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
    ago are deleted in the same transaction, so the outbox does not grow forever. Audited
    as ``compliance.evaluated``. ``decisions``: the worker's cache of what decisions
    remember (a policy's node masks, CEL verdicts); without it, one for this evaluation.
    ``deny_unselected``: ``SOVEREIGN_DEFAULT_DENY_UNSELECTED``, as admission applies it.
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
            ),
        )
    return stored


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
            )
            for change in result.capacity
        ],
    )
