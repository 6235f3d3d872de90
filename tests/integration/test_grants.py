"""Grants: another tenant's datasets and models, used only through a grant (issue 11 item 3).

Through the real API and database: a cross-tenant workload is denied naming the dataset;
a grant admits it; an expired or revoked grant does not; revoking one makes the running
workloads that depend on it violations at the next compliance evaluation, and so does an
expiry, noticed by the evaluation task; CEL sees each asset's owner and grantees; every
grant, revocation and expiry is audited.
"""

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from control_plane.access.models import Role
from control_plane.audit import service as audit
from control_plane.compliance import service as compliance
from control_plane.compliance.models import EvaluationPublic
from control_plane.compliance.tasks import COMPLIANCE_ACTOR
from control_plane.core.db import DbConnection
from tests.support import bearer, registration

pytestmark = pytest.mark.integration

PATIENTS = "dataset patients belongs to tenant hospital"


@pytest.fixture
def admin_headers(client: TestClient, make_token: Callable[[Role], str]) -> dict[str, str]:
    """An admin, with zone jp, one node of 4 GPUs there, tenants hospital and retail, and
    hospital's restricted dataset ``patients`` and model ``triage`` stored in jp."""
    admin = bearer(make_token(Role.ADMIN))
    for path, created in (
        ("/v1/zones", {"slug": "jp", "name": "Japan", "country": "JP"}),
        ("/v1/tenants", {"slug": "hospital", "name": "Hospital"}),
        ("/v1/tenants", {"slug": "retail", "name": "Retail"}),
        ("/v1/tenants", {"slug": "research", "name": "Research"}),
        (
            "/v1/datasets",
            {
                "name": "patients",
                "tenant": "hospital",
                "classification": "restricted",
                "zones": ["jp"],
            },
        ),
        (
            "/v1/models",
            {
                "name": "triage",
                "tenant": "hospital",
                "classification": "confidential",
                "zones": ["jp"],
                "supplier": "hospital-ml",
                "origin_country": "JP",
                "license": "proprietary",
            },
        ),
    ):
        response = client.post(path, json=created, headers=admin)
        assert response.status_code == 201, response.text
    body = registration(hostname="jp-a", zone="jp", gpu_uuids=tuple(f"GPU-a-{i}" for i in range(4)))
    assert client.post("/v1/agents/register", json=body, headers=admin).status_code == 201
    return admin


def submit(client: TestClient, admin: dict[str, str], **body: Any) -> dict[str, Any]:
    response = client.post("/v1/workloads", json={"gpu_count": 1, **body}, headers=admin)
    assert response.status_code == 201, response.text
    workload: dict[str, Any] = response.json()
    return workload


def grant(
    client: TestClient, admin: dict[str, str], path: str = "/v1/datasets/patients", **body: Any
) -> dict[str, Any]:
    response = client.post(
        f"{path}/grants", json={"tenant": "retail", "reason": "CHG-1 study", **body}, headers=admin
    )
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def evaluate(conn: DbConnection) -> EvaluationPublic | None:
    return compliance.run_pending(conn, COMPLIANCE_ACTOR, sample_size=100, request_retention_days=7)


def ownership(workload: dict[str, Any]) -> list[str]:
    return [r["message"] for r in workload["reasons"] if r["rule"] == "ownership"]


# -- admission -------------------------------------------------------------------------


def test_another_tenant_s_dataset_without_a_grant_is_denied_naming_it(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    denied = submit(client, admin_headers, tenant="retail", datasets=["patients"])
    assert denied["status"] == "denied"
    [reason] = [r for r in denied["reasons"] if r["rule"] == "ownership"]
    assert reason["policy"] is None
    assert reason["action"] == "deny"
    assert reason["message"] == (f"{PATIENTS}, and tenant retail holds no grant in force to use it")
    # With no policy at all: the check is built in, not a policy someone may forget.
    assert client.get("/v1/policy-sets/active", headers=admin_headers).json()["members"] == []
    # Models too; the owner needs nothing.
    model = submit(client, admin_headers, tenant="retail", models=["triage"])
    assert ownership(model) == [
        "model triage belongs to tenant hospital, and tenant retail holds no grant in force"
        " to use it"
    ]
    own = submit(client, admin_headers, tenant="hospital", datasets=["patients"], models=["triage"])
    assert own["status"] == "admitted", own


def test_a_grant_admits_the_grantee_only(client: TestClient, admin_headers: dict[str, str]) -> None:
    granted = grant(
        client, admin_headers, expires_at=(datetime.now(UTC) + timedelta(days=30)).isoformat()
    )
    assert granted == {
        **granted,
        "kind": "dataset",
        "asset": "patients",
        "owner": "hospital",
        "tenant": "retail",
        "reason": "CHG-1 study",
        "revoked_at": None,
        "revoked_by": None,
        "in_force": True,
    }
    assert granted["granted_by"].startswith("admin-")
    admitted = submit(client, admin_headers, tenant="retail", datasets=["patients"])
    assert admitted["status"] == "admitted", admitted
    other = submit(client, admin_headers, tenant="research", datasets=["patients"])
    assert other["status"] == "denied"
    assert ownership(other) == [
        f"{PATIENTS}, and tenant research holds no grant in force to use it"
    ]
    listed = client.get("/v1/datasets/patients/grants", headers=admin_headers).json()
    assert [g["id"] for g in listed] == [granted["id"]]


def test_an_expired_grant_no_longer_admits(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    expires = datetime.now(UTC) + timedelta(seconds=1.5)
    grant(client, admin_headers, expires_at=expires.isoformat())
    assert submit(client, admin_headers, tenant="retail", datasets=["patients"])["status"] == (
        "admitted"
    )
    time.sleep(max(0.0, (expires - datetime.now(UTC)).total_seconds()) + 0.2)
    denied = submit(client, admin_headers, tenant="retail", datasets=["patients"])
    assert denied["status"] == "denied"
    assert ownership(denied) == [f"{PATIENTS}, and tenant retail holds no grant in force to use it"]
    [listed] = client.get("/v1/datasets/patients/grants", headers=admin_headers).json()
    assert listed["in_force"] is False
    assert listed["revoked_at"] is None


# -- revocation, expiry and continuous compliance --------------------------------------


def test_revoking_a_grant_makes_the_running_workloads_on_it_violations(
    client: TestClient, conn: DbConnection, admin_headers: dict[str, str]
) -> None:
    granted = grant(client, admin_headers)
    running = submit(client, admin_headers, tenant="retail", datasets=["patients"])
    owners = submit(client, admin_headers, tenant="hospital", datasets=["patients"])
    assert running["status"] == owners["status"] == "admitted"
    first = evaluate(conn)  # the grant asked for one
    assert first is not None
    assert first.violating_workloads == 0

    revoked = client.delete(f"/v1/datasets/patients/grants/{granted['id']}", headers=admin_headers)
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["in_force"] is False
    assert revoked.json()["revoked_by"] == granted["granted_by"]
    assert revoked.json()["revoked_at"] is not None
    found = evaluate(conn)
    assert found is not None
    [trigger] = found.triggers
    assert trigger.reason == "registry.changed"
    assert trigger.subject == {
        "kind": "dataset",
        "name": "patients",
        "change": "grant_revoked",
        "grant": granted["id"],
        "tenant": "retail",
    }
    assert found.violating_workloads == 1
    [sample] = found.sample
    assert str(sample.workload_id) == running["id"]
    [reason] = sample.reasons
    assert (reason.policy, reason.rule, reason.action) == (None, "ownership", "deny")
    assert reason.message == f"{PATIENTS}, and tenant retail holds no grant in force to use it"
    assert [r.model_dump() for r in found.violations_by_rule] == [
        {"policy": None, "rule": "ownership", "workloads": 1}
    ]
    # Kept, revoked; a second revocation is refused, and the row cannot be un-revoked.
    again = client.delete(f"/v1/datasets/patients/grants/{granted['id']}", headers=admin_headers)
    assert again.status_code == 409
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("UPDATE asset_grant SET reason = 'forged'")
    conn.rollback()
    with pytest.raises(psycopg.errors.RaiseException, match="a revocation is final"):
        conn.execute("UPDATE asset_grant SET revoked_at = NULL, revoked_by_id = NULL")
    conn.rollback()
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("DELETE FROM asset_grant")
    conn.rollback()


def test_an_expiry_is_noticed_by_the_evaluation_and_flags_the_workloads(
    client: TestClient, conn: DbConnection, admin_headers: dict[str, str]
) -> None:
    expires = datetime.now(UTC) + timedelta(seconds=1.5)
    granted = grant(client, admin_headers, path="/v1/models/triage", expires_at=expires.isoformat())
    running = submit(client, admin_headers, tenant="retail", models=["triage"])
    assert running["status"] == "admitted", running
    assert evaluate(conn) is not None
    assert evaluate(conn) is None  # nothing pending, nothing expired yet
    time.sleep(max(0.0, (expires - datetime.now(UTC)).total_seconds()) + 0.2)
    found = evaluate(conn)
    assert found is not None
    assert [t.subject["change"] for t in found.triggers] == ["grant_expired"]
    assert [str(s.workload_id) for s in found.sample] == [running["id"]]
    assert found.sample[0].reasons[0].message.startswith("model triage belongs to tenant hospital")
    # Noticed once: the next beat has nothing to do.
    assert evaluate(conn) is None
    [event] = audit.list_events(conn, action="asset_grant.expired").items
    assert event.actor_id == "system:compliance"
    assert event.object_id == granted["id"]
    assert event.after is not None
    assert event.after["in_force"] is False


# -- what CEL sees ---------------------------------------------------------------------


def test_cel_sees_each_asset_s_owner_and_grantees(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    # A stricter policy than the built-in check: shared data must be restricted to grants
    # that name a second tenant, i.e. at most the owner and the workload's own tenant.
    policy = {
        "name": "owned-or-granted",
        "requirements": {
            "cel": [
                {
                    "name": "owned-or-granted",
                    "expression": "datasets.all(d, d.tenant == workload.tenant"
                    " || workload.tenant in d.granted_to)"
                    " && models.all(m, m.tenant == 'hospital' && size(m.granted_to) == 0)",
                    "message": "data is the tenant's own or granted; models are unshared",
                }
            ]
        },
    }
    assert client.post("/v1/policies", json=[policy], headers=admin_headers).status_code == 201
    activated = client.post("/v1/policy-sets/activate", json={}, headers=admin_headers)
    assert activated.status_code == 200, activated.text
    grant(client, admin_headers)
    grant(client, admin_headers, path="/v1/models/triage")
    both = submit(client, admin_headers, tenant="retail", datasets=["patients"], models=["triage"])
    assert both["status"] == "denied"
    assert [r["rule"] for r in both["reasons"]] == ["cel.owned-or-granted"]
    data_only = submit(client, admin_headers, tenant="retail", datasets=["patients"])
    assert data_only["status"] == "admitted", data_only


# -- hostile and wrong input -----------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"tenant": "nobody", "reason": "x"}, "tenant"),
        ({"tenant": "hospital", "reason": "x"}, "tenant"),
        ({"tenant": "retail", "reason": ""}, "reason"),
        ({"tenant": "retail", "reason": "   "}, "reason"),
        ({"tenant": "retail", "reason": "a\u202eb"}, "reason"),
        ({"tenant": "retail", "reason": "a\nb"}, "reason"),
        ({"tenant": "retail", "reason": "x" * 257}, "reason"),
        ({"tenant": "retail"}, "reason"),
        ({"reason": "x"}, "tenant"),
        ({"tenant": "retail", "reason": "x", "expires_at": "2001-01-01T00:00:00Z"}, "expires_at"),
        ({"tenant": "retail", "reason": "x", "expires_at": "2999-01-01T00:00:00"}, "expires_at"),
        (
            {"tenant": "retail", "reason": "x", "expires_at": "9999-12-31T23:59:59-14:00"},
            "expires_at",
        ),
        (
            {"tenant": "retail", "reason": "x", "expires_at": "0001-01-01T00:00:00+14:00"},
            "expires_at",
        ),
        ({"tenant": "retail", "reason": "x", "owner": "retail"}, "owner"),
    ],
)
def test_a_bad_grant_is_422_naming_the_field(
    client: TestClient, admin_headers: dict[str, str], body: dict[str, Any], field: str
) -> None:
    response = client.post("/v1/datasets/patients/grants", json=body, headers=admin_headers)
    assert response.status_code == 422, response.text
    fields = [f["field"] for f in response.json()["error"]["details"]["fields"]]
    assert fields == [field]


def test_grants_are_refused_where_they_make_no_sense(
    client: TestClient, make_token: Callable[[Role], str], admin_headers: dict[str, str]
) -> None:
    assert (
        client.post(
            "/v1/datasets/nothing/grants",
            json={"tenant": "retail", "reason": "x"},
            headers=admin_headers,
        ).status_code
        == 404
    )
    assert client.get("/v1/models/nothing/grants", headers=admin_headers).status_code == 404
    first = grant(client, admin_headers)
    twice = client.post(
        "/v1/datasets/patients/grants",
        json={"tenant": "retail", "reason": "y"},
        headers=admin_headers,
    )
    assert twice.status_code == 409
    assert first["id"] in twice.json()["error"]["message"]
    # A grant is revoked under its own asset only.
    elsewhere = client.delete(f"/v1/models/triage/grants/{first['id']}", headers=admin_headers)
    assert elsewhere.status_code == 404
    # Only admins grant and revoke; readers may list.
    operator = bearer(make_token(Role.OPERATOR))
    assert (
        client.post(
            "/v1/datasets/patients/grants",
            json={"tenant": "research", "reason": "x"},
            headers=operator,
        ).status_code
        == 403
    )
    assert (
        client.delete(f"/v1/datasets/patients/grants/{first['id']}", headers=operator).status_code
        == 403
    )
    assert client.get("/v1/datasets/patients/grants", headers=operator).status_code == 200
    # An asset is not deleted from under a grant in force; nor is its grantee.
    deleted = client.delete("/v1/datasets/patients", headers=admin_headers)
    assert deleted.status_code == 409
    assert "retail" in deleted.json()["error"]["message"]
    assert client.delete("/v1/tenants/retail", headers=admin_headers).status_code == 409
    revoke = client.delete(f"/v1/datasets/patients/grants/{first['id']}", headers=admin_headers)
    assert revoke.status_code == 200
    assert client.delete("/v1/datasets/patients", headers=admin_headers).status_code == 204


def test_grants_and_revocations_are_audited(
    client: TestClient, conn: DbConnection, admin_headers: dict[str, str]
) -> None:
    granted = grant(client, admin_headers)
    client.delete(f"/v1/datasets/patients/grants/{granted['id']}", headers=admin_headers)
    [created] = audit.list_events(conn, action="asset_grant.created").items
    assert (created.object_type, created.object_id) == ("asset_grant", granted["id"])
    assert created.before is None
    assert created.after is not None
    assert created.after["tenant"] == "retail"
    assert created.after["reason"] == "CHG-1 study"
    [revoked] = audit.list_events(conn, action="asset_grant.revoked").items
    assert revoked.object_id == granted["id"]
    assert revoked.before is not None
    assert revoked.after is not None
    assert revoked.before["in_force"] is True
    assert revoked.after["in_force"] is False
    assert revoked.after["revoked_by_id"] == created.actor_id
    assert client.get("/v1/audit/verify", headers=admin_headers).json()["ok"] is True
