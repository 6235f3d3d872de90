"""Scheduling models: workload requests, decisions, placements, and the rows behind them.

A workload asks for GPUs on behalf of a tenant, naming the datasets and models it touches
and where its results go. The answer is always a stored ``WorkloadPublic``: admitted with a
node and GPU UUIDs held under a lease, or denied with the reasons.
"""

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any
from uuid import UUID

from pydantic import BaseModel, Field, StringConstraints

from control_plane.domain.decisions import DecisionOutcome, EnforcementPoint
from control_plane.domain.types import BIGINT_END, Input, Labels, Slug, TenantFilter
from control_plane.facts.workloads import (
    MAX_GPUS_PER_WORKLOAD,
    AssetNames,
    MigProfile,
    WorkloadRequest,
    WorkloadRevocation,
)
from control_plane.policy.models import ExplanationPublic, ReasonPublic

#: Leases may run from 30 seconds to a day; the default suits a renewal every minute or so.
MIN_LEASE_SECONDS = 30
MAX_LEASE_SECONDS = 86_400
DEFAULT_LEASE_SECONDS = 300


class PlacementStrategy(StrEnum):
    """How a node is chosen among the eligible ones.

    ``binpack`` (the default) takes the node with the fewest free GPUs that still fit, so
    whole nodes stay free for large jobs; ``spread`` takes the one with the most.
    """

    BINPACK = "binpack"
    SPREAD = "spread"


class WorkloadStatus(StrEnum):
    """Lifecycle of a workload: ``admitted`` holds GPUs until ``released`` or ``expired``.

    ``revoked``: continuous compliance ended it, for a policy with ``on_violation: revoke``.
    """

    ADMITTED = "admitted"
    DENIED = "denied"
    RELEASED = "released"
    EXPIRED = "expired"
    REVOKED = "revoked"


LeaseSeconds = Annotated[int, Field(ge=MIN_LEASE_SECONDS, le=MAX_LEASE_SECONDS)]


class WorkloadCreate(Input):
    """A request to run a workload on GPUs: who, on what, and how many GPUs of what kind."""

    tenant: Slug = Field(description="Slug of the tenant the workload runs for.")
    datasets: AssetNames = Field(default_factory=list, description="Dataset names it reads.")
    models: AssetNames = Field(default_factory=list, description="Model names it loads.")
    output: Slug | None = Field(
        default=None, description="Artifact destination for its results, by name."
    )
    gpu_count: int = Field(
        default=1,
        ge=1,
        le=MAX_GPUS_PER_WORKLOAD,
        description="Whole GPUs; with `mig_profile`, MIG slices of that profile (on one node).",
    )
    gpu_model: Annotated[str, StringConstraints(min_length=1, max_length=128)] | None = Field(
        default=None, description="Substring of the GPU model, any case (H100)."
    )
    min_gpu_memory_bytes: int | None = Field(
        default=None,
        ge=1,
        lt=BIGINT_END,
        description="Of each GPU; with `mig_profile`, of the GPU the slices are carved from.",
    )
    mig_profile: MigProfile | None = Field(
        default=None,
        description="Asks for MIG slices of this profile, e.g. 1g.10gb: `gpu_count` slices,"
        " each a distinct MIG device on a MIG-enabled GPU not booked whole. Without it, whole"
        " GPUs with MIG off.",
    )
    labels: Labels = Field(default_factory=dict)
    strategy: PlacementStrategy = PlacementStrategy.BINPACK
    lease_seconds: LeaseSeconds = DEFAULT_LEASE_SECONDS

    def decision_request(self) -> WorkloadRequest:
        """What the engine decides on, and what the workload stores as its ``request``."""
        return WorkloadRequest.model_validate(
            self.model_dump(exclude={"strategy", "lease_seconds"})
        )


class LeaseRenew(Input):
    """A lease renewal; without ``lease_seconds`` the workload's own lease length is used."""

    lease_seconds: LeaseSeconds | None = None


class OtherNodes(BaseModel):
    """What the decision found about the eligible nodes an admitted workload was not placed on.

    Kept for the record and labelled apart: a warning against nodes the workload does not
    use says nothing about the placement, so it never makes the outcome
    ``admitted_with_warnings``.
    """

    eligible: int = Field(description="Eligible nodes other than the one chosen.")
    reasons: list[ReasonPublic] = Field(
        description="Warn and dryrun node findings against some of those nodes (and not the"
        " chosen one), each saying how many of them it concerns."
    )


class MigSlice(BaseModel):
    """One MIG slice a workload was given: the MIG device, its profile and its GPU."""

    uuid: str
    profile: str
    gpu_uuid: str


class WorkloadPublic(BaseModel):
    """A workload as decided: its request, the verdict and, when admitted, where it runs.

    For an admitted workload, ``outcome`` and ``reasons`` are the verdict on the node it
    was placed on (what a compliance evaluation finds there); ``other_nodes`` holds what
    applied only to the other eligible nodes. For a denied one they summarise every node
    considered, and ``other_nodes`` is null.
    """

    id: UUID
    tenant: str
    status: WorkloadStatus
    outcome: DecisionOutcome
    reasons: list[ReasonPublic]
    other_nodes: OtherNodes | None
    explanation: ExplanationPublic | None = Field(
        description="The policies the decision selected, each rule's result, and those that"
        " did not apply and why; as stored when decided (null for workloads decided before"
        " decisions were explained)."
    )
    policy_set_version: int
    policy_set_hash: str
    strategy: PlacementStrategy
    request: dict[str, Any]
    node_id: UUID | None
    hostname: str | None
    zone: str | None
    gpu_uuids: list[str] = Field(
        description="What it was given: GPU UUIDs, or for a MIG request its MIG device UUIDs."
    )
    mig_slices: list[MigSlice] = Field(
        description="For a MIG request, the slices booked: MIG device, profile, parent GPU."
    )
    lease_seconds: int
    lease_expires_at: datetime | None
    created_at: datetime
    created_by: str
    ended_at: datetime | None
    revocation: WorkloadRevocation | None = Field(
        default=None, description="Why it was revoked (status revoked only)."
    )


class WorkloadFilters(BaseModel):
    """The query parameters of ``GET /v1/workloads``.

    The tenant must exist (``core.filters.check_references``), the status be one a
    workload can have.
    """

    tenant: TenantFilter = Field(default=None, description="Tenant slug.")
    status: WorkloadStatus | None = None


class WorkloadPage(BaseModel):
    """A page of workloads, newest first, and how many match in all."""

    items: list[WorkloadPublic]
    total: int
    limit: int
    offset: int


# -- rows as the repository hands them over ---------------------------------------------


class LockedWorkload(WorkloadPublic):
    """A workload locked for a release or a renewal, with whether its lease has passed."""

    lease_expired: bool


@dataclass(frozen=True, slots=True)
class Booking:
    """What one try at booking GPUs on a node did.

    ``workload`` is the stored workload, or None when the node could not take it; then
    ``lockable`` lists which of the GPUs (or MIG slices) asked for were free. ``booked`` counts the
    reservations inserted: short of the workload's GPUs when another transaction
    committed one of them meanwhile.
    """

    workload: WorkloadPublic | None
    booked: int
    lockable: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ZoneQuota:
    """A tenant's quota in one zone, locked for an admission."""

    zone: str
    max_gpus: int
    gpu_hours_per_period: Decimal | None
    period: str


@dataclass(frozen=True, slots=True)
class OriginQuota:
    """A tenant's GPU-hour quota on servers of one origin country, locked for an admission."""

    origin_country: str
    gpu_hours_per_period: Decimal
    period: str


@dataclass(frozen=True, slots=True)
class ExpiredWorkload:
    """A workload the lease sweep just ended, with what it held."""

    id: UUID
    tenant: str
    node_id: UUID
    zone: str | None
    gpu_uuids: list[str]
    lease_expires_at: datetime
    ended_at: datetime


# -- what audit events of workloads hold (docs/audit.md) --------------------------------


class WorkloadDecided(WorkloadPublic):
    """A workload as decided, with the enforcement point that decided it."""

    point: EnforcementPoint


class WorkloadHolding(BaseModel):
    """What a running workload held when it ended."""

    status: WorkloadStatus
    node_id: UUID | None
    gpu_uuids: list[str]
    lease_expires_at: datetime | None


#: What ``removed_gpu_uuids`` holds in the events of a workload's end.
_REMOVED_GPUS = (
    "GPUs the workload held that their node had stopped reporting (kept, as missing, only"
    " while it held them): deleted with its reservations."
)


class WorkloadReleased(BaseModel):
    """A workload released, and the GPUs it freed."""

    status: WorkloadStatus
    ended_at: datetime | None
    freed_gpu_uuids: list[str]
    removed_gpu_uuids: list[str] = Field(description=_REMOVED_GPUS)


class WorkloadExpired(BaseModel):
    """A workload whose lease passed, and why it ended."""

    status: WorkloadStatus
    ended_at: datetime
    reason: str
    removed_gpu_uuids: list[str] = Field(description=_REMOVED_GPUS)
