"""Decisions: which policies select a workload, the plan for it, and the verdict in words.

A decision has two parts. The *plan* is everything worked out from the workload, the
policy set and the index: the selected policies, what each finds wrong with the
workload itself, every node check, and the masks that follow (the baseline candidates,
the eligible nodes, what each check excluded). It is remembered in the caller's
``Memo`` per workload content, so a workload submitted again skips all of it. The
*verdict* is then put in words for each call: the reasons, the eligible node ids and
the ``Decision``, which records the enforcement point.

The plan also holds the decision's ``Explanation`` (every policy of the set: selected,
with each rule's result, or not, with the selector field that said no), built once with
the plan, so a workload seen before gets it for nothing; ``evaluate_node`` adds its one
node's results to the parts kept per plan.
"""

from collections.abc import Collection, Sequence
from typing import Any, NamedTuple

from control_plane.domain.classification import Classification
from control_plane.domain.decisions import (
    DecisionOutcome,
    EnforcementAction,
    EnforcementPoint,
    RuleResult,
)
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
    output_reason,
    ownership_reasons,
    plural,
    residency_reasons,
    unselected_reason,
    workload_cel_reason,
)
from control_plane.policy.engine.scope import CelScope
from control_plane.policy.models import (
    DataAssetView,
    Decision,
    Explanation,
    ModelView,
    Reason,
    RuleCheck,
    SelectedPolicy,
    UnselectedPolicy,
    WorkloadView,
)

_DENY = EnforcementAction.DENY
_PASSED = RuleResult.PASSED
_FAILED = RuleResult.FAILED
_WARNED = RuleResult.WARNED
_NOT_CHECKED = RuleResult.NOT_CHECKED
#: What a rule that does not hold finds, by its policy's action: only deny fails.
_BROKEN = {
    EnforcementAction.DENY: _FAILED,
    EnforcementAction.WARN: _WARNED,
    EnforcementAction.DRYRUN: _WARNED,
}

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


#: Why a policy did not select a workload: the selector field that did not match, and
#: what the workload had instead (its tenant, its classifications, its highest one, or
#: whether it names any dataset or model), hashable, so the words are made once.
Unselection = tuple[CompiledPolicy, str, Any]


def _classes_words(classes: Collection[Classification]) -> str:
    if not classes:
        return "a workload naming no dataset or model"
    ordered: list[Classification] = sorted(classes, key=lambda c: c.rank)
    return ", ".join(ordered)


def why_not(policy: CompiledPolicy, selector_field: str, detail: Any) -> str:
    """The words for an ``Unselection``: the selector field and what did not match it."""
    words = policy.selector_words[selector_field]
    if selector_field == "tenants":
        return f"{words} did not match tenant {detail}"
    if selector_field == "classifications":
        return f"{words} did not match {_classes_words(detail)}"
    if selector_field == "min_classification":
        return f"{words} did not match {_classes_words(() if detail is None else (detail,))}"
    kind = "dataset" if selector_field == "dataset_labels" else "model"
    if detail:
        return f"{words} matched no {kind} of the workload"
    return f"{words} did not match: it names no {kind}"


def select(
    workload: WorkloadView, policy_set: PolicySet
) -> tuple[list[CompiledPolicy], list[Unselection]]:
    """The policies that select ``workload`` (in name order), and the others with why not.

    Why not: the first selector field, in the order tenants, classifications,
    min_classification, dataset labels, model labels, that did not match, with what the
    workload had instead; ``why_not`` puts it in words (``selector classifications
    [restricted] did not match internal``).
    """
    classes: set[Classification] | None = None
    frozen: frozenset[Classification] | None = None
    highest: Classification | None = None
    dataset_labels: list[frozenset[tuple[str, str]]] | None = None
    model_labels: list[frozenset[tuple[str, str]]] | None = None
    selected: list[CompiledPolicy] = []
    unselected: list[Unselection] = []
    for policy in policy_set.policies:
        if not policy.selects_all:
            if policy.tenants and workload.tenant not in policy.tenants:
                unselected.append((policy, "tenants", workload.tenant))
                continue
            if policy.classifications or policy.min_rank is not None:
                if classes is None:
                    classes = {d.classification for d in workload.datasets}
                    classes.update(m.classification for m in workload.models)
                if policy.classifications and policy.classifications.isdisjoint(classes):
                    frozen = frozen or frozenset(classes)
                    unselected.append((policy, "classifications", frozen))
                    continue
                if policy.min_rank is not None:
                    highest = highest or Classification.highest(classes)
                    if highest is None or highest.rank < policy.min_rank:
                        unselected.append((policy, "min_classification", highest))
                        continue
            if policy.dataset_labels:
                if dataset_labels is None:
                    dataset_labels = [frozenset(d.labels.items()) for d in workload.datasets]
                if not _carries(dataset_labels, policy.dataset_labels):
                    unselected.append((policy, "dataset_labels", bool(dataset_labels)))
                    continue
            if policy.model_labels:
                if model_labels is None:
                    model_labels = [frozenset(m.labels.items()) for m in workload.models]
                if not _carries(model_labels, policy.model_labels):
                    unselected.append((policy, "model_labels", bool(model_labels)))
                    continue
        selected.append(policy)
    return selected, unselected


def selected_policies(workload: WorkloadView, policy_set: PolicySet) -> list[CompiledPolicy]:
    """The policies whose selectors match ``workload``, in evaluation order (by name)."""
    return select(workload, policy_set)[0]


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

    ``explanation`` is what ``decide`` records of the set (see ``Explanation``);
    ``workload_checks`` are, per selected policy, its workload rules' results, which
    ``evaluate_node`` adds its node's results to. ``unselected`` is the denial for a
    workload on data above ``public`` that no policy selects, given only when the caller
    asks for it (``deny_unselected``).

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
    explanation: Explanation
    workload_checks: tuple[tuple[RuleCheck, ...], ...]
    unselected: Reason | None


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
    found = [output_reason(policy)] if policy.require_output and workload.output is None else []
    if policy.data_residency:
        found += residency_reasons(policy, workload, index)
    for condition in policy.workload_cel:
        verdict = workload_verdict(condition, scope, memo)
        if not verdict.passed:
            found.append(workload_cel_reason(policy, condition, verdict))
    return tuple(found)


def _check(memo: Memo, rule: str, result: RuleResult) -> RuleCheck:
    """The one ``RuleCheck`` of ``rule`` with ``result`` and no count, kept in ``memo``.

    Explanations are made of few shared objects: a frozen dataclass costs most of a
    microsecond to make, and a plan names every rule of every selected policy.
    """
    key = (rule, result)
    found = memo.rule_checks.get(key)
    if found is None:
        found = memo.remember(memo.rule_checks, key, RuleCheck(rule, result))
    return found


def _passed(
    policy: CompiledPolicy, own: tuple[NodeCheck, ...], memo: Memo
) -> tuple[tuple[RuleCheck, ...], SelectedPolicy]:
    """The policy's workload rules all passed, and its explanation when every rule passed.

    Kept in ``memo`` per policy: its rules (the workload rules, and its node checks,
    named alike on every index) do not change from one workload to the next.
    """
    found = memo.passed.get(policy)
    if found is None:
        workload_rules = tuple(_check(memo, rule, _PASSED) for rule in policy.workload_rules)
        every = workload_rules + tuple(_check(memo, check.rule, _PASSED) for check in own)
        explained = SelectedPolicy(
            policy.name, policy.version, policy.content_hash, policy.action, every
        )
        found = memo.remember(memo.passed, policy, (workload_rules, explained))
    return found


def _workload_checks(
    policy: CompiledPolicy, found: tuple[Reason, ...], memo: Memo
) -> tuple[RuleCheck, ...]:
    """The results of the policy's workload rules, given what it ``found`` (not nothing)."""
    broken = {reason.rule for reason in found}
    bad = _BROKEN[policy.action]
    return tuple(
        _check(memo, rule, bad if rule in broken else _PASSED) for rule in policy.workload_rules
    )


def _explain(
    policy: CompiledPolicy,
    rules: tuple[RuleCheck, ...],
    own: tuple[NodeCheck, ...],
    baseline: int,
    eligible: int,
    denied: bool,
    memo: Memo,
) -> SelectedPolicy:
    """The policy's explanation when a rule did not pass: ``rules`` and each node check's.

    A deny node check fails when it excluded some of the ``baseline`` nodes and nothing
    is ``eligible``, and is not checked when the baseline left no node; a warn or dryrun
    one is warned about when it would exclude eligible nodes, and is not checked on a
    ``denied`` workload (as ``decide`` reports them).
    """
    nodes: list[RuleCheck] = []
    for check in own:
        if policy.action is _DENY:
            excluded = baseline & ~check.allowed
            if not baseline:
                nodes.append(_check(memo, check.rule, _NOT_CHECKED))
            elif excluded and not eligible:
                nodes.append(RuleCheck(check.rule, _FAILED, excluded.bit_count()))
            else:
                nodes.append(_check(memo, check.rule, _PASSED))
            continue
        violating = eligible & ~check.allowed
        if denied:
            nodes.append(_check(memo, check.rule, _NOT_CHECKED))
        elif violating:
            nodes.append(RuleCheck(check.rule, _WARNED, violating.bit_count()))
        else:
            nodes.append(_check(memo, check.rule, _PASSED))
    return SelectedPolicy(
        policy.name, policy.version, policy.content_hash, policy.action, (*rules, *nodes)
    )


def _unselected(unselection: Unselection, memo: Memo) -> UnselectedPolicy:
    """The policy as not selected, in words; kept in ``memo``, as workloads repeat why."""
    found = memo.unselected.get(unselection)
    if found is None:
        policy, selector_field, detail = unselection
        explained = UnselectedPolicy(
            policy.name,
            policy.version,
            policy.content_hash,
            why_not(policy, selector_field, detail),
        )
        found = memo.remember(memo.unselected, unselection, explained)
    return found


def _unselected_denial(workload: WorkloadView) -> Reason | None:
    """The denial for a workload no policy selects, if its data is above ``public``."""
    assets: list[DataAssetView | ModelView] = [*workload.datasets, *workload.models]
    if not assets:
        return None
    top = max(assets, key=lambda asset: asset.classification.rank)
    if top.classification is Classification.PUBLIC:
        return None
    return unselected_reason(top)


def _work_out(workload: WorkloadView, index: NodeIndex, policy_set: PolicySet, memo: Memo) -> Plan:
    """The plan for ``workload``, worked out; its parts still come from ``memo`` if there."""
    scope = CelScope(workload, index, policy_set)
    baseline = candidates(index, workload, memo)
    eligible = baseline
    selected, unselected = select(workload, policy_set)
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
    explained: list[SelectedPolicy] = []
    workload_checks: list[tuple[RuleCheck, ...]] = []
    for policy, found, own in zip(selected, finds, checks, strict=True):
        passed_rules, all_passed = _passed(policy, own, memo)
        rules = _workload_checks(policy, found, memo) if found else passed_rules
        workload_checks.append(rules)
        # The usual explanation is the policy's all-passed one, shared by every plan; the
        # node checks' results are put in words only when one of them did not pass.
        clean = not found
        if policy.action is _DENY:
            if not eligible:
                for check in own:
                    excluded = baseline & ~check.allowed
                    if excluded:
                        exclusions += ((policy, check, excluded),)
                clean = False
        else:
            violations: tuple[tuple[NodeCheck, int], ...] = ()
            if not denied:
                for check in own:
                    violating = eligible & ~check.allowed
                    if violating:
                        violations += ((check, violating),)
            if found or violations:
                soft += ((policy, found, violations),)
            clean = clean and not denied and not violations
        explained.append(
            all_passed
            if clean or (not own and not found)
            else _explain(policy, rules, own, baseline, eligible, denied, memo)
        )
    explanation = Explanation(
        tuple(explained), tuple([_unselected(unselection, memo) for unselection in unselected])
    )
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
        explanation,
        tuple(workload_checks),
        None if selected else _unselected_denial(workload),
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
    deny_unselected: bool = False,
) -> Decision:
    """Decide whether ``workload`` may run, and on which of the indexed nodes.

    See ``decide_with_mask``, which this calls, for the rules, ``cache`` and
    ``deny_unselected``.
    """
    return decide_with_mask(
        workload, index, policy_set, point=point, cache=cache, deny_unselected=deny_unselected
    )[0]


def decide_with_mask(
    workload: WorkloadView,
    index: NodeIndex,
    policy_set: PolicySet,
    *,
    point: EnforcementPoint,
    cache: DecisionCache,
    deny_unselected: bool = False,
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

    ``deny_unselected``: deny a workload that no policy of the set selects when its most
    sensitive dataset or model is classified above ``public`` (the
    ``default_deny_unselected`` reason), for sites where "no policy applies" must not
    mean "allowed". A workload naming no dataset or model, or only public ones, is not
    affected. The decision's ``explanation`` then lists no selected policy.
    """
    plan = _plan(workload, index, policy_set, cache.memo(index, policy_set))
    eligible = plan.eligible
    denied = plan.denied
    reasons = list(plan.denials)
    if deny_unselected and plan.unselected is not None:
        denied = True
        reasons.append(plan.unselected)
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
        explanation=plan.explanation,
    ), (0 if denied else eligible)


def evaluate_node(
    workload: WorkloadView,
    node_id: str,
    index: NodeIndex,
    policy_set: PolicySet,
    *,
    cache: DecisionCache,
    point: EnforcementPoint = EnforcementPoint.SWEEP,
    deny_unselected: bool = False,
) -> Decision:
    """Whether a workload already placed on ``node_id`` is still compliant, and why not.

    For the re-evaluation sweep: the same policies and rules as ``decide``, the
    ``ownership`` rule included, applied to one node of the index, without the placement
    baseline (the workload already holds its GPUs, and a status such as ``maintenance``
    is not itself a policy violation; ``exclude_quarantined`` still is). ``denied`` means
    the placement breaks a deny policy, or uses another tenant's data without a grant,
    now; ``eligible_node_ids`` is ``[node_id]`` otherwise. ``cache`` as for ``decide``:
    the sweep judges thousands of workloads on one index with one cache.
    ``deny_unselected`` as for ``decide_with_mask``. The explanation's node rules are
    this node's results (``nodes_excluded`` ``None``).
    """
    position = index.position(node_id)
    bit = 1 << position
    hostname = index.nodes[position].hostname
    plan = _plan(workload, index, policy_set, cache.memo(index, policy_set))
    reasons: list[Reason] = ownership_reasons(workload)
    for policy, found, checks in zip(plan.policies, plan.finds, plan.checks, strict=True):
        reasons += found
        for check in checks:
            if not check.allowed & bit:
                reasons.append(node_reason(index, policy, check, workload, bit, f"node {hostname}"))
    if deny_unselected and plan.unselected is not None:
        reasons.append(plan.unselected)
    denied = any(reason.action is EnforcementAction.DENY for reason in reasons)
    return Decision(
        outcome=_outcome(denied, reasons),
        reasons=reasons,
        eligible_node_ids=[] if denied else [node_id],
        policy_set_version=policy_set.version,
        policy_set_hash=policy_set.content_hash,
        point=point,
        explanation=_explained_on(plan, cache.memo(index, policy_set), bit),
    )


def _explained_on(plan: Plan, memo: Memo, bit: int) -> Explanation:
    """The plan's explanation with each node rule's result on the one node ``bit`` names.

    What a workload on that node records (admission) or is judged by (the sweep): a policy
    whose every rule passed there shares its all-passed explanation; the others list
    each rule's result on that node (``nodes_excluded`` ``None``).
    """
    explained: list[SelectedPolicy] = []
    for policy, found, checks, rules in zip(
        plan.policies, plan.finds, plan.checks, plan.workload_checks, strict=True
    ):
        if not found and all(check.allowed & bit for check in checks):
            explained.append(_passed(policy, checks, memo)[1])
            continue
        nodes = tuple(
            _check(memo, check.rule, _PASSED if check.allowed & bit else _BROKEN[policy.action])
            for check in checks
        )
        explained.append(
            SelectedPolicy(
                policy.name, policy.version, policy.content_hash, policy.action, (*rules, *nodes)
            )
        )
    return Explanation(tuple(explained), plan.explanation.not_selected)


class Placed(NamedTuple):
    """The verdict on a placement made, and what applied only to the nodes not chosen.

    ``decision`` is the chosen node's: exactly what ``evaluate_node`` says of the workload
    on it (so admission records what compliance will find), at the caller's point.
    ``others`` counts the other eligible nodes; ``elsewhere`` holds the warn and dryrun
    node findings against some of them and not the chosen one, each saying how many of
    the ``others`` it concerns. They describe nodes the workload does not use, so they
    never make the outcome ``admitted_with_warnings``.
    """

    decision: Decision
    others: int
    elsewhere: list[Reason]


def evaluate_placement(
    workload: WorkloadView,
    node_id: str,
    index: NodeIndex,
    policy_set: PolicySet,
    *,
    point: EnforcementPoint,
    cache: DecisionCache,
) -> Placed:
    """The verdict to record for ``workload`` placed on ``node_id``, one of its eligible nodes.

    ``decide`` speaks of every eligible node at once ("2 of 20 eligible nodes" are of the
    wrong kind); once a node is chosen, the recorded outcome and reasons must be those
    of that node, and the rest is about nodes the workload did not use. Works from the
    same remembered plan as ``decide``, so it costs a few bit operations per warn or
    dryrun policy with something to say. ``NotFoundError`` when the index has no such
    node, ``ValueError`` when the workload may not be placed on it (the caller chose a
    node ``decide`` did not give).
    """
    plan = _plan(workload, index, policy_set, cache.memo(index, policy_set))
    position = index.position(node_id)
    bit = 1 << position
    if plan.denied or not plan.eligible & bit:
        raise ValueError(f"node {node_id} is not eligible for this workload")
    # What ``evaluate_node`` finds on an eligible node, read off the plan: every deny
    # policy passes there (it is eligible), so only the warn and dryrun policies with
    # something to say (``plan.soft``) speak, in the same order and words; their checks
    # that fail on this node are among their violations, since the node is eligible. A
    # unit test holds the two equal on every eligible node of a random fleet.
    hostname = index.nodes[position].hostname
    others = plan.eligible & ~bit
    total = others.bit_count()
    reasons: list[Reason] = []
    elsewhere: list[Reason] = []
    for policy, findings, violations in plan.soft:
        reasons += findings
        for check, violating in violations:
            if violating & bit:
                scope = f"node {hostname}"
                reasons.append(node_reason(index, policy, check, workload, bit, scope))
            violating &= others
            if violating:
                scope = (
                    f"{violating.bit_count()} of {plural(total, 'other eligible node')}"
                    f"{hosts(index, violating)}"
                )
                elsewhere.append(node_reason(index, policy, check, workload, violating, scope))
    decision = Decision(
        outcome=_outcome(False, reasons),
        reasons=reasons,
        eligible_node_ids=[node_id],
        policy_set_version=policy_set.version,
        policy_set_hash=policy_set.content_hash,
        point=point,
        explanation=_explained_on(plan, cache.memo(index, policy_set), bit),
    )
    return Placed(decision, total, elsewhere)
