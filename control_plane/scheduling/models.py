"""Scheduling vocabulary and API models: workload requests, decisions and placements.

A workload asks for GPUs on behalf of a tenant, naming the datasets and models it touches
and where its results go. The answer is always a stored ``WorkloadPublic``: admitted with a
node and GPU UUIDs held under a lease, or denied with the reasons.
"""

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any
from uuid import UUID

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from control_plane.inventory.models import LabelKey, LabelValue, Slug
from control_plane.policy.models import DecisionOutcome

#: Leases may run from 30 seconds to a day; the default suits a renewal every minute or so.
MIN_LEASE_SECONDS = 30
MAX_LEASE_SECONDS = 86_400
DEFAULT_LEASE_SECONDS = 300
#: Placement is on one node, and no server has more GPUs than this.
MAX_GPUS_PER_WORKLOAD = 64


class _Input(BaseModel):
    """Request bodies reject unknown fields, so a typo is an error rather than ignored."""

    model_config = ConfigDict(extra="forbid")


class PlacementStrategy(StrEnum):
    """How a node is chosen among the eligible ones.

    ``binpack`` (the default) takes the node with the fewest free GPUs that still fit, so
    whole nodes stay free for large jobs; ``spread`` takes the one with the most.
    """

    BINPACK = "binpack"
    SPREAD = "spread"


class WorkloadStatus(StrEnum):
    """Lifecycle of a workload: ``admitted`` holds GPUs until ``released`` or ``expired``."""

    ADMITTED = "admitted"
    DENIED = "denied"
    RELEASED = "released"
    EXPIRED = "expired"


def _distinct(names: list[str]) -> list[str]:
    if len(set(names)) != len(names):
        raise ValueError("a name is listed twice")
    return names


AssetNames = Annotated[list[Slug], Field(max_length=64), AfterValidator(_distinct)]
LeaseSeconds = Annotated[int, Field(ge=MIN_LEASE_SECONDS, le=MAX_LEASE_SECONDS)]
MigProfile = Annotated[str, StringConstraints(pattern=r"^[0-9]+g\.[0-9]+gb$", max_length=32)]


class WorkloadCreate(_Input):
    """A request to run a workload on GPUs: who, on what, and how many GPUs of what kind."""

    tenant: Slug = Field(description="Slug of the tenant the workload runs for.")
    datasets: AssetNames = Field(default_factory=list, description="Dataset names it reads.")
    models: AssetNames = Field(default_factory=list, description="Model names it loads.")
    output: Slug | None = Field(
        default=None, description="Artifact destination for its results, by name."
    )
    gpu_count: int = Field(default=1, ge=1, le=MAX_GPUS_PER_WORKLOAD)
    gpu_model: Annotated[str, StringConstraints(min_length=1, max_length=128)] | None = Field(
        default=None, description="Substring of the GPU model, any case (H100)."
    )
    min_gpu_memory_bytes: int | None = Field(default=None, ge=1, le=2**63 - 1)
    mig_profile: MigProfile | None = Field(
        default=None, description="Asks for MIG-enabled GPUs (a whole GPU each), e.g. 1g.10gb."
    )
    labels: dict[LabelKey, LabelValue] = Field(default_factory=dict)
    strategy: PlacementStrategy = PlacementStrategy.BINPACK
    lease_seconds: LeaseSeconds = DEFAULT_LEASE_SECONDS


class LeaseRenew(_Input):
    """A lease renewal; without ``lease_seconds`` the workload's own lease length is used."""

    lease_seconds: LeaseSeconds | None = None


class ReasonPublic(BaseModel):
    """One reason behind a decision: a policy's finding, the baseline's, or the quota's."""

    policy: str | None
    rule: str
    action: str
    message: str


class WorkloadPublic(BaseModel):
    """A workload as decided: its request, the verdict and, when admitted, where it runs."""

    id: UUID
    tenant: str
    status: WorkloadStatus
    outcome: DecisionOutcome
    reasons: list[ReasonPublic]
    policy_set_version: int
    policy_set_hash: str
    strategy: PlacementStrategy
    request: dict[str, Any]
    node_id: UUID | None
    hostname: str | None
    zone: str | None
    gpu_uuids: list[str]
    lease_seconds: int
    lease_expires_at: datetime | None
    created_at: datetime
    created_by: str
    ended_at: datetime | None


class WorkloadFilters(BaseModel):
    """Filters for listing workloads."""

    tenant: str | None = None
    status: WorkloadStatus | None = None


class WorkloadPage(BaseModel):
    """A page of workloads, newest first, and how many match in all."""

    items: list[WorkloadPublic]
    total: int
    limit: int
    offset: int
