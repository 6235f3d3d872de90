"""Selection by level, a declared output, and what every decision records of the policy set.

Issue 11: a policy selecting ``classifications: [confidential]`` did not apply to
restricted data; a workload naming no output passed ``data_residency``; and an admitted
answer did not say which policies applied, so "no policy applied" looked like "compliant".
"""

from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter

from control_plane.core.errors import InvalidInputError
from control_plane.domain.classification import Classification
from control_plane.domain.decisions import (
    DecisionOutcome,
    EnforcementAction,
    EnforcementPoint,
    RuleResult,
)
from control_plane.policy.documents import compile_policy_set, content_hash, validate_documents
from control_plane.policy.engine import DecisionCache, NodeIndex, decide, evaluate_node
from control_plane.policy.models import Decision, Explanation, RuleCheck, WorkloadView
from tests.unit.policy.builders import ZONES, cel, dataset, model, node, policy, workload

JP_TW = (node("jp-1", "jp-east"), node("tw-1", "tw-north"))
RESTRICTED = dataset("customer-pii", Classification.RESTRICTED, ("tw-north",))
CONFIDENTIAL = dataset("call-logs", Classification.CONFIDENTIAL, ("jp-east",))
INTERNAL = dataset("wiki", Classification.INTERNAL, ("jp-east",))
PUBLIC = dataset("common-crawl", Classification.PUBLIC, ("jp-east",))
CONFIDENTIAL_AND_UP = policy(
    "confidential-in-japan",
    selector={"min_classification": "confidential"},
    compute_zones=["jp"],
    data_residency=True,
)


def decided(
    the_workload: WorkloadView,
    documents: list[dict[str, Any]],
    *,
    versions: dict[str, int] | None = None,
    deny_unselected: bool = False,
    cache: DecisionCache | None = None,
) -> Decision:
    policy_set = compile_policy_set(documents, 2, ZONES, versions=versions)
    return decide(
        the_workload,
        NodeIndex.build(JP_TW, ZONES),
        policy_set,
        point=EnforcementPoint.API,
        cache=cache or DecisionCache(),
        deny_unselected=deny_unselected,
    )


def results(explanation: Explanation) -> dict[str, list[tuple[str, RuleResult, int | None]]]:
    return {
        chosen.name: [(r.rule, r.result, r.nodes_excluded) for r in chosen.rules]
        for chosen in explanation.selected
    }


# -- selection by level ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("datasets", "selected"),
    [
        ((RESTRICTED,), True),
        ((CONFIDENTIAL,), True),
        ((INTERNAL, CONFIDENTIAL), True),
        ((INTERNAL,), False),
        ((PUBLIC,), False),
        ((), False),
    ],
    ids=["restricted", "confidential", "highest-wins", "internal", "public", "no-data"],
)
def test_min_classification_selects_at_or_above_the_level(
    datasets: tuple[Any, ...], selected: bool
) -> None:
    decision = decided(workload(datasets=datasets), [CONFIDENTIAL_AND_UP])
    assert [p.name for p in decision.explanation.selected] == (
        ["confidential-in-japan"] if selected else []
    )


def test_restricted_data_abroad_is_denied_by_a_confidential_and_above_policy() -> None:
    """The issue's case: restricted data stored in Taiwan, a policy for confidential and up."""
    decision = decided(workload(datasets=(RESTRICTED,)), [CONFIDENTIAL_AND_UP])
    assert decision.outcome is DecisionOutcome.DENIED
    assert (decision.reasons[0].policy, decision.reasons[0].rule) == (
        "confidential-in-japan",
        "data_residency",
    )
    # An exact selector still means exactly that level, as documented.
    exact = {**CONFIDENTIAL_AND_UP, "selector": {"classifications": ["confidential"]}}
    assert decided(workload(datasets=(RESTRICTED,)), [exact]).admitted


def test_a_model_counts_towards_the_level_too() -> None:
    secret_weights = model("weights", Classification.RESTRICTED, ("jp-east",))
    decision = decided(
        workload(datasets=(PUBLIC,), models=(secret_weights,)), [CONFIDENTIAL_AND_UP]
    )
    assert [p.name for p in decision.explanation.selected] == ["confidential-in-japan"]


def test_classifications_and_min_classification_must_both_match() -> None:
    both = policy(
        "both",
        selector={"classifications": ["internal"], "min_classification": "confidential"},
        compute_zones=["jp"],
    )
    internal_only = decided(workload(datasets=(INTERNAL,)), [both])
    assert internal_only.explanation.selected == ()
    assert internal_only.explanation.not_selected[0].reason == (
        "selector min_classification confidential did not match internal"
    )
    mixed = decided(workload(datasets=(INTERNAL, RESTRICTED)), [both])
    assert [p.name for p in mixed.explanation.selected] == ["both"]


# -- a declared output -------------------------------------------------------------------


def test_require_output_denies_a_workload_with_no_output_naming_the_rule() -> None:
    doc = policy(
        "results-stay",
        selector={"min_classification": "internal"},
        compute_zones=["jp"],
        data_residency=True,
        require_output=True,
    )
    nowhere = decided(workload(datasets=(CONFIDENTIAL,)), [doc])
    assert nowhere.outcome is DecisionOutcome.DENIED
    assert [(r.policy, r.rule, r.action) for r in nowhere.reasons] == [
        ("results-stay", "require_output", EnforcementAction.DENY)
    ]
    assert "names no output destination" in nowhere.reasons[0].message
    assert results(nowhere.explanation)["results-stay"][:2] == [
        ("require_output", RuleResult.FAILED, None),
        ("data_residency", RuleResult.PASSED, None),
    ]
    declared = decided(workload(datasets=(CONFIDENTIAL,), output=("results-jp", "jp-east")), [doc])
    assert declared.outcome is DecisionOutcome.ADMITTED
    # Without the requirement, data residency passes a workload with no output, as before.
    lenient = decided(
        workload(datasets=(CONFIDENTIAL,)),
        [{**doc, "requirements": {"compute_zones": ["jp"], "data_residency": True}}],
    )
    assert lenient.admitted


def test_a_warn_policy_requiring_an_output_warns() -> None:
    doc = policy("say-where", "warn", require_output=True)
    decision = decided(workload(), [doc])
    assert decision.outcome is DecisionOutcome.ADMITTED_WITH_WARNINGS
    assert results(decision.explanation)["say-where"][0] == (
        "require_output",
        RuleResult.WARNED,
        None,
    )


@pytest.mark.parametrize(
    ("doc", "field", "message"),
    [
        (
            policy("p", selector={"min_classification": "secret"}),
            "policies[0].selector.min_classification",
            "Input should be 'public', 'internal', 'confidential' or 'restricted'",
        ),
        (
            policy("p", selector={"min_classification": ["restricted"]}),
            "policies[0].selector.min_classification",
            "Input should be",
        ),
        (policy("p", require_output="yes"), "policies[0].requirements.require_output", "Input"),
        (policy("p", require_output=1), "policies[0].requirements.require_output", "Input"),
        (
            policy("p", selector={"min_clasification": "internal"}),
            "policies[0].selector.min_clasification",
            "unknown field",
        ),
        (policy("p", requires_output=True), "policies[0].requirements.requires_output", "unknown"),
    ],
)
def test_the_new_fields_are_validated_naming_the_field(
    doc: dict[str, Any], field: str, message: str
) -> None:
    with pytest.raises(InvalidInputError) as caught:
        validate_documents([doc], ZONES)
    fields = caught.value.details["fields"]
    assert [f["field"] for f in fields] == [field]
    assert fields[0]["message"].startswith(message), fields


def test_documents_that_do_not_use_the_new_fields_hash_as_before() -> None:
    """Stored policies and sets keep their content hashes across the upgrade."""
    doc = policy(
        "pii-stays-in-japan",
        selector={"classifications": ["restricted"]},
        compute_zones=["jp"],
        data_residency=True,
    )
    # As computed before min_classification and require_output existed.
    before = "4b1a48efc4bf034f10ac392b7c18fe8f40e91dee4808614add44e6c2c8861b25"
    assert content_hash(validate_documents([doc], ZONES)) == before
    written_out = {
        **doc,
        "selector": {**doc["selector"], "min_classification": None},
        "requirements": {**doc["requirements"], "require_output": False},
    }
    assert content_hash(validate_documents([written_out], ZONES)) == before
    used = {**doc, "requirements": {**doc["requirements"], "require_output": True}}
    assert content_hash(validate_documents([used], ZONES)) != before


# -- the explanation ---------------------------------------------------------------------


def test_every_policy_is_explained_as_selected_or_not() -> None:
    documents = [
        CONFIDENTIAL_AND_UP,
        policy("only-restricted", selector={"classifications": ["restricted"]}),
        policy("other-tenant", selector={"tenants": ["globex", "initech"]}),
        policy("tagged", selector={"dataset_labels": {"pii": "true"}}),
        policy("weights", selector={"model_labels": {"export": "no"}}),
        policy(
            "verified", "warn", min_provenance_status="verified", server_origin_countries=["TW"]
        ),
    ]
    decision = decided(
        workload(datasets=(CONFIDENTIAL, INTERNAL)),
        documents,
        versions={"confidential-in-japan": 3, "verified": 1},
    )
    assert decision.outcome is DecisionOutcome.ADMITTED_WITH_WARNINGS
    explanation = decision.explanation
    assert [(p.name, p.version) for p in explanation.selected] == [
        ("confidential-in-japan", 3),
        ("verified", 1),
    ]
    assert explanation.selected[0].content_hash == content_hash(
        validate_documents([CONFIDENTIAL_AND_UP], ZONES)
    )
    assert results(explanation) == {
        "confidential-in-japan": [
            ("data_residency", RuleResult.PASSED, None),
            ("compute_location", RuleResult.PASSED, None),
            ("exclude_quarantined", RuleResult.PASSED, None),
        ],
        # Only jp-1 is eligible; it is of origin JP (not TW) and verified.
        "verified": [
            ("server_origin_countries", RuleResult.WARNED, 1),
            ("min_provenance_status", RuleResult.PASSED, None),
            ("exclude_quarantined", RuleResult.PASSED, None),
        ],
    }
    assert [(p.name, p.version, p.reason) for p in explanation.not_selected] == [
        (
            "only-restricted",
            None,
            "selector classifications [restricted] did not match internal, confidential",
        ),
        ("other-tenant", None, "selector tenants [globex, initech] did not match tenant acme"),
        ("tagged", None, "selector dataset_labels {pii: true} matched no dataset of the workload"),
        ("weights", None, "selector model_labels {export: no} did not match: it names no model"),
    ]


def test_a_denial_says_which_node_rules_failed_and_which_were_not_checked() -> None:
    documents = [
        policy("in-japan", compute_zones=["jp"]),
        policy("in-taiwan", compute_zones=["tw-north"]),
        policy("watch", "dryrun", min_provenance_status="verified"),
    ]
    decision = decided(workload(), documents)
    assert decision.outcome is DecisionOutcome.DENIED
    assert results(decision.explanation) == {
        "in-japan": [
            ("compute_location", RuleResult.FAILED, 1),
            ("exclude_quarantined", RuleResult.PASSED, None),
        ],
        "in-taiwan": [
            ("compute_location", RuleResult.FAILED, 1),
            ("exclude_quarantined", RuleResult.PASSED, None),
        ],
        "watch": [
            ("min_provenance_status", RuleResult.NOT_CHECKED, None),
            ("exclude_quarantined", RuleResult.NOT_CHECKED, None),
        ],
    }


def test_workload_cel_rules_are_explained_with_the_policy_action() -> None:
    documents = [
        policy("cost-center", cel=[cel("cc", '"cost-center" in workload.labels')]),
        policy("tidy", "dryrun", cel=[cel("team", '"team" in workload.labels')]),
    ]
    decision = decided(workload(labels={"cost-center": "cc-1"}), documents)
    assert results(decision.explanation)["cost-center"][0] == ("cel.cc", RuleResult.PASSED, None)
    assert results(decision.explanation)["tidy"][0] == ("cel.team", RuleResult.WARNED, None)
    denied = decided(workload(), documents)
    assert results(denied.explanation)["cost-center"][0] == ("cel.cc", RuleResult.FAILED, None)


def test_a_remembered_plan_explains_exactly_as_a_fresh_one() -> None:
    cache = DecisionCache()
    documents = [CONFIDENTIAL_AND_UP, policy("t", selector={"tenants": ["globex"]})]
    the_workload = workload(datasets=(RESTRICTED,))
    policy_set = compile_policy_set(documents, 1, ZONES)
    index = NodeIndex.build(JP_TW, ZONES)
    first = decide(the_workload, index, policy_set, point=EnforcementPoint.API, cache=cache)
    again = decide(the_workload, index, policy_set, point=EnforcementPoint.API, cache=cache)
    fresh = decided(the_workload, documents)
    assert first.explanation == again.explanation == fresh.explanation


def test_the_explanation_serializes_with_the_decision() -> None:
    decision = decided(workload(datasets=(RESTRICTED,)), [CONFIDENTIAL_AND_UP], versions={})
    body = decision.to_json()
    assert body["explanation"]["selected"][0]["name"] == "confidential-in-japan"
    assert body["explanation"]["selected"][0]["version"] is None
    assert body["explanation"]["selected"][0]["rules"][0] == {
        "rule": "data_residency",
        "result": "failed",
        "nodes_excluded": None,
    }
    assert TypeAdapter(Decision).dump_python(decision, mode="json") == body


def test_evaluate_node_explains_the_rules_on_that_node() -> None:
    policy_set = compile_policy_set([CONFIDENTIAL_AND_UP], 1, ZONES)
    index = NodeIndex.build(JP_TW, ZONES)
    on_taiwan = evaluate_node(
        workload(datasets=(CONFIDENTIAL,)), "tw-1", index, policy_set, cache=DecisionCache()
    )
    assert on_taiwan.outcome is DecisionOutcome.DENIED
    assert on_taiwan.explanation.selected[0].rules == (
        RuleCheck("data_residency", RuleResult.PASSED),
        RuleCheck("compute_location", RuleResult.FAILED),
        RuleCheck("exclude_quarantined", RuleResult.PASSED),
    )


# -- default deny for what no policy selects ---------------------------------------------


@pytest.mark.parametrize(
    ("datasets", "denied"),
    [((INTERNAL,), True), ((RESTRICTED,), True), ((PUBLIC,), False), ((), False)],
    ids=["internal", "restricted", "public", "no-data"],
)
def test_deny_unselected_denies_classified_workloads_no_policy_selects(
    datasets: tuple[Any, ...], denied: bool
) -> None:
    documents = [policy("other-tenant", selector={"tenants": ["globex"]}, compute_zones=["jp"])]
    the_workload = workload(datasets=datasets)
    cache = DecisionCache()
    # Off (the default): admitted on the baseline, and the explanation says nothing applied.
    lenient = decided(the_workload, documents, cache=cache)
    assert lenient.admitted
    assert lenient.explanation.selected == ()
    strict = decided(the_workload, documents, deny_unselected=True, cache=cache)
    assert strict.admitted is not denied
    if denied:
        assert [(r.policy, r.rule) for r in strict.reasons] == [(None, "default_deny_unselected")]
        assert strict.eligible_node_ids == []
        assert f"is classified {datasets[0].classification}" in strict.reasons[0].message
        running = evaluate_node(
            the_workload,
            "jp-1",
            NodeIndex.build(JP_TW, ZONES),
            compile_policy_set(documents, 2, ZONES),
            cache=cache,
            deny_unselected=True,
        )
        assert running.outcome is DecisionOutcome.DENIED


def test_deny_unselected_leaves_selected_workloads_alone() -> None:
    decision = decided(
        workload(datasets=(CONFIDENTIAL,)), [CONFIDENTIAL_AND_UP], deny_unselected=True
    )
    assert decision.outcome is DecisionOutcome.ADMITTED


# -- docs/policy.md's "Selecting by level" table, run ------------------------------------

RESTRICTED_MODEL = model("weights", Classification.RESTRICTED, ("jp-east",))
#: Each row of the table, by its first cell, as a workload.
_TABLE_ROWS: dict[str, WorkloadView] = {
    "one `restricted` dataset": workload(datasets=(RESTRICTED,)),
    "one `confidential` dataset": workload(datasets=(CONFIDENTIAL,)),
    "an `internal` dataset and a `restricted` model": workload(
        datasets=(INTERNAL,), models=(RESTRICTED_MODEL,)
    ),
    "one `internal` dataset": workload(datasets=(INTERNAL,)),
    "nothing named": workload(),
}


def _documented_selection_table() -> dict[str, tuple[str, str]]:
    """The table's rows: first cell → (the exact selector's verdict, the level selector's)."""
    text = Path("docs/policy.md").read_text()
    section = text.split("#### Selecting by level", 1)[1].split("\n#", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0] in _TABLE_ROWS:
            rows[cells[0]] = (cells[1], cells[2])
    return rows


def test_the_documented_selection_table_is_what_the_engine_selects() -> None:
    """docs/policy.md: `classifications: [confidential]` vs `min_classification: confidential`."""
    table = _documented_selection_table()
    assert set(table) == set(_TABLE_ROWS)
    exact = {**CONFIDENTIAL_AND_UP, "selector": {"classifications": ["confidential"]}}
    for row, (exact_says, level_says) in table.items():
        for document, documented in ((exact, exact_says), (CONFIDENTIAL_AND_UP, level_says)):
            selected = bool(decided(_TABLE_ROWS[row], [document]).explanation.selected)
            assert documented.startswith("selected" if selected else "not selected"), (
                row,
                document["selector"],
                documented,
            )
