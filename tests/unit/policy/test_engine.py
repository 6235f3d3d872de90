"""The policy engine, as tables of (workload, nodes, policies) → decision and reasons."""

import ast
import random
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter

from control_plane.core.errors import NotFoundError
from control_plane.domain.classification import Classification
from control_plane.domain.decisions import DecisionOutcome, EnforcementAction, EnforcementPoint
from control_plane.domain.fleet import DriftStatus, NodeStatus, ProvenanceStatus
from control_plane.policy.documents import compile_policy_set
from control_plane.policy.engine import (
    DecisionCache,
    NodeIndex,
    decide,
    evaluate_node,
    evaluate_placement,
)
from control_plane.policy.models import Decision, NodeView, WorkloadView
from tests.unit.policy.builders import (
    A100,
    GIB,
    ZONES,
    cel,
    dataset,
    model,
    node,
    policy,
    workload,
)

ADMITTED = DecisionOutcome.ADMITTED
DENIED = DecisionOutcome.DENIED
WARNED = DecisionOutcome.ADMITTED_WITH_WARNINGS
DENY, WARN, DRYRUN = EnforcementAction.DENY, EnforcementAction.WARN, EnforcementAction.DRYRUN

PII = workload(datasets=(dataset(),))
JP_TW = (node("jp-1", "jp-east"), node("jp-2", "jp-west"), node("tw-1", "tw-north"))
PII_IN_JAPAN = policy(
    "pii-stays-in-japan",
    selector={"classifications": ["restricted"]},
    compute_zones=["jp"],
    data_residency=True,
)


@dataclass
class Case:
    """One row: what goes in, and what the decision must say."""

    id: str
    workload: WorkloadView
    nodes: tuple[NodeView, ...]
    policies: list[dict[str, Any]]
    outcome: DecisionOutcome
    eligible: list[str]
    #: Each must be a substring of some reason's message.
    messages: list[str] = field(default_factory=list)
    #: (policy, rule, action) of every reason, in order; None: not checked.
    reasons: list[tuple[str | None, str, EnforcementAction]] | None = None


CASES = [
    # -- no policy, selectors ----------------------------------------------------------
    Case(
        "no policies admit every capable node",
        PII,
        JP_TW,
        [],
        ADMITTED,
        ["jp-1", "jp-2", "tw-1"],
        reasons=[],
    ),
    Case(
        "a policy for another tenant does not apply",
        PII,
        JP_TW,
        [policy("other", selector={"tenants": ["globex"]}, compute_zones=["tw-north"])],
        ADMITTED,
        ["jp-1", "jp-2", "tw-1"],
        reasons=[],
    ),
    Case(
        "tenant selector applies to its tenant",
        PII,
        JP_TW,
        [policy("acme-in-tw", selector={"tenants": ["acme"]}, compute_zones=["tw-north"])],
        ADMITTED,
        ["tw-1"],
        reasons=[],
    ),
    Case(
        "classification selector does not match a public workload",
        workload(datasets=(dataset("open-data", Classification.PUBLIC),)),
        JP_TW,
        [PII_IN_JAPAN],
        ADMITTED,
        ["jp-1", "jp-2", "tw-1"],
        reasons=[],
    ),
    Case(
        "classification selector matches a model's classification too",
        workload(models=(model(classification=Classification.RESTRICTED),)),
        JP_TW,
        [
            policy(
                "restricted-jp", selector={"classifications": ["restricted"]}, compute_zones=["jp"]
            )
        ],
        ADMITTED,
        ["jp-1", "jp-2"],
    ),
    Case(
        "dataset label selector needs one dataset with all the labels",
        workload(
            datasets=(
                dataset("a", labels={"pii": "true"}),
                dataset("b", labels={"region": "eu"}),
            )
        ),
        JP_TW,
        [
            policy(
                "pii-eu",
                selector={"dataset_labels": {"pii": "true", "region": "eu"}},
                compute_zones=["tw-north"],
            ),
            policy("pii", selector={"dataset_labels": {"pii": "true"}}, compute_zones=["jp"]),
        ],
        ADMITTED,
        ["jp-1", "jp-2"],
    ),
    Case(
        "model label selector",
        workload(models=(model(labels={"family": "llama"}),)),
        JP_TW,
        [
            policy(
                "llama-west",
                selector={"model_labels": {"family": "llama"}},
                compute_zones=["jp-west"],
            )
        ],
        ADMITTED,
        ["jp-2"],
    ),
    Case(
        "every selector field must match",
        PII,
        JP_TW,
        [
            policy(
                "both",
                selector={"tenants": ["globex"], "classifications": ["restricted"]},
                compute_zones=["tw-north"],
            )
        ],
        ADMITTED,
        ["jp-1", "jp-2", "tw-1"],
    ),
    # -- compute location and zone nesting ---------------------------------------------
    Case(
        "a zone allows the zones inside it",
        PII,
        (*JP_TW, node("dc-1", "tokyo-dc1")),
        [policy("in-jp", compute_zones=["jp"])],
        ADMITTED,
        ["jp-1", "jp-2", "dc-1"],
    ),
    Case(
        "a leaf zone does not allow its sibling or its parent",
        PII,
        (*JP_TW, node("jp-0", "jp"), node("dc-1", "tokyo-dc1")),
        [policy("east-only", compute_zones=["jp-east"])],
        ADMITTED,
        ["jp-1", "dc-1"],
    ),
    Case(
        "countries allow every zone of the country",
        PII,
        JP_TW,
        [policy("taiwan", compute_countries=["TW"])],
        ADMITTED,
        ["tw-1"],
    ),
    Case(
        "zones and countries together are the allowed places",
        PII,
        (*JP_TW, node("us-1", "us-west")),
        [policy("west-or-taiwan", compute_zones=["jp-west"], compute_countries=["tw"])],
        ADMITTED,
        ["jp-2", "tw-1"],
    ),
    Case(
        "a node without a zone is never inside",
        PII,
        (node("nowhere", None), node("jp-1")),
        [policy("in-jp", compute_zones=["jp"])],
        ADMITTED,
        ["jp-1"],
    ),
    Case(
        "denied when every node is outside, naming the dataset, zone and count",
        PII,
        (node("tw-1", "tw-north"), node("tw-2", "tw-north")),
        [PII_IN_JAPAN],
        DENIED,
        [],
        [
            "dataset customer-pii is stored in jp-east; policy pii-stays-in-japan forbids compute"
            " in tw-north (2 nodes excluded: tw-1, tw-2; compute must be in jp)"
        ],
        [("pii-stays-in-japan", "compute_location", DENY)],
    ),
    Case(
        "excluded nodes in several zones are counted per zone",
        workload(),
        (*(node(f"tw-{i}", "tw-north") for i in range(3)), node("us-1", "us-west")),
        [policy("in-jp", compute_zones=["jp"])],
        DENIED,
        [],
        [
            "policy in-jp forbids compute in tw-north (3), us-west (1) (4 nodes excluded: tw-0,"
            " tw-1, tw-2, us-1;"
        ],
    ),
    # -- origins and provenance ---------------------------------------------------------
    Case(
        "server origin",
        workload(),
        (node("jp-made", origin="JP"), node("cn-made", origin="CN"), node("unknown", origin=None)),
        [policy("allied", server_origin_countries=["JP", "US"])],
        ADMITTED,
        ["jp-made"],
    ),
    Case(
        "server origin denial names the origins",
        workload(),
        (node("cn-made", origin="CN"), node("unknown", origin=None)),
        [policy("allied", server_origin_countries=["JP", "US"])],
        DENIED,
        [],
        [
            "policy allied forbids servers of origin CN (1), unknown origin (1) (2 nodes excluded",
            "server origin must be JP or US",
        ],
        [("allied", "server_origin_countries", DENY)],
    ),
    Case(
        "component origin per class; an undeclared component does not satisfy",
        workload(),
        (
            node("tw-gpu", components={"gpu": "TW", "cpu": "US"}),
            node("cn-gpu", components={"gpu": "CN", "cpu": "US"}),
            node("no-gpu-origin", components={"cpu": "US"}),
            node("cn-cpu", components={"gpu": "US", "cpu": "CN"}),
        ),
        [policy("trusted-parts", component_origin_countries={"gpu": ["TW", "US"], "cpu": ["US"]})],
        ADMITTED,
        ["tw-gpu"],
    ),
    Case(
        "component origin denial",
        workload(),
        (node("cn-gpu", components={"gpu": "CN"}),),
        [policy("trusted-gpus", component_origin_countries={"gpu": ["TW"]})],
        DENIED,
        [],
        [
            "policy trusted-gpus forbids gpu components of origin CN (1 node excluded: cn-gpu; gpu"
            " origin must be TW)"
        ],
        [("trusted-gpus", "component_origin_countries.gpu", DENY)],
    ),
    Case(
        "minimum provenance verified",
        workload(),
        tuple(node(s.value, provenance=s) for s in ProvenanceStatus),
        [policy("verified-only", min_provenance_status="verified")],
        ADMITTED,
        ["verified"],
    ),
    Case(
        "minimum provenance declared admits verified; mismatch never satisfies",
        workload(),
        tuple(node(s.value, provenance=s) for s in ProvenanceStatus),
        [policy("declared-or-better", min_provenance_status="declared")],
        ADMITTED,
        ["declared", "verified"],
    ),
    # -- health -------------------------------------------------------------------------
    Case(
        "drifted nodes are excluded by default",
        workload(),
        (node("healthy"), node("drifted", drift=DriftStatus.DRIFTED)),
        [policy("any")],
        ADMITTED,
        ["healthy"],
    ),
    Case(
        "exclude_quarantined can be turned off (only active nodes are placed on anyway)",
        workload(),
        (
            node("healthy"),
            node("drifted", drift=DriftStatus.DRIFTED),
            node("q", status=NodeStatus.QUARANTINED),
        ),
        [policy("lenient", exclude_quarantined=False)],
        ADMITTED,
        ["healthy", "drifted"],
    ),
    Case(
        "quarantine denial",
        workload(),
        (node("drifted", drift=DriftStatus.DRIFTED),),
        [policy("healthy-only")],
        DENIED,
        [],
        ["policy healthy-only forbids quarantined or drifted nodes (1 node excluded: drifted;"],
        [("healthy-only", "exclude_quarantined", DENY)],
    ),
    # -- data residency -----------------------------------------------------------------
    Case(
        "data stored inside a nested zone of the allowed place passes",
        workload(
            datasets=(dataset(zones=("tokyo-dc1",)),),
            models=(model(zones=("jp-west",)),),
            output=("results", "jp-east"),
        ),
        JP_TW,
        [PII_IN_JAPAN],
        ADMITTED,
        ["jp-1", "jp-2"],
        reasons=[],
    ),
    Case(
        "a dataset stored abroad is denied whatever the nodes",
        workload(datasets=(dataset(zones=("jp-east", "tw-north")),)),
        JP_TW,
        [PII_IN_JAPAN],
        DENIED,
        [],
        [
            "dataset customer-pii is stored in tw-north; policy pii-stays-in-japan forbids data"
            " and weights outside jp"
        ],
        [("pii-stays-in-japan", "data_residency", DENY)],
    ),
    Case(
        "model weights, the output and unrecorded zones count too",
        workload(
            datasets=(dataset(), dataset("no-zone", zones=())),
            models=(model(zones=("us-west",)),),
            output=("s3-tw", "tw-north"),
        ),
        JP_TW,
        [PII_IN_JAPAN],
        DENIED,
        [],
        [
            "dataset no-zone has no recorded storage zone",
            "model llama-ja is stored in us-west",
            "output destination s3-tw is in tw-north",
        ],
        [("pii-stays-in-japan", "data_residency", DENY)] * 3,
    ),
    Case(
        "an output without a zone fails data residency",
        workload(datasets=(dataset(),), output=("somewhere", None)),
        JP_TW,
        [PII_IN_JAPAN],
        DENIED,
        [],
        ["output destination somewhere has no recorded zone"],
    ),
    Case(
        "data residency by country",
        workload(datasets=(dataset(zones=("jp-west",)),)),
        JP_TW,
        [policy("jp-data", compute_countries=["JP"], data_residency=True)],
        ADMITTED,
        ["jp-1", "jp-2"],
    ),
    # -- enforcement actions and conflicts ----------------------------------------------
    Case(
        "warn does not filter, it warns about the nodes it would exclude",
        PII,
        JP_TW,
        [{**PII_IN_JAPAN, "enforcement_action": "warn"}],
        WARNED,
        ["jp-1", "jp-2", "tw-1"],
        [
            "policy pii-stays-in-japan warns against compute in tw-north (1 of 3 eligible nodes:"
            " tw-1;"
        ],
        [("pii-stays-in-japan", "compute_location", WARN)],
    ),
    Case(
        "warn on a workload rule admits with a warning",
        workload(datasets=(dataset(zones=("tw-north",)),)),
        JP_TW[:2],
        [{**PII_IN_JAPAN, "enforcement_action": "warn"}],
        WARNED,
        ["jp-1", "jp-2"],
        [
            "dataset customer-pii is stored in tw-north; policy pii-stays-in-japan warns against"
            " data and weights outside jp"
        ],
    ),
    Case(
        "dryrun records what it would do and changes nothing",
        workload(datasets=(dataset(zones=("tw-north",)),)),
        JP_TW,
        [{**PII_IN_JAPAN, "enforcement_action": "dryrun"}],
        ADMITTED,
        ["jp-1", "jp-2", "tw-1"],
        [
            "dry run: dataset customer-pii is stored in tw-north; policy pii-stays-in-japan would"
            " forbid",
            "dry run: dataset customer-pii is stored in tw-north; policy pii-stays-in-japan would"
            " forbid compute in tw-north (1 of 3 eligible nodes: tw-1;",
        ],
        [
            ("pii-stays-in-japan", "data_residency", DRYRUN),
            ("pii-stays-in-japan", "compute_location", DRYRUN),
        ],
    ),
    Case(
        "deny wins over warn: deny filters, warn reports what is left",
        PII,
        JP_TW,
        [
            policy("in-jp", compute_zones=["jp"]),
            policy("prefer-tw", "warn", compute_zones=["tw-north"]),
        ],
        WARNED,
        ["jp-1", "jp-2"],
        [
            "policy prefer-tw warns against compute in jp-east (1), jp-west (1) (2 of 2 eligible"
            " nodes: jp-1, jp-2;"
        ],
        [("prefer-tw", "compute_location", WARN)],
    ),
    Case(
        "a denial stands whatever warn and dryrun policies say",
        workload(datasets=(dataset(zones=("tw-north",)),)),
        JP_TW,
        [
            PII_IN_JAPAN,
            policy("audit", "warn", compute_zones=["tw-north"]),
            policy("trial", "dryrun"),
        ],
        DENIED,
        [],
        ["policy pii-stays-in-japan forbids data and weights outside jp"],
        [("pii-stays-in-japan", "data_residency", DENY)],
    ),
    Case(
        "two deny policies that disagree leave nothing and both say why",
        PII,
        JP_TW,
        [policy("in-jp", compute_zones=["jp"]), policy("in-tw", compute_zones=["tw-north"])],
        DENIED,
        [],
        [
            "policy in-jp forbids compute in tw-north (1 node excluded: tw-1; compute must be in"
            " jp)",
            "policy in-tw forbids compute in jp-east (1), jp-west (1) (2 nodes excluded: jp-1,"
            " jp-2; compute must be in tw-north)",
        ],
        [("in-jp", "compute_location", DENY), ("in-tw", "compute_location", DENY)],
    ),
    Case(
        "each rule that excluded nodes is reported, even when others would have left some",
        workload(),
        (
            node("tw-verified", "tw-north"),
            node("jp-declared", provenance=ProvenanceStatus.DECLARED),
        ),
        [policy("strict", compute_zones=["jp"], min_provenance_status="verified")],
        DENIED,
        [],
        [
            "forbids compute in tw-north (1 node excluded: tw-verified;",
            "forbids nodes with provenance declared (1 node excluded: jp-declared; provenance must"
            " be verified)",
        ],
        [("strict", "compute_location", DENY), ("strict", "min_provenance_status", DENY)],
    ),
    # -- CEL ----------------------------------------------------------------------------
    Case(
        "CEL over the workload passes",
        workload(labels={"cost-center": "cc-1"}),
        JP_TW,
        [policy("cc", cel=[cel("cost-center", '"cost-center" in workload.labels')])],
        ADMITTED,
        ["jp-1", "jp-2", "tw-1"],
        reasons=[],
    ),
    Case(
        "CEL over the workload fails with the author's message",
        workload(labels={"team": "ml"}),
        JP_TW,
        [
            policy(
                "cc",
                cel=[
                    cel(
                        "cost-center",
                        '"cost-center" in workload.labels',
                        "workloads must name a cost center",
                    )
                ],
            )
        ],
        DENIED,
        [],
        ["policy cc forbids workloads failing cel cost-center (workloads must name a cost center)"],
        [("cc", "cel.cost-center", DENY)],
    ),
    Case(
        "a CEL runtime error fails the rule (closed) and says why",
        workload(labels={"team": "ml"}),
        JP_TW,
        [policy("approval", cel=[cel("approved", 'workload.labels["approval"] == "granted"')])],
        DENIED,
        [],
        [
            "policy approval forbids workloads failing cel approved (could not evaluate: no such"
            " key: 'approval';"
        ],
    ),
    Case(
        "a CEL result that is not a boolean fails the rule",
        workload(),
        JP_TW,
        [policy("odd", cel=[cel("count", "workload.gpu_count")])],
        DENIED,
        [],
        ["could not evaluate: returned int 1, not true or false"],
    ),
    Case(
        "CEL over datasets and models",
        workload(
            datasets=(dataset(), dataset("logs", zones=("jp-west",))), models=(model(origin="US"),)
        ),
        JP_TW,
        [
            policy("jp-data", cel=[cel("jp", 'datasets.all(d, d.storage_countries == ["JP"])')]),
            policy(
                "jp-models",
                "warn",
                cel=[
                    cel(
                        "jp-made",
                        'models.all(m, m.origin_country == "JP")',
                        "models must be made in Japan",
                    )
                ],
            ),
        ],
        WARNED,
        ["jp-1", "jp-2", "tw-1"],
        [
            "policy jp-models warns against workloads failing cel jp-made (models must be made in"
            " Japan)"
        ],
        [("jp-models", "cel.jp-made", WARN)],
    ),
    Case(
        "CEL sees the workload's highest classification",
        workload(
            datasets=(dataset(classification=Classification.INTERNAL),),
            models=(model(classification=Classification.CONFIDENTIAL),),
        ),
        JP_TW,
        [
            policy(
                "not-confidential", cel=[cel("class", 'workload.classification != "confidential"')]
            )
        ],
        DENIED,
        [],
        ["cel class"],
    ),
    Case(
        "CEL over nodes filters them, once per profile",
        workload(),
        (
            node("spot-1", labels={"tier": "spot"}),
            node("od-1", labels={"tier": "ondemand"}),
            node("od-2", labels={"tier": "ondemand", "rack": "r2"}),
        ),
        [policy("no-spot", cel=[cel("not-spot", 'node.labels["tier"] != "spot"')])],
        ADMITTED,
        ["od-1", "od-2"],
    ),
    Case(
        "CEL over nodes: a missing label is an error, and the node is excluded",
        workload(),
        (
            node("spot-1", labels={"tier": "spot"}),
            node("bare"),
            node("od-1", labels={"tier": "ondemand"}),
        ),
        [
            policy(
                "no-spot",
                cel=[
                    cel(
                        "not-spot",
                        'node.labels["tier"] != "spot"',
                        "nodes must not be spot capacity",
                    )
                ],
            )
        ],
        ADMITTED,
        ["od-1"],
    ),
    Case(
        "CEL over nodes: denial names the rule and the evaluation error",
        workload(),
        (node("spot-1", labels={"tier": "spot"}), node("bare")),
        [
            policy(
                "no-spot",
                cel=[
                    cel(
                        "not-spot",
                        'node.labels["tier"] != "spot"',
                        "nodes must not be spot capacity",
                    )
                ],
            )
        ],
        DENIED,
        [],
        [
            "policy no-spot forbids nodes failing cel not-spot (2 nodes excluded: spot-1, bare;"
            " nodes must not be spot capacity; could not evaluate on 1 node: no such key: 'tier')"
        ],
        [("no-spot", "cel.not-spot", DENY)],
    ),
    Case(
        "CEL over nodes and the workload together",
        workload(gpu_count=8),
        (node("reserved", labels={"tier": "reserved"}), node("spot", labels={"tier": "spot"})),
        [
            policy(
                "big-reserved",
                cel=[
                    cel("reserved", 'workload.gpu_count < 8 || node.labels["tier"] == "reserved"')
                ],
            )
        ],
        ADMITTED,
        ["reserved"],
    ),
    Case(
        "CEL over node zone paths and country",
        workload(),
        (*JP_TW, node("dc-1", "tokyo-dc1")),
        [policy("east", cel=[cel("east", '"jp-east" in node.zones && node.country == "JP"')])],
        ADMITTED,
        ["jp-1", "dc-1"],
    ),
    # -- baseline: empty sets, status, capacity ------------------------------------------
    Case(
        "an empty node set is denied with a clear reason",
        PII,
        (),
        [],
        DENIED,
        [],
        ["no nodes to place on: the node set is empty"],
        [(None, "nodes", DENY)],
    ),
    Case(
        "an empty node set with a policy says the same",
        PII,
        (),
        [PII_IN_JAPAN],
        DENIED,
        [],
        ["no nodes to place on"],
        [(None, "nodes", DENY)],
    ),
    Case(
        "only active nodes are placed on",
        workload(),
        (
            node("off", status=NodeStatus.OFFLINE),
            node("maint", status=NodeStatus.MAINTENANCE),
            node("on"),
        ),
        [],
        ADMITTED,
        ["on"],
    ),
    Case(
        "no active node",
        workload(),
        (
            node("off-1", status=NodeStatus.OFFLINE),
            node("off-2", status=NodeStatus.OFFLINE),
            node("q", status=NodeStatus.QUARANTINED),
        ),
        [],
        DENIED,
        [],
        ["3 nodes excluded: not active (offline: 2, quarantined: 1)"],
        [(None, "node_status", DENY)],
    ),
    Case(
        "not enough free GPUs",
        workload(gpu_count=4),
        (node("two", gpus=2), node("none", gpus=0)),
        [],
        DENIED,
        [],
        ["2 active nodes lack 4 GPUs (MIG off)"],
        [(None, "capacity", DENY)],
    ),
    Case(
        "GPU model is matched as a substring, ignoring case",
        workload(gpu_model="h100", gpu_count=2),
        (node("h100"), node("a100", model=A100)),
        [],
        ADMITTED,
        ["h100"],
    ),
    Case(
        "GPU memory minimum; unknown memory does not satisfy it",
        workload(min_memory=60 * GIB),
        (node("80g"), node("40g", model=A100, memory=40 * GIB), node("unknown", memory=None)),
        [],
        ADMITTED,
        ["80g"],
    ),
    Case(
        "MIG workloads need MIG-enabled GPUs, others need MIG off",
        workload(mig_profile="1g.10gb"),
        (node("mig", mig="Enabled", slices=("1g.10gb",)), node("full")),
        [],
        ADMITTED,
        ["mig"],
    ),
    Case(
        "a MIG request counts slices of its profile, not GPUs",
        workload(mig_profile="1g.10gb", gpu_count=6),
        (
            node("one-gpu-seven-slices", gpus=1, mig="Enabled", slices=("1g.10gb",) * 7),
            node("two-gpus-two-slices", gpus=2, mig="Enabled", slices=("1g.10gb", "3g.40gb")),
            node("eight-gpus-other-profile", mig="Enabled", slices=("3g.40gb",)),
            node("mig-off-has-slices", slices=("1g.10gb",) * 7),
        ),
        [],
        ADMITTED,
        ["one-gpu-seven-slices"],
    ),
    Case(
        "a MIG-enabled GPU without slices of the profile offers nothing",
        workload(mig_profile="1g.10gb", gpu_count=2),
        (
            node("no-slices", mig="Enabled"),
            node("one-each", gpus=1, mig="Enabled", slices=("1g.10gb",)),
        ),
        [],
        DENIED,
        [],
        ["2 active nodes lack 2 MIG slices of profile 1g.10gb"],
        [(None, "capacity", DENY)],
    ),
    Case(
        "a whole-GPU request never counts a MIG-enabled GPU, slices or not",
        workload(gpu_count=2),
        (node("mig", mig="Enabled", slices=("7g.80gb",)),),
        [],
        DENIED,
        [],
        ["1 active node lack 2 GPUs (MIG off)"],
    ),
    Case(
        "capacity reason names the request",
        workload(gpu_count=2, gpu_model="A100", min_memory=80 * GIB),
        (node("h100"),),
        [],
        DENIED,
        [],
        ["1 active node lack 2 GPUs (model A100, at least 80 GiB, MIG off)"],
    ),
    Case(
        "a CPU-only workload fits any active node",
        workload(gpu_count=0),
        (node("no-gpus", gpus=0), node("off", status=NodeStatus.OFFLINE)),
        [],
        ADMITTED,
        ["no-gpus"],
    ),
    Case(
        "baseline and policy exclusions are both reported",
        workload(gpu_count=8),
        (node("jp-small", gpus=4), node("tw-big", "tw-north")),
        [policy("in-jp", compute_zones=["jp"])],
        DENIED,
        [],
        [
            "1 active node lack 8 GPUs",
            "policy in-jp forbids compute in tw-north (1 node excluded: tw-big;",
        ],
        [(None, "capacity", DENY), ("in-jp", "compute_location", DENY)],
    ),
]


def run(case: Case) -> Decision:
    policy_set = compile_policy_set(case.policies, 7, ZONES)
    index = NodeIndex.build(case.nodes, ZONES)
    return decide(
        case.workload, index, policy_set, point=EnforcementPoint.API, cache=DecisionCache()
    )


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_decision_table(case: Case) -> None:
    decision = run(case)
    messages = [reason.message for reason in decision.reasons]
    assert decision.outcome is case.outcome, messages
    assert decision.eligible_node_ids == case.eligible
    for expected in case.messages:
        assert any(expected in message for message in messages), (expected, messages)
    if case.reasons is not None:
        assert [(r.policy, r.rule, r.action) for r in decision.reasons] == case.reasons, messages
    assert decision.policy_set_version == 7
    assert decision.point is EnforcementPoint.API


def test_the_decision_records_the_policy_set_it_was_reached_under() -> None:
    first = compile_policy_set([PII_IN_JAPAN, policy("b")], 3, ZONES)
    reordered = compile_policy_set([policy("b"), PII_IN_JAPAN], 4, ZONES)
    changed = compile_policy_set([policy("b"), {**PII_IN_JAPAN, "description": "new"}], 5, ZONES)
    decision = decide(
        PII,
        NodeIndex.build(JP_TW, ZONES),
        first,
        point=EnforcementPoint.WHATIF,
        cache=DecisionCache(),
    )
    assert (decision.policy_set_version, decision.policy_set_hash) == (3, first.content_hash)
    assert decision.point is EnforcementPoint.WHATIF
    assert first.content_hash == reordered.content_hash
    assert len(first.content_hash) == 64
    assert changed.content_hash != first.content_hash


def test_decisions_serialize_as_json() -> None:
    decision = run(CASES[-1])
    body = decision.to_json()
    assert body["outcome"] == "denied"
    assert body["reasons"][0] == {
        "policy": None,
        "rule": "capacity",
        "action": "deny",
        "message": decision.reasons[0].message,
    }
    assert TypeAdapter(Decision).dump_python(decision, mode="json") == body


# -- answers remembered across decisions must not leak between different inputs -------


def test_remembered_cel_answers_follow_the_workload() -> None:
    policy_set = compile_policy_set(
        [
            policy("cc", cel=[cel("cost-center", '"cost-center" in workload.labels')]),
            policy(
                "big-reserved",
                cel=[cel("r", 'workload.gpu_count < 8 || node.labels["tier"] == "reserved"')],
            ),
            policy("jp-data", cel=[cel("jp", 'datasets.all(d, d.storage_countries == ["JP"])')]),
        ],
        1,
        ZONES,
    )
    nodes = (node("reserved", labels={"tier": "reserved"}), node("spot", labels={"tier": "spot"}))
    index = NodeIndex.build(nodes, ZONES)
    point = EnforcementPoint.API
    cache = DecisionCache()
    good = workload(labels={"cost-center": "x"}, datasets=(dataset(),))
    for _ in range(2):
        assert decide(good, index, policy_set, point=point, cache=cache).eligible_node_ids == [
            "reserved",
            "spot",
        ]
        big = workload(labels={"cost-center": "x"}, gpu_count=8)
        assert decide(big, index, policy_set, point=point, cache=cache).eligible_node_ids == [
            "reserved"
        ]
        missing = decide(
            workload(labels={"team": "x"}), index, policy_set, point=point, cache=cache
        )
        assert [r.rule for r in missing.reasons] == ["cel.cost-center"]
        abroad = workload(labels={"cost-center": "x"}, datasets=(dataset(zones=("tw-north",)),))
        assert [
            r.rule for r in decide(abroad, index, policy_set, point=point, cache=cache).reasons
        ] == ["cel.jp"]


def test_a_condition_runs_again_only_when_what_it_reads_changes() -> None:
    policy_set = compile_policy_set(
        [
            policy("max-gpus", cel=[cel("max", "workload.gpu_count <= 8")]),
            policy("cc", cel=[cel("cc", '"cost-center" in workload.labels')]),
            policy(
                "output-east",
                cel=[cel("east", 'workload.output == null || workload.output.zone == "jp-east"')],
            ),
        ],
        1,
        ZONES,
    )
    index = NodeIndex.build(JP_TW, ZONES)
    cache = DecisionCache()
    outputs = [None, ("east", "jp-east"), ("west", "jp-west"), ("east-2", "jp-east")]
    outcomes = []
    for number, output in enumerate(outputs):
        wanted = workload(labels={"cost-center": f"cc-{number}", "run": str(number)}, output=output)
        decision = decide(wanted, index, policy_set, point=EnforcementPoint.API, cache=cache)
        outcomes.append(decision.outcome)
    assert outcomes == [ADMITTED, ADMITTED, DENIED, ADMITTED]
    verdicts = cache.memo(index, policy_set).verdicts
    answers = {c.name: len(verdicts[c]) for p in policy_set.policies for c in p.workload_cel}
    # gpu_count never changed; each cost center is new; the output rule reads the output.
    assert answers == {"max": 1, "cc": 4, "east": 4}


def test_remembered_workload_plans_follow_every_field() -> None:
    """Workloads differing in one field each, decided on one index (which remembers each
    workload's plan), come out exactly as decided on a fresh index, which remembers nothing."""
    documents = [
        policy(
            "pii",
            selector={"classifications": ["restricted"]},
            data_residency=True,
            compute_zones=["jp"],
        ),
        policy("team-a", selector={"tenants": ["team-a"]}, compute_zones=["tw-north"]),
        policy(
            "tagged", "warn", selector={"dataset_labels": {"pii": "yes"}}, compute_zones=["jp-west"]
        ),
        policy(
            "weights",
            selector={"model_labels": {"export": "no"}},
            data_residency=True,
            compute_countries=["JP"],
        ),
        policy(
            "model-facts",
            cel=[
                cel("origin", 'models.all(m, m.origin_country == "JP")'),
                cel("license", 'models.all(m, m.license == "mit")'),
                cel("supplier", 'models.all(m, m.supplier == "acme-research")'),
                cel("names", 'datasets.all(d, d.name != "leak")'),
                cel("unshared", "datasets.all(d, size(d.granted_to) == 0)"),
            ],
        ),
        policy(
            "shape",
            "dryrun",
            cel=[
                cel("gpus", 'workload.gpu_count < 4 || node.labels["tier"] == "reserved"'),
                cel("model", "workload.gpu_model == null"),
                cel("memory", "workload.min_gpu_memory_bytes == null"),
                cel("mig", "workload.mig_profile == null"),
                cel("cc", 'workload.labels["cost-center"] == "cc-1"'),
                cel("output", "workload.output != null"),
                cel("data", "size(datasets) > 0"),
            ],
        ),
    ]
    policy_set = compile_policy_set(documents, 1, ZONES)
    nodes = (
        node("east", labels={"tier": "reserved"}),
        node("west", "jp-west", labels={"tier": "spot"}),
        node("taipei", "tw-north"),
    )
    base = {
        "datasets": (dataset(),),
        "models": (model(),),
        "output": ("east", "jp-east"),
        "labels": {"cost-center": "cc-1", "team": "x"},
    }
    variants: list[dict[str, Any]] = [
        {},
        {"tenant": "team-a"},
        {"datasets": (dataset(classification=Classification.INTERNAL),)},
        {"datasets": (dataset(zones=("tw-north",)),)},
        {"datasets": (dataset(labels={"pii": "yes"}),)},
        {"datasets": (dataset(name="leak"),)},
        {"datasets": (dataset(tenant="other"),)},
        {"datasets": (dataset(tenant="other", granted_to=("acme",)),)},
        {"datasets": ()},
        {"models": (model(origin="US"),)},
        {"models": (model(labels={"export": "no"}, zones=("us-west",)),)},
        {"models": (model(license="apache-2.0"),)},
        {"models": (model(supplier="other"),)},
        {"models": (model(tenant="other"),)},
        {"output": ("west", "us-west")},
        {"output": None},
        {"gpu_count": 4},
        {"gpu_model": "H100"},
        {"min_memory": 40 * GIB},
        {"mig_profile": "1g.10gb"},
        {"labels": {"cost-center": "cc-2", "team": "x"}},
        {"labels": {"team": "x", "cost-center": "cc-1"}},
    ]
    shared = NodeIndex.build(nodes, ZONES)
    cache = DecisionCache()
    seen = set()
    for _ in range(2):
        for variant in variants:
            wanted = workload(**{**base, **variant})
            remembered = decide(wanted, shared, policy_set, point=EnforcementPoint.API, cache=cache)
            fresh = decide(
                wanted,
                NodeIndex.build(nodes, ZONES),
                compile_policy_set(documents, 1, ZONES),
                point=EnforcementPoint.API,
                cache=DecisionCache(),
            )
            assert remembered == fresh, variant
            seen.add(
                (
                    remembered.outcome,
                    tuple(remembered.eligible_node_ids),
                    tuple(r.message for r in remembered.reasons),
                )
            )
    # Every variant but the reordered labels changes the decision: none was answered
    # from another's memory by accident.
    assert len(seen) == len(variants) - 1


def test_a_workload_that_cannot_be_remembered_is_still_decided() -> None:
    policy_set = compile_policy_set(
        [policy("cc", cel=[cel("cc", "size(workload.labels) > 0")])], 1, ZONES
    )
    index = NodeIndex.build(JP_TW, ZONES)
    # Callers pass strings, but a list slipping into a label must not break the decision.
    odd = workload(labels={"teams": ["a", "b"]})  # type: ignore[dict-item]
    cache = DecisionCache()
    for _ in range(2):
        assert decide(odd, index, policy_set, point=EnforcementPoint.API, cache=cache).admitted


def test_the_same_expression_in_two_policies_keeps_each_message() -> None:
    expression = 'node.labels["tier"] != "spot"'
    policy_set = compile_policy_set(
        [
            policy("a", cel=[cel("one", expression, "message one")]),
            policy("b", "warn", cel=[cel("two", expression, "message two")]),
        ],
        1,
        ZONES,
    )
    index = NodeIndex.build((node("spot", labels={"tier": "spot"}),), ZONES)
    decision = decide(
        workload(), index, policy_set, point=EnforcementPoint.API, cache=DecisionCache()
    )
    assert [(r.policy, r.rule) for r in decision.reasons] == [("a", "cel.one")]
    assert "message one" in decision.reasons[0].message


# -- the eligible set equals a node-by-node evaluation ---------------------------------


def random_fleet(count: int, seed: int) -> list[NodeView]:
    rng = random.Random(seed)
    return [
        node(
            f"n{i:04d}",
            rng.choice([*ZONES, None]),
            status=rng.choice([NodeStatus.ACTIVE] * 5 + [NodeStatus.OFFLINE]),
            drift=rng.choice([DriftStatus.NONE] * 9 + [DriftStatus.DRIFTED]),
            origin=rng.choice(["JP", "TW", "US", "CN", None]),
            components={"gpu": rng.choice(["TW", "US", "CN"])} if rng.random() < 0.9 else {},
            provenance=rng.choice(list(ProvenanceStatus)),
            labels={"tier": rng.choice(["spot", "ondemand"])} if rng.random() < 0.8 else {},
            gpus=rng.choice([0, 1, 2, 4, 8]),
            model=rng.choice(["NVIDIA H100 80GB HBM3", A100]),
        )
        for i in range(count)
    ]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_eligible_nodes_match_a_node_by_node_evaluation(seed: int) -> None:
    policy_set = compile_policy_set(
        [
            policy("in-jp-or-tw", compute_zones=["jp"], compute_countries=["TW"]),
            policy("allied", server_origin_countries=["JP", "TW", "US"]),
            policy("gpus", component_origin_countries={"gpu": ["TW", "US"]}),
            policy("declared", min_provenance_status="declared"),
            policy(
                "no-spot", cel=[cel("tier", 'has(node.labels.tier) && node.labels.tier != "spot"')]
            ),
            policy(
                "small-or-h100",
                cel=[
                    cel(
                        "h",
                        'workload.gpu_count < 4 || node.gpu_models.exists(m, m.contains("H100"))',
                    )
                ],
            ),
        ],
        1,
        ZONES,
    )
    fleet = random_fleet(3000, seed)
    index = NodeIndex.build(fleet, ZONES)
    cache = DecisionCache()
    wanted_all = (workload(gpu_count=2), workload(gpu_count=4), workload(gpu_model="a100"))
    for wanted in wanted_all:
        decision = decide(wanted, index, policy_set, point=EnforcementPoint.WHATIF, cache=cache)
        expected = [
            n.id
            for n in fleet
            if n.status is NodeStatus.ACTIVE
            and sum(
                wanted.gpu_model is None or wanted.gpu_model.lower() in g.model.lower()
                for g in n.gpus
            )
            >= wanted.gpu_count
            and evaluate_node(wanted, n.id, index, policy_set, cache=cache).admitted
        ]
        assert expected, "the fleet should leave some nodes eligible"
        assert decision.eligible_node_ids == expected


def test_ids_of_takes_few_and_many_bits_alike() -> None:
    index = NodeIndex.build([node(f"n{i}") for i in range(1000)], ZONES)
    for positions in ([], [0], [3, 999], list(range(0, 1000, 7)), list(range(1000))):
        mask = sum(1 << p for p in positions)
        assert index.ids_of(mask) == [f"n{p}" for p in positions]


# -- evaluate_node: is a running placement still compliant? ----------------------------


def test_another_tenant_s_assets_need_a_grant_whatever_the_policies() -> None:
    """The ownership rule is built in: an empty policy set denies, and so does the sweep."""
    index = NodeIndex.build(JP_TW, ZONES)
    cache = DecisionCache()
    empty = compile_policy_set([], 0, ZONES)
    theirs = workload(
        datasets=(
            dataset(tenant="clinic"),
            dataset("shared", tenant="clinic", granted_to=("acme",)),
        ),
        models=(model(tenant="clinic", granted_to=("other",)), model("own", tenant="acme")),
    )
    denied = decide(theirs, index, empty, point=EnforcementPoint.API, cache=cache)
    assert denied.outcome is DENIED
    assert denied.eligible_node_ids == []
    assert [(r.policy, r.rule, r.action, r.message) for r in denied.reasons] == [
        (
            None,
            "ownership",
            DENY,
            "dataset customer-pii belongs to tenant clinic, and tenant acme holds no grant in"
            " force to use it",
        ),
        (
            None,
            "ownership",
            DENY,
            "model llama-ja belongs to tenant clinic, and tenant acme holds no grant in force"
            " to use it",
        ),
    ]
    swept = evaluate_node(theirs, "jp-1", index, empty, cache=cache)
    assert swept.outcome is DENIED
    assert swept.reasons == denied.reasons
    granted = workload(
        datasets=(dataset(tenant="clinic", granted_to=("acme",)),),
        models=(model(tenant="acme"), model("unknown-owner")),
    )
    assert decide(granted, index, empty, point=EnforcementPoint.API, cache=cache).admitted
    assert evaluate_node(granted, "jp-1", index, empty, cache=cache).admitted


def test_cel_sees_owner_and_grantees() -> None:
    policy_set = compile_policy_set(
        [
            policy(
                "owned-or-granted",
                cel=[
                    cel(
                        "owned-or-granted",
                        "datasets.all(d, d.tenant == workload.tenant"
                        " || workload.tenant in d.granted_to)"
                        ' && models.all(m, m.tenant == "acme" && m.granted_to == [])',
                    )
                ],
            )
        ],
        1,
        ZONES,
    )
    index = NodeIndex.build(JP_TW, ZONES)
    cache = DecisionCache()

    def outcome(view: WorkloadView) -> list[str]:
        decision = decide(view, index, policy_set, point=EnforcementPoint.API, cache=cache)
        return [r.rule for r in decision.reasons]

    own = dataset(tenant="acme")
    assert outcome(workload(datasets=(own,), models=(model(tenant="acme"),))) == []
    granted = dataset(tenant="clinic", granted_to=("acme", "zeta"))
    assert outcome(workload(datasets=(granted,))) == []
    shared_model = model(tenant="acme", granted_to=("clinic",))
    assert outcome(workload(models=(shared_model,))) == ["cel.owned-or-granted"]


def test_evaluate_node_names_the_node_and_the_rule() -> None:
    policy_set = compile_policy_set(
        [PII_IN_JAPAN, policy("verified", "warn", min_provenance_status="verified")], 1, ZONES
    )
    nodes = (
        node("jp-1"),
        node("tw-1", "tw-north"),
        node("jp-declared", provenance=ProvenanceStatus.DECLARED),
        node("jp-drifted", status=NodeStatus.QUARANTINED, drift=DriftStatus.DRIFTED),
        node("jp-maint", status=NodeStatus.MAINTENANCE),
    )
    index = NodeIndex.build(nodes, ZONES)
    cache = DecisionCache()

    def check(node_id: str) -> Decision:
        return evaluate_node(PII, node_id, index, policy_set, cache=cache)

    assert check("jp-1").outcome is ADMITTED
    assert check("jp-1").eligible_node_ids == ["jp-1"]
    assert check("jp-maint").outcome is ADMITTED  # maintenance is not a policy violation
    moved = check("tw-1")
    assert moved.outcome is DENIED
    assert moved.eligible_node_ids == []
    assert moved.point is EnforcementPoint.SWEEP
    assert [r.message for r in moved.reasons] == [
        "dataset customer-pii is stored in jp-east; policy pii-stays-in-japan forbids compute in"
        " tw-north (node tw-1; compute must be in jp)"
    ]
    drifted = check("jp-drifted")
    # Every selected policy excludes quarantined nodes unless it says otherwise.
    assert [(r.policy, r.rule, r.action) for r in drifted.reasons] == [
        ("pii-stays-in-japan", "exclude_quarantined", DENY),
        ("verified", "exclude_quarantined", WARN),
    ]
    declared = check("jp-declared")
    assert declared.outcome is WARNED
    assert "policy verified warns against nodes with provenance declared (node jp-declared;" in (
        declared.reasons[0].message
    )
    with pytest.raises(NotFoundError):
        check("no-such-node")


def test_evaluate_node_reports_workload_rules_too() -> None:
    policy_set = compile_policy_set([PII_IN_JAPAN], 1, ZONES)
    index = NodeIndex.build(JP_TW, ZONES)
    abroad = workload(datasets=(dataset(zones=("us-west",)),))
    result = evaluate_node(
        abroad, "jp-1", index, policy_set, point=EnforcementPoint.WHATIF, cache=DecisionCache()
    )
    assert result.outcome is DENIED
    assert [r.rule for r in result.reasons] == ["data_residency"]


# -- evaluate_placement: the verdict recorded for the node chosen ----------------------


def test_a_placement_records_the_chosen_nodes_verdict_and_labels_the_rest() -> None:
    policy_set = compile_policy_set(
        [
            PII_IN_JAPAN,
            policy("verified", "warn", min_provenance_status="verified"),
            policy("no-spot", "dryrun", cel=[cel("not-spot", '"spot" != node.labels["tier"]')]),
        ],
        1,
        ZONES,
    )
    nodes = (
        node("jp-1", labels={"tier": "reserved"}),
        node("jp-2", provenance=ProvenanceStatus.DECLARED, labels={"tier": "reserved"}),
        node("jp-3", provenance=ProvenanceStatus.DECLARED, labels={"tier": "spot"}),
        node("tw-1", "tw-north", labels={"tier": "reserved"}),
    )
    index = NodeIndex.build(nodes, ZONES)
    cache = DecisionCache()
    api = EnforcementPoint.API
    # Across the eligible nodes, the decision warns: 2 of 3 are only declared.
    decision = decide(PII, index, policy_set, point=api, cache=cache)
    assert decision.outcome is WARNED
    assert decision.eligible_node_ids == ["jp-1", "jp-2", "jp-3"]

    clean = evaluate_placement(PII, "jp-1", index, policy_set, point=api, cache=cache)
    assert clean.decision.outcome is ADMITTED
    assert clean.decision.reasons == []
    assert clean.decision.point is api
    assert clean.decision.eligible_node_ids == ["jp-1"]
    assert clean.others == 2
    assert [(r.policy, r.action, r.message) for r in clean.elsewhere] == [
        (
            "no-spot",
            DRYRUN,
            "dry run: policy no-spot would forbid nodes failing cel not-spot (1 of 2 other"
            ' eligible nodes: jp-3; "spot" != node.labels["tier"] must be true)',
        ),
        (
            "verified",
            WARN,
            "policy verified warns against nodes with provenance declared (2 of 2 other"
            " eligible nodes: jp-2, jp-3; provenance must be verified)",
        ),
    ]

    spot = evaluate_placement(PII, "jp-3", index, policy_set, point=api, cache=cache)
    assert spot.decision.outcome is WARNED
    assert [(r.policy, r.rule, r.action) for r in spot.decision.reasons] == [
        ("no-spot", "cel.not-spot", DRYRUN),
        ("verified", "min_provenance_status", WARN),
    ]
    assert all("(node jp-3;" in r.message for r in spot.decision.reasons)
    assert [r.message for r in spot.elsewhere] == [
        "policy verified warns against nodes with provenance declared (1 of 2 other eligible"
        " nodes: jp-2; provenance must be verified)"
    ]
    # A node the decision did not give is refused, not judged.
    with pytest.raises(ValueError, match="not eligible"):
        evaluate_placement(PII, "tw-1", index, policy_set, point=api, cache=cache)
    with pytest.raises(NotFoundError):
        evaluate_placement(PII, "no-such-node", index, policy_set, point=api, cache=cache)


def test_a_placement_says_what_evaluate_node_says_on_that_node() -> None:
    policy_set = compile_policy_set(
        [
            policy("in-jp-or-tw", compute_zones=["jp"], compute_countries=["TW"]),
            policy("allied", "warn", server_origin_countries=["JP", "TW"]),
            policy("declared", "warn", min_provenance_status="verified"),
            policy("no-spot", "dryrun", cel=[cel("tier", 'node.labels["tier"] != "spot"')]),
            policy("labelled", "warn", cel=[cel("team", '"team" in workload.labels')]),
        ],
        1,
        ZONES,
    )
    fleet = random_fleet(500, 7)
    index = NodeIndex.build(fleet, ZONES)
    cache = DecisionCache()
    api = EnforcementPoint.API
    for wanted in (workload(gpu_count=2), workload(gpu_count=4, labels={"team": "nlp"})):
        decision = decide(wanted, index, policy_set, point=api, cache=cache)
        assert decision.admitted
        for node_id in decision.eligible_node_ids:
            placed = evaluate_placement(wanted, node_id, index, policy_set, point=api, cache=cache)
            there = evaluate_node(wanted, node_id, index, policy_set, point=api, cache=cache)
            assert placed.decision == there
            assert placed.others == len(decision.eligible_node_ids) - 1
            assert all(r.action is not DENY for r in placed.elsewhere)


# -- purity ----------------------------------------------------------------------------

POLICY = Path(__file__).resolve().parents[3] / "control_plane" / "policy"
#: Every module of the engine package, and the policy modules it is built on.
ENGINE_MODULES = sorted(
    [
        *(f"engine/{path.name}" for path in (POLICY / "engine").glob("*.py")),
        "models.py",
        "documents.py",
        "conditions.py",
    ]
)
FORBIDDEN = (
    "fastapi",
    "starlette",
    "psycopg",
    "kubernetes",
    "celery",
    "httpx",
    "control_plane.core.db",
)


def test_every_module_of_the_engine_is_checked() -> None:
    assert {m.removeprefix("engine/") for m in ENGINE_MODULES if m.startswith("engine/")} == {
        "__init__.py",
        "cache.py",
        "checks.py",
        "decisions.py",
        "gpu.py",
        "index.py",
        "reasons.py",
        "scope.py",
    }


@pytest.mark.parametrize("module", ENGINE_MODULES)
def test_engine_code_imports_no_io_libraries(module: str) -> None:
    source = (POLICY / module).read_text()
    imported = set()
    for statement in ast.walk(ast.parse(source)):
        if isinstance(statement, ast.Import):
            imported |= {alias.name for alias in statement.names}
        elif isinstance(statement, ast.ImportFrom) and statement.module:
            imported.add(statement.module)
    assert not {
        name for name in imported for bad in FORBIDDEN if name == bad or name.startswith(f"{bad}.")
    }
    assert not imported & {"time", "datetime", "os", "socket", "subprocess", "pathlib", "random"}


def test_importing_the_engine_loads_no_io_library() -> None:
    probe = (
        "import sys, control_plane.policy.engine, control_plane.policy.documents;"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN[:5]!r}"
        " or m == 'control_plane.core.db'))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd="."
    )
    assert result.stdout.strip() == "[]"
