"""Policy documents and scenarios: loading, validation errors by field path, CEL syntax."""

import hashlib
from typing import Any

import pytest

from agents.protocol import canonical_json
from control_plane.core.errors import InvalidInputError
from control_plane.domain.classification import Classification
from control_plane.domain.decisions import EnforcementAction
from control_plane.policy import conditions
from control_plane.policy.documents import (
    compile_policy_set,
    content_hash,
    load_documents,
    validate_documents,
)
from control_plane.policy.models import PolicyDocument
from control_plane.policy.scenario import load_scenario
from tests.unit.policy.builders import ZONES, cel, policy


def problems(docs: list[Any]) -> list[tuple[str, str]]:
    with pytest.raises(InvalidInputError) as caught:
        validate_documents(docs, ZONES)
    fields = caught.value.details["fields"]
    assert caught.value.message == "; ".join(f"{f['field']}: {f['message']}" for f in fields)
    return [(f["field"], f["message"]) for f in fields]


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        (
            policy("p", compute_zones=["jp", "jp-nort"]),
            [("policies[0].requirements.compute_zones[1]", "unknown zone 'jp-nort'")],
        ),
        (
            policy("p", compute_countries=["XX"]),
            [
                (
                    "policies[0].requirements.compute_countries[0]",
                    "'XX' is not an ISO 3166-1 alpha-2 country code",
                )
            ],
        ),
        (
            policy("p", component_origin_countries={"gpu": ["TW", "ZZ"]}),
            [
                (
                    "policies[0].requirements.component_origin_countries.gpu[1]",
                    "'ZZ' is not an ISO 3166-1 alpha-2 country code",
                )
            ],
        ),
        (
            policy("p", component_origin_countries={"tpu": ["US"]}),
            [
                (
                    "policies[0].requirements.component_origin_countries.tpu",
                    "Input should be 'gpu', 'cpu', 'board' or 'nic'",
                )
            ],
        ),
        (
            policy("p", component_origin_countries={"gpu": []}),
            [
                (
                    "policies[0].requirements.component_origin_countries.gpu",
                    "List should have at least 1 item after validation, not 0",
                )
            ],
        ),
        (
            policy("p", cel=[cel("a", 'workload.tenant == "acme" &&')]),
            [
                (
                    "policies[0].requirements.cel[0].expression",
                    "syntax error at 1:29: mismatched input '<EOF>' expecting",
                )
            ],
        ),
        (
            policy("p", cel=[cel("a", "true"), cel("b", 'node.zone == "jp" ||\n  )')]),
            [("policies[0].requirements.cel[1].expression", "syntax error at 2:3:")],
        ),
        (
            policy("p", cel=[cel("a", 'workloads.tenant == "acme"')]),
            [
                (
                    "policies[0].requirements.cel[0].expression",
                    "unknown variable 'workloads' (use workload, node, datasets or models)",
                )
            ],
        ),
        (
            policy("p", cel=[cel("a", "true"), cel("a", "false")]),
            [("policies[0].requirements.cel[1].name", "duplicate rule name 'a'")],
        ),
        (
            policy("p", min_provenance_status="mismatch"),
            [
                (
                    "policies[0].requirements.min_provenance_status",
                    "must be declared or verified",
                )
            ],
        ),
        (
            policy("p", data_residency=True),
            [
                (
                    "policies[0].requirements.data_residency",
                    "needs compute_zones or compute_countries",
                )
            ],
        ),
        (
            {**policy("p"), "enforcement_action": "block"},
            [("policies[0].enforcement_action", "Input should be 'deny', 'warn' or 'dryrun'")],
        ),
        (
            {**policy("p"), "requirments": {}},
            [("policies[0].requirments", "unknown field")],
        ),
        (
            {"description": "no name"},
            [("policies[0].name", "required")],
        ),
        (
            policy("Not A Slug"),
            [("policies[0].name", "String should match pattern")],
        ),
        (
            policy("p", selector={"classifications": ["secret"]}),
            [
                (
                    "policies[0].selector.classifications[0]",
                    "Input should be 'public', 'internal', 'confidential' or 'restricted'",
                )
            ],
        ),
    ],
    ids=lambda value: value[0][0].split(".")[-1] if isinstance(value, list) else None,
)
def test_each_problem_names_its_field(doc: dict[str, Any], expected: list[tuple[str, str]]) -> None:
    found = problems([doc])
    assert len(found) == len(expected), found
    for (field, message), (want_field, want_start) in zip(found, expected, strict=True):
        assert field == want_field
        assert message.startswith(want_start), message


def test_every_problem_is_reported_at_once_in_field_order() -> None:
    found = problems(
        [
            policy("ok"),
            {
                **policy(
                    "bad",
                    compute_zones=["nowhere"],
                    compute_countries=["XX"],
                    cel=[cel("x", "1 +"), cel("y", "nope == 1")],
                ),
                "extra": 1,
            },
            policy("ok"),
        ]
    )
    assert [field for field, _ in found] == [
        "policies[1].extra",
        "policies[1].requirements.cel[0].expression",
        "policies[1].requirements.cel[1].expression",
        "policies[1].requirements.compute_countries[0]",
        "policies[1].requirements.compute_zones[0]",
        "policies[2].name",
    ]
    assert found[-1][1] == "duplicate policy name 'ok' (also policies[0])"


def test_values_are_normalized() -> None:
    [doc] = validate_documents(
        [
            policy(
                " Pii ",
                compute_zones=["JP"],
                compute_countries=["jp"],
                component_origin_countries={"gpu": ["tw"]},
            )
        ],
        ZONES,
    )
    assert doc.name == "pii"
    assert doc.requirements.compute_zones == ["jp"]
    assert doc.requirements.compute_countries == ["JP"]
    assert doc.requirements.component_origin_countries == {"gpu": ["TW"]}
    assert doc.enforcement_action is EnforcementAction.DENY
    assert doc.requirements.exclude_quarantined is True


def test_documents_load_from_yaml_and_json_in_every_shape() -> None:
    single = "name: a\nenforcement_action: warn\n"
    listed = "- name: a\n- name: b\n"
    wrapped = '{"policies": [{"name": "a"}, {"name": "b"}]}'
    several = "name: a\n---\n- name: b\n- name: c\n---\n"
    assert [d["name"] for d in load_documents(single)] == ["a"]
    assert [d["name"] for d in load_documents(listed)] == ["a", "b"]
    assert [d["name"] for d in load_documents(wrapped)] == ["a", "b"]
    assert [d["name"] for d in load_documents(several)] == ["a", "b", "c"]
    assert load_documents("") == []


def test_unparseable_documents_say_where() -> None:
    with pytest.raises(InvalidInputError, match=r"^p.yaml: not valid YAML or JSON at line 2"):
        load_documents("name: a\n  - b: [\n", source="p.yaml")
    with pytest.raises(InvalidInputError, match=r"^policies\[1\]: must be a mapping"):
        load_documents("- name: a\n- just text\n")


def test_compile_accepts_documents_and_orders_by_name() -> None:
    docs: list[PolicyDocument | dict[str, Any]] = [
        PolicyDocument.model_validate(policy("zz")),
        policy("aa"),
    ]
    policy_set = compile_policy_set(docs, 2, ZONES)
    assert [p.name for p in policy_set.policies] == ["aa", "zz"]
    assert [d.name for d in policy_set.documents] == ["aa", "zz"]
    assert policy_set.content_hash == content_hash(policy_set.documents)
    with pytest.raises(InvalidInputError, match="version: must not be negative"):
        compile_policy_set(docs, -1, ZONES)
    with pytest.raises(InvalidInputError, match="unknown zone 'jp'"):
        compile_policy_set([policy("p", compute_zones=["jp"])], 1, {"tw-north"})


def test_classifications_are_ordered() -> None:
    assert [c.rank for c in Classification] == [0, 1, 2, 3]
    assert Classification.highest([Classification.INTERNAL, Classification.RESTRICTED]) is (
        Classification.RESTRICTED
    )
    assert Classification.highest([]) is None


# -- what CEL conditions are handed ----------------------------------------------------


@pytest.mark.parametrize(
    ("source", "variable", "expected"),
    [
        ('node.zone == "jp"', "node", {"zone": None}),
        (
            'node.labels["tier"] == "spot" && has(node.labels.rack)',
            "node",
            {"labels": {"tier", "rack"}},
        ),
        ('node.labels["tier"] == "x" && size(node.labels) > 1', "node", {"labels": None}),
        ('node.labels.exists(k, k == "x")', "node", {"labels": None}),
        ('node.zone.startsWith("jp")', "node", {"zone": None}),
        ('node["zone"] == "jp"', "node", None),
        ("size(node) > 0", "node", None),
        (
            '"a" in workload.labels && workload.gpu_count > 1',
            "workload",
            {"labels": {"a"}, "gpu_count": None},
        ),
        ('workload.output.zone == "jp"', "workload", {"output": {"zone"}}),
        (
            "\"team\" in workload.labels && ('env' in workload.labels)",
            "workload",
            {"labels": {"team", "env"}},
        ),
        ('workload.tenant + "-x" in workload.labels', "workload", {"tenant": None, "labels": None}),
        ('"team" in workload.labels.x', "workload", {"labels": {"x"}}),
        ("true", "workload", {}),
    ],
)
def test_projection_takes_what_is_read_or_everything(
    source: str, variable: str, expected: dict[str, set[str] | None] | None
) -> None:
    found = conditions.projection(source, variable)
    assert found == (
        None
        if expected is None
        else {k: None if v is None else frozenset(v) for k, v in expected.items()}
    )


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ('datasets.all(d, d.classification != "public")', {"classification": None}),
        ("size(datasets) == 0 && datasets.size() == 0", {}),
        ('datasets.exists(d, d.labels["pii"] == "true")', {"labels": {"pii"}}),
        ('datasets[0].name == "x"', None),
        ("datasets.all(d, size(d) > 0)", None),
    ],
)
def test_list_elements_are_projected_through_comprehensions(
    source: str, expected: dict[str, set[str] | None] | None
) -> None:
    found = conditions.element_projection(source, "datasets")
    assert found == (
        None
        if expected is None
        else {k: None if v is None else frozenset(v) for k, v in expected.items()}
    )


def test_syntax_errors_carry_line_and_column() -> None:
    with pytest.raises(conditions.CelSyntaxError) as caught:
        conditions.compile_expression("a &&\n  (b")
    assert caught.value.position.startswith("2:")
    assert str(caught.value).startswith(f"syntax error at {caught.value.position}: ")


# -- scenarios -------------------------------------------------------------------------

SCENARIO = """
zones: [{slug: jp, country: JP}, {slug: jp-east, country: jp, parent: jp}]
workload:
  tenant: acme
  datasets: [{name: d, classification: restricted, storage_zones: [jp-east]}]
nodes:
  - {hostname: a, zone: jp-east, gpus: [{model: H100, count: 2}]}
  - {hostname: b, id: node-b, zone: jp}
"""


def test_a_scenario_becomes_engine_views() -> None:
    scenario = load_scenario(SCENARIO)
    assert scenario.zone_views()["jp-east"].country == "JP"
    [a, b] = scenario.node_views()
    assert (a.id, [g.uuid for g in a.gpus]) == ("a", ["a-gpu0", "a-gpu1"])
    assert b.id == "node-b"
    assert scenario.workload_view().datasets[0].storage_zones == ("jp-east",)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("zone: jp-east, gpus", "zone: jp-nort, gpus"), "nodes[0].zone: unknown zone 'jp-nort'"),
        (
            ("storage_zones: [jp-east]", "storage_zones: [tw]"),
            "workload.datasets[0].storage_zones[0]: unknown zone 'tw'",
        ),
        (("id: node-b", "id: a"), "nodes[1].id: duplicate node id (also nodes[0])"),
        (("tenant: acme", "tenant: acme\n  gpus: 1"), "workload.gpus: unknown field"),
        (
            ("classification: restricted", "classification: secret"),
            "workload.datasets[0].classification: Input should be",
        ),
        (("parent: jp}", "parent: jpx}"), "zones[1].parent: unknown zone 'jpx'"),
    ],
)
def test_scenario_problems_name_their_field(change: tuple[str, str], message: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        load_scenario(SCENARIO.replace(*change), source="s.yaml")
    assert caught.value.message.startswith(f"s.yaml: {message}")


# -- on_violation: what continuous compliance does about a violation -------------------


def test_on_violation_defaults_to_record_and_is_validated_by_name() -> None:
    [doc] = validate_documents([policy("p")], ZONES)
    assert doc.on_violation == "record"
    for action in ("record", "notify", "revoke"):
        [doc] = validate_documents([{**policy("p"), "on_violation": action}], ZONES)
        assert doc.on_violation == action
    assert problems([{**policy("p"), "on_violation": "delete"}]) == [
        ("policies[0].on_violation", "Input should be 'record', 'notify' or 'revoke'")
    ]


def test_on_violation_record_keeps_the_hash_documents_had_before_the_field() -> None:
    plain = validate_documents([policy("p", compute_zones=["jp"])], ZONES)
    spelled = validate_documents(
        [{**policy("p", compute_zones=["jp"]), "on_violation": "record"}], ZONES
    )
    revoke = validate_documents(
        [{**policy("p", compute_zones=["jp"]), "on_violation": "revoke"}], ZONES
    )
    assert content_hash(plain) == content_hash(spelled)
    assert content_hash(plain) != content_hash(revoke)
    # What the hash covered before the field existed: the dump without it.
    # (min_classification and require_output, added in the same release, are left out too.)
    legacy = {k: v for k, v in plain[0].model_dump(mode="json").items() if k != "on_violation"}
    del legacy["selector"]["min_classification"], legacy["requirements"]["require_output"]
    assert content_hash(plain) == hashlib.sha256(canonical_json([legacy]).encode()).hexdigest()
