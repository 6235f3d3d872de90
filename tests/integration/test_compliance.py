"""Continuous compliance and what-if against the real database, API and a real Celery worker."""

import hashlib
import hmac
import http.server
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
import yaml
from celery import Celery
from celery.contrib.testing.worker import start_worker
from fastapi.testclient import TestClient
from psycopg.rows import DictRow
from pydantic import ValidationError

from control_plane.access.models import Role
from control_plane.audit import service as audit
from control_plane.celery_app import create_celery
from control_plane.compliance import service
from control_plane.compliance.models import DueDelivery, EvaluationPublic
from control_plane.compliance.tasks import COMPLIANCE_ACTOR, EVALUATE_TASK
from control_plane.compliance.webhooks import MAX_ERROR_CHARS, WebhookSender
from control_plane.core.db import DbConnection
from control_plane.core.outbox import request_evaluation
from control_plane.core.settings import Settings
from control_plane.domain.compliance import EvaluationTrigger
from control_plane.scheduling.models import WorkloadCreate
from tests.support import Run, bearer, free_port, registration

pytestmark = pytest.mark.integration

JAPAN_ONLY = {"name": "compute-in-japan", "requirements": {"compute_zones": ["jp"]}}
TAIWAN_ONLY = {"name": "compute-in-japan", "requirements": {"compute_zones": ["tw"]}}


@dataclass
class World:
    """Zones jp and tw, two nodes in each, two tenants and a dataset of each stored in jp."""

    admin: dict[str, str]
    node_ids: dict[str, str]
    agents: dict[str, tuple[str, str]]  # hostname -> (agent token, machine id)


#: hostname -> (zone, GPUs, system serial)
NODES = {
    "jp-a": ("jp", 4, "S-JP-A"),
    "jp-b": ("jp", 2, "S-JP-B"),
    "tw-a": ("tw", 2, "S-TW-A"),
    "tw-b": ("tw", 2, "S-TW-B"),
}


@pytest.fixture
def world(client: TestClient, make_token: Callable[[Role], str]) -> World:
    admin = bearer(make_token(Role.ADMIN))
    for path, created in (
        ("/v1/zones", {"slug": "jp", "name": "Japan", "country": "JP"}),
        ("/v1/zones", {"slug": "tw", "name": "Taiwan", "country": "TW"}),
        ("/v1/zones", {"slug": "jp-east", "name": "Japan East", "country": "JP"}),
        ("/v1/tenants", {"slug": "research", "name": "Research"}),
        ("/v1/tenants", {"slug": "platform", "name": "Platform"}),
        (
            "/v1/datasets",
            {
                "name": "tickets",
                "tenant": "research",
                "classification": "confidential",
                "zones": ["jp"],
            },
        ),
        (
            "/v1/datasets",
            {
                "name": "ops-logs",
                "tenant": "platform",
                "classification": "confidential",
                "zones": ["jp"],
            },
        ),
        ("/v1/destinations", {"name": "results-jp", "zone": "jp"}),
    ):
        response = client.post(path, json=created, headers=admin)
        assert response.status_code == 201, response.text
    world = World(admin=admin, node_ids={}, agents={})
    for hostname, (zone, gpus, serial) in NODES.items():
        body = registration(
            hostname=hostname,
            zone=zone,
            gpu_uuids=tuple(f"GPU-{hostname}-{i}" for i in range(gpus)),
        )
        body["inventory"]["host"]["system_serial"] = serial
        response = client.post("/v1/agents/register", json=body, headers=admin)
        assert response.status_code == 201, response.text
        world.node_ids[hostname] = response.json()["node_id"]
        world.agents[hostname] = (
            response.json()["token"],
            body["inventory"]["host"]["machine_id"],
        )
    return world


#: Each tenant's own dataset: another tenant's needs a grant.
OWN_DATASET = {"research": "tickets", "platform": "ops-logs"}


def submit(client: TestClient, world: World, **overrides: Any) -> dict[str, Any]:
    tenant = overrides.get("tenant", "research")
    body = {"tenant": tenant, "datasets": [OWN_DATASET[tenant]], "output": "results-jp"}
    body.update(overrides)
    response = client.post("/v1/workloads", json=body, headers=world.admin)
    assert response.status_code == 201, response.text
    workload: dict[str, Any] = response.json()
    assert workload["status"] == "admitted", workload
    return workload


def fill_the_fleet(client: TestClient, world: World) -> list[dict[str, Any]]:
    """One-GPU workloads until every GPU is held: some land in jp, some in tw."""
    total = sum(gpus for _, gpus, _ in NODES.values())
    return [
        submit(client, world, tenant="platform" if i % 3 == 0 else "research") for i in range(total)
    ]


def pending(conn: DbConnection) -> list[DictRow]:
    return conn.execute(
        "SELECT reason, subject FROM compliance_request WHERE evaluation_id IS NULL ORDER BY id"
    ).fetchall()


def reasons(conn: DbConnection) -> list[str]:
    return [row["reason"] for row in pending(conn)]


def run(conn: DbConnection, sample_size: int = 100) -> EvaluationPublic | None:
    return service.run_pending(
        conn, COMPLIANCE_ACTOR, sample_size=sample_size, request_retention_days=7
    )


def apply_and_activate(client: TestClient, world: World, *documents: dict[str, Any]) -> Any:
    applied = client.post("/v1/policies", json=list(documents), headers=world.admin)
    assert applied.status_code in (200, 201), applied.text
    activated = client.post("/v1/policy-sets/activate", json={}, headers=world.admin)
    assert activated.status_code == 200, activated.text
    return activated.json()


# -- the outbox: a request in the transaction of each change ---------------------------


def test_activation_and_rollback_request_an_evaluation(
    client: TestClient, conn: DbConnection, world: World
) -> None:
    assert pending(conn) == []
    first = apply_and_activate(client, world, JAPAN_ONLY)
    second = apply_and_activate(client, world, TAIWAN_ONLY)
    rolled = client.post("/v1/policy-sets/rollback", json={}, headers=world.admin).json()
    rows = pending(conn)
    assert [row["reason"] for row in rows] == [
        "policy_set.activated",
        "policy_set.activated",
        "policy_set.rolled_back",
    ]
    assert rows[0]["subject"]["policy_set_version"] == first["version"]
    assert rows[1]["subject"]["content_hash"] == second["content_hash"]
    assert rows[2]["subject"] == {
        "policy_set_version": rolled["version"],
        "content_hash": rolled["content_hash"],
        "previous_version": second["version"],
        "restores_version": first["version"],
    }
    # A refused activation (nothing would change) asks for nothing: its transaction rolled back.
    same = {"members": [{"name": "compute-in-japan", "version": 1}]}
    refused = client.post("/v1/policy-sets/activate", json=same, headers=world.admin)
    assert refused.status_code == 409
    assert len(pending(conn)) == 3


def test_node_edits_request_an_evaluation_per_kind_of_change(
    client: TestClient, conn: DbConnection, world: World
) -> None:
    node = world.node_ids["tw-a"]

    def patch(body: dict[str, Any]) -> int:
        return client.patch(f"/v1/nodes/{node}", json=body, headers=world.admin).status_code

    assert patch({"zone": "jp"}) == 200
    [row] = pending(conn)
    assert row["reason"] == "node.zone_changed"
    assert row["subject"] == {
        "node_id": node,
        "hostname": "tw-a",
        "before": {"zone": "tw"},
        "after": {"zone": "jp"},
    }
    assert patch({"provenance": {"origin_country": "US"}}) == 200
    assert patch({"labels": {"tier": "spot"}}) == 200
    assert patch({"status": "maintenance"}) == 200
    assert reasons(conn)[1:] == [
        "node.provenance_changed",
        "node.labels_changed",
        "node.status_changed",
    ]
    provenance = pending(conn)[1]["subject"]
    assert provenance["before"]["provenance_status"] == "unknown"
    assert provenance["after"] == {
        "provenance_status": "declared",
        "origin_country": "US",
        "component_origins": {},
    }
    # Nothing the engine reads changed: no request. A refused edit: none either.
    assert patch({"labels": {"tier": "spot"}}) == 200
    assert patch({"zone": "nowhere"}) == 422
    assert len(pending(conn)) == 4


def test_a_zone_moved_requests_an_evaluation(
    client: TestClient, conn: DbConnection, world: World
) -> None:
    response = client.patch("/v1/zones/jp-east", json={"parent": "jp"}, headers=world.admin)
    assert response.status_code == 200, response.text
    [row] = pending(conn)
    assert row["reason"] == "zone.changed"
    assert row["subject"]["after"] == {"parent": "jp", "country": "JP"}
    # A description is not a place: no request.
    client.patch("/v1/zones/jp-east", json={"description": "Tokyo"}, headers=world.admin)
    assert len(pending(conn)) == 1


def test_registry_changes_that_policies_read_request_an_evaluation(
    client: TestClient, conn: DbConnection, world: World
) -> None:
    # A description is not read by any policy: no request.
    client.patch("/v1/datasets/tickets", json={"description": "CRM"}, headers=world.admin)
    assert pending(conn) == []
    moved = client.patch("/v1/datasets/tickets", json={"zones": ["tw"]}, headers=world.admin)
    assert moved.status_code == 200, moved.text
    [row] = pending(conn)
    assert row["reason"] == "registry.changed"
    assert row["subject"] == {"kind": "dataset", "name": "tickets", "change": "updated"}
    assert client.delete("/v1/destinations/results-jp", headers=world.admin).status_code == 204
    assert reasons(conn) == ["registry.changed", "registry.changed"]
    assert pending(conn)[1]["subject"]["kind"] == "destination"


def test_a_bom_import_that_changes_provenance_requests_an_evaluation(
    client: TestClient, conn: DbConnection, world: World
) -> None:
    rows = [
        {"system_serial": "S-TW-A", "component": "system", "origin_country": "TW"},
        *(
            {
                "system_serial": "S-TW-A",
                "component": "gpu",
                "serial": f"165232{i:07d}",
                "origin_country": "TW",
            }
            for i in range(2)
        ),
    ]
    imported = client.post("/v1/provenance/imports", json={"rows": rows}, headers=world.admin)
    assert imported.status_code == 200, imported.text
    assert imported.json()["servers"][0]["status"] == "verified"
    [row] = pending(conn)
    assert row["reason"] == "node.provenance_changed"
    assert row["subject"]["node_ids"] == [world.node_ids["tw-a"]]
    assert row["subject"]["nodes"] == 1
    # The same BOM again changes nothing, and asks for nothing.
    client.post("/v1/provenance/imports", json={"rows": rows}, headers=world.admin)
    assert len(pending(conn)) == 1


def test_drift_and_its_acknowledgement_request_an_evaluation(
    client: TestClient, conn: DbConnection, world: World
) -> None:
    token, machine_id = world.agents["jp-b"]
    node = world.node_ids["jp-b"]
    swapped = registration(hostname="jp-b", machine_id=machine_id, gpu_uuids=("GPU-swapped",))[
        "inventory"
    ]
    heartbeat = {"seq": 1, "inventory": swapped}
    ack = client.post(f"/v1/nodes/{node}/heartbeat", json=heartbeat, headers=bearer(token))
    assert ack.json()["status"] == "quarantined"
    [row] = pending(conn)
    assert row["reason"] == "node.drift_detected"
    assert row["subject"] == {"node_id": node, "hostname": "jp-b", "source": "heartbeat"}
    # The same report again is no new drift.
    again = {"seq": 2, "inventory": swapped}
    client.post(f"/v1/nodes/{node}/heartbeat", json=again, headers=bearer(token))
    assert len(pending(conn)) == 1
    acknowledged = client.post(f"/v1/nodes/{node}/drift/acknowledge", json={}, headers=world.admin)
    assert acknowledged.status_code == 200
    assert reasons(conn) == ["node.drift_detected", "node.drift_acknowledged"]


def test_every_trigger_is_storable_and_only_inside_a_transaction(conn: DbConnection) -> None:
    with conn.transaction():
        for trigger in EvaluationTrigger:
            request_evaluation(conn, trigger, {"test": True})
    assert reasons(conn) == [trigger.value for trigger in EvaluationTrigger]
    with pytest.raises(RuntimeError, match="inside the transaction"):
        request_evaluation(conn, EvaluationTrigger.REQUESTED, {})


# -- the evaluation --------------------------------------------------------------------


def test_an_evaluation_records_counts_sample_and_one_audit_event(
    client: TestClient, conn: DbConnection, world: World
) -> None:
    workloads = fill_the_fleet(client, world)
    in_taiwan = sorted(w["id"] for w in workloads if w["zone"] == "tw")
    assert len(in_taiwan) == 4
    active = apply_and_activate(client, world, JAPAN_ONLY)
    assert run(conn, sample_size=3) is not None
    evaluation = client.get("/v1/compliance/evaluations/latest", headers=world.admin).json()
    assert evaluation["trigger_count"] == 1
    assert [t["reason"] for t in evaluation["triggers"]] == ["policy_set.activated"]
    assert evaluation["policy_set_version"] == active["version"]
    assert evaluation["policy_set_hash"] == active["content_hash"]
    assert evaluation["workloads_evaluated"] == len(workloads)
    assert evaluation["violating_workloads"] == 4
    assert evaluation["warned_workloads"] == 0
    assert evaluation["violations_by_rule"] == [
        {"policy": "compute-in-japan", "rule": "compute_location", "workloads": 4}
    ]
    expected_by_tenant: dict[str, int] = {}
    for w in workloads:
        if w["zone"] == "tw":
            expected_by_tenant[w["tenant"]] = expected_by_tenant.get(w["tenant"], 0) + 1
    assert evaluation["violations_by_tenant"] == dict(sorted(expected_by_tenant.items()))
    # The sample is capped; the first violating workloads by id.
    assert [s["workload_id"] for s in evaluation["sample"]] == in_taiwan[:3]
    first = evaluation["sample"][0]
    assert first["hostname"] in {"tw-a", "tw-b"}
    assert first["zone"] == "tw"
    assert first["reasons"][0]["rule"] == "compute_location"
    assert f"node {first['hostname']}" in first["reasons"][0]["message"]
    # Which policy judged it, at which version, and what each of its rules found there.
    [stored] = client.get("/v1/policies", headers=world.admin).json()
    assert first["explanation"] == {
        "selected": [
            {
                "name": "compute-in-japan",
                "version": 1,
                "content_hash": stored["content_hash"],
                "enforcement_action": "deny",
                "rules": [
                    {"rule": "compute_location", "result": "failed", "nodes_excluded": None},
                    {"rule": "exclude_quarantined", "result": "passed", "nodes_excluded": None},
                ],
            }
        ],
        "not_selected": [],
    }
    # Requests handled; one audit event with the counts and the sampled ids.
    assert pending(conn) == []
    [event] = audit.list_events(conn, action="compliance.evaluated").items
    assert event.actor_id == "system:compliance"
    assert event.object_type == "compliance_evaluation"
    assert event.object_id == evaluation["id"]
    assert event.after["violating_workloads"] == 4
    assert event.after["sampled_workload_ids"] == in_taiwan[:3]
    assert event.after["triggers"] == {"count": 1, "reasons": {"policy_set.activated": 1}}
    assert audit.verify_chain(conn).ok
    # Idempotent: nothing pending, nothing done.
    assert run(conn) is None
    assert len(audit.list_events(conn, action="compliance.evaluated").items) == 1
    # Read back by id and in the list (without the sample).
    by_id = client.get(f"/v1/compliance/evaluations/{evaluation['id']}", headers=world.admin)
    assert by_id.json() == evaluation
    page = client.get("/v1/compliance/evaluations", headers=world.admin).json()
    assert page["total"] == 1
    assert page["items"][0]["id"] == evaluation["id"]
    assert "sample" not in page["items"][0]


def test_reading_before_any_evaluation_and_requesting_one(
    client: TestClient, conn: DbConnection, world: World
) -> None:
    latest = client.get("/v1/compliance/evaluations/latest", headers=world.admin)
    assert latest.status_code == 404
    assert latest.json()["error"]["code"] == "not_found"
    unknown = "00000000-0000-0000-0000-000000000000"
    by_id = client.get(f"/v1/compliance/evaluations/{unknown}", headers=world.admin)
    assert by_id.status_code == 404
    requested = client.post("/v1/compliance/evaluations", headers=world.admin)
    assert requested.status_code == 202
    body = requested.json()
    assert body["reason"] == "requested"
    assert body["evaluation_id"] is None
    assert body["subject"]["requested_by"].startswith("admin-")
    # Read back: pending until an evaluation handles it, then naming that evaluation.
    url = f"/v1/compliance/requests/{body['id']}"
    assert client.get(url, headers=world.admin).json() == body
    found = run(conn)
    assert found is not None
    assert found.workloads_evaluated == 0
    assert found.violating_workloads == 0
    assert [t.id for t in found.triggers] == [body["id"]]
    assert client.get(url, headers=world.admin).json() == {**body, "evaluation_id": str(found.id)}
    missing = client.get(f"/v1/compliance/requests/{body['id'] + 1}", headers=world.admin)
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    assert (
        f"compliance request {body['id'] + 1} does not exist" in missing.json()["error"]["message"]
    )
    for bad in ("0", "x", str(2**63)):
        assert client.get(f"/v1/compliance/requests/{bad}", headers=world.admin).status_code == 422


def test_an_evaluation_deletes_requests_handled_before_the_retention(
    client: TestClient, conn: DbConnection, owner_conn: DbConnection, world: World
) -> None:
    def ask() -> int:
        response = client.post("/v1/compliance/evaluations", headers=world.admin)
        assert response.status_code == 202, response.text
        return int(response.json()["id"])

    def age(request_id: int, handled_days_ago: int | None, requested_days_ago: int) -> None:
        owner_conn.execute(
            "UPDATE compliance_request"
            " SET requested_at = now() - make_interval(days => %(requested)s),"
            "     handled_at = CASE WHEN handled_at IS NULL THEN NULL"
            "                  ELSE now() - make_interval(days => %(handled)s) END"
            " WHERE id = %(id)s",
            {"id": request_id, "handled": handled_days_ago, "requested": requested_days_ago},
        )

    def read(request_id: int) -> httpx2.Response:
        return client.get(f"/v1/compliance/requests/{request_id}", headers=world.admin)

    old, recent = ask(), ask()
    first = run(conn)
    assert first is not None
    age(old, handled_days_ago=8, requested_days_ago=8)
    age(recent, handled_days_ago=6, requested_days_ago=6)
    # Pending for a month, and held by another transaction, so this evaluation skips it:
    # still pending afterwards, and not deleted however old it is.
    held = ask()
    age(held, handled_days_ago=None, requested_days_ago=30)
    new = ask()
    with owner_conn.transaction():
        owner_conn.execute("SELECT 1 FROM compliance_request WHERE id = %s FOR UPDATE", [held])
        second = run(conn)
    assert second is not None
    assert [t.id for t in second.triggers] == [new]

    gone = read(old)
    assert gone.status_code == 404
    assert f"compliance request {old} does not exist" in gone.json()["error"]["message"]
    assert read(recent).json()["evaluation_id"] == str(first.id)
    assert read(held).json()["evaluation_id"] is None
    assert read(new).json()["evaluation_id"] == str(second.id)
    # The evaluation that handled the deleted request still lists it.
    kept = client.get(f"/v1/compliance/evaluations/{first.id}", headers=world.admin).json()
    assert [t["id"] for t in kept["triggers"]] == [old, recent]
    # Nothing pending but the held request: nothing evaluated, nothing deleted.
    age(recent, handled_days_ago=8, requested_days_ago=8)
    with owner_conn.transaction():
        owner_conn.execute("SELECT 1 FROM compliance_request WHERE id = %s FOR UPDATE", [held])
        assert run(conn) is None
    assert read(recent).status_code == 200


def test_a_workload_on_a_decommissioned_node_is_a_violation(
    client: TestClient, conn: DbConnection, world: World
) -> None:
    workloads = fill_the_fleet(client, world)
    on_tw_a = sorted(w["id"] for w in workloads if w["hostname"] == "tw-a")
    response = client.patch(
        f"/v1/nodes/{world.node_ids['tw-a']}",
        json={"status": "decommissioned"},
        headers=world.admin,
    )
    assert response.status_code == 200
    assert reasons(conn) == ["node.status_changed"]
    found = run(conn)
    assert found is not None
    assert found.violating_workloads == len(on_tw_a) == 2
    assert [str(s.workload_id) for s in found.sample] == on_tw_a
    [reason] = found.sample[0].reasons
    assert (reason.policy, reason.rule) == (None, "node_status")
    assert reason.message == "node tw-a is decommissioned, but the workload still holds GPUs on it"
    assert found.violations_by_rule[0].policy is None


def test_a_workload_naming_what_left_the_registry_is_a_violation(
    client: TestClient, conn: DbConnection, world: World
) -> None:
    both = submit(client, world)
    dataset_only = submit(client, world, output=None)
    nothing = submit(client, world, tenant="platform", datasets=[], output=None)
    for path in ("/v1/datasets/tickets", "/v1/destinations/results-jp"):
        assert client.delete(path, headers=world.admin).status_code == 204
    found = run(conn)
    assert found is not None
    assert found.workloads_evaluated == 3
    sample = {str(s.workload_id): s.reasons for s in found.sample}
    assert sorted(sample) == sorted([both["id"], dataset_only["id"]])
    assert nothing["id"] not in sample
    gone = "dataset 'tickets' named by the workload is no longer in the registry"
    [reason] = sample[both["id"]]
    assert (reason.policy, reason.rule) == (None, "registry")
    assert reason.message == (
        f"{gone}; artifact destination 'results-jp' named by the workload is no longer in the"
        " registry; its residency cannot be checked"
    )
    [reason] = sample[dataset_only["id"]]
    assert reason.message == f"{gone}; its residency cannot be checked"


#: A stored request exactly as admission writes it today (``workload.request``), plus what
#: a later API may add or forbid: an unknown field, and a label key today's rules refuse.
STORED_TODAY = {
    "tenant": "research",
    "datasets": ["tickets"],
    "models": [],
    "output": "results-jp",
    "gpu_count": 1,
    "gpu_model": None,
    "min_gpu_memory_bytes": None,
    "mig_profile": None,
    "labels": {"team": "nlp"},
}


def test_stored_requests_keep_loading_when_the_api_model_changes(
    client: TestClient, conn: DbConnection, owner_conn: DbConnection, world: World
) -> None:
    """The sweep reads ``workload.request`` with its own lenient model, not ``WorkloadCreate``."""
    admitted = submit(client, world, labels={"team": "nlp"})
    assert admitted["request"] == STORED_TODAY
    later = {**STORED_TODAY, "priority": "high", "labels": {"Team Name!": "nlp"}}
    owner_conn.execute(
        "UPDATE workload SET request = %s WHERE id = %s", (json.dumps(later), admitted["id"])
    )
    with pytest.raises(ValidationError):  # what the API's input model would now say
        WorkloadCreate.model_validate(later)
    with conn.transaction():
        request_evaluation(conn, EvaluationTrigger.REQUESTED, {})
    found = run(conn)
    assert found is not None
    assert found.workloads_evaluated == 1
    assert found.violating_workloads == 0


def test_metrics_show_the_latest_evaluation(
    client: TestClient, conn: DbConnection, world: World
) -> None:
    text = client.get("/metrics").text
    assert "sovereign_compliance_pending_requests 0.0" in text
    assert "sovereign_compliance_violating_workloads " not in text
    fill_the_fleet(client, world)
    apply_and_activate(client, world, JAPAN_ONLY)
    assert "sovereign_compliance_pending_requests 1.0" in client.get("/metrics").text
    run(conn)
    text = client.get("/metrics").text
    assert "sovereign_compliance_pending_requests 0.0" in text
    assert "sovereign_compliance_workloads_evaluated 10.0" in text
    assert "sovereign_compliance_violating_workloads 4.0" in text
    assert "sovereign_compliance_warned_workloads 0.0" in text
    assert (
        'sovereign_compliance_violations{policy="compute-in-japan",rule="compute_location"} 4.0'
        in text
    )
    assert "sovereign_compliance_last_evaluation_timestamp_seconds " in text


# -- what-if ---------------------------------------------------------------------------


def whatif(client: TestClient, world: World, body: Any) -> dict[str, Any]:
    response = client.post("/v1/policies/whatif", json=body, headers=world.admin)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def test_whatif_reports_new_and_fixed_violations_and_replaces_same_named_policies(
    client: TestClient, conn: DbConnection, world: World
) -> None:
    workloads = fill_the_fleet(client, world)
    by_zone = {z: sorted(w["id"] for w in workloads if w["zone"] == z) for z in ("jp", "tw")}
    apply_and_activate(client, world, JAPAN_ONLY)
    verified = {"name": "verified-hardware", "requirements": {"min_provenance_status": "verified"}}
    applied = client.post("/v1/policies", json=verified, headers=world.admin)
    assert applied.status_code == 201
    policies_before = conn.execute("SELECT count(*) AS n FROM policy_version").fetchone()
    pending_before = len(pending(conn))

    # Japan only -> Taiwan only, under the same name; verified-hardware (stored, not
    # active) joins, as a default activation would take it.
    result = whatif(client, world, [TAIWAN_ONLY])
    assert result["active_set"]["version"] == 1
    assert result["candidate_set"]["version"] == 2
    assert result["candidate_set"]["unchanged"] is False
    assert result["candidate_set"]["members"] == [
        {"name": "compute-in-japan", "version": None, "source": "candidate"},
        {"name": "verified-hardware", "version": 1, "source": "stored"},
    ]
    violations = result["violations"]
    # Every node's provenance is unknown: verified-hardware denies every workload.
    assert violations["count"] == 10
    assert violations["new"] == 6
    assert violations["fixed"] == 0
    new = {item["workload_id"] for item in violations["items"] if item["new"]}
    assert new == set(by_zone["jp"])
    assert [item["workload_id"] for item in violations["items"]] == sorted(
        w["id"] for w in workloads
    )
    # Without verified-hardware: Taiwan only fixes the tw workloads and breaks the jp ones.
    result = whatif(client, world, [TAIWAN_ONLY, {**verified, "enforcement_action": "warn"}])
    assert result["violations"]["count"] == 6
    assert result["violations"]["fixed"] == 4
    assert result["violations"]["warned"] == 4
    assert {i["workload_id"] for i in result["violations"]["items"]} == set(by_zone["jp"])
    # Nothing was stored.
    assert conn.execute("SELECT count(*) AS n FROM policy_version").fetchone() == policies_before
    assert len(pending(conn)) == pending_before


def test_whatif_capacity_per_tenant(client: TestClient, world: World) -> None:
    only_research = {
        "name": "research-in-taiwan",
        "selector": {"tenants": ["research"]},
        "requirements": {"compute_zones": ["tw"]},
    }
    result = whatif(client, world, only_research)
    tenants = {t["tenant"]: t for t in result["tenants"]}
    assert sorted(tenants) == ["platform", "research"]
    assert tenants["research"] == {
        "tenant": "research",
        "eligible_nodes_now": 4,
        "eligible_nodes_candidate": 2,
        "nodes_lost": {"count": 2, "hostnames": ["jp-a", "jp-b"]},
        "nodes_gained": {"count": 0, "hostnames": []},
        "usable_gpus_now": 10,
        "usable_gpus_candidate": 4,
        "change": -6,
        "usable_mig_slices_now": {},
        "usable_mig_slices_candidate": {},
    }
    assert tenants["platform"]["change"] == 0
    # A YAML body, as `policy apply` takes it.
    response = client.post(
        "/v1/policies/whatif",
        content=yaml.safe_dump(only_research),
        headers={**world.admin, "Content-Type": "application/yaml"},
    )
    assert response.status_code == 200
    assert response.json()["tenants"] == result["tenants"]


def test_whatif_with_an_invalid_candidate_is_422_naming_the_field(
    client: TestClient, world: World
) -> None:
    bad = {"name": "typo", "requirements": {"compute_zones": ["jp", "jp-nort"]}}
    response = client.post("/v1/policies/whatif", json=[JAPAN_ONLY, bad], headers=world.admin)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_input"
    assert [f["field"] for f in error["details"]["fields"]] == [
        "policies[1].requirements.compute_zones[1]"
    ]
    assert "unknown zone 'jp-nort'" in error["message"]
    for body, field in (([], "policies"), ({"name": "x", "oops": 1}, "policies[0].oops")):
        response = client.post("/v1/policies/whatif", json=body, headers=world.admin)
        assert response.status_code == 422, response.text
        assert response.json()["error"]["details"]["fields"][0]["field"] == field
    response = client.post(
        "/v1/policies/whatif",
        content=b"{not json",
        headers={**world.admin, "Content-Type": "application/json"},
    )
    assert response.status_code == 422
    assert response.json()["error"]["details"]["fields"][0]["field"] == "body"


# -- the acceptance test: what-if predicts what the evaluation records -----------------


def test_whatif_predicts_exactly_what_the_evaluation_records_after_activation(
    celery_app: Celery, worker: None, client: TestClient, conn: DbConnection, world: World
) -> None:
    workloads = fill_the_fleet(client, world)
    in_taiwan = sorted(w["id"] for w in workloads if w["zone"] == "tw")
    assert len(in_taiwan) == 4
    assert len(workloads) - len(in_taiwan) == 6

    # What-if: tightening to compute in Japan only reports exactly the Taiwan workloads.
    predicted = whatif(client, world, JAPAN_ONLY)
    assert predicted["workloads_evaluated"] == 10
    assert predicted["violations"]["count"] == 4
    assert predicted["violations"]["new"] == 4
    assert [item["workload_id"] for item in predicted["violations"]["items"]] == in_taiwan
    assert all(item["new"] for item in predicted["violations"]["items"])
    assert {item["zone"] for item in predicted["violations"]["items"]} == {"tw"}
    # The candidate policy is explained at the version applying it would store.
    explained = predicted["violations"]["items"][0]["explanation"]["selected"]
    assert [(p["name"], p["version"]) for p in explained] == [("compute-in-japan", 1)]
    for tenant in predicted["tenants"]:
        assert tenant["nodes_lost"] == {"count": 2, "hostnames": ["tw-a", "tw-b"]}
        assert (tenant["usable_gpus_now"], tenant["usable_gpus_candidate"]) == (10, 6)

    # Activate it, and let the real worker run the evaluation.
    active = apply_and_activate(client, world, JAPAN_ONLY)
    assert active["content_hash"] == predicted["candidate_set"]["content_hash"]
    assert active["version"] == predicted["candidate_set"]["version"]
    summary = celery_app.send_task(EVALUATE_TASK).get(timeout=30)
    assert summary["violating_workloads"] == 4
    assert summary["policy_set_version"] == active["version"]
    recorded = client.get("/v1/compliance/evaluations/latest", headers=world.admin).json()
    assert recorded["id"] == summary["evaluation_id"]
    assert recorded["violating_workloads"] == predicted["violations"]["count"]
    assert [s["workload_id"] for s in recorded["sample"]] == in_taiwan
    assert recorded["sample"] == [
        {k: v for k, v in item.items() if k != "new"} for item in predicted["violations"]["items"]
    ]
    # Idempotent on the worker too: nothing pending, nothing recorded.
    assert celery_app.send_task(EVALUATE_TASK).get(timeout=30) is None
    assert client.get("/v1/compliance/evaluations", headers=world.admin).json()["total"] == 1
    assert audit.verify_chain(conn).ok


# -- sovctl ----------------------------------------------------------------------------


def test_sovctl_policy_whatif_and_compliance(
    admin_sovctl: Run, conn: DbConnection, live_server: str, world: World, tmp_path: Path
) -> None:
    api = admin_sovctl
    for i in range(10):
        body = {"tenant": "research", "datasets": ["tickets"], "output": "results-jp"}
        response = httpx.post(f"{live_server}/v1/workloads", json=body, headers=world.admin)
        assert response.json()["status"] == "admitted", i
    candidate = tmp_path / "candidate.yaml"
    candidate.write_text(yaml.safe_dump(JAPAN_ONLY))

    code, out, err = api("policies", "whatif", "-f", str(candidate))
    assert code == 0, err
    assert "candidate policy set: sha256" in out
    assert "10 evaluated; 4 would violate (4 new), 0 fixed" in out
    assert out.count(" tw-a ") + out.count(" tw-b ") == 4
    assert "compute-in-japan:compute_location" in out
    assert "research" in out
    code, out, _ = api("policies", "whatif", "-f", str(candidate), "-o", "json")
    assert code == 0
    assert json.loads(out)["violations"]["count"] == 4

    broken = tmp_path / "broken.yaml"
    broken.write_text(
        yaml.safe_dump([{**JAPAN_ONLY, "requirements": {"compute_zones": ["mars", "venus"]}}])
    )
    code, _, err = api("policies", "whatif", "-f", str(broken))
    assert code == 1
    assert "2 problems" in err
    assert "policies[0].requirements.compute_zones[0]: unknown zone 'mars'" in err

    code, out, err = api("compliance", "evaluate")
    assert code == 0, err
    assert "evaluation requested" in out
    code, _, err = api("compliance", "show")
    assert code == 1
    assert "HTTP 404" in err
    assert run(conn) is not None
    code, out, err = api("compliance", "show")
    assert code == 0, err
    assert "10 evaluated, 0 violating" in out
    assert "requested" in out
    code, out, _ = api("compliance", "list")
    assert "(1 of 1)" in out
    evaluation_id = json.loads(api("compliance", "list", "-o", "json")[1])["items"][0]["id"]
    code, out, _ = api("compliance", "show", evaluation_id, "-o", "json")
    assert json.loads(out)["id"] == evaluation_id


@pytest.fixture
def beat(celery_app: Celery, worker: None) -> Iterator[None]:
    """Beat's stand-in: enqueue the evaluation every half second, as beat does each interval."""
    stop = threading.Event()

    def tick() -> None:
        while not stop.wait(0.5):
            celery_app.send_task(EVALUATE_TASK)

    thread = threading.Thread(target=tick, daemon=True)
    thread.start()
    yield
    stop.set()
    thread.join(timeout=5)


def test_sovctl_compliance_evaluate_waits_for_the_worker(
    admin_sovctl: Run, beat: None, client: TestClient, world: World
) -> None:
    api = admin_sovctl
    workloads = fill_the_fleet(client, world)
    code, out, err = api("compliance", "evaluate", "--wait")
    assert code == 0, err
    # Printed exactly as `compliance show` prints it.
    evaluation_id = out.splitlines()[0].removeprefix("evaluation:").strip()
    code, shown, err = api("compliance", "show", evaluation_id)
    assert code == 0, err
    assert out == shown
    assert f"{len(workloads)} evaluated, 0 violating" in out
    assert "requested" in out

    code, out, err = api("compliance", "evaluate", "--wait", "-o", "json")
    assert code == 0, err
    evaluation = json.loads(out)
    assert evaluation["id"] != evaluation_id
    assert "requested" in {t["reason"] for t in evaluation["triggers"]}
    assert json.loads(api("compliance", "show", evaluation["id"], "-o", "json")[1]) == evaluation


def test_sovctl_compliance_evaluate_wait_times_out_without_a_worker(
    admin_sovctl: Run, conn: DbConnection
) -> None:
    started = time.monotonic()
    code, out, err = admin_sovctl("compliance", "evaluate", "--wait", "--timeout", "2")
    elapsed = time.monotonic() - started
    assert code == 1
    assert out == ""
    [row] = conn.execute("SELECT id FROM compliance_request WHERE evaluation_id IS NULL")
    assert f"request {row['id']} was not evaluated within 2 s" in err
    assert "worker" in err
    assert 2 <= elapsed < 10


# -- acting on violations: on_violation notify and revoke ------------------------------

HOOK_SECRET = "receiver-shared-secret-0123456789"


class Receiver:
    """A real webhook receiver on a free port: records each request, answers as told.

    ``answers`` are the statuses of the next requests, in order; 200 once they run out.
    """

    def __init__(self, answers: list[int] | None = None) -> None:
        self.answers = list(answers or [])
        self.received: list[tuple[float, dict[str, str], bytes]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.lock:
                    receiver.received.append((time.time(), dict(self.headers), body))
                    status = receiver.answers.pop(0) if receiver.answers else 200
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *_: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/sovereign"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def wait_for(self, count: int, timeout: float) -> list[tuple[float, dict[str, str], bytes]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.received) >= count:
                    return list(self.received)
            time.sleep(0.05)
        raise AssertionError(f"{len(self.received)} of {count} webhooks within {timeout} s")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver(answers=[500])
    yield found
    found.close()


@pytest.fixture
def hooked_celery(settings: Settings, receiver: Receiver) -> Iterator[Celery]:
    """The real Celery app and worker, with the violation webhook pointed at ``receiver``."""
    hooked = Settings.model_validate(
        {
            **settings.model_dump(),
            "violation_webhook_url": receiver.url,
            "violation_webhook_secret": HOOK_SECRET,
        }
    )
    app = create_celery(hooked)
    with start_worker(
        app,
        pool="solo",
        perform_ping_check=False,
        queues=[hooked.celery_queue],
        shutdown_timeout=20,
    ):
        yield app


def verify(headers: dict[str, str], body: bytes) -> bool:
    """What docs/policy.md tells a receiver to do, written out here independently."""
    timestamp = headers["X-Sovereign-Timestamp"]
    expected = hmac.new(
        HOOK_SECRET.encode(), timestamp.encode() + b"." + body, hashlib.sha256
    ).hexdigest()
    fresh = abs(time.time() - int(timestamp)) <= 300
    return fresh and hmac.compare_digest(headers["X-Sovereign-Signature"], f"sha256={expected}")


def test_on_violation_is_validated_by_name(client: TestClient, world: World) -> None:
    bad = {**JAPAN_ONLY, "on_violation": "shutdown"}
    response = client.post("/v1/policies", json=[bad], headers=world.admin)
    assert response.status_code == 422
    [field] = response.json()["error"]["details"]["fields"]
    assert field["field"] == "policies[0].on_violation"
    assert field["value"] == "shutdown"


def test_notify_sends_a_signed_webhook_retried_after_a_500_and_logged(
    hooked_celery: Celery,
    receiver: Receiver,
    client: TestClient,
    conn: DbConnection,
    world: World,
    make_token: Callable[[Role], str],
) -> None:
    workload = submit(client, world)
    elsewhere = "tw" if workload["zone"] == "jp" else "jp"
    must_move = {
        "name": "must-move",
        "requirements": {"compute_zones": [elsewhere]},
        "on_violation": "notify",
    }
    active = apply_and_activate(client, world, must_move)
    evaluated_at = time.time()
    summary = hooked_celery.send_task(EVALUATE_TASK).get(timeout=30)
    assert summary["violating_workloads"] == 1
    assert (summary["notifications"], summary["revoked_workloads"]) == (1, 0)

    # The first attempt within seconds, answered 500; the retry two seconds later, 200.
    (first_at, first, body), (second_at, second, again) = receiver.wait_for(2, timeout=20)
    assert first_at - evaluated_at < 5
    assert 1.5 <= second_at - first_at < 10
    assert body == again
    for headers in (first, second):
        assert verify(headers, body)
        assert headers["Content-Type"] == "application/json"
        assert headers["X-Sovereign-Event"] == "workload.violation"
    # A byte changed, or the timestamp moved, and the signature no longer holds.
    assert not verify(first, body.replace(b"must-move", b"must-stay"))
    assert not verify({**first, "X-Sovereign-Timestamp": str(int(time.time()) + 1)}, body)
    payload = json.loads(body)
    assert payload["event"] == "workload.violation"
    assert payload["delivery_id"] == first["X-Sovereign-Delivery"]
    assert payload["action"] == "notify"
    assert payload["policy"] == "must-move"
    assert payload["evaluation_id"] == summary["evaluation_id"]
    assert payload["policy_set"] == {
        "version": active["version"],
        "content_hash": active["content_hash"],
    }
    assert payload["workload"]["id"] == workload["id"]
    assert payload["workload"]["tenant"] == "research"
    assert payload["workload"]["revoked"] is False
    assert {r["rule"] for r in payload["reasons"]} == {"compute_location"}

    # The delivery log, for auditors: both attempts, the last status, delivered.
    auditor = bearer(make_token(Role.AUDITOR))
    page = client.get("/v1/compliance/deliveries", headers=auditor).json()
    assert page["total"] == 1
    [delivery] = page["items"]
    assert delivery["id"] == payload["delivery_id"]
    assert (delivery["status"], delivery["attempts"], delivery["last_status"]) == (
        "delivered",
        2,
        200,
    )
    assert delivery["payload"] == payload
    assert delivery["next_attempt_at"] is None
    assert delivery["delivered_at"] is not None
    operator = bearer(make_token(Role.OPERATOR))
    assert client.get("/v1/compliance/deliveries", headers=operator).status_code == 403
    # The workload still runs: notify only tells.
    shown = client.get(f"/v1/workloads/{workload['id']}", headers=world.admin).json()
    assert shown["status"] == "admitted"

    # Found again by the next evaluation, it is not announced again.
    assert client.post("/v1/compliance/evaluations", headers=world.admin).status_code == 202
    summary = hooked_celery.send_task(EVALUATE_TASK).get(timeout=30)
    assert (summary["violating_workloads"], summary["notifications"]) == (1, 0)
    time.sleep(1)
    assert len(receiver.received) == 2
    assert audit.verify_chain(conn).ok


def test_revoke_ends_the_workload_frees_its_gpus_audits_and_says_why(
    celery_app: Celery,
    worker: None,
    client: TestClient,
    conn: DbConnection,
    world: World,
    make_token: Callable[[Role], str],
) -> None:
    total = sum(gpus for _, gpus, _ in NODES.values())
    workloads = [submit(client, world) for _ in range(total)]
    in_taiwan = sorted(w["id"] for w in workloads if w["zone"] == "tw")
    assert len(in_taiwan) == 4
    # The fleet is full: the platform tenant gets no GPU.
    refused = client.post("/v1/workloads", json={"tenant": "platform"}, headers=world.admin)
    assert refused.json()["status"] == "denied"

    research_in_japan = {
        "name": "research-in-japan",
        "selector": {"tenants": ["research"]},
        "requirements": {"compute_zones": ["jp"]},
        "on_violation": "revoke",
    }
    apply_and_activate(client, world, research_in_japan)
    summary = celery_app.send_task(EVALUATE_TASK).get(timeout=30)
    assert summary["violating_workloads"] == 4
    assert summary["revoked_workloads"] == 4
    assert summary["notifications"] == 4

    # The owner sees why it ended.
    operator = bearer(make_token(Role.OPERATOR))
    for workload_id in in_taiwan:
        shown = client.get(f"/v1/workloads/{workload_id}", headers=operator).json()
        assert shown["status"] == "revoked"
        assert shown["ended_at"] is not None
        revocation = shown["revocation"]
        assert revocation["evaluation_id"] == summary["evaluation_id"]
        assert revocation["policies"] == ["research-in-japan"]
        assert revocation["revoked_at"] == shown["ended_at"]
        [reason] = revocation["reasons"]
        assert reason["policy"] == "research-in-japan"
        assert reason["rule"] == "compute_location"
        assert "forbids compute in tw" in reason["message"]
        # It can no longer be released or renewed.
        again = client.post(f"/v1/workloads/{workload_id}/release", headers=operator)
        assert again.status_code == 409
    for workload in workloads:
        if workload["zone"] == "jp":
            shown = client.get(f"/v1/workloads/{workload['id']}", headers=operator).json()
            assert (shown["status"], shown["revocation"]) == ("admitted", None)
    listed = client.get("/v1/workloads", params={"status": "revoked"}, headers=operator).json()
    assert sorted(w["id"] for w in listed["items"]) == in_taiwan

    # Its GPUs are free: the platform tenant (not selected by the policy) books them.
    freed = {uuid for w in workloads if w["zone"] == "tw" for uuid in w["gpu_uuids"]}
    booked = client.post(
        "/v1/workloads", json={"tenant": "platform", "gpu_count": 2}, headers=world.admin
    ).json()
    assert booked["status"] == "admitted", booked
    assert set(booked["gpu_uuids"]) <= freed

    # Audited: one workload.revoked per workload, before the evaluation's own event.
    events = conn.execute(
        "SELECT seq, action, actor_id, object_id, before::jsonb AS before, after::jsonb AS after"
        " FROM audit_event WHERE action IN ('workload.revoked', 'compliance.evaluated')"
        " ORDER BY seq"
    ).fetchall()
    assert [e["action"] for e in events] == ["workload.revoked"] * 4 + ["compliance.evaluated"]
    assert sorted(e["object_id"] for e in events[:4]) == in_taiwan
    by_id = {w["id"]: w for w in workloads}
    for event in events[:4]:
        assert event["actor_id"] == "system:compliance"
        held = by_id[event["object_id"]]
        assert event["before"]["status"] == "admitted"
        assert event["before"]["gpu_uuids"] == held["gpu_uuids"]
        assert event["after"]["status"] == "revoked"
        assert event["after"]["freed_gpu_uuids"] == sorted(held["gpu_uuids"])
        assert event["after"]["revocation"]["policies"] == ["research-in-japan"]
    assert events[4]["after"]["revoked_workload_ids"] == in_taiwan
    assert events[4]["after"]["notifications"] == 4
    recorded = client.get("/v1/compliance/evaluations/latest", headers=world.admin).json()
    assert (recorded["revoked_workloads"], recorded["notifications"]) == (4, 4)

    # No webhook URL is configured: the announcements wait in the log, pending.
    page = client.get("/v1/compliance/deliveries", headers=world.admin).json()
    assert page["total"] == 4
    assert {(d["action"], d["status"], d["attempts"]) for d in page["items"]} == {
        ("revoke", "pending", 0)
    }
    assert {d["payload"]["workload"]["revoked"] for d in page["items"]} == {True}
    one = in_taiwan[0]
    only = client.get(
        "/v1/compliance/deliveries", params={"workload_id": one}, headers=world.admin
    ).json()
    assert [d["workload_id"] for d in only["items"]] == [one]
    # Revoked workloads are no longer running: the next evaluation finds nothing to do.
    assert client.post("/v1/compliance/evaluations", headers=world.admin).status_code == 202
    summary = celery_app.send_task(EVALUATE_TASK).get(timeout=30)
    assert (summary["violating_workloads"], summary["revoked_workloads"]) == (0, 0)
    assert audit.verify_chain(conn).ok


def test_revoking_a_workload_deletes_the_gpus_its_node_stopped_reporting(
    client: TestClient, conn: DbConnection, world: World
) -> None:
    """As on release: a booked GPU left out of a report was kept only for its workload."""
    in_taiwan = {
        "name": "research-in-taiwan",
        "selector": {"tenants": ["research"]},
        "requirements": {"compute_zones": ["tw"]},
    }
    apply_and_activate(client, world, in_taiwan)
    workload = submit(client, world, gpu_count=2)
    assert workload["zone"] == "tw"
    hostname = workload["hostname"]
    token, machine_id = world.agents[hostname]
    kept, gone = workload["gpu_uuids"]
    inventory = registration(hostname=hostname, machine_id=machine_id, gpu_uuids=(kept,))
    inventory["inventory"]["host"]["system_serial"] = NODES[hostname][2]
    beat = client.post(
        f"/v1/nodes/{world.node_ids[hostname]}/heartbeat",
        json={"seq": 1, "inventory": inventory["inventory"]},
        headers=bearer(token),
    )
    assert beat.status_code == 200, beat.text
    missing = "SELECT uuid FROM gpu WHERE missing_since IS NOT NULL"
    assert [row["uuid"] for row in conn.execute(missing)] == [gone]
    policy = {
        "name": "research-in-japan",
        "selector": {"tenants": ["research"]},
        "requirements": {"compute_zones": ["jp"]},
        "on_violation": "revoke",
    }
    apply_and_activate(client, world, policy)
    evaluation = run(conn)
    assert evaluation is not None
    assert evaluation.revoked_workloads == 1
    assert conn.execute(missing).fetchall() == []
    assert conn.execute("SELECT 1 FROM gpu WHERE uuid = %s", (gone,)).fetchone() is None
    [event] = audit.list_events(conn, action="workload.revoked").items
    assert event.after["removed_gpu_uuids"] == [gone]
    assert event.after["freed_gpu_uuids"] == sorted([kept, gone])


@pytest.mark.parametrize("enforcement", ["dryrun", "warn"])
def test_a_dryrun_or_warn_policy_with_revoke_only_records(
    hooked_celery: Celery,
    receiver: Receiver,
    client: TestClient,
    conn: DbConnection,
    world: World,
    enforcement: str,
) -> None:
    workloads = fill_the_fleet(client, world)
    watching = {
        **JAPAN_ONLY,
        "enforcement_action": enforcement,
        "on_violation": "revoke",
    }
    apply_and_activate(client, world, watching)
    summary = hooked_celery.send_task(EVALUATE_TASK).get(timeout=30)
    assert summary["workloads_evaluated"] == len(workloads)
    # Recorded as findings of their kind (a warn policy's make warned workloads), no more.
    warned = 4 if enforcement == "warn" else 0
    assert (summary["violating_workloads"], summary["warned_workloads"]) == (0, warned)
    assert (summary["revoked_workloads"], summary["notifications"]) == (0, 0)
    statuses = conn.execute("SELECT DISTINCT status FROM workload WHERE status <> 'denied'")
    assert [row["status"] for row in statuses] == ["admitted"]
    reserved = conn.execute("SELECT count(*) AS n FROM gpu_reservation").fetchone()
    assert reserved == {"n": len(workloads)}
    assert conn.execute("SELECT count(*) AS n FROM violation_delivery").fetchone() == {"n": 0}
    revoked = conn.execute(
        "SELECT count(*) AS n FROM audit_event WHERE action = 'workload.revoked'"
    )
    assert revoked.fetchone() == {"n": 0}
    time.sleep(1)
    assert receiver.received == []


def test_the_sender_follows_no_redirect_and_keeps_little_of_a_hostile_answer(
    conn: DbConnection,
) -> None:
    hits: list[str] = []

    class Hostile(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            hits.append(self.path)
            self.rfile.read(int(self.headers["Content-Length"]))
            if self.path == "/redirect":
                self.send_response(307)
                self.send_header("Location", "/elsewhere")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if self.path == "/control":
                answer = "\x00\x1b[31mforged\u202e".encode()
                self.send_response(500)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)
                return
            self.send_response(500)
            self.send_header("Content-Length", str(10_000_000))
            self.end_headers()
            self.wfile.write(b"x" * 10_000_000)

        def log_message(self, *_: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Hostile)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    due = DueDelivery(id=uuid.uuid4(), body='{"event":"workload.violation"}', attempts=1)
    try:
        with WebhookSender(f"{base}/redirect", b"k" * 32, timeout_seconds=2) as send:
            attempt = send(due)
        assert (attempt.delivered, attempt.status) == (False, 307)
        assert attempt.error == "redirect not followed"
        with WebhookSender(f"{base}/big", b"k" * 32, timeout_seconds=2) as send:
            attempt = send(due)
        assert (attempt.delivered, attempt.status) == (False, 500)
        assert attempt.error is not None
        assert attempt.error.startswith("HTTP 500: xxx")
        assert len(attempt.error) <= MAX_ERROR_CHARS
        # Control and bidi characters are shown escaped, so the delivery log can store it.
        with WebhookSender(f"{base}/control", b"k" * 32, timeout_seconds=2) as send:
            attempt = send(due)
        assert attempt.error == "HTTP 500: \\u0000\\u001b[31mforged\\u202e"
        assert conn.execute("SELECT %s::text AS e", (attempt.error,)).fetchone() == {
            "e": attempt.error
        }
        with WebhookSender(
            f"http://127.0.0.1:{free_port()}/", b"k" * 32, timeout_seconds=1
        ) as send:
            attempt = send(due)
        assert (attempt.delivered, attempt.status) == (False, None)
        assert attempt.error is not None
        assert attempt.error.startswith("ConnectError")
    finally:
        server.shutdown()
        server.server_close()
    assert hits == ["/redirect", "/big", "/control"]
