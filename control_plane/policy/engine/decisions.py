"""Decisions: which policies select a workload, the plan for it, and the verdict in words.

A decision has two parts. The *plan* is everything worked out from the workload, the
policy set and the index: the selected policies, what each finds wrong with the
workload itself, every node check, and the masks that follow (the baseline candidates,
the eligible nodes, what each check excluded). It is remembered in the caller's
``Memo`` per workload content, so a workload submitted again skips all of it. The
*verdict* is then put in words for each call: the reasons, the eligible node ids and
the ``Decision``, which records the enforcement point.
"""

from collections.abc import Sequence
from typing import Any, NamedTuple

from control_plane.domain.decisions import DecisionOutcome, EnforcementAction, EnforcementPoint
from control_plane.policy.documents import CompiledPolicy, PolicySet
from control_plane.policy.engine.cache import DecisionCache, Memo
from control_plane.policy.engine.checks import (
    NodeCheck,
    candidates,
    dynamic_cel_check,
    policy_checks,
    workload_verdict,
)
from control_plane.policy.engine.index import NodeIndex
from control_plane.policy.engine.reasons import (
    baseline_reasons,
    hosts,
    node_reason,
    ownership_reasons,
    plural,
    residency_reasons,
    workload_cel_reason,
)
from control_plane.policy.engine.scope import CelScope
from control_plane.policy.models import DataAssetView, Decision, ModelView, Reason, WorkloadView

_DENY = EnforcementAction.DENY

# -- which policies apply --------------------------------------------------------------


def _carries(
    label_sets: list[frozenset[tuple[str, str]]], wanted: frozenset[tuple[str, str]]
) -> bool:
    """Whether one of ``label_sets`` has every label in ``wanted``."""
    # A plain loop: any() over a generator costs more than the comparison, per policy.
    for labels in label_sets:  # noqa: SIM110
        if wanted <= labels:
            return True
    return False


def selected_policies(workload: WorkloadView, policy_set: PolicySet) -> list[CompiledPolicy]:
    """The policies whose selectors match ``workload``, in evaluation order (by name)."""
    classes: set[str] | None = None
    dataset_labels: list[frozenset[tuple[str, str]]] | None = None
    model_labels: list[frozenset[tuple[str, str]]] | None = None
    selected = []
    for policy in policy_set.policies:
        if not policy.selects_all:
            if policy.tenants and workload.tenant not in policy.tenants:
                continue
            if policy.classifications:
                if classes is None:
                    classes = {str(d.classification) for d in workload.datasets}
                    classes.update(str(m.classification) for m in workload.models)
                if policy.classifications.isdisjoint(classes):
                    continue
            if policy.dataset_labels:
                if dataset_labels is None:
                    dataset_labels = [frozenset(d.labels.items()) for d in workload.datasets]
                if not _carries(dataset_labels, policy.dataset_labels):
                    continue
            if policy.model_labels:
                if model_labels is None:
                    model_labels = [frozenset(m.labels.items()) for m in workload.models]
                if not _carries(model_labels, policy.model_labels):
                    continue
        selected.append(policy)
    return selected


# -- the plan: what a decision works out from the workload, the set and the index ------


#: A node check of a policy and the nodes it excludes (or would exclude).
_Exclusion = tuple[CompiledPolicy, NodeCheck, int]
#: A warn or dryrun policy with something to say: its findings on the workload, and its
#: checks that would exclude eligible nodes, with those nodes.
_Soft = tuple[CompiledPolicy, tuple[Reason, ...], tuple[tuple[NodeCheck, int], ...]]


class Plan(NamedTuple):
    """Everything a decision works out from the workload, the policy set and the index.

    ``policies`` are the selected ones in evaluation order, with (at the same positions)
    what each ``finds`` wrong with the workload itself and its node ``checks``; that is
    what ``evaluate_node`` reads. ``candidates`` are the nodes the baseline leaves
    (active, with the GPUs asked for), ``eligible`` what every deny policy's node checks
    leave of them, ``denials`` the deny policies' findings; ``denied`` follows from those
    two. When nothing is eligible, ``exclusions`` holds each deny policy's checks with
    the candidates each excluded. ``soft`` holds the warn and dryrun policies that have
    something to say: their findings and, unless denied, their checks with the eligible
    nodes each would have excluded.

    Remembered per index and set (``Memo.plans``) under the workload's content
    (``_content``), so a workload seen before is decided with no selection, no CEL and no
    mask arithmetic; only the words and the ``Decision`` are made again. Up to 4,096 of
    them live on, so a plan is made of few objects: a named tuple, parallel tuples
    rather than one per policy, and nothing for a policy with nothing to say. Each
    object a plan keeps is one more for the garbage collector to walk on every pass.
    """

    policies: tuple[CompiledPolicy, ...]
    finds: tuple[tuple[Reason, ...], ...]
    checks: tuple[tuple[NodeCheck, ...], ...]
    candidates: int
    eligible: int
    denied: bool
    denials: tuple[Reason, ...]
    exclusions: tuple[_Exclusion, ...]
    soft: tuple[_Soft, ...]


def _asset_content(asset: DataAssetView) -> tuple[Any, ...]:
    return (
        asset.name,
        asset.classification,
        asset.tenant,
        tuple(asset.granted_to),
        tuple(asset.storage_zones),
        *asset.labels.items(),
    )


def _model_content(model: ModelView) -> tuple[Any, ...]:
    return (
        model.name,
        model.classification,
        model.supplier,
        model.origin_country,
        model.license,
        model.tenant,
        tuple(model.granted_to),
        tuple(model.storage_zones),
        *model.labels.items(),
    )


def _content(workload: WorkloadView) -> tuple[Any, ...]:
    """Every field of ``workload`` as one hashable value: equal only for equal workloads.

    Label order is kept, so the same labels in another order only miss the memory.
    """
    output = workload.output
    return (
        workload.tenant,
        tuple(map(_asset_content, workload.datasets)),
        tuple(map(_model_content, workload.models)),
        None if output is None else (output.name, output.zone),
        workload.gpu_count,
        workload.gpu_model,
        workload.min_gpu_memory_bytes,
        workload.mig_profile,
        *workload.labels.items(),
    )


def _workload_findings(
    policy: CompiledPolicy, workload: WorkloadView, index: NodeIndex, scope: CelScope, memo: Memo
) -> tuple[Reason, ...]:
    """What the policy finds wrong with the workload itself, whatever node it runs on."""
    found = residency_reasons(policy, workload, index) if policy.data_residency else []
    for condition in policy.workload_cel:
        verdict = workload_verdict(condition, scope, memo)
        if not verdict.passed:
            found.append(workload_cel_reason(policy, condition, verdict))
    return tuple(found)


def _work_out(workload: WorkloadView, index: NodeIndex, policy_set: PolicySet, memo: Memo) -> Plan:
    """The plan for ``workload``, worked out; its parts still come from ``memo`` if there."""
    scope = CelScope(workload, index, policy_set)
    baseline = candidates(index, workload, memo)
    eligible = baseline
    selected = selected_policies(workload, policy_set)
    finds: list[tuple[Reason, ...]] = []
    checks: list[tuple[NodeCheck, ...]] = []
    # Another tenant's data without a grant is denied before, and whatever, any policy says.
    denials: list[Reason] = ownership_reasons(workload)
    for policy in selected:
        found = (
            _workload_findings(policy, workload, index, scope, memo)
            if policy.judges_workload
            else ()
        )
        static = memo.policy_checks.get(policy.node_key) or policy_checks(index, policy, memo)
        own, allowed = static.checks, static.allowed
        if policy.workload_node_cel:
            dynamic = tuple(
                dynamic_cel_check(index, c, scope, memo) for c in policy.workload_node_cel
            )
            for check in dynamic:
                allowed &= check.allowed
            own += dynamic
        finds.append(found)
        checks.append(own)
        if policy.action is _DENY:
            denials += found
            eligible &= allowed
    denied = bool(denials) or not eligible
    # Plain loops, and tuples grown only when something is found: this runs for every
    # new workload, where a generator or a list per policy costs more than the checks.
    exclusions: tuple[_Exclusion, ...] = ()
    soft: tuple[_Soft, ...] = ()
    for policy, found, own in zip(selected, finds, checks, strict=True):
        if policy.action is _DENY:
            if not eligible:
                for check in own:
                    excluded = baseline & ~check.allowed
                    if excluded:
                        exclusions += ((policy, check, excluded),)
            continue
        violations: tuple[tuple[NodeCheck, int], ...] = ()
        if not denied:
            for check in own:
                violating = eligible & ~check.allowed
                if violating:
                    violations += ((check, violating),)
        if found or violations:
            soft += ((policy, found, violations),)
    # Positional: a named tuple made by keyword costs twice as much.
    return Plan(
        tuple(selected),
        tuple(finds),
        tuple(checks),
        baseline,
        eligible,
        denied,
        tuple(denials),
        exclusions,
        soft,
    )


def _plan(workload: WorkloadView, index: NodeIndex, policy_set: PolicySet, memo: Memo) -> Plan:
    """The plan for ``workload``: remembered if it was seen before, else worked out and kept."""
    key: tuple[Any, ...] | None = _content(workload)
    try:
        plan = memo.plans.get(key)  # type: ignore[arg-type]
    except TypeError:  # a label value that cannot be hashed: work it out every time
        plan, key = None, None
    if plan is not None:
        return plan
    plan = _work_out(workload, index, policy_set, memo)
    if key is not None:
        memo.remember(memo.plans, key, plan)
    return plan


# -- the verdict -----------------------------------------------------------------------


def _outcome(denied: bool, reasons: Sequence[Reason]) -> DecisionOutcome:
    if denied:
        return DecisionOutcome.DENIED
    if any(reason.action is EnforcementAction.WARN for reason in reasons):
        return DecisionOutcome.ADMITTED_WITH_WARNINGS
    return DecisionOutcome.ADMITTED


def decide(
    workload: WorkloadView,
    index: NodeIndex,
    policy_set: PolicySet,
    *,
    point: EnforcementPoint,
    cache: DecisionCache,
) -> Decision:
    """Decide whether ``workload`` may run, and on which of the indexed nodes.

    See ``decide_with_mask``, which this calls, for the rules and for ``cache``.
    """
    return decide_with_mask(workload, index, policy_set, point=point, cache=cache)[0]


def decide_with_mask(
    workload: WorkloadView,
    index: NodeIndex,
    policy_set: PolicySet,
    *,
    point: EnforcementPoint,
    cache: DecisionCache,
) -> tuple[Decision, int]:
    """Decide whether ``workload`` may run, and on which of the indexed nodes.

    Denied when the workload names a dataset or model of another tenant without a grant
    in force (the ``ownership`` rule, before any policy), when a deny policy's workload
    rule fails, or when no node is left after the baseline (active, enough free GPUs)
    and every deny policy's node rules; then each policy and rule that excluded nodes
    says how many and where. Warn and dryrun policies
    add reasons but never change which nodes are eligible; their node rules are reported
    against the eligible nodes (how many of them they would have excluded).

    Also returns the eligible nodes as a bitmask over ``index`` (bit ``i`` is
    ``index.nodes[i]``; 0 when denied), for callers that keep working with the index, such
    as placement, without turning thousands of ids back into positions.

    ``cache`` is what the decision may reuse and adds to (see ``DecisionCache``). It is
    required rather than made afresh when left out, so that every caller says how long
    what decisions work out is kept: a decision on an empty cache is just as right, but
    works out every policy's node masks over the whole fleet again (about half a
    millisecond at 5,000 nodes, against microseconds), and a cache forgotten on a hot
    path would show only as slowness. Pass the one cache of the process, worker or run.
    """
    plan = _plan(workload, index, policy_set, cache.memo(index, policy_set))
    eligible = plan.eligible
    denied = plan.denied
    reasons = list(plan.denials)
    if not eligible:
        reasons += baseline_reasons(index, workload, plan.candidates)
        for policy, check, excluded in plan.exclusions:
            scope = f"{plural(excluded.bit_count())} excluded{hosts(index, excluded)}"
            reasons.append(node_reason(index, policy, check, workload, excluded, scope))
    total = 0 if denied else eligible.bit_count()
    for policy, findings, violations in plan.soft:
        reasons += findings
        for check, violating in violations:
            scope = (
                f"{violating.bit_count()} of {plural(total, 'eligible node')}"
                f"{hosts(index, violating)}"
            )
            reasons.append(node_reason(index, policy, check, workload, violating, scope))
    return Decision(
        outcome=_outcome(denied, reasons),
        reasons=reasons,
        eligible_node_ids=[] if denied else index.ids_of(eligible),
        policy_set_version=policy_set.version,
        policy_set_hash=policy_set.content_hash,
        point=point,
    ), (0 if denied else eligible)


def evaluate_node(
    workload: WorkloadView,
    node_id: str,
    index: NodeIndex,
    policy_set: PolicySet,
    *,
    cache: DecisionCache,
    point: EnforcementPoint = EnforcementPoint.SWEEP,
) -> Decision:
    """Whether a workload already placed on ``node_id`` is still compliant, and why not.

    For the re-evaluation sweep: the same policies and rules as ``decide``, the
    ``ownership`` rule included, applied to one node of the index, without the placement
    baseline (the workload already holds its GPUs, and a status such as ``maintenance``
    is not itself a policy violation; ``exclude_quarantined`` still is). ``denied`` means
    the placement breaks a deny policy, or uses another tenant's data without a grant,
    now; ``eligible_node_ids`` is ``[node_id]`` otherwise. ``cache`` as for ``decide``:
    the sweep judges thousands of workloads on one index with one cache.
    """
    position = index.position(node_id)
    bit = 1 << position
    hostname = index.nodes[position].hostname
    plan = _plan(workload, index, policy_set, cache.memo(index, policy_set))
    reasons: list[Reason] = ownership_reasons(workload)
    for policy, found, checks in zip(plan.policies, plan.finds, plan.checks, strict=True):
        reasons += found
        reasons += [
            node_reason(index, policy, check, workload, bit, f"node {hostname}")
            for check in checks
            if not check.allowed & bit
        ]
    denied = any(reason.action is EnforcementAction.DENY for reason in reasons)
    return Decision(
        outcome=_outcome(denied, reasons),
        reasons=reasons,
        eligible_node_ids=[] if denied else [node_id],
        policy_set_version=policy_set.version,
        policy_set_hash=policy_set.content_hash,
        point=point,
    )
