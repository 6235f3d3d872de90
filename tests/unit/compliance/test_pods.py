"""The pod sweep's pure part: which pods are judged, on which node, and what is done."""

import json
import uuid
from typing import Any

import pytest

from control_plane.compliance import pods
from control_plane.compliance.evaluation import assess, enforcements
from control_plane.compliance.models import PodDecisionRow
from control_plane.compliance.pods import BoundPod, RunningPod, bind, decision_problem
from control_plane.domain.decisions import EnforcementPoint
from control_plane.facts.kubernetes import by_kubernetes_name
from control_plane.policy.documents import compile_policy_set
from control_plane.policy.engine import DecisionCache, NodeIndex
from tests.unit.policy.builders import ZONES, node, policy, workload

NAMESPACE = "research"
REQUEST = {"tenant": "research", "datasets": ["tickets"], "models": [], "output": "results-jp"}
DECLARED = {pods.DATASETS: "tickets", pods.OUTPUT: "results-jp"}


def decision(**changes: Any) -> PodDecisionRow:
    values: dict[str, Any] = {
        "id": uuid.uuid4(),
        "namespace": NAMESPACE,
        "kind": "Pod",
        "name": "train",
        "webhook": "mutate",
        "outcome": "admitted",
        "tenant": "research",
        "request": REQUEST,
        **changes,
    }
    return PodDecisionRow(**values)


def running_pod(found: PodDecisionRow | None = None, **changes: Any) -> RunningPod:
    values: dict[str, Any] = {
        "namespace": NAMESPACE,
        "name": "train",
        "uid": str(uuid.uuid4()),
        "node_name": "gpu-jp-1",
        "decision_id": str(found.id if found is not None else uuid.uuid4()),
        "annotations": DECLARED,
        **changes,
    }
    return RunningPod(**values)


def test_the_pods_own_decision_is_taken() -> None:
    found = decision()
    assert decision_problem(running_pod(found), found) is None
    warned = decision(outcome="admitted_with_warnings")
    assert decision_problem(running_pod(warned), warned) is None


def test_a_decision_for_the_generate_name_is_the_pods() -> None:
    found = decision(name="train-")
    pod = running_pod(found, name="train-x7k2p", generate_name="train-")
    assert decision_problem(pod, found) is None


@pytest.mark.parametrize(
    ("kind", "name", "owners", "mine"),
    [
        ("Job", "nightly", (("Job", "nightly"),), True),
        ("Job", "nightly", (("Job", "other"),), False),
        ("Job", "nightly", (), False),
        ("CronJob", "nightly", (("Job", "nightly-29012345"),), True),
        ("CronJob", "nightly", (("Job", "nightlyx-29012345"),), False),
        ("CronJob", "nightly", (("ReplicaSet", "nightly-1"),), False),
    ],
)
def test_a_decision_for_the_owning_job_or_cronjob(
    kind: str, name: str, owners: tuple[tuple[str, str], ...], mine: bool
) -> None:
    found = decision(kind=kind, name=name)
    pod = running_pod(found, name="pod-abc", owners=owners)
    assert (decision_problem(pod, found) is None) is mine


@pytest.mark.parametrize(
    ("found", "pod_changes", "words"),
    [
        (None, {}, "no stored decision"),
        (decision(webhook="validate", outcome="denied"), {}, "not an admit"),
        (decision(outcome="denied"), {}, "not an admit"),
        (decision(namespace="other"), {}, "namespace other"),
        (decision(name="someone-else"), {}, "was taken for Pod someone-else"),
        (decision(name=None), {}, "was taken for Pod None"),
        (decision(), {"annotations": {**DECLARED, pods.DATASETS: "secrets"}}, pods.DATASETS),
        (decision(), {"annotations": {pods.DATASETS: "tickets"}}, pods.OUTPUT),
        (decision(), {"annotations": {**DECLARED, pods.MODELS: "llm"}}, pods.MODELS),
        (decision(), {"annotations": {**DECLARED, pods.TENANT: "lab"}}, pods.TENANT),
    ],
)
def test_a_decision_not_the_pods_own_is_refused(
    found: PodDecisionRow | None, pod_changes: dict[str, Any], words: str
) -> None:
    problem = decision_problem(running_pod(found, **pod_changes), found)
    assert problem is not None
    assert words in problem


NODES = (node("gpu-jp-1", "jp-east"), node("gpu-tw-1", "tw-north"), node("twin", "jp-east"))


def test_bind_keeps_pods_on_known_nodes_with_their_own_decision() -> None:
    found = decision()
    twin_copy = node("other-id", "jp-east")
    nodes = by_kubernetes_name((*NODES, twin_copy), {"other-id": "TWIN"})
    good = running_pod(found, node_name="GPU-JP-1")
    stranger = running_pod(found, node_name="stranger")
    ambiguous = running_pod(found, node_name="twin")
    garbled = running_pod(found, decision_id="not-a-uuid")
    forged = running_pod(None)

    bound, skipped = bind([good, stranger, ambiguous, garbled, forged], {found.id: found}, nodes)

    assert [(item.pod, item.node.id) for item in bound] == [(good, "gpu-jp-1")]
    reasons = {skip.pod.uid: skip.reason for skip in skipped}
    assert "stranger is not in the inventory" in reasons[stranger.uid]
    assert "answers to 2 inventory nodes" in reasons[ambiguous.uid]
    assert "not a decision id" in reasons[garbled.uid]
    assert "no stored decision" in reasons[forged.uid]


def test_the_agent_reported_name_wins_over_the_hostname() -> None:
    nodes = by_kubernetes_name(NODES, {"gpu-tw-1": "k8s-tw"})
    assert [n.id for n in nodes["k8s-tw"]] == ["gpu-tw-1"]
    assert "gpu-tw-1" not in nodes


def test_revoke_evicts_notify_only_reports_and_compliant_pods_are_left() -> None:
    index = NodeIndex.build(NODES, ZONES)
    policy_set = compile_policy_set(
        [
            {
                **policy(
                    "research-to-tw", selector={"tenants": ["research"]}, compute_zones=["tw-north"]
                ),
                "on_violation": "revoke",
            },
            {
                **policy("lab-to-tw", selector={"tenants": ["lab"]}, compute_zones=["tw-north"]),
                "on_violation": "notify",
            },
        ],
        1,
        ZONES,
    )
    cases = {
        "evict": ("research", "gpu-jp-1"),
        "stay": ("research", "gpu-tw-1"),
        "tell": ("lab", "gpu-jp-1"),
    }
    bound = []
    for uid, (tenant, node_id) in cases.items():
        stored = decision(tenant=tenant, request={**REQUEST, "tenant": tenant})
        pod = running_pod(stored, uid=uid, node_name=node_id)
        bound.append(BoundPod(pod, stored, index.node(node_id)))
    workloads = [
        pods.running_workload(item, workload(tenant=item.decision.tenant)) for item in bound
    ]

    found = assess(
        workloads, index, policy_set, point=EnforcementPoint.SWEEP, cache=DecisionCache()
    )
    verdicts = {v.bound.pod.uid: v for v in pods.verdicts(bound, enforcements(found, policy_set))}

    assert set(verdicts) == {"evict", "tell"}
    assert verdicts["evict"].evict
    assert verdicts["evict"].revoke_by == ("research-to-tw",)
    assert not verdicts["tell"].evict
    assert verdicts["tell"].notify_by == ("lab-to-tw",)


def test_a_declaration_gone_from_the_registry_is_a_violation_never_an_eviction() -> None:
    index = NodeIndex.build(NODES, ZONES)
    policy_set = compile_policy_set(
        [{**policy("anything", compute_zones=["jp"]), "on_violation": "revoke"}], 1, ZONES
    )
    found_decision = decision()
    item = BoundPod(running_pod(found_decision), found_decision, index.node("gpu-jp-1"))
    workloads = [pods.running_workload(item, "dataset tickets is no longer registered")]

    found = assess(
        workloads, index, policy_set, point=EnforcementPoint.SWEEP, cache=DecisionCache()
    )

    assert len(found.violations) == 1
    assert pods.verdicts([item], enforcements(found, policy_set)) == []


def test_the_report_caps_its_samples_not_its_counts() -> None:
    report = pods.PodSweepReport()
    for number in range(pods.REPORT_SAMPLE + 5):
        report.add_skipped(pods.SkippedPod(running_pod(name=f"p{number}"), "why"))
    assert report.skipped == pods.REPORT_SAMPLE + 5
    assert len(report.to_json()["skipped_pods"]) == pods.REPORT_SAMPLE  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("body", "budget"),
    [
        # Kubernetes 1.20: the words only.
        (
            {"message": "Cannot evict pod as it would violate the pod's disruption budget."},
            True,
        ),
        # From 1.26: a cause says so too.
        (
            {
                "message": "Cannot evict pod as it would violate the pod's disruption budget.",
                "details": {"causes": [{"reason": "DisruptionBudget", "message": "needs 1"}]},
            },
            True,
        ),
        # API priority and fairness: throttled, no budget involved.
        ({"message": "Too many requests, please try again later."}, False),
        (None, False),
    ],
)
def test_a_429_is_a_budget_only_when_the_api_server_says_so(
    body: dict[str, Any] | None, budget: bool
) -> None:
    from kubernetes.client.exceptions import ApiException

    from control_plane.compliance.eviction import _refusal

    refused = ApiException(
        status=429, reason="Too Many Requests", body=None if body is None else json.dumps(body)
    )
    message, is_budget = _refusal(refused)
    assert is_budget is budget
    assert message == ((body or {}).get("message") or "Too Many Requests")
