"""The policy store: apply documents, activate sets, roll back, and the compiled active set."""

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from control_plane.access.models import Role
from control_plane.audit import service as audit
from control_plane.core.db import DbConnection
from control_plane.policy import repository, service
from control_plane.policy.documents import content_hash, load_documents, validate_documents
from control_plane.policy.models import PolicyDocument
from control_plane.policy.store_models import PolicySetActivate
from tests.support import TEST_ACTOR, Run, bearer

pytestmark = pytest.mark.integration

EXAMPLE = Path("examples/policy/pii-stays-in-japan.yaml")
ZONES = (
    {"slug": "jp", "name": "Japan", "country": "JP"},
    {"slug": "jp-east", "name": "Japan East", "country": "JP", "parent": "jp"},
    {"slug": "tw-north", "name": "Taiwan North", "country": "TW"},
)


def policy(name: str = "pii-stays-in-japan", **requirements: Any) -> dict[str, Any]:
    return {
        "name": name,
        "selector": {"classifications": ["restricted"]},
        "requirements": requirements or {"compute_zones": ["jp"], "data_residency": True},
    }


@pytest.fixture
def admin(client: TestClient, make_token: Callable[[Role], str]) -> dict[str, str]:
    """An admin's headers, with the zones policies name already created."""
    headers = bearer(make_token(Role.ADMIN))
    for zone in ZONES:
        assert client.post("/v1/zones", json=zone, headers=headers).status_code == 201
    return headers


def apply(client: TestClient, headers: dict[str, str], body: Any, status: int = 201) -> Any:
    response = client.post("/v1/policies", json=body, headers=headers)
    assert response.status_code == status, response.text
    return response.json()


def activate(client: TestClient, headers: dict[str, str], body: Any, status: int = 200) -> Any:
    response = client.post("/v1/policy-sets/activate", json=body, headers=headers)
    assert response.status_code == status, response.text
    return response.json()


def rollback(client: TestClient, headers: dict[str, str], body: Any, status: int = 200) -> Any:
    response = client.post("/v1/policy-sets/rollback", json=body, headers=headers)
    assert response.status_code == status, response.text
    return response.json()


def members(policy_set: dict[str, Any]) -> list[str]:
    return [f"{m['name']}@{m['version']}" for m in policy_set["members"]]


def set_hash(*documents: dict[str, Any]) -> str:
    """The content hash compile_policy_set gives these documents."""
    return content_hash(validate_documents(documents, {z["slug"] for z in ZONES}))


# -- applying --------------------------------------------------------------------------


def test_apply_then_list_and_show(client: TestClient, admin: dict[str, str]) -> None:
    warn = {**policy("verified-hardware", min_provenance_status="verified")}
    warn["enforcement_action"] = "warn"
    applied = apply(client, admin, [policy(), warn])
    assert [(p["name"], p["version"], p["created"]) for p in applied] == [
        ("pii-stays-in-japan", 1, True),
        ("verified-hardware", 1, True),
    ]
    assert applied[0]["content_hash"] == set_hash(policy())

    listed = client.get("/v1/policies", headers=admin).json()
    assert [(p["name"], p["version"], p["active_version"], p["active"]) for p in listed] == [
        ("pii-stays-in-japan", 1, None, False),
        ("verified-hardware", 1, None, False),
    ]
    assert listed[1]["enforcement_action"] == "warn"

    [version] = client.get("/v1/policies/pii-stays-in-japan", headers=admin).json()
    assert version["created_by"].startswith("admin-")
    # The validated document is stored: defaults filled in.
    assert version["document"]["enforcement_action"] == "deny"
    assert version["document"]["requirements"]["exclude_quarantined"] is True
    one = client.get("/v1/policies/pii-stays-in-japan/versions/1", headers=admin).json()
    assert one == version

    # Applying changes nothing that is enforced.
    assert client.get("/v1/policy-sets/active", headers=admin).json()["version"] == 0


def test_unknown_policies_and_versions_are_404(client: TestClient, admin: dict[str, str]) -> None:
    apply(client, admin, policy())
    for path, message in (
        ("/v1/policies/nope", "policy 'nope' does not exist"),
        ("/v1/policies/nope/versions/1", "policy 'nope' does not exist"),
        ("/v1/policies/pii-stays-in-japan/versions/2", "has no version 2"),
    ):
        response = client.get(path, headers=admin)
        assert response.status_code == 404, path
        assert message in response.json()["error"]["message"]


def test_apply_accepts_yaml_and_the_policies_mapping(
    client: TestClient, admin: dict[str, str]
) -> None:
    response = client.post(
        "/v1/policies",
        content=EXAMPLE.read_bytes(),
        headers={**admin, "Content-Type": "application/yaml"},
    )
    assert response.status_code == 201, response.text
    assert [p["name"] for p in response.json()] == [
        "pii-stays-in-japan",
        "verified-hardware",
        "no-spot-nodes",
    ]
    wrapped = {"policies": [policy("another")]}
    assert apply(client, admin, wrapped)[0]["name"] == "another"


def test_invalid_documents_are_422_naming_every_path(
    client: TestClient, admin: dict[str, str], conn: DbConnection
) -> None:
    bad = policy(
        compute_zones=["jp", "jp-nort"],
        compute_countries=["XX"],
        cel=[{"name": "cost-center", "expression": '"cost-center" in workload.labels &&'}],
    )
    response = client.post("/v1/policies", json=[policy("fine"), bad], headers=admin)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_input"
    fields = {f["field"]: f["message"] for f in error["details"]["fields"]}
    assert fields["policies[1].requirements.compute_zones[1]"] == "unknown zone 'jp-nort'"
    assert "ISO 3166-1 alpha-2" in fields["policies[1].requirements.compute_countries[0]"]
    assert fields["policies[1].requirements.cel[0].expression"].startswith("syntax error at 1:")
    # All or nothing: the valid document was not stored either.
    assert client.get("/v1/policies", headers=admin).json() == []
    assert audit.list_events(conn, action="policy.applied").total == 0


@pytest.mark.parametrize(
    ("content", "content_type", "field"),
    [
        (b"{not json", "application/json", "body"),
        (b"[]", "application/json", "policies"),
        (b'"a string"', "application/json", "policies[0]"),
        (b"name: [unclosed", "application/yaml", None),
        (b"name: x", "text/plain", "body"),
    ],
)
def test_bodies_that_are_not_documents_are_422(
    client: TestClient,
    admin: dict[str, str],
    content: bytes,
    content_type: str,
    field: str | None,
) -> None:
    response = client.post(
        "/v1/policies", content=content, headers={**admin, "Content-Type": content_type}
    )
    assert response.status_code == 422, response.text
    if field is not None:
        assert response.json()["error"]["details"]["fields"][0]["field"] == field


def test_an_identical_document_is_not_stored_twice(
    client: TestClient, admin: dict[str, str], conn: DbConnection
) -> None:
    apply(client, admin, policy())
    # Same meaning, other spelling: upper-case name, defaults written out.
    same = {**policy(), "name": "PII-Stays-In-Japan", "enforcement_action": "deny"}
    [again] = apply(client, admin, same, status=200)
    assert (again["version"], again["created"]) == (1, False)
    assert len(client.get("/v1/policies/pii-stays-in-japan", headers=admin).json()) == 1

    changed = {**policy(), "description": "now with words"}
    [second] = apply(client, admin, changed)
    assert (second["version"], second["created"]) == (2, True)

    events = audit.list_events(conn, action="policy.applied").items
    assert [e.after["version"] for e in events] == [1, 2]
    assert events[0].before is None
    assert events[1].before == {
        "name": "pii-stays-in-japan",
        "version": 1,
        "content_hash": set_hash(policy()),
    }
    assert events[1].after["content_hash"] == set_hash(changed)
    assert events[1].after["active_policy_set"] == {
        "version": 0,
        "content_hash": service.EMPTY_SET_HASH,
    }


# -- activating and rolling back -------------------------------------------------------


def test_activate_and_roll_back(
    client: TestClient, admin: dict[str, str], conn: DbConnection
) -> None:
    japan, taiwan = policy(), policy("tw-only", compute_zones=["tw-north"])
    apply(client, admin, [japan, taiwan])
    first = activate(client, admin, {"note": "go live"})
    assert first["version"] == 1
    assert members(first) == ["pii-stays-in-japan@1", "tw-only@1"]
    assert first["content_hash"] == set_hash(japan, taiwan)
    assert first["previous_version"] is None
    assert client.get("/v1/policy-sets/active", headers=admin).json() == first
    listed = client.get("/v1/policies", headers=admin).json()
    assert [p["active"] for p in listed] == [True, True]

    # The same members again is a conflict, not a new set.
    unchanged = activate(client, admin, {}, status=409)
    assert unchanged["error"]["details"]["reason"] == "unchanged"

    japan_v2 = {**japan, "description": "v2"}
    apply(client, admin, japan_v2)
    second = activate(client, admin, {"without": ["tw-only"]})
    assert (second["version"], second["previous_version"]) == (2, 1)
    assert members(second) == ["pii-stays-in-japan@2"]
    assert second["content_hash"] == set_hash(japan_v2)

    # Rolling back restores set 1's members as a new set 3: history stays a line.
    third = rollback(client, admin, {"note": "v2 broke admission"})
    assert (third["version"], third["previous_version"], third["restores_version"]) == (3, 2, 1)
    assert members(third) == members(first)
    assert third["content_hash"] == first["content_hash"]
    assert third["note"] == "v2 broke admission"
    assert client.get("/v1/policy-sets/active", headers=admin).json() == third
    # Rolling back again undoes the rollback, as `kubectl rollout undo` does.
    assert members(rollback(client, admin, {})) == members(second)
    fifth = rollback(client, admin, {"to_version": 1})
    assert (fifth["version"], fifth["restores_version"]) == (5, 1)

    history = client.get("/v1/policy-sets", params={"limit": 2}, headers=admin).json()
    assert history["total"] == 5
    assert [s["version"] for s in history["items"]] == [5, 4]

    activated = audit.list_events(conn, object_type="policy_set").items
    assert [(e.action, e.object_id) for e in activated] == [
        ("policy_set.activated", "1"),
        ("policy_set.activated", "2"),
        ("policy_set.rolled_back", "3"),
        ("policy_set.rolled_back", "4"),
        ("policy_set.rolled_back", "5"),
    ]
    assert activated[0].before == {
        "version": 0,
        "content_hash": service.EMPTY_SET_HASH,
        "members": [],
    }
    assert activated[2].before["version"] == 2
    assert activated[2].before["content_hash"] == second["content_hash"]
    assert activated[2].after == {
        "version": 3,
        "content_hash": first["content_hash"],
        "members": first["members"],
        "note": "v2 broke admission",
        "restores_version": 1,
    }
    assert audit.verify_chain(conn).ok


def test_explicit_members_pick_versions(client: TestClient, admin: dict[str, str]) -> None:
    apply(client, admin, [policy(), policy("other")])
    apply(client, admin, {**policy(), "description": "v2"})
    chosen = activate(
        client,
        admin,
        {"members": [{"name": "pii-stays-in-japan", "version": 1}, {"name": "other"}]},
    )
    assert members(chosen) == ["other@1", "pii-stays-in-japan@1"]
    listed = {p["name"]: p for p in client.get("/v1/policies", headers=admin).json()}
    assert (
        listed["pii-stays-in-japan"]["active_version"],
        listed["pii-stays-in-japan"]["active"],
    ) == (
        1,
        False,
    )
    versions = client.get("/v1/policies/pii-stays-in-japan", headers=admin).json()
    assert [v["active"] for v in versions] == [True, False]


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"members": [{"name": "nope"}]}, "members.0.name", "unknown policy 'nope'"),
        (
            {"members": [{"name": "pii-stays-in-japan", "version": 3}]},
            "members.0.version",
            "has no version 3 (latest is 1)",
        ),
        (
            {"members": [{"name": "pii-stays-in-japan"}, {"name": "pii-stays-in-japan"}]},
            "members.1.name",
            "listed twice",
        ),
        ({"without": ["nope"]}, "without.0", "policy 'nope' is not in the set"),
        ({"members": [], "surprise": 1}, "surprise", "Extra inputs"),
    ],
)
def test_bad_activations_are_422(
    client: TestClient, admin: dict[str, str], body: dict[str, Any], field: str, message: str
) -> None:
    apply(client, admin, policy())
    error = activate(client, admin, body, status=422)["error"]
    [problem] = [f for f in error["details"]["fields"] if f["field"] == field]
    assert message in problem["message"]


def test_empty_sets_and_nothing_to_roll_back_are_409(
    client: TestClient, admin: dict[str, str]
) -> None:
    assert activate(client, admin, {}, status=409)["error"]["details"]["reason"] == "empty"
    assert rollback(client, admin, {}, status=409)["error"]["details"]["reason"] == "no_previous"
    apply(client, admin, policy())
    emptied = activate(client, admin, {"without": ["pii-stays-in-japan"]}, status=409)
    assert emptied["error"]["details"]["reason"] == "empty"
    activate(client, admin, {})
    assert rollback(client, admin, {}, status=409)["error"]["details"]["reason"] == "no_previous"
    assert rollback(client, admin, {"to_version": 1}, status=409)["error"]["details"] == {
        "reason": "unchanged",
        "active_version": 1,
    }
    missing = rollback(client, admin, {"to_version": 9}, status=422)["error"]
    assert missing["details"]["fields"][0]["field"] == "to_version"


# -- the compiled active set -----------------------------------------------------------


def test_active_policy_set_is_compiled_once_per_version(
    client: TestClient, admin: dict[str, str], conn: DbConnection
) -> None:
    cache = service.CompiledPolicySets()
    empty = service.active_policy_set(conn, cache)
    assert (empty.version, empty.content_hash, empty.policies) == (0, service.EMPTY_SET_HASH, ())

    documents = load_documents(EXAMPLE.read_text())
    service.apply_policies(conn, TEST_ACTOR, documents)
    first = service.activate(conn, TEST_ACTOR, PolicySetActivate())
    compiled = service.active_policy_set(conn, cache)
    assert (compiled.version, compiled.content_hash) == (1, first.content_hash)
    assert [p.name for p in compiled.policies] == [
        "no-spot-nodes",
        "pii-stays-in-japan",
        "verified-hardware",
    ]
    assert service.active_policy_set(conn, cache) is compiled
    assert service.active_policy_set(conn) is not compiled  # no cache, compiled afresh

    # A new activation is a new key: compiled once more, then kept.
    service.apply_policies(conn, TEST_ACTOR, [policy("tw-only", compute_zones=["tw-north"])])
    second = service.activate(conn, TEST_ACTOR, PolicySetActivate(without=["no-spot-nodes"]))
    recompiled = service.active_policy_set(conn, cache)
    assert recompiled is not compiled
    assert (recompiled.version, recompiled.content_hash) == (2, second.content_hash)

    # A zone deleted after its policy was applied does not stop the set from compiling.
    conn.execute("DELETE FROM residency_zone WHERE slug = 'tw-north'")
    fresh = service.active_policy_set(conn)
    assert (fresh.version, fresh.content_hash) == (2, second.content_hash)
    assert "tw-only" in [p.name for p in fresh.policies]


def test_a_stored_rule_beyond_the_cel_bounds_fails_closed_and_is_logged(
    client: TestClient, admin: dict[str, str], conn: DbConnection, caplog: pytest.LogCaptureFixture
) -> None:
    """A set stored before the CEL bounds still compiles; the rule they refuse denies."""
    ten = "[0,0,0,0,0,0,0,0,0,0]"
    slow = "".join(f"{ten}.all(v{n}, " for n in range(8)) + "v7 == 0" + ")" * 8
    cel = [{"name": "slow", "expression": slow, "message": "must be quick"}]
    # As a release before the bounds stored it: the schema checked it, nothing else.
    document = PolicyDocument.model_validate({"name": "slow", "requirements": {"cel": cel}})
    repository.insert_version(
        conn,
        {
            "name": "slow",
            "version": 1,
            "document": document.model_dump(mode="json"),
            "content_hash": content_hash([document]),
            "created_by": "an older release",
        },
    )
    service.activate(conn, TEST_ACTOR, PolicySetActivate())
    tenant = {"slug": "research", "name": "Research"}
    assert client.post("/v1/tenants", json=tenant, headers=admin).status_code == 201

    with caplog.at_level(logging.WARNING, logger="control_plane.policy.service"):
        response = client.post("/v1/workloads", json={"tenant": "research"}, headers=admin)
    assert response.status_code == 201, response.text
    workload = response.json()
    assert workload["status"] == "denied"
    [reason] = [r for r in workload["reasons"] if r["rule"] == "cel.slow"]
    assert (
        "could not evaluate: refused by the CEL bounds: estimated cost 755,555,552"
        in (reason["message"])
    )
    assert (
        "policy set 1: policy 'slow', CEL rule 'slow': estimated cost 755,555,552 exceeds the"
        " limit of 300,000"
    ) in caplog.text
    assert "the rule fails closed" in caplog.text


# -- sovctl ----------------------------------------------------------------------------


def test_sovctl_policy_round_trip(admin_sovctl: Run, tmp_path: Path) -> None:
    sovctl = admin_sovctl
    assert sovctl("zones", "create", "jp", "--name", "Japan", "--country", "JP")[0] == 0

    code, out, err = sovctl("policies", "apply", "-f", str(EXAMPLE))
    assert code == 0, err
    assert out.count("stored") == 3
    assert "not enforced until activated" in out
    code, out, _ = sovctl("policies", "apply", "-f", str(EXAMPLE), "-o", "json")
    assert [p["created"] for p in json.loads(out)] == [False, False, False]

    code, out, _ = sovctl("policies", "list")
    assert code == 0
    assert "active policy set: version 0" in out
    assert "no-spot-nodes" in out

    code, out, err = sovctl("policies", "activate", "--note", "go live", "-o", "json")
    assert code == 0, err
    first = json.loads(out)
    assert (first["version"], first["note"]) == (1, "go live")

    code, out, _ = sovctl("policies", "show", "pii-stays-in-japan", "--version", "1")
    assert code == 0
    assert "compute_zones:" in out
    assert "- jp" in out
    code, out, _ = sovctl("policies", "show", "pii-stays-in-japan", "-o", "json")
    assert [v["active"] for v in json.loads(out)] == [True]

    code, out, err = sovctl("policies", "activate", "--without", "no-spot-nodes")
    assert code == 0, err
    assert "pii-stays-in-japan@1,verified-hardware@1" in out
    code, out, err = sovctl(
        "policies", "activate", "-m", "no-spot-nodes@1", "-m", "verified-hardware"
    )
    assert code == 0, err
    assert "no-spot-nodes@1,verified-hardware@1" in out

    code, out, err = sovctl("policies", "rollback", "--to", "1", "--note", "undo", "-o", "json")
    assert code == 0, err
    restored = json.loads(out)
    assert (restored["version"], restored["restores_version"]) == (4, 1)
    assert restored["content_hash"] == first["content_hash"]
    code, out, _ = sovctl("policies", "sets")
    assert "(4 of 4)" in out

    code, _, err = sovctl("policies", "rollback", "--to", "4")
    assert code == 1
    assert "HTTP 409" in err
    code, _, err = sovctl("policies", "activate", "-m", "x@y")
    assert code == 2

    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: bad\nrequirements:\n  compute_zones: [jp-nort]\n  compute_countries: [XX]\n"
    )
    code, _, err = sovctl("policies", "apply", "-f", str(bad))
    assert code == 1
    assert f"{bad}: 2 problems" in err
    assert "policies[0].requirements.compute_zones[0]: unknown zone 'jp-nort'" in err
