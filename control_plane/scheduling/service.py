"""Workload admission and GPU placement: decide, place, reserve, release, expire.

``admit`` is one transaction. It loads what the request names from the registry, takes
the fleet snapshot of the current generation from the process's ``FleetCache`` (rebuilt
only when the fleet changed), asks the active policy set for a decision, and, when
admitted, books GPUs on one node:

1. the tenant's quota rows in the eligible nodes' zones are locked (``FOR UPDATE``, zone
   order), so admissions of one tenant in one zone are serialized and each counts what
   the previous one committed;
2. the eligible nodes are tried in the strategy's order (``fleet.Occupancy.candidates``:
   this process's belief about free GPUs, a hint only);
3. per node, skipped if the quota is exhausted there, one statement (``book`` in
   queries.sql): share-lock the node if it is still active, undrifted and in the decided
   zone, lock its free GPUs of the right kind ``FOR UPDATE SKIP LOCKED`` (the ones this
   request claimed first) and insert the workload and its reservations. A GPU being booked
   by another transaction is skipped, so concurrent admissions fall through to the next
   node instead of waiting. A node with too few left says which of its GPUs were still
   free, and the belief takes that over. A GPU that another transaction booked after
   this one looked makes the insert come back short: the whole admission is rolled back
   and tried again (``409`` after three tries);
4. before answering "no capacity", the belief is reloaded from the database and the
   nodes are tried once more, so a denial never rests on a stale belief.

A request with a MIG profile books MIG slices the same way (``book_slices``): its units
are the node's slices of that profile (MIG device UUIDs), ``gpu_count`` of them, each a
distinct free slice on a GPU that is not booked whole (and a GPU with a slice booked is
never booked whole). The ``gpu_reservation`` primary key (the GPU UUID) and the
``mig_reservation`` one (the MIG device UUID) are the last line: no interleaving can
book one GPU or slice twice. Whatever the verdict, the workload is stored and audited
(``workload.admitted`` or ``workload.denied``) with the policy set's version and hash and
the reasons, in the same transaction.
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from uuid import UUID, uuid4

from control_plane.core.audit_log import (
    AuditContext,
    Change,
    audited,
    record_changes,
    transaction,
)
from control_plane.core.db import DbConnection
from control_plane.core.errors import ConflictError, NotFoundError
from control_plane.core.filters import check_references
from control_plane.domain.audit import AuditAction
from control_plane.domain.decisions import DecisionOutcome, EnforcementAction, EnforcementPoint
from control_plane.domain.metering import mig_slice_weight
from control_plane.facts.workloads import WorkloadRequest, workload_view
from control_plane.inventory import repository as inventory
from control_plane.metering import repository as metering
from control_plane.policy.documents import PolicySet
from control_plane.policy.engine import (
    DecisionCache,
    NodeIndex,
    decide_with_mask,
    evaluate_placement,
)
from control_plane.policy.models import NodeView, Reason, WorkloadView
from control_plane.policy.service import CompiledPolicySets, active_policy_set
from control_plane.scheduling import repository
from control_plane.scheduling.fleet import FleetCache, Occupancy
from control_plane.scheduling.models import (
    LeaseRenew,
    LockedWorkload,
    OriginQuota,
    WorkloadCreate,
    WorkloadDecided,
    WorkloadExpired,
    WorkloadFilters,
    WorkloadHolding,
    WorkloadPage,
    WorkloadPublic,
    WorkloadReleased,
    WorkloadStatus,
    ZoneQuota,
)
from control_plane.scheduling.placement import placeable

#: Whole admissions tried when GPUs this one locked turn out to have been booked by a
#: transaction that committed after it looked; each try sees that commit.
_ADMISSION_ATTEMPTS = 3
_SECONDS_PER_HOUR = 3600.0
#: GPU-hours a quota lets through beyond its limit: float sums of seconds, nothing more.
_HOURS_TOLERANCE = 1e-9


class _BookedMeanwhileError(Exception):
    """A GPU locked here was booked by a transaction that committed after this one looked."""


# -- reading ---------------------------------------------------------------------------


def get_workload(conn: DbConnection, workload_id: UUID) -> WorkloadPublic:
    """One workload, admitted or denied, or 404."""
    found = repository.get_workload(conn, workload_id)
    if found is None:
        raise NotFoundError(f"workload {workload_id} does not exist")
    return found


def list_workloads(
    conn: DbConnection, filters: WorkloadFilters, limit: int, offset: int
) -> WorkloadPage:
    """A page of workloads, newest first, filtered by tenant and status.

    A tenant that does not exist is a 422, not an empty page.
    """
    check_references(conn, filters)
    items, total = repository.list_workloads(conn, filters.model_dump(mode="json"), limit, offset)
    return WorkloadPage(items=items, total=total, limit=limit, offset=offset)


# -- placement -------------------------------------------------------------------------


def _deny(message: str, rule: str) -> Reason:
    return Reason(None, rule, EnforcementAction.DENY, message)


def _requested_seconds(request: WorkloadCreate) -> float:
    """The GPU-seconds a request asks a GPU-hour quota for: units * weight * lease.

    A lease is always bounded (``lease_seconds``, at most a day), and admission charges
    all of it up front; a renewal is not refused by a quota, and the time it adds is
    metered and charged to the admissions after it. A MIG slice weighs its share of the
    GPU (``domain.metering.mig_slice_weight``), a whole GPU 1.
    """
    weight = 1.0 if request.mig_profile is None else mig_slice_weight(request.mig_profile)
    return request.gpu_count * weight * request.lease_seconds


def _hours_refusal(
    conn: DbConnection,
    request: WorkloadCreate,
    quota: ZoneQuota | OriginQuota,
    where: str,
) -> Reason | None:
    """Why a GPU-hour quota refuses the request, or None (no limit, or it fits).

    Charged: what metering has of this period, plus the rest of the tenant's running
    leases, plus this request's lease; it must not exceed the limit.
    """
    limit = quota.gpu_hours_per_period
    if limit is None:
        return None
    zone = quota.zone if isinstance(quota, ZoneQuota) else None
    origin = quota.origin_country if isinstance(quota, OriginQuota) else None
    charged = metering.charged_seconds(
        conn, request.tenant, quota.period, zone=zone, origin_country=origin
    )
    used, asked = charged / _SECONDS_PER_HOUR, _requested_seconds(request) / _SECONDS_PER_HOUR
    if used + asked <= float(limit) + _HOURS_TOLERANCE:
        return None
    return _deny(
        f"quota: tenant {request.tenant} may use {float(limit):g} GPU-hours per"
        f" {quota.period} {where}; {used:.2f} are used or held by running leases and this"
        f" workload asks for {asked:.2f}",
        "quota",
    )


def _quota_refusal(conn: DbConnection, request: WorkloadCreate, quota: ZoneQuota) -> Reason | None:
    """Why the tenant's ``quota`` (one zone's, locked) refuses the request, or None."""
    zone = quota.zone
    held = repository.reserved_gpus(conn, request.tenant, zone)
    if held + request.gpu_count > quota.max_gpus:
        return _deny(
            f"tenant {request.tenant} may hold {quota.max_gpus} GPUs at once in zone {zone};"
            f" it holds {held} and asks for {request.gpu_count}",
            "quota",
        )
    return _hours_refusal(conn, request, quota, f"in zone {zone}")


@dataclass
class _Placement:
    """One admission's walk over the candidate nodes, best first, until one books.

    ``index``, ``policy_set`` and ``decisions`` are what the decision was taken on: each
    node tried is booked with the engine's verdict on that node (``verdict``).
    """

    conn: DbConnection
    fleet: FleetCache
    request: WorkloadCreate
    workload: WorkloadView
    values: dict[str, Any]
    quotas: dict[str, ZoneQuota]
    origin_quotas: dict[str, OriginQuota]
    index: NodeIndex
    policy_set: PolicySet
    decisions: DecisionCache
    refusals: dict[str | None, Reason | None] = field(default_factory=dict)
    origin_refusals: dict[str | None, Reason | None] = field(default_factory=dict)
    taken: int = 0
    tried: int = 0
    #: The claims of the node being booked (GPUs marked booked in the belief so the
    #: process's other requests pick others); given back if this admission does not
    #: commit them. A node refused or missed has settled its claims already.
    claimed: tuple[str, ...] = ()

    def refusal(self, node: NodeView) -> Reason | None:
        """Why the tenant's quotas refuse the request on ``node`` (worked out once each).

        A zone quota covers nodes whose zone is exactly its zone, an origin quota nodes
        whose server origin is its country; a zone or origin without a quota row (and a
        node without one) sets no limit.
        """
        zone, origin = node.zone, node.origin_country
        if zone not in self.refusals:
            quota = None if zone is None else self.quotas.get(zone)
            refusal = None if quota is None else _quota_refusal(self.conn, self.request, quota)
            self.refusals[zone] = refusal
        if self.refusals[zone] is not None:
            return self.refusals[zone]
        if origin not in self.origin_refusals:
            by_origin = None if origin is None else self.origin_quotas.get(origin)
            self.origin_refusals[origin] = (
                None
                if by_origin is None
                else _hours_refusal(
                    self.conn, self.request, by_origin, f"on servers made in {origin}"
                )
            )
        return self.origin_refusals[origin]

    def verdict(self, node: NodeView) -> dict[str, Any]:
        """What the workload records if it is placed on ``node``: the verdict on that node.

        Its outcome, reasons and explanation are what the engine finds on the node (what
        compliance will find there); warnings that concern only other eligible nodes go to
        ``other_nodes`` and leave the outcome alone.
        """
        placed = evaluate_placement(
            self.workload,
            node.id,
            self.index,
            self.policy_set,
            point=EnforcementPoint.API,
            cache=self.decisions,
        )
        return {
            "outcome": placed.decision.outcome.value,
            "reasons": [reason.to_json() for reason in placed.decision.reasons],
            "explanation": placed.decision.explanation.to_json(),
            "other_nodes": {
                "eligible": placed.others,
                "reasons": [reason.to_json() for reason in placed.elsewhere],
            },
        }

    def walk(self, occupancy: Occupancy, eligible: int) -> WorkloadPublic | None:
        """Try the candidates in order until one books; the stored workload, or None."""
        count = self.workload.gpu_count
        while True:
            pick = self.fleet.pick(
                occupancy, eligible & ~self.tried, self.workload, self.request.strategy
            )
            if pick is None:
                return None
            self.tried |= 1 << pick.position
            node = pick.node
            if not placeable(node) or self.refusal(node) is not None:
                self.fleet.settle(pick.claimed, ())
                continue
            self.claimed = pick.claimed
            booking = repository.book(
                self.conn,
                {
                    **self.values,
                    **self.verdict(node),
                    "node_id": node.id,
                    "hostname": node.hostname,
                    "zone": node.zone,
                    "uuids": pick.fitting,
                    "claimed": pick.claimed,
                    "count": count,
                    "mig_profile": self.workload.mig_profile,
                },
            )
            if booking.workload is not None:
                if booking.booked < count:
                    raise _BookedMeanwhileError
                return booking.workload
            self.taken += 1
            self.claimed = ()
            self.fleet.missed(occupancy, pick, booking.lockable)


def _place(
    walk: _Placement, occupancy: Occupancy, eligible: int
) -> tuple[WorkloadPublic | None, list[Reason]]:
    """Book GPUs on the first of the ``eligible`` nodes (bitmask) that has them, or say why not."""
    placed = walk.walk(occupancy, eligible)
    if placed is None:
        # Reload the belief before saying there is no room, always, even one loaded during
        # this request: another request may have replaced it since (claims given back after
        # that are freed in the new one only), or a missed booking marked GPUs busy that
        # were only being locked. ``resync`` hands over the newer belief if there is one.
        walk.tried = 0
        placed = walk.walk(walk.fleet.resync(walk.conn, occupancy), eligible)
    if placed is not None:
        return placed, []
    refused = [*walk.refusals.values(), *walk.origin_refusals.values()]
    reasons = [reason for reason in refused if reason is not None]
    if walk.taken:
        reasons.append(
            _deny(
                f"the free GPUs of {walk.taken} eligible node{'s' if walk.taken != 1 else ''}"
                " were booked by concurrent requests, or the node changed state, before this"
                " one could book them",
                "capacity",
            )
        )
    elif not reasons:
        units = "MIG slices of the profile" if walk.workload.mig_profile else "GPUs of the kind"
        message = f"no eligible node is active, undrifted and has enough free {units}"
        reasons.append(_deny(f"{message} asked for", "capacity"))
    return None, reasons


def admit(
    conn: DbConnection,
    ctx: AuditContext,
    request: WorkloadCreate,
    policy_sets: CompiledPolicySets | None = None,
    fleet: FleetCache | None = None,
    decisions: DecisionCache | None = None,
    *,
    deny_unselected: bool = False,
) -> WorkloadPublic:
    """Decide a workload and, when admitted, reserve GPUs for it on one node.

    A denial is an answer, not an error: the workload is stored with status ``denied``
    and the reasons (policies, capacity, quota). Unknown tenant, dataset, model or output
    names are 422 naming the field. Audited as ``workload.admitted`` or
    ``workload.denied``, with the policy set's version and hash. ``fleet`` and
    ``decisions`` are the process's caches (the API keeps one of each); without them the
    fleet is read afresh and the decision works everything out for this call.
    ``deny_unselected``: ``SOVEREIGN_DEFAULT_DENY_UNSELECTED`` (see the engine's
    ``decide_with_mask``).
    """
    fleet = fleet or FleetCache()
    decisions = decisions or DecisionCache()
    for _ in range(_ADMISSION_ATTEMPTS):
        try:
            return _admit(conn, ctx, request, policy_sets, fleet, decisions, deny_unselected)
        except _BookedMeanwhileError:
            continue
    raise ConflictError(
        "the GPUs chosen for this workload were booked by concurrent requests on every"
        f" one of {_ADMISSION_ATTEMPTS} tries; submit it again",
        details={"reason": "contention"},
    )


def _admit(
    conn: DbConnection,
    ctx: AuditContext,
    request: WorkloadCreate,
    policy_sets: CompiledPolicySets | None,
    fleet: FleetCache,
    decisions: DecisionCache,
    deny_unselected: bool,
) -> WorkloadPublic:
    """One try at ``admit``, in one transaction."""
    workload_id = uuid4()
    walk: _Placement | None = None
    decided: WorkloadRequest = request.decision_request()
    try:
        with audited(conn, ctx, AuditAction.WORKLOAD_DENIED, str(workload_id)) as change:
            workload = workload_view(conn, decided)
            occupancy = fleet.current(conn)
            policy_set = active_policy_set(conn, policy_sets)
            index = occupancy.snapshot.index
            decision, eligible = decide_with_mask(
                workload,
                index,
                policy_set,
                point=EnforcementPoint.API,
                cache=decisions,
                deny_unselected=deny_unselected,
            )
            values: dict[str, Any] = {
                "id": workload_id,
                "tenant": request.tenant,
                "request": decided.model_dump(mode="json"),
                "strategy": request.strategy.value,
                "status": WorkloadStatus.ADMITTED.value,
                "outcome": decision.outcome.value,
                "reasons": [reason.to_json() for reason in decision.reasons],
                "explanation": decision.explanation.to_json(),
                "policy_set_version": decision.policy_set_version,
                "policy_set_hash": decision.policy_set_hash,
                "lease_seconds": request.lease_seconds,
                "created_by": ctx.actor_name,
            }
            created: WorkloadPublic | None = None
            if decision.admitted:
                zones = sorted(z for z, mask in index.by_zone.items() if z and mask & eligible)
                quotas = repository.lock_quotas(conn, request.tenant, zones)
                origins = sorted(o for o, mask in index.by_origin.items() if o and mask & eligible)
                origin_quotas = repository.lock_origin_quotas(conn, request.tenant, origins)
                walk = _Placement(
                    conn,
                    fleet,
                    request,
                    workload,
                    values,
                    quotas,
                    origin_quotas,
                    index,
                    policy_set,
                    decisions,
                )
                created, refusals = _place(walk, occupancy, eligible)
                if created is None:
                    decision = replace(
                        decision,
                        outcome=DecisionOutcome.DENIED,
                        reasons=[*decision.reasons, *refusals],
                        eligible_node_ids=[],
                    )
            if created is None:
                created = repository.insert_denied(
                    conn,
                    {
                        **values,
                        "outcome": decision.outcome.value,
                        "reasons": [reason.to_json() for reason in decision.reasons],
                    },
                )
            else:
                change.action = AuditAction.WORKLOAD_ADMITTED
            # Already validated as it left the database: only the point is added.
            change.after = WorkloadDecided.model_construct(**dict(created), point=decision.point)
    except BaseException:
        if walk is not None:
            fleet.settle(walk.claimed, ())
        raise
    if walk is not None:
        fleet.settle(walk.claimed, created.gpu_uuids)
    return created


# -- the end of a workload -------------------------------------------------------------


def _running(conn: DbConnection, workload_id: UUID, verb: str) -> LockedWorkload:
    """The workload, locked, if it is admitted (404 if unknown, 409 if it is not running)."""
    found = repository.lock_workload(conn, workload_id)
    if found is None:
        raise NotFoundError(f"workload {workload_id} does not exist")
    if found.status is not WorkloadStatus.ADMITTED:
        raise ConflictError(
            f"workload {workload_id} is {found.status}; only an admitted workload can be {verb}",
            details={"status": found.status.value},
        )
    return found


def _forget_missing(
    conn: DbConnection, node_ids: Iterable[UUID | None], freed: Sequence[str]
) -> list[str]:
    """Delete the GPUs among ``freed`` that their node had stopped reporting; return them.

    A booked GPU left out of its node's inventory is kept, as missing, only for the
    workload that holds it (``inventory.agents._apply_gpus``); once that workload has
    ended, nothing accounts for it any more. Listed in the workload's end event.
    """
    nodes = [node_id for node_id in node_ids if node_id is not None]
    if not freed or not nodes:
        return []
    return inventory.delete_missing_gpus(conn, nodes, freed)


def release(
    conn: DbConnection, ctx: AuditContext, workload_id: UUID, fleet: FleetCache | None = None
) -> WorkloadPublic:
    """End an admitted workload and free its GPUs (409 if it is not running); audited.

    ``fleet``: the process's cache, told about the freed GPUs after commit.
    """
    with audited(conn, ctx, AuditAction.WORKLOAD_RELEASED, str(workload_id)) as change:
        before = _running(conn, workload_id, "released")
        change.before = WorkloadHolding(
            status=before.status,
            node_id=before.node_id,
            gpu_uuids=before.gpu_uuids,
            lease_expires_at=before.lease_expires_at,
        )
        repository.end_workload(conn, workload_id, WorkloadStatus.RELEASED.value)
        freed = repository.delete_reservations(conn, [workload_id])
        removed = _forget_missing(conn, [before.node_id], freed)
        after = get_workload(conn, workload_id)
        change.after = WorkloadReleased(
            status=after.status,
            ended_at=after.ended_at,
            freed_gpu_uuids=sorted(freed),
            removed_gpu_uuids=removed,
        )
    if fleet is not None:
        fleet.freed(freed)
    return after


def renew(conn: DbConnection, workload_id: UUID, renewal: LeaseRenew) -> WorkloadPublic:
    """Restart a running workload's lease from now (409 if it ended or its lease passed).

    Not audited, like heartbeats: what the log records is the workload's start and end.
    """
    with transaction(conn):
        found = _running(conn, workload_id, "renewed")
        if found.lease_expired:
            expired_at = found.lease_expires_at.isoformat() if found.lease_expires_at else "?"
            raise ConflictError(
                f"the lease of workload {workload_id} expired at {expired_at}; submit the"
                " workload again",
                details={"status": found.status.value, "reason": "lease_expired"},
            )
        repository.renew_lease(conn, workload_id, renewal.lease_seconds or found.lease_seconds)
    return get_workload(conn, workload_id)


def expire_leases(conn: DbConnection, ctx: AuditContext, *, batch_size: int) -> int:
    """Expire up to ``batch_size`` workloads whose lease passed and free their GPUs.

    One transaction, one ``workload.expired`` event per workload. Returns how many were
    expired; a caller with a larger backlog calls again. Idempotent: a second call finds
    nothing more to do.
    """
    with transaction(conn):
        expired = repository.expire_due(conn, batch_size)
        removed: set[str] = set()
        if expired:
            freed = repository.delete_reservations(conn, [found.id for found in expired])
            removed.update(_forget_missing(conn, [found.node_id for found in expired], freed))
        # One batch for the sweep: one COPY instead of a statement per event.
        record_changes(
            conn,
            ctx,
            [
                Change(
                    AuditAction.WORKLOAD_EXPIRED,
                    str(found.id),
                    before=WorkloadHolding(
                        status=WorkloadStatus.ADMITTED,
                        node_id=found.node_id,
                        gpu_uuids=found.gpu_uuids,
                        lease_expires_at=found.lease_expires_at,
                    ),
                    after=WorkloadExpired(
                        status=WorkloadStatus.EXPIRED,
                        ended_at=found.ended_at,
                        reason="lease not renewed",
                        removed_gpu_uuids=sorted(removed.intersection(found.gpu_uuids)),
                    ),
                )
                for found in expired
            ],
        )
    return len(expired)
