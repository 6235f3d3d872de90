"""Registering a known machine id again must prove it is that node (no hijack by bootstrap).

A machine id is no secret: every inventory reader sees it. Re-registration is accepted
from the node's own agent credential, from an admin, or from a bootstrap token once an
admin approved a replacement (used once, before it expires); anything else is refused and
changes nothing, so the legitimate agent keeps reporting.
"""

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from control_plane.access.models import Role
from control_plane.audit import service as audit
from control_plane.core.db import DbConnection
from tests.support import MakeBootstrap, Run, bearer, registration

pytestmark = pytest.mark.integration

GPU_A = "GPU-aaaaaaaa-0000-0000-0000-00000000000a"
GPU_B = "GPU-bbbbbbbb-0000-0000-0000-00000000000b"


def register(client: TestClient, body: dict[str, Any], headers: dict[str, str]) -> Any:
    return client.post("/v1/agents/register", json=body, headers=headers)


@pytest.fixture
def bootstrap(make_bootstrap: MakeBootstrap) -> dict[str, str]:
    """The rack's bootstrap token, scoped to the rack's zone: its nodes are active at once."""
    return bearer(make_bootstrap())


@pytest.fixture
def body() -> dict[str, Any]:
    return registration(hostname="gpu-a", gpu_uuids=(GPU_A, GPU_B))


@pytest.fixture
def node(client: TestClient, bootstrap: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
    """A node registered with the rack's bootstrap token, its agent one heartbeat in."""
    response = register(client, body, bootstrap)
    assert response.status_code == 201, response.text
    registered: dict[str, Any] = response.json()
    beat = heartbeat(client, registered, 1)
    assert beat.status_code == 200, beat.text
    return registered


def heartbeat(client: TestClient, node: dict[str, Any], seq: int) -> Any:
    return client.post(
        f"/v1/nodes/{node['node_id']}/heartbeat", json={"seq": seq}, headers=bearer(node["token"])
    )


def actions(conn: DbConnection, node_id: str) -> list[str]:
    return [e.action for e in audit.list_events(conn, object_id=node_id, limit=1000).items]


def refused_as_known(response: Any, node_id: str) -> None:
    assert response.status_code == 409, response.text
    error = response.json()["error"]
    assert error["code"] == "conflict"
    assert error["details"] == {
        "field": "inventory.host.machine_id",
        "node_id": node_id,
        "reason": "machine_id_registered",
    }
    assert "own agent credential" in error["message"]
    assert f"sovctl nodes approve-replacement {node_id}" in error["message"]


def test_a_bootstrap_token_cannot_take_over_a_known_node(
    client: TestClient,
    admin: dict[str, str],
    bootstrap: dict[str, str],
    body: dict[str, Any],
    node: dict[str, Any],
    conn: DbConnection,
    make_token: Callable[[Role], str],
) -> None:
    another = bearer(make_token(Role.BOOTSTRAP))
    before = client.get(f"/v1/nodes/{node['node_id']}", headers=admin).json()
    events = audit.list_events(conn).total
    # The hijacker reads the machine id and re-registers it with fewer GPUs, once with the
    # rack's bootstrap token and once with another one.
    fewer = {**body, "inventory": {**body["inventory"], "gpus": body["inventory"]["gpus"][:1]}}
    for token in (bootstrap, another):
        refused_as_known(register(client, fewer, token), node["node_id"])
    # Nothing changed: the node keeps its GPUs and status, the agent its credential.
    assert heartbeat(client, node, 2).status_code == 200
    after = client.get(f"/v1/nodes/{node['node_id']}", headers=admin).json()
    assert [g["uuid"] for g in after["gpus"]] == [GPU_A, GPU_B]
    assert (after["status"], after["drift"]["status"]) == ("active", "none")
    assert after["gpus"] == before["gpus"]
    assert audit.list_events(conn).total == events
    revoked = conn.execute(
        "SELECT count(*) AS n FROM api_token WHERE node_id = %s AND revoked_at IS NOT NULL",
        (node["node_id"],),
    ).fetchone()
    assert revoked is not None
    assert revoked["n"] == 0


def test_the_nodes_own_agent_may_register_again(
    client: TestClient, body: dict[str, Any], node: dict[str, Any], conn: DbConnection
) -> None:
    again = register(client, body, bearer(node["token"]))
    assert again.status_code == 201, again.text
    assert again.json()["node_id"] == node["node_id"]
    assert heartbeat(client, node, 2).status_code == 401  # rotated
    assert heartbeat(client, again.json(), 1).status_code == 200
    [event] = audit.list_events(conn, action="node.reregistered").items
    assert event.actor_name == "node:gpu-a"


def test_another_nodes_agent_may_not_register_it(
    client: TestClient,
    bootstrap: dict[str, str],
    body: dict[str, Any],
    node: dict[str, Any],
) -> None:
    other = register(client, registration(hostname="gpu-b"), bootstrap).json()
    response = register(client, body, bearer(other["token"]))
    assert response.status_code == 403, response.text
    assert response.json()["error"]["code"] == "permission_denied"
    assert "its own node" in response.json()["error"]["message"]
    # Nor may an agent register a new machine: its token is bound to its node.
    new = register(client, registration(hostname="gpu-c"), bearer(other["token"]))
    assert new.status_code == 403, new.text
    assert heartbeat(client, node, 2).status_code == 200


def test_an_admins_approval_lets_one_bootstrap_registration_through(
    client: TestClient,
    admin: dict[str, str],
    bootstrap: dict[str, str],
    body: dict[str, Any],
    node: dict[str, Any],
    conn: DbConnection,
) -> None:
    url = f"/v1/nodes/{node['node_id']}/replacement"
    first = client.post(url, headers=admin)
    assert first.status_code == 201, first.text
    reason = {"reason": "disk replaced, OPS-1234"}
    approved = client.post(url, json=reason, headers=admin)
    assert approved.status_code == 201, approved.text
    approval = approved.json()
    assert approval["reason"] == "disk replaced, OPS-1234"
    expires = datetime.fromisoformat(approval["expires_at"])
    assert timedelta(minutes=59) < expires - datetime.now(UTC) <= timedelta(hours=1)

    replaced = register(client, body, bootstrap)
    assert replaced.status_code == 201, replaced.text
    assert replaced.json()["node_id"] == node["node_id"]
    assert heartbeat(client, node, 2).status_code == 401  # the lost credential is revoked
    assert heartbeat(client, replaced.json(), 1).status_code == 200
    # Used once: the next bootstrap registration is refused again.
    refused_as_known(register(client, body, bootstrap), node["node_id"])

    trail = actions(conn, node["node_id"])
    assert trail[-4:] == [
        "node.replacement_approved",
        "node.replacement_approved",
        "node.replacement_used",
        "node.reregistered",
    ]
    approvals = audit.list_events(conn, action="node.replacement_approved").items
    assert approvals[0].before is None
    assert approvals[1].before == approvals[0].after  # approving again replaces it
    assert approvals[1].after == approval
    [used] = audit.list_events(conn, action="node.replacement_used").items
    assert used.before == approval
    assert used.after is None
    assert used.actor_name.startswith("bootstrap-")
    assert approvals[1].actor_name.startswith("admin-")


def test_an_expired_approval_is_not_used(
    client: TestClient,
    admin: dict[str, str],
    bootstrap: dict[str, str],
    body: dict[str, Any],
    node: dict[str, Any],
    owner_conn: DbConnection,
) -> None:
    url = f"/v1/nodes/{node['node_id']}/replacement"
    assert client.post(url, json={"expires_in_seconds": 60}, headers=admin).status_code == 201
    owner_conn.execute(
        "UPDATE node_replacement_approval"
        " SET approved_at = now() - interval '2 minutes', expires_at = now() - interval '1 second'"
    )
    refused_as_known(register(client, body, bootstrap), node["node_id"])
    assert heartbeat(client, node, 2).status_code == 200


def test_a_registration_refused_for_another_reason_keeps_the_approval(
    client: TestClient,
    admin: dict[str, str],
    bootstrap: dict[str, str],
    body: dict[str, Any],
    node: dict[str, Any],
) -> None:
    taken = "GPU-cccccccc-0000-0000-0000-00000000000c"
    register(client, registration(hostname="gpu-b", gpu_uuids=(taken,)), bootstrap)
    assert client.post(f"/v1/nodes/{node['node_id']}/replacement", headers=admin).status_code == 201
    clash = {
        **body,
        "inventory": {
            **body["inventory"],
            "gpus": registration(gpu_uuids=(taken,))["inventory"]["gpus"],
        },
    }
    assert register(client, clash, bootstrap).status_code == 409  # that GPU is gpu-b's
    assert register(client, body, bootstrap).status_code == 201  # the approval is still there


def test_an_admin_may_register_a_known_node_directly(
    client: TestClient,
    admin: dict[str, str],
    body: dict[str, Any],
    node: dict[str, Any],
    conn: DbConnection,
) -> None:
    again = register(client, body, admin)
    assert again.status_code == 201, again.text
    [event] = audit.list_events(conn, action="node.reregistered").items
    assert event.actor_name.startswith("admin-")


@pytest.mark.parametrize(
    ("approval", "field"),
    [
        ({"expires_in_seconds": 59}, "expires_in_seconds"),
        ({"expires_in_seconds": 86401}, "expires_in_seconds"),
        ({"expires_in_seconds": "3600"}, "expires_in_seconds"),
        ({"reason": "x" * 257}, "reason"),
        ({"ttl": 60}, "ttl"),
    ],
)
def test_a_bad_approval_is_422_naming_the_field(
    client: TestClient,
    admin: dict[str, str],
    node: dict[str, Any],
    approval: dict[str, Any],
    field: str,
) -> None:
    response = client.post(f"/v1/nodes/{node['node_id']}/replacement", json=approval, headers=admin)
    assert response.status_code == 422, response.text
    fields = [f["field"] for f in response.json()["error"]["details"]["fields"]]
    assert fields == [field]


def test_approving_an_unknown_node_is_404(client: TestClient, admin: dict[str, str]) -> None:
    response = client.post("/v1/nodes/no-such-host/replacement", headers=admin)
    assert response.status_code == 404


def test_sovctl_approves_a_replacement(
    client: TestClient,
    admin_sovctl: Run,
    bootstrap: dict[str, str],
    body: dict[str, Any],
    node: dict[str, Any],
) -> None:
    code, out, err = admin_sovctl(
        "nodes", "approve-replacement", "gpu-a", "--reason", "OPS-7", "-o", "json"
    )
    assert code == 0, err
    assert '"reason": "OPS-7"' in out
    assert node["node_id"] in out
    assert register(client, body, bootstrap).status_code == 201
