"""The words of decisions: every ``Reason`` the engine gives, and how it says where.

A reason names the policy, the rule and the enforcement action, and says in one sentence
what is wrong and where: how many nodes a rule excluded, in which zones or of which
origins (counted per value), the hostnames when there are few enough to read, and the
requirement in the policy author's words. Dry-run findings lead with ``dry run:``;
warn policies "warn against" what deny policies "forbid".
"""

from collections.abc import Mapping
from typing import Any

from control_plane.domain.decisions import EnforcementAction
from control_plane.policy import conditions
from control_plane.policy.documents import CelCondition, CompiledPolicy
from control_plane.policy.engine.checks import NodeCheck, inside
from control_plane.policy.engine.index import NodeIndex
from control_plane.policy.models import DataAssetView, ModelView, Reason, WorkloadView

#: At most this many values (zones, origins, hostnames) are named in one reason.
_MAX_NAMED = 4
_GIB = 1024**3
_VERB = {
    EnforcementAction.DENY: "forbids",
    EnforcementAction.WARN: "warns against",
    EnforcementAction.DRYRUN: "would forbid",
}
_PREFIX = {
    EnforcementAction.DENY: "",
    EnforcementAction.WARN: "",
    EnforcementAction.DRYRUN: "dry run: ",
}


def plural(count: int, noun: str = "node") -> str:
    """``1 node``, ``2 nodes``."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def hosts(index: NodeIndex, mask: int) -> str:
    """The hostnames in ``mask`` when there are few enough to read, else nothing."""
    if mask.bit_count() > _MAX_NAMED:
        return ""
    return ": " + ", ".join(index.node(node_id).hostname for node_id in index.ids_of(mask))


def _named_values(index: NodeIndex, breakdown: str, excluded: int) -> str:
    """Where the excluded nodes are (or where they come from), with counts when several."""
    table: Mapping[Any, int]
    if breakdown == "zone":
        table, unnamed = index.by_zone, "no zone"
    elif breakdown == "origin":
        table, unnamed = index.by_origin, "unknown origin"
    elif breakdown == "provenance":
        table, unnamed = index.by_provenance, "unknown"
    elif breakdown.startswith("component:"):
        component = breakdown.removeprefix("component:")
        table = {c: m for (k, c), m in index.by_component.items() if k == component}
        unnamed = "unknown origin"
    else:
        return ""
    counts = sorted(
        (
            (str(value) if value is not None else unnamed, (mask & excluded).bit_count())
            for value, mask in table.items()
            if mask & excluded
        ),
        key=lambda item: (-item[1], item[0]),
    )
    if len(counts) == 1:
        return f" {counts[0][0]}"
    named = ", ".join(f"{value} ({count})" for value, count in counts[:_MAX_NAMED])
    rest = len(counts) - _MAX_NAMED
    return f" {named}" + (f" and {rest} more" if rest > 0 else "")


def _data_context(policy: CompiledPolicy, workload: WorkloadView) -> str:
    """Which dataset brings a policy into play, for compute reasons: where it is stored."""
    if not workload.datasets or not (
        policy.data_residency
        or policy.classifications
        or policy.min_rank is not None
        or policy.dataset_labels
    ):
        return ""
    chosen = next(
        (
            d
            for d in workload.datasets
            if (not policy.classifications or d.classification in policy.classifications)
            and (policy.min_rank is None or d.classification.rank >= policy.min_rank)
            and all(d.labels.get(k) == v for k, v in policy.dataset_labels)
        ),
        workload.datasets[0],
    )
    where = ", ".join(chosen.storage_zones) or "no recorded zone"
    return f"dataset {chosen.name} is stored in {where}; "


def node_reason(
    index: NodeIndex,
    policy: CompiledPolicy,
    check: NodeCheck,
    workload: WorkloadView,
    excluded: int,
    scope: str,
) -> Reason:
    """Why ``check`` of ``policy`` excluded the nodes ``excluded``; ``scope`` says how many."""
    context = _data_context(policy, workload) if check.rule == "compute_location" else ""
    values = _named_values(index, check.breakdown, excluded)
    requirement = check.requirement
    if check.broken:
        requirement += f"; could not evaluate on {plural(check.broken.bit_count())}: {check.error}"
    message = (
        f"{_PREFIX[policy.action]}{context}policy {policy.name} {_VERB[policy.action]} "
        f"{check.violation}{values} ({scope}; {requirement})"
    )
    return Reason(policy.name, check.rule, policy.action, message)


def residency_reasons(
    policy: CompiledPolicy, workload: WorkloadView, index: NodeIndex
) -> list[Reason]:
    """One reason per dataset, model and output the policy finds outside its places."""
    subjects: list[str] = []
    assets: list[tuple[str, DataAssetView | ModelView]] = [
        *(("dataset", d) for d in workload.datasets),
        *(("model", m) for m in workload.models),
    ]
    for kind, asset in assets:
        if not asset.storage_zones:
            subjects.append(f"{kind} {asset.name} has no recorded storage zone")
            continue
        outside = [z for z in asset.storage_zones if not inside(z, policy, index)]
        if outside:
            subjects.append(f"{kind} {asset.name} is stored in {', '.join(outside)}")
    output = workload.output
    if output is not None and not inside(output.zone, policy, index):
        where = f"is in {output.zone}" if output.zone else "has no recorded zone"
        subjects.append(f"output destination {output.name} {where}")
    action = policy.action
    return [
        Reason(
            policy.name,
            "data_residency",
            action,
            f"{_PREFIX[action]}{subject}; policy {policy.name} {_VERB[action]} data and"
            f" weights outside {policy.compute_places}",
        )
        for subject in subjects
    ]


def output_reason(policy: CompiledPolicy) -> Reason:
    """Why ``require_output`` of ``policy`` failed: the workload names no output destination."""
    action = policy.action
    return Reason(
        policy.name,
        "require_output",
        action,
        f"{_PREFIX[action]}the workload names no output destination; policy {policy.name}"
        f" {_VERB[action]} workloads whose results have no declared destination",
    )


def unselected_reason(top: DataAssetView | ModelView) -> Reason:
    """Why a workload that no policy selects is denied: its most sensitive asset, ``top``."""
    kind = "dataset" if isinstance(top, DataAssetView) else "model"
    return Reason(
        None,
        "default_deny_unselected",
        EnforcementAction.DENY,
        f"no policy selects this workload, and its {kind} {top.name} is classified"
        f" {top.classification}: workloads on data above public that no policy covers are"
        " denied (default_deny_unselected)",
    )


def workload_cel_reason(
    policy: CompiledPolicy, condition: CelCondition, verdict: conditions.Verdict
) -> Reason:
    """Why a workload condition of ``policy`` failed (or could not be evaluated)."""
    action = policy.action
    broke = f"could not evaluate: {verdict.error}; " if verdict.error else ""
    return Reason(
        policy.name,
        condition.rule,
        action,
        f"{_PREFIX[action]}policy {policy.name} {_VERB[action]} workloads failing"
        f" cel {condition.name} ({broke}{condition.requirement})",
    )


#: The rule of the reasons given, before any policy, for another tenant's dataset or model.
OWNERSHIP_RULE = "ownership"


def ownership_reasons(workload: WorkloadView) -> list[Reason]:
    """One denial per dataset or model of another tenant that the workload holds no grant on.

    Built in rather than a policy, so that no policy set (an empty one included) can let a
    tenant use what another owns: the owner, or a grant in force naming the workload's
    tenant, is the only way. An asset whose owner the caller does not know (``tenant``
    None) is not checked.
    """
    assets: list[tuple[str, DataAssetView | ModelView]] = [
        *(("dataset", d) for d in workload.datasets),
        *(("model", m) for m in workload.models),
    ]
    tenant = workload.tenant
    return [
        Reason(
            None,
            OWNERSHIP_RULE,
            EnforcementAction.DENY,
            f"{kind} {asset.name} belongs to tenant {asset.tenant}, and tenant {tenant} holds"
            f" no grant in force to use it",
        )
        for kind, asset in assets
        if asset.tenant is not None and asset.tenant != tenant and tenant not in asset.granted_to
    ]


def _gpu_request(workload: WorkloadView) -> str:
    qualifiers = []
    if workload.gpu_model:
        qualifiers.append(f"model {workload.gpu_model}")
    if workload.min_gpu_memory_bytes:
        qualifiers.append(f"at least {workload.min_gpu_memory_bytes / _GIB:g} GiB")
    if workload.mig_profile:
        slices = plural(workload.gpu_count, "MIG slice")
        where = f" on GPUs ({', '.join(qualifiers)})" if qualifiers else ""
        return f"{slices} of profile {workload.mig_profile}{where}"
    qualifiers.append("MIG off")
    return f"{plural(workload.gpu_count, 'GPU')} ({', '.join(qualifiers)})"


def baseline_reasons(index: NodeIndex, workload: WorkloadView, candidates: int) -> list[Reason]:
    """Why nodes were out before any policy: none at all, not active, or not enough GPUs.

    ``candidates`` are the nodes the baseline left (``checks.candidates``).
    """
    deny = EnforcementAction.DENY
    if not index.nodes:
        return [Reason(None, "nodes", deny, "no nodes to place on: the node set is empty")]
    reasons: list[Reason] = []
    active = index.active()
    inactive = index.all & ~active
    if inactive:
        states = sorted(
            f"{status}: {(mask & inactive).bit_count()}"
            for status, mask in index.by_status.items()
            if mask & inactive
        )
        message = f"{plural(inactive.bit_count())} excluded: not active ({', '.join(states)})"
        reasons.append(Reason(None, "node_status", deny, message))
    lacking = active & ~candidates
    if lacking:
        message = f"{plural(lacking.bit_count(), 'active node')} lack {_gpu_request(workload)}"
        reasons.append(Reason(None, "capacity", deny, message))
    return reasons
