"""Policy documents, and the engine's inputs and outputs.

The vocabulary recorded on every decision (``EnforcementAction``, ``EnforcementPoint``,
``DecisionOutcome``) and the words it shares with the inventory and the registry live in
``control_plane.domain``. Two kinds of things live here:

* ``PolicyDocument``, what a policy author writes in YAML or JSON (pydantic, unknown fields
  refused so a typo is an error rather than a rule silently not applied);
* the engine's inputs (``WorkloadView``, ``NodeView``, ...) and outputs (``Decision``,
  ``Reason``). These are frozen dataclasses, not pydantic models: callers build thousands
  of node views per decision sweep from rows they have already validated, and a dataclass
  costs a fraction of a validated model to build. Pydantic still serializes them
  (``TypeAdapter(Decision)``), and ``Decision.to_json()`` gives the JSON form directly.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    Field,
    StrictBool,
    StringConstraints,
    field_validator,
)

from control_plane.domain.classification import Classification
from control_plane.domain.countries import CountryCode
from control_plane.domain.decisions import (
    DecisionOutcome,
    EnforcementAction,
    EnforcementPoint,
    RuleResult,
    ViolationAction,
)
from control_plane.domain.fleet import ComponentClass, DriftStatus, NodeStatus, ProvenanceStatus
from control_plane.domain.types import (
    Description,
    Input,
    Labels,
    Slug,
)
from control_plane.policy.bounds import MAX_LENGTH

#: How far each provenance status goes towards a policy's minimum; ``mismatch`` never does.
PROVENANCE_RANK: Mapping[ProvenanceStatus, int] = {
    ProvenanceStatus.UNKNOWN: 0,
    ProvenanceStatus.DECLARED: 1,
    ProvenanceStatus.VERIFIED: 2,
}


# -- policy documents ------------------------------------------------------------------


def _lower(value: object) -> object:
    # Before the pattern check, which StringConstraints runs ahead of its own lower-casing.
    return value.strip().lower() if isinstance(value, str) else value


#: A CEL rule's name: like a slug, underscores allowed; reasons show it as ``cel.<name>``.
RuleName = Annotated[
    str,
    BeforeValidator(_lower),
    StringConstraints(min_length=1, max_length=63, pattern=r"^[a-z0-9][a-z0-9_-]*$"),
]
#: A CEL expression; its other bounds (depth, estimated cost) are checked when it compiles.
Expression = Annotated[str, StringConstraints(min_length=1, max_length=MAX_LENGTH)]


class Selector(Input):
    """Which workloads a policy applies to; an empty selector applies to all of them.

    Every field given must match: the workload's tenant is one of ``tenants``; one of its
    datasets or models has one of ``classifications`` (exactly that level); its highest
    classification is at or above ``min_classification`` (classifications are ordered,
    ``Classification.rank``); one of its datasets carries all of ``dataset_labels``; one
    of its models carries all of ``model_labels``. ``classifications`` and
    ``min_classification`` given together must both match, as any two fields must.
    """

    tenants: list[Slug] = Field(default_factory=list)
    classifications: list[Classification] = Field(default_factory=list)
    min_classification: Classification | None = Field(
        default=None,
        description="Applies to workloads whose most sensitive dataset or model is at or"
        " above this level (public < internal < confidential < restricted).",
    )
    dataset_labels: Labels = Field(default_factory=dict)
    model_labels: Labels = Field(default_factory=dict)


class CelRule(Input):
    """A condition in CEL for what the structured requirements cannot say; it must be true."""

    name: RuleName
    expression: Expression
    message: Description = Field(
        default="", description="What the condition requires, in words; shown when it fails."
    )


class Requirements(Input):
    """What a selected workload requires; an empty list means no constraint of that kind.

    ``compute_zones`` and ``compute_countries`` together are the allowed places: a node is
    inside when its zone is, or lies within, one of the zones, or its zone's country is one
    of the countries. ``data_residency`` applies the same places to where datasets and
    model weights are stored and to the output destination. ``require_output`` makes a
    workload that names no output destination fail, so ``data_residency`` cannot pass
    for results whose destination nobody declared.
    """

    compute_zones: list[Slug] = Field(default_factory=list)
    compute_countries: list[CountryCode] = Field(default_factory=list)
    server_origin_countries: list[CountryCode] = Field(default_factory=list)
    component_origin_countries: dict[
        ComponentClass, Annotated[list[CountryCode], Field(min_length=1)]
    ] = Field(default_factory=dict)
    min_provenance_status: ProvenanceStatus | None = None
    exclude_quarantined: bool = True
    data_residency: bool = False
    # Strict: "yes" or 1 would otherwise pass as true; a new field has no stored
    # documents that relied on the lax reading.
    require_output: StrictBool = False
    cel: list[CelRule] = Field(default_factory=list)

    @field_validator("min_provenance_status")
    @classmethod
    def _declared_or_verified(cls, value: ProvenanceStatus | None) -> ProvenanceStatus | None:
        if value is not None and value not in (
            ProvenanceStatus.DECLARED,
            ProvenanceStatus.VERIFIED,
        ):
            raise ValueError("must be declared or verified")
        return value


class PolicyDocument(Input):
    """One residency policy as its author writes it (YAML or JSON)."""

    name: Slug
    description: Description = ""
    enforcement_action: EnforcementAction = EnforcementAction.DENY
    on_violation: ViolationAction = Field(
        default=ViolationAction.RECORD,
        description=(
            "What continuous compliance does to a running workload this (deny) policy"
            " finds in violation: record, notify (a signed webhook) or revoke (its lease"
            " ends and its GPUs are freed)."
        ),
    )
    selector: Selector = Field(default_factory=Selector)
    requirements: Requirements = Field(default_factory=Requirements)


# -- what the engine is given ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ZoneView:
    """A residency zone: its slug, the zone enclosing it (if any) and its country."""

    slug: str
    parent: str | None
    country: str


@dataclass(frozen=True, slots=True)
class DataAssetView:
    """A dataset a workload reads, with where its bytes are stored and whose it is.

    ``tenant`` is the owner and ``granted_to`` the other tenants holding a grant in force
    (sorted). A workload of any other tenant is denied (the ``ownership`` rule, before any
    policy). ``tenant`` None means the caller does not know the owner, and nothing is
    checked; the facts module always gives it, and ``sovctl policies test`` defaults it to
    the workload's tenant.
    """

    name: str
    classification: Classification
    storage_zones: Sequence[str] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    tenant: str | None = None
    granted_to: Sequence[str] = ()


@dataclass(frozen=True, slots=True)
class ModelView:
    """A model a workload loads: where its weights are stored, where it comes from, whose.

    ``tenant`` and ``granted_to`` as for ``DataAssetView``.
    """

    name: str
    classification: Classification
    storage_zones: Sequence[str] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    supplier: str | None = None
    origin_country: str | None = None
    license: str | None = None
    tenant: str | None = None
    granted_to: Sequence[str] = ()


@dataclass(frozen=True, slots=True)
class DestinationView:
    """Where a workload writes its results; ``zone`` is ``None`` when nobody recorded it."""

    name: str
    zone: str | None


@dataclass(frozen=True, slots=True)
class WorkloadView:
    """A workload asking to run: who, on what data and models, and how many GPUs of what kind.

    ``gpu_model`` matches a GPU whose model contains it, ignoring case (``H100`` matches
    ``NVIDIA H100 80GB HBM3``). With ``mig_profile`` set, ``gpu_count`` counts MIG slices
    of that profile on MIG-enabled GPUs (of the model and memory asked for); without it,
    whole GPUs with MIG off.
    """

    tenant: str
    datasets: Sequence[DataAssetView] = ()
    models: Sequence[ModelView] = ()
    output: DestinationView | None = None
    gpu_count: int = 1
    gpu_model: str | None = None
    min_gpu_memory_bytes: int | None = None
    mig_profile: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class MigSliceView:
    """One bookable MIG slice of a GPU: its MIG device UUID and profile (``1g.10gb``)."""

    uuid: str
    profile: str


@dataclass(frozen=True, slots=True)
class GpuView:
    """One GPU of a node, as capacity counts it (see ``NodeIndex.capacity``).

    ``mig_slices``: the MIG devices a workload asking for their profile can be given
    (named, and there); counted only while MIG is enabled.
    """

    uuid: str
    model: str
    memory_total_bytes: int | None = None
    mig_mode: str | None = None
    mig_slices: tuple[MigSliceView, ...] = ()


@dataclass(frozen=True, slots=True)
class NodeView:
    """A GPU server as the engine sees it: where it is, where it comes from, how it is doing.

    ``component_origins`` maps a component class (``gpu``, ``cpu``, ``board``, ``nic``)
    to its country of origin.
    """

    id: str
    hostname: str
    zone: str | None
    status: NodeStatus = NodeStatus.ACTIVE
    drift_status: DriftStatus = DriftStatus.NONE
    origin_country: str | None = None
    component_origins: Mapping[str, str] = field(default_factory=dict)
    provenance_status: ProvenanceStatus = ProvenanceStatus.UNKNOWN
    labels: Mapping[str, str] = field(default_factory=dict)
    gpus: Sequence[GpuView] = ()


# -- what the engine answers -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reason:
    """One thing a policy (or the baseline, when ``policy`` is ``None``) found, in words.

    ``rule`` names the requirement (``compute_location``, ``data_residency``,
    ``cel.<name>``, ...; for the baseline ``nodes``, ``node_status`` or ``capacity``) and
    ``action`` is the policy's enforcement action, so warnings and dry-run findings are
    told apart from denials.
    """

    policy: str | None
    rule: str
    action: EnforcementAction
    message: str

    def to_json(self) -> dict[str, Any]:
        """The reason as JSON-safe values."""
        return {
            "policy": self.policy,
            "rule": self.rule,
            "action": self.action.value,
            "message": self.message,
        }


class ReasonPublic(BaseModel):
    """One reason behind a decision: a policy's finding, the baseline's, or the quota's."""

    policy: str | None
    rule: str
    action: str
    message: str


@dataclass(frozen=True, slots=True)
class RuleCheck:
    """One rule of a selected policy and what it found (``RuleResult``).

    ``nodes_excluded`` is for node rules that ``decide`` found ``failed`` (how many of the
    nodes the baseline left the deny rule excluded) or ``warned`` (how many eligible nodes
    the warn or dryrun rule would have excluded); ``None`` otherwise, and in
    ``evaluate_node``, which judges one node.
    """

    rule: str
    result: RuleResult
    nodes_excluded: int | None = None

    def to_json(self) -> dict[str, Any]:
        """The check as JSON-safe values."""
        return {
            "rule": self.rule,
            "result": self.result.value,
            "nodes_excluded": self.nodes_excluded,
        }


@dataclass(frozen=True, slots=True)
class SelectedPolicy:
    """A policy whose selector matched the workload, and every rule it checked.

    ``version`` is the policy's version in the store (``None`` for a document that was
    never stored: ``sovctl policies test``, a what-if candidate); ``content_hash`` the
    SHA-256 of its canonical document, as the store records it.
    """

    name: str
    version: int | None
    content_hash: str
    enforcement_action: EnforcementAction
    rules: tuple[RuleCheck, ...]

    def to_json(self) -> dict[str, Any]:
        """The policy's part of the explanation as JSON-safe values."""
        return {
            "name": self.name,
            "version": self.version,
            "content_hash": self.content_hash,
            "enforcement_action": self.enforcement_action.value,
            "rules": [rule.to_json() for rule in self.rules],
        }


@dataclass(frozen=True, slots=True)
class UnselectedPolicy:
    """A policy of the set that does not apply to the workload, and the selector that said no.

    ``reason`` names the first selector field that did not match and what the workload
    had instead, e.g. ``selector classifications [restricted] did not match internal``.
    """

    name: str
    version: int | None
    content_hash: str
    reason: str

    def to_json(self) -> dict[str, Any]:
        """The policy's part of the explanation as JSON-safe values."""
        return {
            "name": self.name,
            "version": self.version,
            "content_hash": self.content_hash,
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class Explanation:
    """Which policies of the set applied to a decision, what each rule found, and which did not.

    Every policy of the set is in exactly one of the two lists, in name order, so "no
    policy applied" is told apart from "every policy passed".
    """

    selected: tuple[SelectedPolicy, ...]
    not_selected: tuple[UnselectedPolicy, ...]

    def to_json(self) -> dict[str, Any]:
        """The explanation as JSON-safe values, as workloads and evaluations store it."""
        return {
            "selected": [policy.to_json() for policy in self.selected],
            "not_selected": [policy.to_json() for policy in self.not_selected],
        }


class RuleCheckPublic(BaseModel):
    """One rule a selected policy checked, and its result."""

    rule: str
    result: RuleResult
    nodes_excluded: int | None = Field(
        default=None,
        description="Node rules: nodes the rule excluded (deny) or would have (warn, dryrun).",
    )


class SelectedPolicyPublic(BaseModel):
    """A policy that applied to the decision, by name, version and content hash."""

    name: str
    version: int | None = Field(description="Its version in the store; null if never stored.")
    content_hash: str
    enforcement_action: EnforcementAction
    rules: list[RuleCheckPublic]


class UnselectedPolicyPublic(BaseModel):
    """A policy of the set that did not apply to the workload, and why."""

    name: str
    version: int | None = Field(description="Its version in the store; null if never stored.")
    content_hash: str
    reason: str = Field(description="The selector field that did not match, in words.")


class ExplanationPublic(BaseModel):
    """What a decision records of the policy set: what applied, what each rule found, what not."""

    selected: list[SelectedPolicyPublic]
    not_selected: list[UnselectedPolicyPublic]


@dataclass(frozen=True, slots=True)
class Decision:
    """The engine's verdict, with the policy-set version and hash it was reached under.

    ``eligible_node_ids`` are the nodes the workload may be placed on (empty when denied);
    choosing one and reserving GPUs is the caller's business. ``explanation`` lists the
    policies selected, each rule's result, and the policies that did not apply and why.
    """

    outcome: DecisionOutcome
    reasons: list[Reason]
    eligible_node_ids: list[str]
    policy_set_version: int
    policy_set_hash: str
    point: EnforcementPoint
    explanation: Explanation

    @property
    def admitted(self) -> bool:
        """Whether the workload may run (with or without warnings)."""
        return self.outcome is not DecisionOutcome.DENIED

    def to_json(self) -> dict[str, Any]:
        """The decision as JSON-safe values, as the API and the audit log record it."""
        return {
            "outcome": self.outcome.value,
            "reasons": [reason.to_json() for reason in self.reasons],
            "eligible_node_ids": list(self.eligible_node_ids),
            "policy_set_version": self.policy_set_version,
            "policy_set_hash": self.policy_set_hash,
            "point": self.point.value,
            "explanation": self.explanation.to_json(),
        }
