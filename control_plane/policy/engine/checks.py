"""Node checks: each requirement of a policy as the set of indexed nodes that satisfy it.

A structured requirement (compute location, origins, provenance, quarantine) is a union
of the index's per-attribute masks; a CEL node condition is run once per node profile.
Both depend only on the index and the policy, so they are worked out once per index and
kept in the caller's ``Memo``. A node condition that also reads the workload is worked
out per distinct value of what it reads. Also here: what the workload rules check (data
residency, workload CEL), which read no node. The words for all of them are in
``reasons``.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import cel

from control_plane.domain.fleet import DriftStatus, NodeStatus
from control_plane.policy import conditions
from control_plane.policy.documents import CelCondition, CompiledPolicy, either
from control_plane.policy.engine.cache import Memo
from control_plane.policy.engine.gpu import gpu_request
from control_plane.policy.engine.index import NodeIndex
from control_plane.policy.engine.scope import CelScope, Profiles, node_profiles
from control_plane.policy.models import WorkloadView

#: A node condition's answer over an index: nodes that pass, nodes where it broke, why.
CelAnswer = tuple[int, int, str | None]


@dataclass(frozen=True, slots=True)
class NodeCheck:
    """One node-level requirement of one policy, evaluated over an index.

    ``allowed`` has a bit set for every node that satisfies it. ``breakdown`` names the
    index attribute that explains an exclusion (``zone``, ``origin``, ``component:gpu``,
    ``provenance``; empty for none). ``broken`` are the nodes a CEL condition could not
    be evaluated on, ``error`` the first reason why.
    """

    rule: str
    allowed: int
    breakdown: str
    violation: str
    requirement: str
    broken: int = 0
    error: str | None = None


@dataclass(frozen=True, slots=True)
class PolicyChecks:
    """A policy's node checks that do not depend on the workload, and their intersection."""

    checks: tuple[NodeCheck, ...]
    allowed: int


def candidates(index: NodeIndex, workload: WorkloadView, memo: Memo) -> int:
    """The baseline, before any policy: active nodes with enough GPUs of the kind asked for."""
    key = (workload.gpu_count, *gpu_request(workload))
    found = memo.candidates.get(key)
    if found is None:
        found = memo.remember(memo.candidates, key, index.active() & index.capacity(workload))
    return found


def _union(table: Mapping[Any, int], keys: Iterable[Any]) -> int:
    result = 0
    for key in keys:
        result |= table.get(key, 0)
    return result


def _profiles(index: NodeIndex, fields: conditions.Projection, memo: Memo) -> Profiles:
    key = conditions.freeze(fields)
    found = memo.profiles.get(key)
    if found is None:
        found = memo.remember(memo.profiles, key, node_profiles(index, fields))
    return found


def _evaluate_profiles(
    index: NodeIndex, condition: CelCondition, context: cel.Context, memo: Memo
) -> CelAnswer:
    allowed = broken = 0
    first_error: str | None = None
    for value, mask in _profiles(index, condition.node_fields, memo):
        context.add_variable("node", value)
        verdict = conditions.run(condition.program, context)
        if verdict.passed:
            allowed |= mask
        elif verdict.error is not None:
            broken |= mask
            first_error = first_error or verdict.error
    return allowed, broken, first_error


def _cel_check(condition: CelCondition, answer: CelAnswer) -> NodeCheck:
    allowed, broken, first_error = answer
    return NodeCheck(
        condition.rule,
        allowed,
        "",
        f"nodes failing cel {condition.name}",
        condition.requirement,
        broken,
        first_error,
    )


def _static_cel_check(index: NodeIndex, condition: CelCondition, memo: Memo) -> NodeCheck:
    """A node condition that reads only ``node``: one answer per index and expression."""
    answer = memo.node_cel.get(condition.expression)
    if answer is None:
        answer = memo.remember(
            memo.node_cel,
            condition.expression,
            _evaluate_profiles(index, condition, cel.Context(), memo),
        )
    return _cel_check(condition, answer)


def dynamic_cel_check(
    index: NodeIndex, condition: CelCondition, scope: CelScope, memo: Memo
) -> NodeCheck:
    """A node condition that also reads the workload: one answer per distinct input."""
    key = (condition.name, condition.expression, condition.message, scope.key(condition))
    check = memo.node_checks.get(key)
    if check is None:
        # The decision's shared context: ``node`` set in it is never read by a workload
        # condition, since a condition that reads ``node`` is a node condition.
        answer = _evaluate_profiles(index, condition, scope.context(condition), memo)
        check = memo.remember(memo.node_checks, key, _cel_check(condition, answer))
    return check


def policy_checks(index: NodeIndex, policy: CompiledPolicy, memo: Memo) -> PolicyChecks:
    """The policy's workload-independent node checks over ``index``, computed once per index.

    Callers look in ``memo.policy_checks`` under ``policy.node_key`` first (once per
    selected policy per new workload, where a call costs more than the look-up).
    """
    checks: list[NodeCheck] = []
    if policy.compute_zones or policy.compute_countries:
        allowed = _union(index.within_zone, policy.compute_zones) | _union(
            index.by_country, policy.compute_countries
        )
        requirement = f"compute must be in {policy.compute_places}"
        checks.append(NodeCheck("compute_location", allowed, "zone", "compute in", requirement))
    if policy.server_origin_countries:
        checks.append(
            NodeCheck(
                "server_origin_countries",
                _union(index.by_origin, policy.server_origin_countries),
                "origin",
                "servers of origin",
                f"server origin must be {either(sorted(policy.server_origin_countries))}",
            )
        )
    for component, countries in sorted(policy.component_origin_countries.items()):
        checks.append(
            NodeCheck(
                f"component_origin_countries.{component}",
                _union(index.by_component, ((component, c) for c in countries)),
                f"component:{component}",
                f"{component} components of origin",
                f"{component} origin must be {either(sorted(countries))}",
            )
        )
    if policy.allowed_provenance is not None:
        wanted = "verified" if len(policy.allowed_provenance) == 1 else "declared or verified"
        checks.append(
            NodeCheck(
                "min_provenance_status",
                _union(index.by_provenance, policy.allowed_provenance),
                "provenance",
                "nodes with provenance",
                f"provenance must be {wanted}",
            )
        )
    if policy.exclude_quarantined:
        unhealthy = index.by_status.get(NodeStatus.QUARANTINED, 0) | index.by_drift.get(
            DriftStatus.DRIFTED, 0
        )
        checks.append(
            NodeCheck(
                "exclude_quarantined",
                index.all & ~unhealthy,
                "",
                "quarantined or drifted nodes",
                "quarantined and drifted nodes are excluded",
            )
        )
    checks += [
        _static_cel_check(index, c, memo) for c in policy.node_cel if not c.reads_workload_data
    ]
    allowed = index.all
    for check in checks:
        allowed &= check.allowed
    return memo.remember(memo.policy_checks, policy.node_key, PolicyChecks(tuple(checks), allowed))


# -- the workload rules, which read no node -------------------------------------------


def workload_verdict(condition: CelCondition, scope: CelScope, memo: Memo) -> conditions.Verdict:
    """What a workload condition says of the decision's workload, once per distinct input."""
    key = scope.key(condition)
    verdicts = memo.verdicts[condition]
    verdict = verdicts.get(key)
    if verdict is None:
        verdict = memo.remember(
            verdicts, key, conditions.run(condition.program, scope.context(condition))
        )
    return verdict


def inside(zone: str | None, policy: CompiledPolicy, index: NodeIndex) -> bool:
    """Whether ``zone`` lies in one of the places the policy allows (compute zones, countries)."""
    if zone is None:
        return False
    if not policy.compute_zones.isdisjoint(index.ancestors(zone)):
        return True
    return index.country_of(zone) in policy.compute_countries
