"""The pure compliance evaluation: which running workloads a policy set denies, and what-if."""

import ast
from pathlib import Path
from typing import Any

import pytest

from control_plane.compliance.evaluation import (
    NODE_STATUS_RULE,
    REGISTRY_RULE,
    Assessment,
    RuleCount,
    RunningWorkload,
    assess,
    capacity_change,
    enforcements,
    what_if,
)
from control_plane.domain.decisions import (
    DecisionOutcome,
    EnforcementAction,
    EnforcementPoint,
    ViolationAction,
)
from control_plane.domain.fleet import DriftStatus, NodeStatus, ProvenanceStatus
from control_plane.policy.documents import PolicySet, compile_policy_set
from control_plane.policy.engine import DecisionCache, NodeIndex
from control_plane.policy.models import WorkloadView
from tests.unit.policy.builders import ZONES, dataset, node, policy, workload

SWEEP = EnforcementPoint.SWEEP
DENY, WARN = EnforcementAction.DENY, EnforcementAction.WARN

#: Two nodes in Japan, one in Taiwan, one Japanese node whose origin is only declared,
#: and a drifted (quarantined) Japanese node.
NODES = (
    node("jp-1", "jp-east"),
    node("jp-2", "jp-west", gpus=4),
    node("tw-1", "tw-north", gpus=2),
    node("jp-declared", "jp-east", provenance=ProvenanceStatus.DECLARED, gpus=2),
    node("jp-drifted", "jp-east", status=NodeStatus.QUARANTINED, drift=DriftStatus.DRIFTED),
)
INDEX = NodeIndex.build(NODES, ZONES)

JAPAN_ONLY = policy("japan-only", compute_zones=["jp"])
VERIFIED = policy("verified-hardware", min_provenance_status="verified")
VERIFIED_WARN = policy("verified-hardware", "warn", min_provenance_status="verified")
#: A policy that selects nothing any workload here touches: it changes no verdict.
RESTRICTED_ONLY = policy(
    "restricted-in-japan", selector={"classifications": ["restricted"]}, compute_zones=["jp"]
)


def compiled(*documents: dict[str, Any], version: int = 1) -> PolicySet:
    return compile_policy_set(list(documents), version, ZONES)


def running(
    workload_id: str,
    node_id: str,
    *,
    tenant: str = "acme",
    view: WorkloadView | None = None,
    **extra: Any,
) -> RunningWorkload:
    return RunningWorkload(
        id=workload_id,
        tenant=tenant,
        node_id=node_id,
        view=view if view is not None or "problem" in extra else workload(tenant=tenant),
        **extra,
    )


def violating(found: Assessment) -> list[str]:
    return [finding.workload_id for finding in found.violations]


# -- which running workloads violate ---------------------------------------------------


@pytest.mark.parametrize(
    ("documents", "expected"),
    [
        pytest.param((), [], id="no policy: nothing violates"),
        pytest.param((RESTRICTED_ONLY,), [], id="a policy that selects none of them"),
        pytest.param((JAPAN_ONLY,), ["w3", "w5"], id="zone tightening: tw and the drifted node"),
        pytest.param((VERIFIED,), ["w3", "w4", "w5"], id="provenance: declared and unknown fail"),
        pytest.param((VERIFIED_WARN,), [], id="a warn policy is never a violation"),
    ],
)
def test_which_running_workloads_violate(
    documents: tuple[dict[str, Any], ...], expected: list[str]
) -> None:
    workloads = [
        running("w1", "jp-1"),
        running("w2", "jp-2"),
        running("w3", "tw-1"),
        running("w4", "jp-declared"),
        running("w5", "jp-drifted"),
    ]
    tw_unverified = NodeIndex.build(
        [
            *(n for n in NODES if n.id != "tw-1"),
            node("tw-1", "tw-north", gpus=2, provenance=ProvenanceStatus.UNKNOWN),
        ],
        ZONES,
    )
    found = assess(
        workloads, tw_unverified, compiled(*documents), point=SWEEP, cache=DecisionCache()
    )
    assert violating(found) == expected
    assert found.evaluated == 5


def test_a_violation_names_the_node_and_the_rule() -> None:
    found = assess(
        [running("w1", "jp-1"), running("w2", "tw-1")],
        INDEX,
        compiled(JAPAN_ONLY),
        point=SWEEP,
        cache=DecisionCache(),
    )
    [finding] = found.violations
    assert (finding.workload_id, finding.hostname, finding.zone) == ("w2", "tw-1", "tw-north")
    assert finding.outcome is DecisionOutcome.DENIED
    assert [(r.policy, r.rule, r.action) for r in finding.reasons] == [
        ("japan-only", "compute_location", DENY)
    ]
    assert "node tw-1" in finding.reasons[0].message
    assert found.policy_set_version == 1
    assert found.policy_set_hash == compiled(JAPAN_ONLY).content_hash


def test_a_drifted_node_breaks_every_selected_policy_but_no_policy_is_no_violation() -> None:
    on_drifted = [running("w1", "jp-drifted")]
    assert (
        violating(assess(on_drifted, INDEX, compiled(), point=SWEEP, cache=DecisionCache())) == []
    )
    found = assess(on_drifted, INDEX, compiled(JAPAN_ONLY), point=SWEEP, cache=DecisionCache())
    assert [(r.policy, r.rule) for r in found.violations[0].reasons] == [
        ("japan-only", "exclude_quarantined")
    ]


def test_warnings_are_counted_apart_from_violations() -> None:
    workloads = [running("w1", "jp-1"), running("w2", "jp-declared"), running("w3", "tw-1")]
    found = assess(
        workloads, INDEX, compiled(JAPAN_ONLY, VERIFIED_WARN), point=SWEEP, cache=DecisionCache()
    )
    assert violating(found) == ["w3"]
    assert found.warned == 1


def test_a_node_gone_from_the_fleet_is_a_violation_in_words() -> None:
    workloads = [
        running(
            "w1",
            "gone-node-id",
            hostname="jp-9",
            node_status=NodeStatus.DECOMMISSIONED.value,
            zone="jp-east",
        ),
        running("w2", "no-such-node", hostname=None, node_status=None, zone=None),
    ]
    # Even with no policy: a workload holding GPUs on a node that left the fleet is wrong.
    found = assess(workloads, INDEX, compiled(), point=SWEEP, cache=DecisionCache())
    assert violating(found) == ["w1", "w2"]
    first, second = found.violations
    assert (first.hostname, first.zone) == ("jp-9", "jp-east")
    assert [(r.policy, r.rule, r.action) for r in first.reasons] == [(None, NODE_STATUS_RULE, DENY)]
    assert first.reasons[0].message == (
        "node jp-9 is decommissioned, but the workload still holds GPUs on it"
    )
    assert second.reasons[0].message == (
        "node no-such-node is no longer in the fleet, but the workload still holds GPUs on it"
    )


def test_a_workload_whose_dataset_left_the_registry_is_a_violation() -> None:
    gone = running(
        "w1", "jp-1", view=None, problem="dataset 'tickets' named by the workload is gone"
    )
    found = assess([gone], INDEX, compiled(), point=SWEEP, cache=DecisionCache())
    [reason] = found.violations[0].reasons
    assert (reason.policy, reason.rule) == (None, REGISTRY_RULE)
    assert reason.message == (
        "dataset 'tickets' named by the workload is gone; its residency cannot be checked"
    )


def test_counts_are_exact_and_violations_ordered_by_id() -> None:
    pii = workload(tenant="acme", datasets=(dataset(zones=("jp-east",)),))
    residency = policy(
        "pii-in-japan",
        selector={"classifications": ["restricted"]},
        compute_zones=["jp"],
        data_residency=True,
    )
    workloads = [
        running("w9", "tw-1", tenant="beta", view=workload(tenant="beta")),
        running("w2", "tw-1", view=pii),
        running("w5", "jp-declared", view=pii),
        running("w1", "tw-1", tenant="beta", view=workload(tenant="beta")),
        running("w3", "jp-1", view=pii),
    ]
    found = assess(
        workloads,
        INDEX,
        compiled(JAPAN_ONLY, residency, VERIFIED),
        point=SWEEP,
        cache=DecisionCache(),
    )
    assert violating(found) == ["w1", "w2", "w5", "w9"]
    assert found.by_tenant == {"acme": 2, "beta": 2}
    # Each workload counts once per (policy, rule), most first.
    assert found.by_rule == (
        RuleCount("japan-only", "compute_location", 3),
        RuleCount("pii-in-japan", "compute_location", 1),
        RuleCount("verified-hardware", "min_provenance_status", 1),
    )


# -- what-if ---------------------------------------------------------------------------


def test_what_if_reports_new_and_fixed_violations() -> None:
    workloads = [
        running("w1", "jp-1"),
        running("w2", "tw-1"),
        running("w3", "jp-declared"),
    ]
    result = what_if(
        workloads,
        INDEX,
        compiled(VERIFIED),
        compiled(JAPAN_ONLY, version=2),
        [],
        limit=10,
        cache=DecisionCache(),
    )
    # Under the active set only the declared node fails; under the candidate only Taiwan.
    assert violating(result.current) == ["w3"]
    assert violating(result.candidate) == ["w2"]
    assert result.new_ids == {"w2"}
    assert result.fixed_ids == {"w3"}
    # The candidate's verdicts are exactly those the evaluation reaches once it is active.
    active_later = assess(
        workloads, INDEX, compiled(JAPAN_ONLY, version=2), point=SWEEP, cache=DecisionCache()
    )
    assert violating(active_later) == violating(result.candidate)
    assert active_later.by_rule == result.candidate.by_rule


def test_capacity_change_per_tenant() -> None:
    only_acme = policy("acme-in-taiwan", selector={"tenants": ["acme"]}, compute_zones=["tw-north"])
    current, candidate = compiled(), compiled(JAPAN_ONLY, only_acme, version=2)
    acme = capacity_change("acme", INDEX, current, candidate, limit=10, cache=DecisionCache())
    beta = capacity_change("beta", INDEX, current, candidate, limit=10, cache=DecisionCache())
    # Usable: active, undrifted nodes: jp-1 (8), jp-2 (4), tw-1 (2), jp-declared (2).
    assert (acme.nodes_now, acme.gpus_now) == (4, 16)
    assert (beta.nodes_now, beta.gpus_now) == (4, 16)
    # acme: jp only and tw only leave nothing; beta: jp only.
    assert (acme.nodes_candidate, acme.gpus_candidate, acme.change) == (0, 0, -16)
    # In index order (the fleet snapshot sorts its nodes by hostname).
    assert acme.lost.hostnames == ("jp-1", "jp-2", "tw-1", "jp-declared")
    assert (beta.nodes_candidate, beta.gpus_candidate, beta.change) == (3, 14, -2)
    assert (beta.lost.count, beta.lost.hostnames) == (1, ("tw-1",))
    assert beta.gained.count == 0
    # Loosening gains nodes back.
    back = capacity_change("beta", INDEX, candidate, current, limit=10, cache=DecisionCache())
    assert (back.gained.count, back.gained.hostnames, back.change) == (1, ("tw-1",), 2)


def test_hostnames_are_capped_and_counts_exact() -> None:
    index = NodeIndex.build([node(f"tw-{i:02d}", "tw-north", gpus=1) for i in range(30)], ZONES)
    change = capacity_change(
        "acme", index, compiled(), compiled(JAPAN_ONLY), limit=5, cache=DecisionCache()
    )
    assert change.lost.count == 30
    assert change.lost.hostnames == ("tw-00", "tw-01", "tw-02", "tw-03", "tw-04")
    assert (change.gpus_now, change.gpus_candidate) == (30, 0)


def test_the_probe_ignores_policies_on_data_it_does_not_name() -> None:
    change = capacity_change(
        "acme", INDEX, compiled(), compiled(RESTRICTED_ONLY), limit=5, cache=DecisionCache()
    )
    assert change.change == 0
    assert change.lost.count == change.gained.count == 0


def test_evaluation_module_does_no_io() -> None:
    source = Path("control_plane/compliance/evaluation.py").read_text()
    imported = set()
    for statement in ast.walk(ast.parse(source)):
        if isinstance(statement, ast.ImportFrom) and statement.module:
            imported.add(statement.module)
        elif isinstance(statement, ast.Import):
            imported |= {alias.name for alias in statement.names}
    assert imported <= {
        "collections",
        "collections.abc",
        "dataclasses",
        "typing",
        "control_plane.domain.decisions",
        "control_plane.domain.fleet",
        "control_plane.policy.documents",
        "control_plane.policy.engine",
        "control_plane.policy.models",
    }


# -- what an evaluation does about its violations ---------------------------------------


def with_action(document: dict[str, Any], on_violation: str) -> dict[str, Any]:
    return {**document, "on_violation": on_violation}


def test_only_deny_policies_act_and_each_policy_by_its_own_action() -> None:
    placed = [running("w-jp", "jp-1"), running("w-tw", "tw-1"), running("w-decl", "jp-declared")]
    unverified = policy("verified-hardware", min_provenance_status="verified")
    policy_set = compiled(
        with_action(JAPAN_ONLY, "revoke"),
        with_action(unverified, "notify"),
        with_action(policy("dry", "dryrun", compute_zones=["tw-north"]), "revoke"),
        with_action(policy("warned", "warn", compute_zones=["tw-north"]), "revoke"),
    )
    found = assess(placed, INDEX, policy_set, point=SWEEP, cache=DecisionCache())
    planned = {plan.finding.workload_id: plan for plan in enforcements(found, policy_set)}
    assert sorted(planned) == ["w-decl", "w-tw"]
    assert planned["w-tw"].revoke_by == ("japan-only",)
    assert planned["w-tw"].notify == (("japan-only", ViolationAction.REVOKE),)
    # On a node whose provenance is only declared: the notify policy's webhook, no revoke.
    assert planned["w-decl"].notify == (("verified-hardware", ViolationAction.NOTIFY),)
    assert not planned["w-decl"].revoke
    # w-jp breaks only the dryrun and warn policies: never acted on.
    assert "w-jp" not in planned


def test_record_policies_and_reasons_without_a_policy_are_only_recorded() -> None:
    placed = [running("w-tw", "tw-1"), running("w-gone", "gone-node")]
    policy_set = compiled(JAPAN_ONLY)
    found = assess(placed, INDEX, policy_set, point=SWEEP, cache=DecisionCache())
    assert violating(found) == ["w-gone", "w-tw"]
    assert enforcements(found, policy_set) == []
    notify_set = compiled(with_action(JAPAN_ONLY, "notify"))
    found = assess(placed, INDEX, notify_set, point=SWEEP, cache=DecisionCache())
    [plan] = enforcements(found, notify_set)
    assert plan.finding.workload_id == "w-tw"
    assert plan.notify == (("japan-only", ViolationAction.NOTIFY),)
    assert not plan.revoke
