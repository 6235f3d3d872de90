"""Which running workloads break a policy set, and what a candidate set would change. Pure.

The compliance evaluation (a Celery task, on the active set) and what-if (on the active
set and on a candidate) both judge running workloads with ``assess``: the same workload
views, the same node index, the same engine call (``evaluate_node``) per workload. That
shared path is what makes what-if's answer a prediction of the evaluation: on the same
fleet and workloads, the workloads what-if says a candidate would deny are the ones the
evaluation records once the candidate is active.

Nothing here reads the database or a clock; the service loads the facts and stores the
results.
"""

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from control_plane.domain.decisions import (
    DecisionOutcome,
    EnforcementAction,
    EnforcementPoint,
    ViolationAction,
)
from control_plane.domain.fleet import NodeStatus
from control_plane.policy.documents import PolicySet
from control_plane.policy.engine import (
    DecisionCache,
    NodeIndex,
    decide_with_mask,
    evaluate_node,
    mig_enabled,
)
from control_plane.policy.models import Explanation, Reason, WorkloadView

#: The rule of the reason given when a workload's node is no longer in the fleet.
NODE_STATUS_RULE = "node_status"
#: The rule of the reason given when what a workload names is no longer in the registry.
REGISTRY_RULE = "registry"

_DENY = EnforcementAction.DENY


@dataclass(frozen=True, slots=True)
class RunningWorkload:
    """A workload that holds GPUs now, as an evaluation sees it.

    ``view`` is the engine's view of its request, or ``None`` when something the request
    names is no longer in the registry; ``problem`` then says what, in words. ``hostname``,
    ``node_status`` and ``zone`` are as stored (the node's hostname and status, the zone
    it was placed in): they describe a node that has left the fleet snapshot.
    """

    id: str
    tenant: str
    node_id: str
    view: WorkloadView | None
    problem: str | None = None
    hostname: str | None = None
    node_status: str | None = None
    zone: str | None = None


@dataclass(frozen=True, slots=True)
class Finding:
    """One running workload's verdict under a policy set, where it runs now, and why.

    ``explanation`` is the engine's (which policies applied, each rule's result on the
    node); ``None`` when the engine could not judge it (its node or assets are gone).
    """

    workload_id: str
    tenant: str
    node_id: str
    hostname: str | None
    zone: str | None
    outcome: DecisionOutcome
    reasons: tuple[Reason, ...]
    explanation: Explanation | None = None

    def to_json(self) -> dict[str, Any]:
        """The finding as JSON-safe values, as evaluations store their sample."""
        return {
            "workload_id": self.workload_id,
            "tenant": self.tenant,
            "node_id": self.node_id,
            "hostname": self.hostname,
            "zone": self.zone,
            "reasons": [reason.to_json() for reason in self.reasons],
            "explanation": None if self.explanation is None else self.explanation.to_json(),
        }


@dataclass(frozen=True, slots=True)
class RuleCount:
    """How many violating workloads one policy's rule denies (``policy`` None: no policy)."""

    policy: str | None
    rule: str
    workloads: int

    def to_json(self) -> dict[str, Any]:
        """The count as JSON-safe values."""
        return {"policy": self.policy, "rule": self.rule, "workloads": self.workloads}


@dataclass(frozen=True, slots=True)
class Assessment:
    """Every running workload judged under one policy set: exact counts and the violations.

    ``violations`` holds every denied workload, by workload id; callers keep a sample.
    ``by_rule`` counts each violating workload once per (policy, rule) among its deny
    reasons, most first; ``by_tenant`` counts violating workloads per tenant.
    """

    policy_set_version: int
    policy_set_hash: str
    evaluated: int
    violations: tuple[Finding, ...]
    warned: int
    by_rule: tuple[RuleCount, ...]
    by_tenant: dict[str, int]

    @property
    def violating_ids(self) -> frozenset[str]:
        """The ids of the violating workloads."""
        return frozenset(finding.workload_id for finding in self.violations)


def _unjudgeable(workload: RunningWorkload, known: frozenset[str]) -> list[Reason]:
    """Why a workload cannot be judged by the engine: its node or its assets are gone.

    Both fail closed, as the engine does for an asset with no recorded zone: a workload
    whose residency cannot be checked is a violation, said in words.
    """
    reasons = []
    if workload.node_id not in known:
        where = f"node {workload.hostname or workload.node_id}"
        state = (
            "is decommissioned"
            if workload.node_status == NodeStatus.DECOMMISSIONED
            else "is no longer in the fleet"
        )
        reasons.append(
            Reason(
                None,
                NODE_STATUS_RULE,
                _DENY,
                f"{where} {state}, but the workload still holds GPUs on it",
            )
        )
    if workload.view is None:
        problem = workload.problem or "what the workload names is no longer in the registry"
        reasons.append(
            Reason(None, REGISTRY_RULE, _DENY, f"{problem}; its residency cannot be checked")
        )
    return reasons


def judge(
    workload: RunningWorkload,
    index: NodeIndex,
    policy_set: PolicySet,
    *,
    point: EnforcementPoint,
    known: frozenset[str],
    cache: DecisionCache,
    deny_unselected: bool = False,
) -> Finding:
    """One running workload's verdict on the node it runs on (``known``: the index's ids).

    ``deny_unselected`` as for the engine's ``evaluate_node``.
    """
    unjudgeable = _unjudgeable(workload, known)
    if unjudgeable or workload.view is None:
        return Finding(
            workload.id,
            workload.tenant,
            workload.node_id,
            workload.hostname,
            workload.zone,
            DecisionOutcome.DENIED,
            tuple(unjudgeable),
        )
    decision = evaluate_node(
        workload.view,
        workload.node_id,
        index,
        policy_set,
        point=point,
        cache=cache,
        deny_unselected=deny_unselected,
    )
    node = index.node(workload.node_id)
    return Finding(
        workload.id,
        workload.tenant,
        workload.node_id,
        node.hostname,
        node.zone,
        decision.outcome,
        tuple(decision.reasons),
        decision.explanation,
    )


def assess(
    workloads: Iterable[RunningWorkload],
    index: NodeIndex,
    policy_set: PolicySet,
    *,
    point: EnforcementPoint,
    cache: DecisionCache,
    deny_unselected: bool = False,
) -> Assessment:
    """Judge every running workload under ``policy_set`` on the nodes of ``index``.

    A workload is a violation when a deny policy breaks on its node now (``evaluate_node``
    says ``denied``), when its node is no longer in the index (decommissioned), or when
    what it names is no longer in the registry. Warn and dryrun findings never make a
    violation; ``admitted_with_warnings`` is counted apart. ``cache``: the caller's, as
    for the engine; workloads that ask for the same are judged once. ``deny_unselected``
    as for the engine: a running workload on classified data that no policy selects is a
    violation.
    """
    known = frozenset(index.ids)
    evaluated = 0
    warned = 0
    violations: list[Finding] = []
    by_rule: Counter[tuple[str | None, str]] = Counter()
    by_tenant: Counter[str] = Counter()
    for workload in workloads:
        evaluated += 1
        finding = judge(
            workload,
            index,
            policy_set,
            point=point,
            known=known,
            cache=cache,
            deny_unselected=deny_unselected,
        )
        if finding.outcome is DecisionOutcome.ADMITTED_WITH_WARNINGS:
            warned += 1
        if finding.outcome is not DecisionOutcome.DENIED:
            continue
        violations.append(finding)
        by_tenant[finding.tenant] += 1
        by_rule.update({(r.policy, r.rule) for r in finding.reasons if r.action is _DENY})
    violations.sort(key=lambda finding: finding.workload_id)
    return Assessment(
        policy_set_version=policy_set.version,
        policy_set_hash=policy_set.content_hash,
        evaluated=evaluated,
        violations=tuple(violations),
        warned=warned,
        by_rule=tuple(
            RuleCount(policy, rule, count)
            for (policy, rule), count in sorted(
                by_rule.items(), key=lambda item: (-item[1], item[0][0] or "", item[0][1])
            )
        ),
        by_tenant=dict(sorted(by_tenant.items())),
    )


# -- what an evaluation does about its violations --------------------------------------


@dataclass(frozen=True, slots=True)
class Enforcement:
    """What an evaluation does to one violating workload, by its policies' ``on_violation``.

    ``notify`` lists each deny policy it breaks whose action is ``notify`` or ``revoke``
    (each gets its own webhook), with that action; ``revoke_by`` those whose action is
    ``revoke``: the workload is revoked when it is not empty.
    """

    finding: Finding
    notify: tuple[tuple[str, ViolationAction], ...]
    revoke_by: tuple[str, ...]

    @property
    def revoke(self) -> bool:
        """Whether the workload is to be revoked."""
        return bool(self.revoke_by)


def enforcements(found: Assessment, policy_set: PolicySet) -> list[Enforcement]:
    """The violations ``found`` under ``policy_set`` that call for more than a record.

    Only deny policies act: a violation is made of deny reasons, and a reason is a deny
    only when its policy's enforcement action is ``deny``, so a ``warn`` or ``dryrun``
    policy never notifies or revokes, whatever its ``on_violation`` says. Reasons without
    a policy (the node left the fleet, an asset left the registry) are only recorded.
    In workload id order, as ``found.violations``.
    """
    actions = {
        policy.name: policy.document.on_violation
        for policy in policy_set.policies
        if policy.action is _DENY
    }
    planned = []
    for finding in found.violations:
        broken = sorted(
            {r.policy for r in finding.reasons if r.action is _DENY and r.policy in actions}
        )
        notify = tuple(
            (name, actions[name])
            for name in broken
            if actions[name].rank >= ViolationAction.NOTIFY.rank
        )
        if notify:
            revoke_by = tuple(name for name, action in notify if action is ViolationAction.REVOKE)
            planned.append(Enforcement(finding, notify, revoke_by))
    return planned


# -- what-if: tenants' usable capacity -------------------------------------------------


def probe(tenant: str, mig_profile: str | None = None) -> WorkloadView:
    """The workload that stands for a tenant when counting where it may run.

    One GPU (of any model, MIG off), no dataset, model, output or label: so only policies
    that select every workload or the tenant by name apply to it, and only their node
    rules (compute location, origins, provenance, quarantine, node CEL) shape the answer.
    With ``mig_profile``, one MIG slice of that profile instead (for counting slices).
    """
    return WorkloadView(tenant=tenant, gpu_count=1, mig_profile=mig_profile)


def usable_nodes(
    tenant: str,
    index: NodeIndex,
    policy_set: PolicySet,
    *,
    cache: DecisionCache,
    mig_profile: str | None = None,
) -> int:
    """The nodes (a mask over ``index``) where the tenant's probe may run under the set.

    Nodes with a GPU (or, with ``mig_profile``, a MIG slice of it) the probe fits, that no
    deny policy selected for the probe excludes, and that placement may use at all
    (``NodeIndex.placeable``: active, not drifted).
    """
    _, eligible = decide_with_mask(
        probe(tenant, mig_profile),
        index,
        policy_set,
        point=EnforcementPoint.WHATIF,
        cache=cache,
    )
    return eligible & index.placeable()


def mig_profiles(index: NodeIndex) -> tuple[str, ...]:
    """The profiles of the bookable MIG slices anywhere in the fleet, sorted (few)."""
    found = {
        profile
        for shape in index.by_shape
        for (_, _, mig, profiles), _ in shape
        if mig
        for profile in profiles
    }
    return tuple(sorted(found))


def _slices_on(index: NodeIndex, mask: int, profile: str) -> int:
    """MIG slices of ``profile`` on MIG-enabled GPUs of the nodes in ``mask``."""
    return sum(
        sum(piece.profile == profile for piece in gpu.mig_slices)
        for position in _positions(mask)
        for gpu in index.nodes[position].gpus
        if gpu.mig_slices and mig_enabled(gpu.mig_mode)
    )


def _positions(mask: int) -> Iterator[int]:
    """The set bits of ``mask``, lowest first (index order: by hostname, then id)."""
    while mask:
        lowest = mask & -mask
        yield lowest.bit_length() - 1
        mask ^= lowest


@dataclass(frozen=True, slots=True)
class NodeChange:
    """Nodes entering or leaving a tenant's usable set: exact count, first hostnames."""

    count: int
    hostnames: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CapacityChange:
    """Where one tenant's probe may run under the active set and under the candidate."""

    tenant: str
    nodes_now: int
    nodes_candidate: int
    lost: NodeChange
    gained: NodeChange
    gpus_now: int
    gpus_candidate: int
    #: MIG slices by profile on the nodes where a one-slice probe of that profile may run.
    slices_now: Mapping[str, int]
    slices_candidate: Mapping[str, int]

    @property
    def change(self) -> int:
        """Usable GPUs gained (positive) or lost (negative) by activating the candidate."""
        return self.gpus_candidate - self.gpus_now


def capacity_change(
    tenant: str,
    index: NodeIndex,
    current: PolicySet,
    candidate: PolicySet,
    *,
    limit: int,
    cache: DecisionCache,
) -> CapacityChange:
    """How the candidate changes the tenant's usable nodes and GPUs (``limit`` hostnames)."""
    now = usable_nodes(tenant, index, current, cache=cache)
    then = usable_nodes(tenant, index, candidate, cache=cache)

    def gpus(mask: int) -> int:
        return sum(len(index.nodes[position].gpus) for position in _positions(mask))

    profiles = mig_profiles(index)

    def slice_mask(policy_set: PolicySet, profile: str) -> int:
        return usable_nodes(tenant, index, policy_set, cache=cache, mig_profile=profile)

    def change(mask: int) -> NodeChange:
        hostnames: list[str] = []
        for position in _positions(mask):
            if len(hostnames) == limit:
                break
            hostnames.append(index.nodes[position].hostname)
        return NodeChange(mask.bit_count(), tuple(hostnames))

    return CapacityChange(
        tenant=tenant,
        nodes_now=now.bit_count(),
        nodes_candidate=then.bit_count(),
        lost=change(now & ~then),
        gained=change(then & ~now),
        gpus_now=gpus(now),
        gpus_candidate=gpus(then),
        slices_now={p: _slices_on(index, slice_mask(current, p), p) for p in profiles},
        slices_candidate={p: _slices_on(index, slice_mask(candidate, p), p) for p in profiles},
    )


@dataclass(frozen=True, slots=True)
class WhatIf:
    """Running workloads judged under the active set and a candidate, and tenants' capacity."""

    current: Assessment
    candidate: Assessment
    capacity: tuple[CapacityChange, ...]

    @property
    def new_ids(self) -> frozenset[str]:
        """Workloads the candidate would deny that the active set does not."""
        return self.candidate.violating_ids - self.current.violating_ids

    @property
    def fixed_ids(self) -> frozenset[str]:
        """Workloads the active set denies that the candidate would not."""
        return self.current.violating_ids - self.candidate.violating_ids


def what_if(
    workloads: Sequence[RunningWorkload],
    index: NodeIndex,
    current: PolicySet,
    candidate: PolicySet,
    tenants: Iterable[str],
    *,
    limit: int,
    cache: DecisionCache,
    deny_unselected: bool = False,
) -> WhatIf:
    """Judge the running workloads under both sets and compare every tenant's capacity.

    ``limit`` caps the hostnames listed per tenant and change; counts are exact.
    ``deny_unselected`` as for ``assess``; the probes name no data, so it never denies them.
    """
    point = EnforcementPoint.WHATIF
    unselected = deny_unselected
    return WhatIf(
        current=assess(
            workloads, index, current, point=point, cache=cache, deny_unselected=unselected
        ),
        candidate=assess(
            workloads, index, candidate, point=point, cache=cache, deny_unselected=unselected
        ),
        capacity=tuple(
            capacity_change(tenant, index, current, candidate, limit=limit, cache=cache)
            for tenant in tenants
        ),
    )
