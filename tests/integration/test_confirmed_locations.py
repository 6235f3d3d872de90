"""Where a node stands is confirmed by a person or a scoped credential, never the agent's word.

Issue 11, item 4: a new machine registering with a bootstrap token and ``"zone": "jp-east"``
in its config was active at once and received confidential Japanese data. Now a bootstrap
token may be scoped to a zone (and site): a registration claiming another is refused, one
claiming none takes the token's. A node registered with an unscoped token waits
``planned``, never eligible, until an admin sets its zone.
"""

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from fastapi.testclient import TestClient

from control_plane.access.models import Role
from control_plane.audit import service as audit
from control_plane.core.db import DbConnection
from control_plane.core.errors import InvalidInputError
from control_plane.inventory import agents
from tests.support import (
    SECRET,
    TEST_ACTOR,
    MakeBootstrap,
    Run,
    bearer,
    documented_api_examples,
    matches_documented,
    registration,
)

pytestmark = pytest.mark.integration

GPUS = ("GPU-loc-0000", "GPU-loc-0001")


@pytest.fixture
def japan(client: TestClient, admin: dict[str, str]) -> None:
    """Zones jp > jp-east, jp-west with a site in jp-east; a tenant with Japanese data."""
    for path, body in (
        ("/v1/zones", {"slug": "jp", "name": "Japan", "country": "JP"}),
        ("/v1/zones", {"slug": "jp-east", "name": "Tokyo", "country": "JP", "parent": "jp"}),
        ("/v1/zones", {"slug": "jp-west", "name": "Osaka", "country": "JP", "parent": "jp"}),
        ("/v1/sites", {"slug": "tyo-1", "name": "Tokyo 1", "zone": "jp-east"}),
        ("/v1/sites", {"slug": "tyo-2", "name": "Tokyo 2", "zone": "jp-east"}),
        ("/v1/tenants", {"slug": "bank", "name": "Bank"}),
        (
            "/v1/datasets",
            {
                "name": "accounts",
                "tenant": "bank",
                "classification": "confidential",
                "zones": ["jp"],
            },
        ),
    ):
        response = client.post(path, json=body, headers=admin)
        assert response.status_code == 201, response.text


def register(client: TestClient, token: str, **fields: Any) -> Any:
    return client.post(
        "/v1/agents/register", json=registration(gpu_uuids=GPUS, **fields), headers=bearer(token)
    )


def heartbeat(client: TestClient, node: dict[str, Any], seq: int) -> dict[str, Any]:
    response = client.post(
        f"/v1/nodes/{node['node_id']}/heartbeat", json={"seq": seq}, headers=bearer(node["token"])
    )
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def submit(client: TestClient, admin: dict[str, str]) -> dict[str, Any]:
    response = client.post(
        "/v1/workloads",
        json={"tenant": "bank", "datasets": ["accounts"], "gpu_count": 1},
        headers=admin,
    )
    assert response.status_code in (201, 422), response.text
    answer: dict[str, Any] = response.json()
    return answer


def node_of(client: TestClient, admin: dict[str, str], node_id: str) -> dict[str, Any]:
    response = client.get(f"/v1/nodes/{node_id}", headers=admin)
    assert response.status_code == 200, response.text
    detail: dict[str, Any] = response.json()
    return detail


@pytest.mark.usefixtures("japan")
def test_an_agent_claiming_a_zone_with_an_unscoped_token_waits_for_an_admin(
    client: TestClient,
    admin: dict[str, str],
    make_token: Callable[[Role], str],
    conn: DbConnection,
) -> None:
    registered = register(client, make_token(Role.BOOTSTRAP), zone="jp-east")
    assert registered.status_code == 201, registered.text
    node = registered.json()
    assert node["status"] == "planned"
    # Heartbeats keep it waiting; it is never eligible.
    assert heartbeat(client, node, 1)["status"] == "planned"
    detail = node_of(client, admin, node["node_id"])
    assert detail["zone"] == "jp-east"
    assert detail["location"] == {
        "confirmed": False,
        "confirmed_at": None,
        "confirmed_by": None,
        "via": None,
    }
    denied = submit(client, admin)
    assert denied["outcome"] == "denied", denied
    assert "planned" in json.dumps(denied), denied

    # Making it active without confirming where it stands is refused, naming status.
    refused = client.patch(f"/v1/nodes/{node['node_id']}", json={"status": "active"}, headers=admin)
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"]["details"]["field"] == "status"
    assert refused.json()["error"]["details"]["reason"] == "location_unconfirmed"
    # The table refuses it too, whatever path would write it.
    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute("UPDATE node SET status = 'active' WHERE id = %s", (node["node_id"],))
    conn.rollback()

    # The admin checks the rack and confirms the zone: the node is active, confirmed by them.
    confirmed = client.patch(
        f"/v1/nodes/{node['node_id']}",
        json={"zone": "jp-east", "status": "active"},
        headers=admin,
    )
    assert confirmed.status_code == 200, confirmed.text
    after = confirmed.json()
    assert after["status"] == "active"
    assert after["location"]["confirmed"] is True
    assert after["location"]["via"] == "admin"
    assert after["location"]["confirmed_by"].startswith("admin-")
    admitted = submit(client, admin)
    assert admitted["outcome"] == "admitted", admitted
    assert admitted["node_id"] == node["node_id"]
    # The audit trail holds who confirmed it: the node.updated event before and after.
    events = audit.list_events(conn, object_id=node["node_id"], limit=100).items
    updated = [e for e in events if e.action == "node.updated"]
    assert updated[-1].before["location"]["confirmed"] is False
    assert updated[-1].after["location"]["via"] == "admin"


@pytest.mark.usefixtures("japan")
def test_a_token_scoped_to_a_zone_confirms_it_and_refuses_any_other(
    client: TestClient, admin: dict[str, str], make_bootstrap: MakeBootstrap, conn: DbConnection
) -> None:
    token = make_bootstrap("jp-east")
    events = audit.list_events(conn).total
    for claim in ("jp-west", "jp"):
        refused = register(client, token, zone=claim)
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"]["details"] == {
            "field": "zone",
            "scope": "jp-east",
            "claimed": claim,
        }
    # Nothing was stored: no node, no event.
    assert client.get("/v1/nodes", headers=admin).json()["total"] == 0
    assert audit.list_events(conn).total == events

    # A registration that claims no zone stands in the token's, confirmed, active at once.
    registered = register(client, token)
    assert registered.status_code == 201, registered.text
    node = registered.json()
    assert node["status"] == "active"
    detail = node_of(client, admin, node["node_id"])
    assert detail["zone"] == "jp-east"
    assert detail["location"]["via"] == "scoped-token"
    assert detail["location"]["confirmed_by"].startswith("bootstrap-jp-east-")
    assert submit(client, admin)["outcome"] == "admitted"


@pytest.mark.usefixtures("japan")
def test_a_token_scoped_to_a_site_refuses_another_site(
    client: TestClient, admin: dict[str, str], make_bootstrap: MakeBootstrap
) -> None:
    token = make_bootstrap("jp-east", site="tyo-1")
    refused = register(client, token, zone="jp-east", site="tyo-2")
    assert refused.status_code == 403, refused.text
    assert refused.json()["error"]["details"]["field"] == "site"
    registered = register(client, token, zone="jp-east")
    assert registered.status_code == 201, registered.text
    detail = node_of(client, admin, registered.json()["node_id"])
    assert (detail["zone"], detail["site"], detail["status"]) == ("jp-east", "tyo-1", "active")


@pytest.mark.usefixtures("japan")
def test_a_scope_names_a_real_zone_and_a_site_within_it(conn: DbConnection) -> None:
    cases = (
        ({"zone": "atlantis"}, "zone"),
        ({"site": "tyo-1"}, "site"),  # a site needs its zone
        ({"zone": "jp-west", "site": "tyo-1"}, "site"),  # tyo-1 is in jp-east
    )
    for scope, field in cases:
        with pytest.raises(InvalidInputError) as refused:
            agents.create_bootstrap_token(
                conn, TEST_ACTOR, name=f"rack-{field}", secret_key=SECRET, **scope
            )
        assert [f["field"] for f in refused.value.details["fields"]] == [field], scope
        conn.rollback()
    # Only bootstrap tokens carry a scope: the table refuses it on any other.
    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute(
            "INSERT INTO api_token (name, role, token_hash, token_prefix, zone_slug, created_by)"
            " VALUES ('x', 'admin', 'h', 'p', 'jp', 'test')"
        )
    conn.rollback()


@pytest.mark.usefixtures("japan")
def test_an_unconfirmed_node_comes_back_planned_and_a_drift_ack_leaves_it_waiting(
    client: TestClient, admin: dict[str, str], make_token: Callable[[Role], str]
) -> None:
    node = register(client, make_token(Role.BOOTSTRAP), zone="jp-east").json()
    # Put offline by an admin, it comes back waiting, not active.
    offline = client.patch(
        f"/v1/nodes/{node['node_id']}", json={"status": "offline"}, headers=admin
    )
    assert offline.status_code == 200, offline.text
    assert heartbeat(client, node, 1)["status"] == "planned"
    # Its GPUs swapped: quarantined; the drift acknowledged: back to waiting, not active.
    body = {
        "seq": 2,
        "inventory": {
            "host": {
                "hostname": "gpu-node-01",
                "machine_id": node_of(client, admin, node["node_id"])["machine_id"],
            },
            "gpus": registration(gpu_uuids=("GPU-loc-swap",))["inventory"]["gpus"],
        },
    }
    drifted = client.post(
        f"/v1/nodes/{node['node_id']}/heartbeat", json=body, headers=bearer(node["token"])
    )
    assert drifted.status_code == 200, drifted.text
    assert drifted.json()["status"] == "quarantined"
    ack = client.post(
        f"/v1/nodes/{node['node_id']}/drift/acknowledge",
        json={"note": "GPU replaced under ticket 42"},
        headers=admin,
    )
    assert ack.status_code == 200, ack.text
    assert node_of(client, admin, node["node_id"])["status"] == "planned"


@pytest.mark.usefixtures("japan")
def test_deleting_a_scoped_zone_leaves_the_token_unscoped_so_its_nodes_wait(
    client: TestClient, admin: dict[str, str], make_bootstrap: MakeBootstrap
) -> None:
    token = make_bootstrap("jp-west")
    deleted = client.delete("/v1/zones/jp-west", headers=admin)
    assert deleted.status_code == 204, deleted.text
    registered = register(client, token)
    assert registered.status_code == 201, registered.text
    assert registered.json()["status"] == "planned"


@pytest.mark.usefixtures("japan")
def test_sovctl_scopes_tokens_and_confirms_locations(
    sovctl_as: Callable[[Role], Run], live_server: str, make_token: Callable[[Role], str]
) -> None:
    sovctl = sovctl_as(Role.ADMIN)
    code, out, err = sovctl(
        "tokens", "create", "--name", "rack-7", "--role", "bootstrap", "--zone", "jp-east",
        "--site", "tyo-1", "-o", "json",
    )  # fmt: skip
    assert code == 0, err
    assert '"zone": "jp-east"' in out
    assert '"site": "tyo-1"' in out
    code, _, err = sovctl(
        "tokens", "create", "--name", "ops", "--role", "operator", "--zone", "jp-east"
    )
    assert code != 0
    assert "only bootstrap tokens" in err

    body = registration(gpu_uuids=GPUS, zone="jp-east")
    node = httpx.post(
        f"{live_server}/v1/agents/register", json=body, headers=bearer(make_token(Role.BOOTSTRAP))
    ).json()
    assert node["status"] == "planned"
    code, out, err = sovctl(
        "nodes", "confirm-location", node["node_id"], "--zone", "jp-east", "-o", "json"
    )
    assert code == 0, err
    assert '"status": "active"' in out
    assert '"via": "admin"' in out


@pytest.mark.usefixtures("japan")
def test_the_documented_worked_example_is_what_the_api_answers(
    client: TestClient,
    admin: dict[str, str],
    make_token: Callable[[Role], str],
    make_bootstrap: MakeBootstrap,
) -> None:
    """docs/policy.md's "Confirmed locations" example, request by request, for real."""
    tokens = {
        "jp-east": bearer(make_bootstrap("jp-east")),
        "unscoped": bearer(make_token(Role.BOOTSTRAP)),
        "admin": admin,
    }
    examples = documented_api_examples(Path("docs/policy.md"), "locations")
    assert [e.step for e in examples] == [
        "scoped-token-claims-another-zone",
        "unscoped-token-waits",
        "activate-unconfirmed",
        "admin-confirms",
    ]
    node = ""
    for example in examples:
        response = client.request(
            example.method,
            example.path.replace("{node}", node),
            json=example.body,
            headers=tokens[example.token],
        )
        assert response.status_code == example.status, (example.step, response.text)
        answer = response.json()
        node = answer.get("node_id", node)
        expected = json.loads(json.dumps(example.answer).replace("{node}", node))
        assert matches_documented(expected, answer), (example.step, answer)
