"""Every route x every role: who may call what (401 without a token, 403 without the right)."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI
from fastapi.testclient import TestClient

from control_plane.access import service as access
from control_plane.access.models import Role
from control_plane.compliance import service as compliance
from control_plane.compliance.tasks import COMPLIANCE_ACTOR
from control_plane.core.db import DbConnection
from control_plane.core.settings import Settings
from control_plane.reports import service as reports
from control_plane.reports.signing import signer_for
from tests.support import TEST_ACTOR, bearer, registration

pytestmark = pytest.mark.integration

A, OP, U, B, G = Role.ADMIN, Role.OPERATOR, Role.AUDITOR, Role.BOOTSTRAP, Role.AGENT
READERS = frozenset({A, OP, U})
RUNNERS = frozenset({A, OP})


#: A compliance report of one day, as JSON.
REPORT: dict[str, str] = {
    "kind": "compliance",
    "period_from": "2026-01-01T00:00:00Z",
    "period_to": "2026-01-02T00:00:00Z",
    "format": "json",
}


@dataclass(frozen=True)
class Fixture:
    """What exists before the call: zones, a node and its token, registry entries, policies.

    Also a running workload, and a compliance evaluation that handled the request an
    admin made and those the policy activations made.
    """

    node_id: str
    agent_token: str
    machine_id: str
    workload_id: str
    evaluation_id: str
    request_id: int
    #: Grants to tenant "partner" of platform's "shared-logs" and "shared-model".
    dataset_grant_id: str
    model_grant_id: str
    #: A compliance report, built.
    report_id: str


@dataclass(frozen=True)
class Case:
    method: str
    path: str
    allowed: frozenset[Role]
    success: int
    body: Callable[[Fixture], Any] | None = None
    setup: Callable[[TestClient, Fixture], None] | None = None

    def url(self, fx: Fixture) -> str:
        return (
            self.path.replace(
                "{dataset}/grants/{grant}", f"shared-logs/grants/{fx.dataset_grant_id}"
            )
            .replace("{model}/grants/{grant}", f"shared-model/grants/{fx.model_grant_id}")
            .replace("{slug}", "jp-east")
            .replace("{node}", fx.node_id)
            .replace("{node_id}", fx.node_id)
            .replace("{tenant}", "research")
            .replace("{zone}", "jp")
            .replace("{country}", "TW")
            .replace("{dataset}", "support-tickets")
            .replace("{model}", "llama-3-8b")
            .replace("{destination}", "results-jp")
            .replace("{name}", POLICY["name"])
            .replace("{version}", "1")
            .replace("{workload_id}", fx.workload_id)
            .replace("{evaluation_id}", fx.evaluation_id)
            .replace("{request_id}", str(fx.request_id))
            .replace("{report_id}", fx.report_id)
        )


def drift_the_node(client: TestClient, fx: Fixture) -> None:
    """The node's agent reports a GPU the node did not have: the node drifts."""
    inventory = registration(
        machine_id=fx.machine_id, gpu_uuids=("GPU-00000000-0000-0000-0000-0000000000d1",)
    )["inventory"]
    ack = client.post(
        f"/v1/nodes/{fx.node_id}/heartbeat",
        json={"seq": 1, "inventory": inventory},
        headers=bearer(fx.agent_token),
    ).json()
    assert ack["status"] == "quarantined"


MODEL = {
    "name": "llama-3-8b",
    "tenant": "platform",
    "classification": "internal",
    "zones": ["jp"],
    "supplier": "Meta",
    "origin_country": "US",
    "license": "llama3",
}

POLICY: dict[str, Any] = {"name": "pii-stays-in-japan", "requirements": {"compute_zones": ["jp"]}}

#: A workload the world's node (in jp, two GPUs) can take under the world's policy.
WORKLOAD = {
    "tenant": "platform",
    "datasets": ["support-tickets"],
    "models": ["llama-3-8b"],
    "output": "results-jp",
    "gpu_count": 1,
}

CASES = [
    Case(
        "POST",
        "/v1/zones",
        frozenset({A}),
        201,
        lambda fx: {"slug": "kr", "name": "Korea", "country": "KR"},
    ),
    Case("GET", "/v1/zones", READERS, 200),
    Case("GET", "/v1/zones/{slug}", READERS, 200),
    Case(
        "PATCH",
        "/v1/zones/{slug}",
        frozenset({A}),
        200,
        lambda fx: {"description": "Tokyo and Osaka"},
    ),
    Case("DELETE", "/v1/zones/{slug}", frozenset({A}), 204),
    Case(
        "POST",
        "/v1/sites",
        frozenset({A}),
        201,
        lambda fx: {"slug": "tokyo-dc2", "name": "Tokyo DC2", "zone": "jp"},
    ),
    Case("GET", "/v1/sites", READERS, 200),
    Case("GET", "/v1/nodes", READERS, 200),
    Case("GET", "/v1/nodes/{node}", READERS, 200),
    Case(
        "PATCH",
        "/v1/nodes/{node}",
        frozenset({A}),
        200,
        lambda fx: {"labels": {"team": "research"}},
    ),
    Case(
        "POST",
        "/v1/nodes/{node}/drift/acknowledge",
        frozenset({A}),
        200,
        lambda fx: {"note": "GPU swapped under ticket OPS-1234"},
        setup=drift_the_node,
    ),
    Case(
        "POST",
        "/v1/nodes/{node}/replacement",
        frozenset({A}),
        201,
        lambda fx: {"reason": "disk replaced under OPS-1234"},
    ),
    # A new machine id: an agent token (bound to the world's node) may not register it.
    Case(
        "POST",
        "/v1/agents/register",
        frozenset({A, B}),
        201,
        lambda fx: registration(
            hostname="gpu-node-02", gpu_uuids=("GPU-00000000-0000-0000-0000-0000000000ff",)
        ),
    ),
    Case(
        "POST",
        "/v1/nodes/{node_id}/heartbeat",
        frozenset({A, G}),
        200,
        lambda fx: {"seq": 7, "telemetry": []},
    ),
    Case(
        "POST",
        "/v1/provenance/imports",
        frozenset({A}),
        200,
        lambda fx: {
            "rows": [
                {"system_serial": "S452938X3A11720", "component": "system", "origin_country": "US"}
            ]
        },
    ),
    Case(
        "POST",
        "/v1/tenants",
        frozenset({A}),
        201,
        lambda fx: {"slug": "finance", "name": "Finance"},
    ),
    Case("GET", "/v1/tenants", READERS, 200),
    Case("GET", "/v1/tenants/{tenant}", READERS, 200),
    Case("DELETE", "/v1/tenants/{tenant}", frozenset({A}), 204),
    Case(
        "PUT",
        "/v1/tenants/{tenant}/quotas/{zone}",
        frozenset({A}),
        200,
        lambda fx: {"max_gpus": 8, "gpu_hours_per_period": 2000, "period": "month"},
    ),
    Case("DELETE", "/v1/tenants/{tenant}/quotas/{zone}", frozenset({A}), 204),
    Case(
        "PUT",
        "/v1/tenants/{tenant}/origin-quotas/{country}",
        frozenset({A}),
        200,
        lambda fx: {"gpu_hours_per_period": 500, "period": "month"},
    ),
    Case("DELETE", "/v1/tenants/{tenant}/origin-quotas/{country}", frozenset({A}), 204),
    Case(
        "POST",
        "/v1/datasets",
        frozenset({A}),
        201,
        lambda fx: {
            "name": "web-crawl",
            "tenant": "platform",
            "classification": "public",
            "zones": ["jp"],
        },
    ),
    Case("GET", "/v1/datasets", READERS, 200),
    Case("GET", "/v1/datasets/{dataset}", READERS, 200),
    Case(
        "PATCH",
        "/v1/datasets/{dataset}",
        frozenset({A}),
        200,
        lambda fx: {"classification": "restricted"},
    ),
    Case("DELETE", "/v1/datasets/{dataset}", frozenset({A}), 204),
    Case(
        "POST",
        "/v1/datasets/{dataset}/grants",
        frozenset({A}),
        201,
        lambda fx: {"tenant": "research", "reason": "CHG-1"},
    ),
    Case("GET", "/v1/datasets/{dataset}/grants", READERS, 200),
    Case("DELETE", "/v1/datasets/{dataset}/grants/{grant}", frozenset({A}), 200),
    Case(
        "POST",
        "/v1/models",
        frozenset({A}),
        201,
        lambda fx: {**MODEL, "name": "qwen-7b", "origin_country": "CN"},
    ),
    Case("GET", "/v1/models", READERS, 200),
    Case("GET", "/v1/models/{model}", READERS, 200),
    Case("PATCH", "/v1/models/{model}", frozenset({A}), 200, lambda fx: {"license": "llama3.1"}),
    Case("DELETE", "/v1/models/{model}", frozenset({A}), 204),
    Case(
        "POST",
        "/v1/models/{model}/grants",
        frozenset({A}),
        201,
        lambda fx: {"tenant": "research", "reason": "CHG-1"},
    ),
    Case("GET", "/v1/models/{model}/grants", READERS, 200),
    Case("DELETE", "/v1/models/{model}/grants/{grant}", frozenset({A}), 200),
    Case(
        "POST",
        "/v1/destinations",
        frozenset({A}),
        201,
        lambda fx: {"name": "results-tw", "zone": "jp"},
    ),
    Case("GET", "/v1/destinations", READERS, 200),
    Case("GET", "/v1/destinations/{destination}", READERS, 200),
    Case("DELETE", "/v1/destinations/{destination}", frozenset({A}), 204),
    Case(
        "POST",
        "/v1/policies",
        frozenset({A}),
        201,
        lambda fx: {
            "name": "verified-hardware",
            "requirements": {"min_provenance_status": "verified"},
        },
    ),
    Case("GET", "/v1/policies", READERS, 200),
    Case("GET", "/v1/policies/{name}", READERS, 200),
    Case("GET", "/v1/policies/{name}/versions/{version}", READERS, 200),
    Case("GET", "/v1/policy-sets/active", READERS, 200),
    Case("GET", "/v1/policy-sets", READERS, 200),
    # The world's active set holds version 2 of the policy: version 1 is a change.
    Case(
        "POST",
        "/v1/policy-sets/activate",
        frozenset({A}),
        200,
        lambda fx: {"members": [{"name": POLICY["name"], "version": 1}]},
    ),
    Case("POST", "/v1/policy-sets/rollback", frozenset({A}), 200, lambda fx: {}),
    # The world's workload holds one of the node's two GPUs; this one gets the other.
    Case("POST", "/v1/workloads", RUNNERS, 201, lambda fx: WORKLOAD),
    Case("GET", "/v1/workloads", READERS, 200),
    Case("GET", "/v1/workloads/{workload_id}", READERS, 200),
    Case("POST", "/v1/workloads/{workload_id}/release", RUNNERS, 200),
    Case("POST", "/v1/workloads/{workload_id}/renew", RUNNERS, 200, lambda fx: {}),
    Case("POST", "/v1/compliance/evaluations", frozenset({A}), 202),
    Case("GET", "/v1/compliance/evaluations", frozenset({A, U}), 200),
    Case("GET", "/v1/compliance/evaluations/latest", frozenset({A, U}), 200),
    Case("GET", "/v1/compliance/evaluations/{evaluation_id}", frozenset({A, U}), 200),
    Case("GET", "/v1/compliance/requests/{request_id}", frozenset({A, U}), 200),
    Case("GET", "/v1/compliance/deliveries", frozenset({A, U}), 200),
    # What activating a tighter version of the world's policy would change; stores nothing.
    Case(
        "POST",
        "/v1/policies/whatif",
        frozenset({A}),
        200,
        lambda fx: {**POLICY, "requirements": {"compute_zones": ["jp-east"]}},
    ),
    Case("GET", "/v1/audit/events", frozenset({A, U}), 200),
    Case("GET", "/v1/audit/verify", frozenset({A, U}), 200),
    Case("POST", "/v1/audit/checkpoints", frozenset({A}), 201),
    Case("GET", "/v1/audit/checkpoints", frozenset({A, U}), 200),
    Case("GET", "/v1/audit/public-key", frozenset({A, U}), 200),
    Case("POST", "/v1/reports", frozenset({A, U}), 202, lambda fx: REPORT),
    Case("GET", "/v1/reports", frozenset({A, U}), 200),
    Case("GET", "/v1/reports/{report_id}", frozenset({A, U}), 200),
    Case("GET", "/v1/reports/{report_id}/download", frozenset({A, U}), 200),
    Case("GET", "/v1/usage", frozenset({A, U}), 200),
    Case("GET", "/v1/cluster/label-sync", READERS, 200),
]
PUBLIC = {("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics")}
#: The admission webhooks: the kube-apiserver calls them with no bearer token, so no role
#: applies; the webhook listener serves them, never the API (test_webhook_trust.py).
WEBHOOKS = {("POST", "/k8s/mutate"), ("POST", "/k8s/validate"), ("POST", "/k8s/validate-node")}


@pytest.fixture
def world(
    client: TestClient, admin: dict[str, str], conn: DbConnection, settings: Settings
) -> Fixture:
    for zone in (
        {"slug": "jp", "name": "Japan", "country": "JP"},
        {"slug": "jp-east", "name": "Japan East", "country": "JP"},
    ):
        assert client.post("/v1/zones", json=zone, headers=admin).status_code == 201
    body = registration(
        zone="jp",
        gpu_uuids=(
            "GPU-00000000-0000-0000-0000-000000000001",
            "GPU-00000000-0000-0000-0000-000000000002",
        ),
    )
    registered = client.post("/v1/agents/register", json=body, headers=admin).json()
    # The registry: "research" owns nothing (so it may be deleted), "platform" owns the
    # assets. All of it is in zone jp, so that jp-east stays free to be deleted.
    for path, item in (
        ("/v1/tenants", {"slug": "research", "name": "Research"}),
        ("/v1/tenants", {"slug": "platform", "name": "Platform"}),
        ("/v1/tenants", {"slug": "partner", "name": "Partner"}),
        (
            "/v1/datasets",
            {
                "name": "shared-logs",
                "tenant": "platform",
                "classification": "internal",
                "zones": ["jp"],
            },
        ),
        ("/v1/models", {**MODEL, "name": "shared-model"}),
        (
            "/v1/datasets",
            {
                "name": "support-tickets",
                "tenant": "platform",
                "classification": "confidential",
                "zones": ["jp"],
            },
        ),
        ("/v1/models", MODEL),
        ("/v1/destinations", {"name": "results-jp", "zone": "jp"}),
    ):
        assert client.post(path, json=item, headers=admin).status_code == 201
    grants = [
        client.post(
            f"/v1/{collection}/grants", json={"tenant": "partner", "reason": "x"}, headers=admin
        )
        for collection in ("datasets/shared-logs", "models/shared-model")
    ]
    assert [g.status_code for g in grants] == [201, 201]
    quota = client.put("/v1/tenants/research/quotas/jp", json={"max_gpus": 4}, headers=admin)
    assert quota.status_code == 200
    origin_quota = client.put(
        "/v1/tenants/research/origin-quotas/TW",
        json={"gpu_hours_per_period": 1000},
        headers=admin,
    )
    assert origin_quota.status_code == 200
    # Two versions of one policy, each activated in turn: sets 1 and 2, 2 active.
    for description in ("first", "second"):
        policy = {**POLICY, "description": description}
        assert client.post("/v1/policies", json=policy, headers=admin).status_code == 201
        activated = client.post("/v1/policy-sets/activate", json={}, headers=admin)
        assert activated.status_code == 200, activated.text
    # A running workload (of "platform", so that "research" stays deletable).
    workload = client.post("/v1/workloads", json=WORKLOAD, headers=admin).json()
    assert workload["status"] == "admitted", workload
    # The activations asked for a compliance evaluation, and so does the admin; run it, as
    # the worker would.
    requested = client.post("/v1/compliance/evaluations", headers=admin)
    assert requested.status_code == 202, requested.text
    evaluation = compliance.run_pending(
        conn, COMPLIANCE_ACTOR, sample_size=10, request_retention_days=7
    )
    assert evaluation is not None
    asked = client.post("/v1/reports", json=REPORT, headers=admin)
    assert asked.status_code == 202, asked.text
    report_id = asked.json()["id"]
    built = reports.build(
        settings.database_url,
        UUID(report_id),
        signer_for(Ed25519PrivateKey.generate()),
        settings.reports,
    )
    assert built is not None
    return Fixture(
        node_id=registered["node_id"],
        agent_token=registered["token"],
        machine_id=body["inventory"]["host"]["machine_id"],
        workload_id=workload["id"],
        evaluation_id=str(evaluation.id),
        request_id=requested.json()["id"],
        dataset_grant_id=grants[0].json()["id"],
        model_grant_id=grants[1].json()["id"],
        report_id=report_id,
    )


def test_the_table_covers_every_route(app: FastAPI) -> None:
    # The OpenAPI document lists every route the app serves (FastAPI's own docs aside).
    routes = {
        (method.upper(), path)
        for path, operations in app.openapi()["paths"].items()
        for method in operations
    }
    assert routes == {(c.method, c.path) for c in CASES} | PUBLIC


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.method} {c.path}")
@pytest.mark.parametrize("role", [*Role, None], ids=lambda r: r.value if r else "no-token")
def test_route_role(
    case: Case,
    role: Role | None,
    client: TestClient,
    world: Fixture,
    make_token: Callable[[Role], str],
) -> None:
    if role is None:
        headers: dict[str, str] = {}
    elif role is Role.AGENT:
        headers = bearer(world.agent_token)
    else:
        headers = bearer(make_token(role))
    if case.setup is not None:
        case.setup(client, world)
    response = client.request(
        case.method,
        case.url(world),
        headers=headers,
        json=case.body(world) if case.body else None,
    )
    if role is None:
        expected = 401
    elif role in case.allowed:
        expected = case.success
    else:
        expected = 403
    assert response.status_code == expected, response.text
    if expected >= 400:
        assert response.json()["error"]["code"] in {"not_authenticated", "permission_denied"}


@pytest.mark.parametrize("path", sorted(p for _, p in WEBHOOKS))
def test_the_api_serves_no_webhook_route_whatever_the_token(client: TestClient, path: str) -> None:
    response = client.post(path, json={}, headers=bearer("sov_not-a-real-token"))
    assert response.status_code == 404, response.text


@pytest.mark.parametrize("path", sorted(p for _, p in PUBLIC))
def test_public_routes_need_no_token(client: TestClient, path: str) -> None:
    assert client.get(path).status_code == 200


def test_bad_and_revoked_tokens_are_401(
    client: TestClient, world: Fixture, conn: DbConnection
) -> None:
    response = client.get("/v1/zones", headers=bearer("sov_not-a-real-token"))
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"
    url = f"/v1/nodes/{world.node_id}/heartbeat"
    headers = bearer(world.agent_token)
    assert client.post(url, json={"seq": 1}, headers=headers).status_code == 200
    access.revoke_token(conn, TEST_ACTOR, "node:gpu-node-01")
    revoked = client.post(url, json={"seq": 2}, headers=headers)
    assert revoked.status_code == 401
    assert revoked.json()["error"]["code"] == "not_authenticated"


def test_an_agent_may_not_heartbeat_for_another_node(
    client: TestClient, world: Fixture, make_token: Callable[[Role], str]
) -> None:
    other = client.post(
        "/v1/agents/register",
        json=registration(
            hostname="gpu-node-03", gpu_uuids=("GPU-00000000-0000-0000-0000-0000000000aa",)
        ),
        headers=bearer(make_token(Role.BOOTSTRAP)),
    ).json()
    response = client.post(
        f"/v1/nodes/{other['node_id']}/heartbeat",
        json={"seq": 1},
        headers=bearer(world.agent_token),
    )
    assert response.status_code == 403
    assert "own node" in response.json()["error"]["message"]


def test_openapi_and_interactive_docs_are_served(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert "/v1/nodes" in spec["paths"]
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert "swagger-ui" in client.get("/docs").text
