"""Compliance vocabulary and API models: evaluation requests, evaluations, what-if answers.

An evaluation judges every running workload against the active policy set and keeps exact
counts plus a capped sample of the violating workloads, as Gatekeeper's audit keeps a
capped list of violations with an exact total. A what-if answer does the same for a
candidate policy set without storing anything, and adds what the candidate changes for
each tenant's usable GPUs.
"""

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

from pydantic import BaseModel, Field

from control_plane.domain.compliance import EvaluationTrigger
from control_plane.domain.decisions import ViolationAction
from control_plane.facts.workloads import WorkloadRevocation
from control_plane.policy.models import ExplanationPublic, ReasonPublic
from control_plane.policy.store_models import CandidateMember, PolicySetRef


class ComplianceRequestPublic(BaseModel):
    """One request for an evaluation; ``evaluation_id`` is null until one handles it."""

    id: int
    reason: EvaluationTrigger
    subject: dict[str, Any] = Field(description="What changed, as the caller saw it.")
    requested_at: datetime
    evaluation_id: UUID | None


class ViolationPublic(BaseModel):
    """A running workload that a policy set denies where it runs now, and why."""

    workload_id: UUID
    tenant: str
    node_id: UUID | None
    hostname: str | None = Field(description="The node's hostname now.")
    zone: str | None = Field(
        description="The node's zone now (the zone at admission when the node left the fleet)."
    )
    reasons: list[ReasonPublic] = Field(
        description="Every reason the engine gave, deny and warn; at least one denies."
    )
    explanation: ExplanationPublic | None = Field(
        default=None,
        description="The policies selected, each rule's result on the node, and those that"
        " did not apply and why; null when the workload could not be judged (its node or"
        " what it names is gone) or the evaluation predates explanations.",
    )


class RuleCount(BaseModel):
    """How many violating workloads one policy's rule denies (``policy`` null: no policy)."""

    policy: str | None
    rule: str
    workloads: int


class TriggerPublic(BaseModel):
    """A request an evaluation handled."""

    id: int
    reason: EvaluationTrigger
    subject: dict[str, Any]
    requested_at: datetime


class EvaluationSummary(BaseModel):
    """One compliance evaluation: what triggered it, what it judged under, exact counts."""

    id: UUID
    started_at: datetime
    finished_at: datetime
    triggers: list[TriggerPublic] = Field(description="The requests it handled, oldest first.")
    trigger_count: int = Field(description="How many requests it handled (exact).")
    policy_set_version: int
    policy_set_hash: str
    fleet_generation: int = Field(description="The fleet generation the nodes were read at.")
    workloads_evaluated: int = Field(description="Running workloads judged.")
    violating_workloads: int = Field(description="Of them, denied by a deny policy (exact).")
    warned_workloads: int = Field(description="Of them, admitted only with warnings (exact).")
    violations_by_rule: list[RuleCount] = Field(
        description="Violating workloads per policy and rule, most first (exact)."
    )
    violations_by_tenant: dict[str, int] = Field(
        description="Violating workloads per tenant (exact)."
    )
    revoked_workloads: int = Field(
        description="Of the violating workloads, revoked by it (on_violation: revoke; exact)."
    )
    notifications: int = Field(
        description="Violation webhooks it queued (on_violation: notify or revoke; exact)."
    )


class EvaluationPublic(EvaluationSummary):
    """An evaluation with its sample: the first violating workloads by id."""

    sample: list[ViolationPublic] = Field(
        description="At most SOVEREIGN_COMPLIANCE_SAMPLE_SIZE violating workloads, by id."
    )


class EvaluationPage(BaseModel):
    """A page of evaluations, newest first (without their samples), and how many there are."""

    items: list[EvaluationSummary]
    total: int
    limit: int
    offset: int


class CandidateSetPublic(BaseModel):
    """The set that applying the candidate documents and activating by default would enforce."""

    version: int = Field(description="The version activation would give it.")
    content_hash: str = Field(description="The content hash activation would record.")
    members: list[CandidateMember]
    unchanged: bool = Field(description="Whether it says exactly what the active set says.")


class WhatIfViolation(ViolationPublic):
    """A running workload the candidate set would deny."""

    new: bool = Field(description="True when the active set does not deny it now.")


class WhatIfViolations(BaseModel):
    """Running workloads the candidate set would deny: exact counts and the first by id."""

    count: int = Field(description="Running workloads the candidate would deny (exact).")
    new: int = Field(description="Of them, not denied under the active set (exact).")
    fixed: int = Field(
        description="Running workloads denied under the active set that the candidate allows."
    )
    warned: int = Field(description="Running workloads the candidate admits only with warnings.")
    items: list[WhatIfViolation] = Field(
        description="At most SOVEREIGN_COMPLIANCE_SAMPLE_SIZE of them, by workload id."
    )


class NodeSetChange(BaseModel):
    """Nodes that enter or leave a set: exact count, hostnames (capped) in hostname order."""

    count: int
    hostnames: list[str]


class TenantCapacityChange(BaseModel):
    """How the candidate set changes where one tenant may run (its probe workload).

    The probe asks for one GPU and names no dataset, model or output. A node is usable
    when it is active, has not drifted, has a GPU with MIG off and no deny policy selected
    for the probe excludes it; its usable GPUs are all its GPUs. MIG slices are counted
    the same way per profile, with a probe asking one slice of the profile.
    """

    tenant: str
    eligible_nodes_now: int
    eligible_nodes_candidate: int
    nodes_lost: NodeSetChange
    nodes_gained: NodeSetChange
    usable_gpus_now: int
    usable_gpus_candidate: int
    change: int = Field(description="usable_gpus_candidate - usable_gpus_now")
    usable_mig_slices_now: dict[str, int] = Field(
        description="MIG slices by profile (booked or not) on the nodes where a probe asking"
        " one slice of that profile may run under the active set; every profile the fleet"
        " has, empty when no GPU has MIG slices."
    )
    usable_mig_slices_candidate: dict[str, int] = Field(
        description="The same under the candidate set."
    )


class WhatIfResult(BaseModel):
    """What activating a candidate policy set would change, computed and not stored."""

    active_set: PolicySetRef
    candidate_set: CandidateSetPublic
    fleet_generation: int
    workloads_evaluated: int
    violations: WhatIfViolations
    tenants: list[TenantCapacityChange] = Field(description="Every tenant, by slug.")


# -- the delivery log of violation webhooks ----------------------------------------------


class DeliveryStatus(StrEnum):
    """Where a violation webhook stands: ``pending`` until delivered or out of attempts."""

    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


class DeliveryPublic(BaseModel):
    """One violation webhook: what was (or will be) sent, and every attempt's outcome."""

    id: UUID
    workload_id: UUID
    policy: str
    action: ViolationAction = Field(description="notify or revoke: the policy's on_violation.")
    evaluation_id: UUID
    payload: dict[str, Any] = Field(description="The JSON body, as signed and sent.")
    created_at: datetime
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime | None = Field(description="When it is tried next (pending only).")
    last_attempt_at: datetime | None
    last_status: int | None = Field(description="The receiver's HTTP status at the last attempt.")
    last_error: str | None = Field(description="Why the last attempt failed, cut short.")
    delivered_at: datetime | None


class DeliveryFilters(BaseModel):
    """Filters for listing deliveries."""

    status: DeliveryStatus | None = None
    workload_id: UUID | None = None


class DeliveryPage(BaseModel):
    """A page of deliveries, newest first, and how many match in all."""

    items: list[DeliveryPublic]
    total: int
    limit: int
    offset: int


@dataclass(frozen=True, slots=True)
class DueDelivery:
    """A delivery claimed for an attempt: its id, the exact body, attempts made so far."""

    id: UUID
    body: str
    attempts: int


# -- rows as the repository hands them over ---------------------------------------------


@dataclass(frozen=True, slots=True)
class RunningRow:
    """An admitted workload as stored: its request, and its node as the inventory has it."""

    id: UUID
    tenant: str
    request: dict[str, Any]
    node_id: UUID
    zone: str | None
    hostname: str | None
    node_status: str | None


@dataclass(frozen=True, slots=True)
class RevokedRow:
    """A workload a compliance evaluation just revoked, with what it held."""

    id: UUID
    node_id: UUID
    gpu_uuids: list[str]
    lease_expires_at: datetime
    ended_at: datetime


@dataclass(frozen=True, slots=True)
class PodDecisionRow:
    """A stored webhook decision (``pod_decision``), as the pod sweep checks it against a pod.

    ``kind`` and ``name`` are the object decided (a Pod, or the Job or CronJob whose pod
    template it was; ``name`` its generateName when the API server had not named it yet).
    """

    id: UUID
    namespace: str
    kind: str
    name: str | None
    webhook: str
    outcome: str
    tenant: str
    request: dict[str, Any]


# -- what the compliance.evaluated audit event holds (docs/audit.md) --------------------


class TriggerCounts(BaseModel):
    """How many requests an evaluation handled, by reason."""

    count: int
    reasons: dict[str, int]


class EvaluationRecorded(BaseModel):
    """An evaluation as the audit log records it: what it judged under and the counts."""

    policy_set: PolicySetRef
    fleet_generation: int
    workloads_evaluated: int
    violating_workloads: int
    warned_workloads: int
    violations_by_rule: list[RuleCount]
    violations_by_tenant: dict[str, int]
    sampled_workload_ids: list[str]
    triggers: TriggerCounts
    revoked_workload_ids: list[str] = Field(default_factory=list)
    notifications: int = 0


# -- what the workload.revoked audit event holds (docs/audit.md) ------------------------


class WorkloadHeld(BaseModel):
    """What a running workload held when an evaluation revoked it."""

    status: str
    node_id: UUID
    gpu_uuids: list[str]
    lease_expires_at: datetime


class WorkloadRevoked(BaseModel):
    """A workload revoked by an evaluation: when it ended, what it freed, and why."""

    status: str
    ended_at: datetime
    freed_gpu_uuids: list[str]
    #: GPUs its node had stopped reporting, deleted with the reservations (as on release).
    removed_gpu_uuids: list[str]
    revocation: WorkloadRevocation


# -- what the pod.evicted and pod.eviction_blocked audit events hold (docs/audit.md) ----


class PodEvictionNode(BaseModel):
    """The node a pod runs on: its Kubernetes name and the inventory node it is."""

    name: str
    node_id: UUID
    hostname: str
    zone: str | None


class PodEvicted(BaseModel):
    """A running pod the pod sweep evicted, where it ran, and why."""

    namespace: str
    name: str
    uid: str
    node: PodEvictionNode
    decision_id: UUID
    policy_set: PolicySetRef
    #: The deny policies with ``on_violation: revoke`` it breaks, sorted.
    policies: list[str]
    reasons: list[ReasonPublic]


class PodEvictionBlocked(PodEvicted):
    """An eviction the API server refused (a PodDisruptionBudget), with its message."""

    refusal: str
