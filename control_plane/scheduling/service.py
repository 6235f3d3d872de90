"""Workload admission and GPU placement: decide, place, reserve, release, expire.

``admit`` is one transaction. It loads what the request names from the registry, builds
the policy engine's views of the fleet (free GPUs only), asks the active policy set for a
decision, and, when admitted, books GPUs on one node:

1. the eligible nodes are ordered by the strategy (``placement.candidate_order``);
2. the tenant's quota rows in those nodes' zones are locked (``FOR UPDATE``, zone order),
   so admissions of one tenant in one zone are serialized and each counts what the
   previous one committed;
3. per node, in order: skip it if the quota is exhausted there, share-lock it if it is
   still active and not drifted, lock its free GPUs of the right kind ``FOR UPDATE SKIP
   LOCKED`` and insert the reservations. A GPU being booked by another transaction is
   skipped, so concurrent admissions fall through to the next node instead of waiting;
   one that another transaction booked after this one looked makes the insert come back
   short, and the step is retried from a savepoint.

The ``gpu_reservation`` primary key (the GPU UUID) is the last line: no interleaving can
book one GPU twice. Whatever the verdict, the workload is stored and audited
(``workload.admitted`` or ``workload.denied``) with the policy set's version and hash and
the reasons, in the same transaction.
"""

from dataclasses import replace
from typing import Any
from uuid import UUID, uuid4

from psycopg.rows import DictRow

from control_plane.audit import service as audit
from control_plane.audit.models import AuditContext
from control_plane.core.db import DbConnection
from control_plane.core.errors import ConflictError, InvalidInputError, NotFoundError
from control_plane.inventory.models import DriftStatus, NodeStatus, ProvenanceStatus
from control_plane.policy.engine import NodeIndex, decide
from control_plane.policy.models import (
    Classification,
    DataAssetView,
    Decision,
    DecisionOutcome,
    DestinationView,
    EnforcementAction,
    EnforcementPoint,
    GpuView,
    ModelView,
    NodeView,
    Reason,
    WorkloadView,
    ZoneView,
)
from control_plane.policy.service import CompiledPolicySets, active_policy_set
from control_plane.registry import service as registry
from control_plane.scheduling import repository
from control_plane.scheduling.models import (
    LeaseRenew,
    WorkloadCreate,
    WorkloadFilters,
    WorkloadPage,
    WorkloadPublic,
    WorkloadStatus,
)
from control_plane.scheduling.placement import candidate_order, fitting_gpus

#: Tries per node when GPUs it locked turn out to be booked by a transaction that
#: committed after this one looked; each try sees that commit, so one more is usually enough.
_BOOKING_ATTEMPTS = 3
_SECONDS_PER_HOUR = 3600.0


class _NotBookedError(Exception):
    """The node no longer has enough free GPUs; roll back its savepoint (freeing the locks)."""


class _BookedMeanwhileError(Exception):
    """A GPU locked here was booked by a transaction that committed after this one looked."""


# -- reading ---------------------------------------------------------------------------


def _public(row: DictRow) -> WorkloadPublic:
    return WorkloadPublic.model_validate(row)


def get_workload(conn: DbConnection, workload_id: UUID) -> WorkloadPublic:
    """One workload, admitted or denied, or 404."""
    row = repository.get_workload(conn, workload_id)
    if row is None:
        raise NotFoundError(f"workload {workload_id} does not exist")
    return _public(row)


def list_workloads(
    conn: DbConnection, filters: WorkloadFilters, limit: int, offset: int
) -> WorkloadPage:
    """A page of workloads, newest first, filtered by tenant and status."""
    rows, total = repository.list_workloads(conn, filters.model_dump(mode="json"), limit, offset)
    return WorkloadPage(items=[_public(r) for r in rows], total=total, limit=limit, offset=offset)


# -- the engine's views ----------------------------------------------------------------


def _workload_view(conn: DbConnection, request: WorkloadCreate) -> WorkloadView:
    """The request with what it names loaded from the registry (unknown names: 422)."""
    try:
        registry.get_tenant(conn, request.tenant)
    except NotFoundError:
        raise InvalidInputError.for_field(
            "tenant", f"unknown tenant {request.tenant!r}", request.tenant
        ) from None
    datasets = []
    for position, name in enumerate(request.datasets):
        try:
            dataset = registry.get_dataset(conn, name)
        except NotFoundError:
            raise InvalidInputError.for_field(
                f"datasets.{position}", f"unknown dataset {name!r}", name
            ) from None
        datasets.append(
            DataAssetView(
                dataset.name,
                Classification(dataset.classification.value),
                tuple(dataset.zones),
                dataset.labels,
            )
        )
    models = []
    for position, name in enumerate(request.models):
        try:
            model = registry.get_model(conn, name)
        except NotFoundError:
            raise InvalidInputError.for_field(
                f"models.{position}", f"unknown model {name!r}", name
            ) from None
        models.append(
            ModelView(
                model.name,
                Classification(model.classification.value),
                tuple(model.zones),
                model.labels,
                supplier=model.supplier,
                origin_country=model.origin_country,
                license=model.license,
            )
        )
    output = None
    if request.output is not None:
        try:
            destination = registry.get_destination(conn, request.output)
        except NotFoundError:
            raise InvalidInputError.for_field(
                "output", f"unknown artifact destination {request.output!r}", request.output
            ) from None
        output = DestinationView(destination.name, destination.zone)
    return WorkloadView(
        tenant=request.tenant,
        datasets=tuple(datasets),
        models=tuple(models),
        output=output,
        gpu_count=request.gpu_count,
        gpu_model=request.gpu_model,
        min_gpu_memory_bytes=request.min_gpu_memory_bytes,
        mig_profile=request.mig_profile,
        labels=request.labels,
    )


def _node_view(row: DictRow) -> NodeView:
    return NodeView(
        id=str(row["id"]),
        hostname=row["hostname"],
        zone=row["zone"],
        status=NodeStatus(row["status"]),
        drift_status=DriftStatus(row["drift_status"]),
        origin_country=row["origin_country"],
        component_origins=row["component_origins"],
        provenance_status=ProvenanceStatus(row["provenance_status"]),
        labels=row["labels"],
        gpus=tuple(
            GpuView(g["uuid"], g["model"], g["memory_total_bytes"], g["mig_mode"])
            for g in row["free_gpus"]
        ),
    )


def _zone_views(conn: DbConnection) -> dict[str, ZoneView]:
    return {
        row["slug"]: ZoneView(row["slug"], row["parent_slug"], row["country"])
        for row in repository.zones(conn)
    }


# -- placement -------------------------------------------------------------------------


def _deny(message: str, rule: str) -> Reason:
    return Reason(None, rule, EnforcementAction.DENY, message)


def _quota_refusal(
    conn: DbConnection, request: WorkloadCreate, zone: str | None, quota: DictRow | None
) -> Reason | None:
    """Why the tenant's quota in ``zone`` refuses the request, or None if it allows it.

    A quota covers nodes whose zone is exactly its zone; a zone without a quota row (and
    a node without a zone) sets no limit.
    """
    if zone is None or quota is None:
        return None
    held = repository.reserved_gpus(conn, request.tenant, zone)
    if held + request.gpu_count > quota["max_gpus"]:
        return _deny(
            f"tenant {request.tenant} may hold {quota['max_gpus']} GPUs at once in zone {zone};"
            f" it holds {held} and asks for {request.gpu_count}",
            "quota",
        )
    limit = quota["gpu_hours_per_period"]
    if limit is not None:
        used = (
            repository.gpu_seconds_in_period(conn, request.tenant, zone, quota["period"])
            / _SECONDS_PER_HOUR
        )
        if used >= float(limit):
            return _deny(
                f"tenant {request.tenant} has used {used:.2f} of its {float(limit):g} GPU-hours"
                f" this {quota['period']} in zone {zone}",
                "quota",
            )
    return None


def _book(
    conn: DbConnection,
    node: NodeView,
    workload: WorkloadView,
    values: dict[str, Any],
) -> list[str] | None:
    """Book ``gpu_count`` fitting GPUs on ``node`` and store the workload; None if it cannot.

    Each try runs in a savepoint, so a failed one leaves no row and no GPU lock behind.
    """
    if not repository.lock_node(conn, node.id):
        return None
    fitting = fitting_gpus(node, workload)
    for _ in range(_BOOKING_ATTEMPTS):
        try:
            with conn.transaction():
                locked = repository.lock_free_gpus(conn, node.id, fitting, workload.gpu_count)
                if len(locked) < workload.gpu_count:
                    raise _NotBookedError
                repository.insert_workload(
                    conn, {**values, "node_id": node.id, "zone": node.zone, "gpu_uuids": locked}
                )
                booked = repository.insert_reservations(
                    conn,
                    {
                        "workload_id": values["id"],
                        "node_id": node.id,
                        "zone": node.zone,
                        "tenant": values["tenant"],
                        "uuids": locked,
                    },
                )
                if len(booked) < len(locked):
                    raise _BookedMeanwhileError
                return locked
        except _NotBookedError:
            return None
        except _BookedMeanwhileError:
            continue
    return None


def _place(
    conn: DbConnection,
    request: WorkloadCreate,
    workload: WorkloadView,
    nodes: list[NodeView],
    decision: Decision,
    values: dict[str, Any],
) -> tuple[NodeView | None, list[Reason]]:
    """Book GPUs on the first candidate node that has them; else the reasons it could not."""
    candidates = candidate_order(nodes, decision.eligible_node_ids, workload, request.strategy)
    zones = sorted({node.zone for node in candidates if node.zone is not None})
    quotas = repository.lock_quotas(conn, request.tenant, zones)
    refusals: dict[str | None, Reason | None] = {}
    taken = 0
    for node in candidates:
        if node.zone not in refusals:
            quota = None if node.zone is None else quotas.get(node.zone)
            refusals[node.zone] = _quota_refusal(conn, request, node.zone, quota)
        if refusals[node.zone] is not None:
            continue
        if _book(conn, node, workload, values) is not None:
            return node, []
        taken += 1
    reasons = [reason for reason in refusals.values() if reason is not None]
    if taken:
        reasons.append(
            _deny(
                f"the free GPUs of {taken} eligible node{'s' if taken != 1 else ''} were booked"
                " by concurrent requests, or the node changed state, before this one could"
                " book them",
                "capacity",
            )
        )
    elif not candidates:
        message = "no eligible node is active, undrifted and has enough free GPUs of the kind"
        reasons.append(_deny(f"{message} asked for", "capacity"))
    return None, reasons


def _request_json(request: WorkloadCreate) -> dict[str, Any]:
    return request.model_dump(mode="json", exclude={"strategy", "lease_seconds"})


def admit(
    conn: DbConnection,
    ctx: AuditContext,
    request: WorkloadCreate,
    policy_sets: CompiledPolicySets | None = None,
) -> WorkloadPublic:
    """Decide a workload and, when admitted, reserve GPUs for it on one node.

    A denial is an answer, not an error: the workload is stored with status ``denied``
    and the reasons (policies, capacity, quota). Unknown tenant, dataset, model or output
    names are 422 naming the field. Audited as ``workload.admitted`` or
    ``workload.denied``, with the policy set's version and hash.
    """
    workload_id = uuid4()
    with conn.transaction():
        workload = _workload_view(conn, request)
        nodes = [_node_view(row) for row in repository.fleet(conn)]
        index = NodeIndex.build(nodes, _zone_views(conn))
        policy_set = active_policy_set(conn, policy_sets)
        decision = decide(workload, index, policy_set, point=EnforcementPoint.API)
        values: dict[str, Any] = {
            "id": workload_id,
            "tenant": request.tenant,
            "request": _request_json(request),
            "strategy": request.strategy.value,
            "status": WorkloadStatus.ADMITTED.value,
            "outcome": decision.outcome.value,
            "reasons": [reason.to_json() for reason in decision.reasons],
            "policy_set_version": decision.policy_set_version,
            "policy_set_hash": decision.policy_set_hash,
            "lease_seconds": request.lease_seconds,
            "created_by": ctx.actor_name,
        }
        placed: NodeView | None = None
        if decision.admitted:
            placed, refusals = _place(conn, request, workload, nodes, decision, values)
            if placed is None:
                decision = replace(
                    decision,
                    outcome=DecisionOutcome.DENIED,
                    reasons=[*decision.reasons, *refusals],
                    eligible_node_ids=[],
                )
        if placed is None:
            repository.insert_workload(
                conn,
                {
                    **values,
                    "status": WorkloadStatus.DENIED.value,
                    "outcome": decision.outcome.value,
                    "reasons": [reason.to_json() for reason in decision.reasons],
                    "node_id": None,
                    "zone": None,
                    "gpu_uuids": [],
                },
            )
        row = repository.get_workload(conn, workload_id)
        assert row is not None
        created = _public(row)
        audit.record(
            conn,
            ctx,
            action="workload.admitted" if placed is not None else "workload.denied",
            object_type="workload",
            object_id=str(workload_id),
            after={**created.model_dump(mode="json"), "point": decision.point.value},
        )
    return created


# -- the end of a workload -------------------------------------------------------------


def _running(conn: DbConnection, workload_id: UUID, verb: str) -> DictRow:
    """The workload, locked, if it is admitted (404 if unknown, 409 if it is not running)."""
    row = repository.lock_workload(conn, workload_id)
    if row is None:
        raise NotFoundError(f"workload {workload_id} does not exist")
    if row["status"] != WorkloadStatus.ADMITTED:
        raise ConflictError(
            f"workload {workload_id} is {row['status']}; only an admitted workload can be {verb}",
            details={"status": row["status"]},
        )
    return row


def _holding(row: DictRow) -> dict[str, Any]:
    return {
        "status": row["status"],
        "node_id": str(row["node_id"]),
        "gpu_uuids": list(row["gpu_uuids"]),
        "lease_expires_at": row["lease_expires_at"].isoformat(),
    }


def release(conn: DbConnection, ctx: AuditContext, workload_id: UUID) -> WorkloadPublic:
    """End an admitted workload and free its GPUs (409 if it is not running); audited."""
    with conn.transaction():
        before = _running(conn, workload_id, "released")
        repository.end_workload(conn, workload_id, WorkloadStatus.RELEASED.value)
        freed = repository.delete_reservations(conn, [workload_id])
        after = get_workload(conn, workload_id)
        audit.record(
            conn,
            ctx,
            action="workload.released",
            object_type="workload",
            object_id=str(workload_id),
            before=_holding(before),
            after={
                "status": after.status.value,
                "ended_at": after.ended_at.isoformat() if after.ended_at else None,
                "freed_gpu_uuids": sorted(freed),
            },
        )
    return after


def renew(conn: DbConnection, workload_id: UUID, renewal: LeaseRenew) -> WorkloadPublic:
    """Restart a running workload's lease from now (409 if it ended or its lease passed).

    Not audited, like heartbeats: what the log records is the workload's start and end.
    """
    with conn.transaction():
        row = _running(conn, workload_id, "renewed")
        if row["lease_expired"]:
            raise ConflictError(
                f"the lease of workload {workload_id} expired at"
                f" {row['lease_expires_at'].isoformat()}; submit the workload again",
                details={"status": row["status"], "reason": "lease_expired"},
            )
        repository.renew_lease(conn, workload_id, renewal.lease_seconds or row["lease_seconds"])
    return get_workload(conn, workload_id)


def expire_leases(conn: DbConnection, ctx: AuditContext, *, batch_size: int) -> int:
    """Expire up to ``batch_size`` workloads whose lease passed and free their GPUs.

    One transaction, one ``workload.expired`` event per workload. Returns how many were
    expired; a caller with a larger backlog calls again. Idempotent: a second call finds
    nothing more to do.
    """
    with conn.transaction():
        expired = repository.expire_due(conn, batch_size)
        if expired:
            repository.delete_reservations(conn, [row["id"] for row in expired])
        for row in expired:
            audit.record(
                conn,
                ctx,
                action="workload.expired",
                object_type="workload",
                object_id=str(row["id"]),
                before=_holding({**row, "status": WorkloadStatus.ADMITTED.value}),
                after={
                    "status": WorkloadStatus.EXPIRED.value,
                    "ended_at": row["ended_at"].isoformat(),
                    "reason": "lease not renewed",
                },
            )
    return len(expired)
