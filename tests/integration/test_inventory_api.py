"""Inventory through the API: zones, sites, registration, heartbeats, filters and bad input."""

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from agents.protocol import MAX_SEQ_STEP
from control_plane.access.models import Role
from control_plane.audit import service as audit
from control_plane.core.db import DbConnection
from tests.support import bearer, registration

pytestmark = pytest.mark.integration

GPU_A = "GPU-aaaaaaaa-0000-0000-0000-000000000001"
GPU_B = "GPU-bbbbbbbb-0000-0000-0000-000000000002"


@pytest.fixture
def zones(client: TestClient, admin: dict[str, str]) -> None:
    for zone in (
        {"slug": "jp", "name": "Japan", "country": "JP"},
        {"slug": "jp-east", "name": "Japan East", "country": "JP", "parent": "jp"},
        {"slug": "tokyo-dc1", "name": "Tokyo DC1", "country": "JP", "parent": "jp-east"},
        {"slug": "tw-north", "name": "Taiwan North", "country": "TW"},
    ):
        response = client.post("/v1/zones", json=zone, headers=admin)
        assert response.status_code == 201, response.text


def register(client: TestClient, headers: dict[str, str], **kwargs: Any) -> dict[str, Any]:
    response = client.post("/v1/agents/register", json=registration(**kwargs), headers=headers)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def error_fields(response: Any) -> list[str]:
    return [f["field"] for f in response.json()["error"]["details"]["fields"]]


# -- zones -----------------------------------------------------------------------------


def test_zone_crud(client: TestClient, admin: dict[str, str], zones: None) -> None:
    zone = client.get("/v1/zones/jp-east", headers=admin).json()
    assert zone["parent"] == "jp"
    assert zone["country"] == "JP"
    changed = client.patch(
        "/v1/zones/jp-east", json={"name": "Kanto", "description": "east"}, headers=admin
    ).json()
    assert (changed["name"], changed["description"], changed["parent"]) == ("Kanto", "east", "jp")
    detached = client.patch("/v1/zones/tw-north", json={"parent": None}, headers=admin)
    assert detached.json()["parent"] is None
    assert client.delete("/v1/zones/tw-north", headers=admin).status_code == 204
    assert client.get("/v1/zones/tw-north", headers=admin).status_code == 404
    slugs = [z["slug"] for z in client.get("/v1/zones", headers=admin).json()]
    assert slugs == ["jp", "jp-east", "tokyo-dc1"]


def test_country_is_normalised_to_upper_case(client: TestClient, admin: dict[str, str]) -> None:
    zone = client.post(
        "/v1/zones", json={"slug": "de", "name": "Germany", "country": "de"}, headers=admin
    ).json()
    assert zone["country"] == "DE"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"slug": "x1", "name": "X", "country": "XX"}, "country"),
        ({"slug": "x1", "name": "X", "country": "JPN"}, "country"),
        ({"slug": "x1", "name": "X", "country": "JP", "parent": "nowhere"}, "parent"),
        ({"slug": "Not A Slug!", "name": "X", "country": "JP"}, "slug"),
        ({"slug": "x1", "name": "", "country": "JP"}, "name"),
        ({"slug": "x1", "name": "X"}, "country"),
        ({"slug": "x1", "name": "X", "country": "JP", "colour": "red"}, "colour"),
    ],
)
def test_invalid_zone_is_422_naming_the_field(
    client: TestClient, admin: dict[str, str], zones: None, body: dict[str, Any], field: str
) -> None:
    response = client.post("/v1/zones", json=body, headers=admin)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "invalid_input"
    assert field in error_fields(response)
    assert field in response.json()["error"]["message"]


def test_malformed_json_is_422_naming_the_body(client: TestClient, admin: dict[str, str]) -> None:
    response = client.post(
        "/v1/zones", content=b"{not json", headers={**admin, "Content-Type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_input"
    assert error_fields(response) == ["body"]


def test_duplicate_zone_is_409(client: TestClient, admin: dict[str, str], zones: None) -> None:
    response = client.post(
        "/v1/zones", json={"slug": "jp", "name": "Again", "country": "JP"}, headers=admin
    )
    assert response.status_code == 409
    assert response.json()["error"]["details"]["field"] == "slug"


def test_zone_cycle_is_refused(client: TestClient, admin: dict[str, str], zones: None) -> None:
    response = client.patch("/v1/zones/jp", json={"parent": "tokyo-dc1"}, headers=admin)
    assert response.status_code == 422
    assert error_fields(response) == ["parent"]
    assert client.get("/v1/zones/jp", headers=admin).json()["parent"] is None


@pytest.mark.parametrize("slug", ["kr", "jp"], ids=["new", "taken"])
def test_a_zone_cannot_be_its_own_parent(
    client: TestClient, admin: dict[str, str], zones: None, slug: str
) -> None:
    # Found by schemathesis: the database's check constraint was a 500.
    zone = {"slug": slug, "name": "Loop", "country": "KR", "parent": slug}
    response = client.post("/v1/zones", json=zone, headers=admin)
    assert response.status_code == 422, response.text
    assert error_fields(response) == ["parent"]
    patched = client.patch("/v1/zones/jp", json={"parent": "jp"}, headers=admin)
    assert patched.status_code == 422, patched.text
    assert error_fields(patched) == ["parent"]


def test_zone_in_use_cannot_be_deleted(
    client: TestClient, admin: dict[str, str], zones: None
) -> None:
    assert client.delete("/v1/zones/jp", headers=admin).status_code == 409  # has children
    register(client, admin, zone="tw-north")
    response = client.delete("/v1/zones/tw-north", headers=admin)
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "conflict"


def test_unknown_zone_is_404(client: TestClient, admin: dict[str, str]) -> None:
    for method in ("GET", "PATCH", "DELETE"):
        response = client.request(method, "/v1/zones/nowhere", json={}, headers=admin)
        assert response.status_code == 404, method


def test_sites(client: TestClient, admin: dict[str, str], zones: None) -> None:
    site = {"slug": "tokyo-dc1-hall-a", "name": "Hall A", "zone": "tokyo-dc1"}
    assert client.post("/v1/sites", json=site, headers=admin).status_code == 201
    assert client.post("/v1/sites", json=site, headers=admin).status_code == 409
    bad = client.post("/v1/sites", json={**site, "slug": "b", "zone": "mars"}, headers=admin)
    assert bad.status_code == 422
    assert error_fields(bad) == ["zone"]
    assert [s["slug"] for s in client.get("/v1/sites", headers=admin).json()] == [site["slug"]]


# -- registration and heartbeats ---------------------------------------------------------


def test_register_then_heartbeat(
    client: TestClient, admin: dict[str, str], zones: None, make_token: Callable[[Role], str]
) -> None:
    bootstrap = bearer(make_token(Role.BOOTSTRAP))
    node = register(
        client, bootstrap, zone="jp-east", origin_country="tw", gpu_uuids=(GPU_A, GPU_B)
    )
    agent = bearer(node["token"])
    url = f"/v1/nodes/{node['node_id']}/heartbeat"
    ack = client.post(
        url,
        json={
            "seq": 1,
            "telemetry": [
                {
                    "uuid": GPU_A,
                    "utilization_pct": 87.5,
                    "memory_used_bytes": 1024,
                    "temperature_c": 61,
                    "power_w": 412.3,
                },
                {"uuid": "GPU-unknown", "utilization_pct": 1},
            ],
        },
        headers=agent,
    ).json()
    assert ack["accepted"]
    assert not ack["duplicate"]
    assert ack["unknown_gpus"] == ["GPU-unknown"]
    detail = client.get(f"/v1/nodes/{node['node_id']}", headers=admin).json()
    assert detail["zone"] == "jp-east"
    assert detail["provenance"]["origin_country"] == "TW"
    assert detail["provenance"]["status"] == "declared"
    assert detail["provenance"]["evidence"]["source"] == "agent-config"
    gpus = {g["uuid"]: g for g in detail["gpus"]}
    assert gpus[GPU_A]["utilization_pct"] == 87.5
    assert gpus[GPU_A]["power_w"] == pytest.approx(412.3, rel=1e-6)
    assert gpus[GPU_B]["utilization_pct"] is None
    assert detail["last_heartbeat_seq"] == 1


def test_a_sequence_number_cannot_jump_out_of_reach(
    client: TestClient, admin: dict[str, str]
) -> None:
    """Issue 10 item 11: seq 2**63-1 would make every later heartbeat a repeat, forever."""
    node = register(client, admin, gpu_uuids=(GPU_A,))
    agent = bearer(node["token"])
    url = f"/v1/nodes/{node['node_id']}/heartbeat"
    assert client.post(url, json={"seq": 3}, headers=agent).json()["accepted"] is True
    for seq in (2**63 - 1, 3 + MAX_SEQ_STEP + 1):
        refused = client.post(url, json={"seq": seq}, headers=agent)
        assert refused.status_code == 422, refused.text
        [problem] = refused.json()["error"]["details"]["fields"]
        assert problem["field"] == "seq"
    assert (
        client.get(f"/v1/nodes/{node['node_id']}", headers=admin).json()["last_heartbeat_seq"] == 3
    )
    # The largest step is taken, and the node's next heartbeat goes on from it.
    assert client.post(url, json={"seq": 3 + MAX_SEQ_STEP}, headers=agent).json()["accepted"]
    assert client.post(url, json={"seq": 4 + MAX_SEQ_STEP}, headers=agent).json()["accepted"]


def test_heartbeats_are_idempotent_by_sequence(
    client: TestClient, admin: dict[str, str], conn: DbConnection
) -> None:
    node = register(client, admin, gpu_uuids=(GPU_A,))
    agent = bearer(node["token"])
    url = f"/v1/nodes/{node['node_id']}/heartbeat"
    beat = {"seq": 5, "telemetry": [{"uuid": GPU_A, "utilization_pct": 10}]}
    assert client.post(url, json=beat, headers=agent).json()["accepted"] is True
    repeat = client.post(
        url, json={**beat, "telemetry": [{"uuid": GPU_A, "utilization_pct": 99}]}, headers=agent
    ).json()
    assert repeat == {**repeat, "accepted": False, "duplicate": True, "last_seq": 5}
    older = client.post(url, json={"seq": 4}, headers=agent).json()
    assert older["duplicate"] is True
    gpu = client.get(f"/v1/nodes/{node['node_id']}", headers=admin).json()["gpus"][0]
    assert gpu["utilization_pct"] == 10  # the repeat changed nothing
    # Telemetry is current state: one row per GPU however many heartbeats arrive.
    for seq in range(6, 16):
        client.post(url, json={"seq": seq, "telemetry": [{"uuid": GPU_A}]}, headers=agent)
    row = conn.execute("SELECT count(*) AS n FROM gpu").fetchone()
    assert row is not None
    assert row["n"] == 1


def test_changed_inventory_is_applied_and_audited(
    client: TestClient, admin: dict[str, str], conn: DbConnection
) -> None:
    body = registration(gpu_uuids=(GPU_A,))
    node = client.post("/v1/agents/register", json=body, headers=admin).json()
    url = f"/v1/nodes/{node['node_id']}/heartbeat"
    inventory = body["inventory"]
    same = client.post(
        url, json={"seq": 1, "inventory": inventory}, headers=bearer(node["token"])
    ).json()
    assert same["inventory_changed"] is False
    inventory["host"]["kernel_version"] = "6.8.0-49-generic"
    inventory["gpus"].append({"uuid": GPU_B, "index": 1, "model": "NVIDIA H100 80GB HBM3"})
    changed = client.post(
        url, json={"seq": 2, "inventory": inventory}, headers=bearer(node["token"])
    ).json()
    assert changed["inventory_changed"] is True
    detail = client.get(f"/v1/nodes/{node['node_id']}", headers=admin).json()
    assert detail["kernel_version"] == "6.8.0-49-generic"
    assert {g["uuid"] for g in detail["gpus"]} == {GPU_A, GPU_B}
    events = audit.list_events(conn, action="node.inventory_changed").items
    assert len(events) == 1
    assert len(events[0].before["gpus"]) == 1
    assert len(events[0].after["gpus"]) == 2


def mig_device(index: int, profile: str, gpu_instance_id: int, gib: int) -> dict[str, Any]:
    return {
        "index": index,
        "uuid": f"MIG-{index:08d}-0000-0000-0000-000000000000",
        "profile": profile,
        "gpu_instance_id": gpu_instance_id,
        "compute_instance_id": 0,
        "memory_total_bytes": gib * 2**30,
    }


def stored(devices: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """MIG devices as the node view shows them: as reported, unbooked and not missing."""
    return [{**device, "booked": False, "missing_since": None} for device in devices]


def test_a_changed_mig_layout_is_an_inventory_change_not_drift(
    client: TestClient, admin: dict[str, str], conn: DbConnection
) -> None:
    body = registration(gpu_uuids=(GPU_A,))
    gpu = body["inventory"]["gpus"][0]
    gpu.update(
        pci_bus_id="00000000:07:00.0",
        power_limit_w=612.4,
        compute_capability="9.0",
        confidential_compute="off",
        mig_mode="enabled",
        mig_devices=[mig_device(0, "7g.80gb", 0, 80)],
    )
    node = client.post("/v1/agents/register", json=body, headers=admin).json()
    shown = client.get(f"/v1/nodes/{node['node_id']}", headers=admin).json()["gpus"][0]
    # Every reported fact is stored and shown as reported; a MIG device also says whether
    # it is booked and missing.
    assert shown == {**shown, **gpu, "mig_devices": stored(gpu["mig_devices"])}

    gpu["mig_devices"] = [mig_device(0, "3g.40gb", 1, 40), mig_device(1, "1g.10gb", 13, 10)]
    url = f"/v1/nodes/{node['node_id']}/heartbeat"
    ack = client.post(
        url, json={"seq": 1, "inventory": body["inventory"]}, headers=bearer(node["token"])
    ).json()
    assert ack["inventory_changed"] is True
    detail = client.get(f"/v1/nodes/{node['node_id']}", headers=admin).json()
    assert detail["gpus"][0]["mig_devices"] == stored(gpu["mig_devices"])
    assert (detail["status"], detail["drift"]["status"]) == ("active", "none")
    (event,) = audit.list_events(conn, action="node.inventory_changed").items
    assert [d["profile"] for d in event.before["gpus"][0]["mig_devices"]] == ["7g.80gb"]
    assert [d["profile"] for d in event.after["gpus"][0]["mig_devices"]] == ["3g.40gb", "1g.10gb"]
    assert audit.list_events(conn, action="node.drift_detected").items == []


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"power_limit_w": -1}, "inventory.gpus.0.power_limit_w"),
        (
            {"mig_devices": [{"index": 0, "profile": "1g\u0000"}]},
            "inventory.gpus.0.mig_devices.0.profile",
        ),
        ({"mig_devices": [{"index": 0, "slices": 1}]}, "inventory.gpus.0.mig_devices.0.slices"),
        ({"mig_devices": [{"index": i} for i in range(65)]}, "inventory.gpus.0.mig_devices"),
    ],
)
def test_bad_gpu_facts_are_refused_naming_the_field(
    client: TestClient, admin: dict[str, str], change: dict[str, Any], field: str
) -> None:
    body = registration()
    body["inventory"]["gpus"][0].update(change)
    response = client.post("/v1/agents/register", json=body, headers=admin)
    assert response.status_code == 422, response.text
    assert error_fields(response) == [field]


def test_duplicate_gpu_uuid_across_nodes_is_409(
    client: TestClient, admin: dict[str, str], conn: DbConnection
) -> None:
    register(client, admin, hostname="a", gpu_uuids=(GPU_A,))
    before = audit.list_events(conn).total
    response = client.post(
        "/v1/agents/register",
        json=registration(hostname="b", gpu_uuids=(GPU_A,)),
        headers=admin,
    )
    assert response.status_code == 409
    assert response.json()["error"]["details"]["field"] == "inventory.gpus.0.uuid"
    # Nothing half-written: no node b, no audit event, no token.
    assert client.get("/v1/nodes", headers=admin).json()["total"] == 1
    assert audit.list_events(conn).total == before


def test_same_gpu_twice_in_one_report_is_422(client: TestClient, admin: dict[str, str]) -> None:
    body = registration(gpu_uuids=(GPU_A, GPU_A))
    response = client.post("/v1/agents/register", json=body, headers=admin)
    assert response.status_code == 422
    assert error_fields(response) == ["inventory.gpus.1.uuid"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"zone": "nowhere"}, "zone"),
        ({"provenance": {"origin_country": "XX"}}, "origin_country"),
        ({"provenance": {"component_origins": {"gpu": "ZZ"}}}, "gpu"),
        ({"provenance": {"component_origins": {"fpga": "US"}}}, "fpga"),
        ({"status": "sleeping"}, "status"),
        ({"labels": {"bad key!": "x"}}, "labels"),
    ],
)
def test_invalid_registration_is_422_naming_the_field(
    client: TestClient, admin: dict[str, str], change: dict[str, Any], field: str
) -> None:
    if "status" in change or "labels" in change:
        node = register(client, admin)
        response = client.patch(f"/v1/nodes/{node['node_id']}", json=change, headers=admin)
    else:
        body = {**registration(), **change}
        response = client.post("/v1/agents/register", json=body, headers=admin)
    assert response.status_code == 422, response.text
    assert any(field in f for f in error_fields(response)), error_fields(response)


def test_reregistration_rotates_the_credential(
    client: TestClient,
    admin: dict[str, str],
    zones: None,
    make_token: Callable[[Role], str],
) -> None:
    body = registration(zone="jp-east", gpu_uuids=(GPU_A,))
    bootstrap = bearer(make_token(Role.BOOTSTRAP))
    first = client.post("/v1/agents/register", json=body, headers=bootstrap).json()
    client.patch(f"/v1/nodes/{first['node_id']}", json={"zone": "tw-north"}, headers=admin)
    # The node's agent re-registers with its own credential and gets a new one.
    again = client.post("/v1/agents/register", json=body, headers=bearer(first["token"]))
    assert again.status_code == 201, again.text
    second = again.json()
    assert second["node_id"] == first["node_id"]
    url = f"/v1/nodes/{first['node_id']}/heartbeat"
    assert client.post(url, json={"seq": 1}, headers=bearer(first["token"])).status_code == 401
    assert client.post(url, json={"seq": 1}, headers=bearer(second["token"])).status_code == 200
    # The admin's zone survives the agent's re-registration.
    assert client.get(url.removesuffix("/heartbeat"), headers=admin).json()["zone"] == "tw-north"


# -- listing and admin changes -----------------------------------------------------------


@pytest.fixture
def fleet(client: TestClient, admin: dict[str, str], zones: None) -> dict[str, str]:
    ids = {}
    specs = [
        ("jp-1", "jp-east", "TW", 1),
        ("jp-2", "tokyo-dc1", "US", 2),
        ("jp-3", "jp", "JP", 3),
        ("tw-1", "tw-north", "TW", 4),
        ("none-1", None, None, 5),
    ]
    for hostname, zone, origin, n in specs:
        node = register(
            client,
            admin,
            hostname=hostname,
            zone=zone,
            origin_country=origin,
            gpu_uuids=(f"GPU-{n:08d}-0000-0000-0000-000000000000",),
        )
        ids[hostname] = node["node_id"]
    return ids


def hostnames(client: TestClient, admin: dict[str, str], **params: Any) -> list[str]:
    response = client.get("/v1/nodes", params=params, headers=admin)
    assert response.status_code == 200, response.text
    return [n["hostname"] for n in response.json()["items"]]


def test_filters(client: TestClient, admin: dict[str, str], fleet: dict[str, str]) -> None:
    assert hostnames(client, admin, zone="jp") == ["jp-1", "jp-2", "jp-3"]
    assert hostnames(client, admin, zone="jp-east") == ["jp-1", "jp-2"]
    assert hostnames(client, admin, zone="tokyo-dc1") == ["jp-2"]
    assert hostnames(client, admin, origin_country="TW") == ["jp-1", "tw-1"]
    assert hostnames(client, admin, origin_country="tw") == ["jp-1", "tw-1"]
    assert hostnames(client, admin, provenance_status="unknown") == ["none-1"]
    assert hostnames(client, admin, gpu_model="h100", zone="tw-north") == ["tw-1"]
    assert hostnames(client, admin, gpu_model="A100") == []
    client.patch(f"/v1/nodes/{fleet['jp-3']}", json={"status": "maintenance"}, headers=admin)
    assert hostnames(client, admin, status="maintenance") == ["jp-3"]


def test_pagination(client: TestClient, admin: dict[str, str], fleet: dict[str, str]) -> None:
    first = client.get("/v1/nodes", params={"limit": 2}, headers=admin).json()
    second = client.get("/v1/nodes", params={"limit": 2, "offset": 2}, headers=admin).json()
    last = client.get("/v1/nodes", params={"limit": 2, "offset": 4}, headers=admin).json()
    assert first["total"] == second["total"] == last["total"] == 5
    names = [n["hostname"] for page in (first, second, last) for n in page["items"]]
    assert names == sorted(names)
    assert len(set(names)) == 5


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 501}, "limit"),
        ({"offset": -1}, "offset"),
        ({"status": "asleep"}, "status"),
        ({"provenance_status": "maybe"}, "provenance_status"),
    ],
)
def test_bad_list_parameters_are_422(
    client: TestClient, admin: dict[str, str], params: dict[str, Any], field: str
) -> None:
    response = client.get("/v1/nodes", params=params, headers=admin)
    assert response.status_code == 422
    assert any(f.endswith(field) for f in error_fields(response))


def test_tag_and_declare_provenance(
    client: TestClient, admin: dict[str, str], fleet: dict[str, str], conn: DbConnection
) -> None:
    node = fleet["jp-1"]
    client.patch(f"/v1/nodes/{node}", json={"labels": {"team": "ml", "rack": "a1"}}, headers=admin)
    tagged = client.patch(
        f"/v1/nodes/{node}", json={"labels": {"rack": None, "tier": "gold"}}, headers=admin
    ).json()
    assert tagged["labels"] == {"team": "ml", "tier": "gold"}
    declared = client.patch(
        "/v1/nodes/jp-1",
        json={
            "provenance": {
                "origin_country": "JP",
                "component_origins": {"gpu": "TW", "nic": "IL"},
                "asset_tag": "A-1001",
            }
        },
        headers=admin,
    ).json()
    assert declared["provenance"]["origin_country"] == "JP"
    assert declared["provenance"]["component_origins"] == {"gpu": "TW", "nic": "IL"}
    assert declared["provenance"]["asset_tag"] == "A-1001"
    assert declared["provenance"]["evidence"]["source"] == "admin"
    events = audit.list_events(conn, object_id=node, action="node.updated").items
    assert len(events) == 3
    assert events[-1].before["provenance"]["origin_country"] == "TW"
    assert events[-1].after["provenance"]["origin_country"] == "JP"


def test_unknown_node_is_404(client: TestClient, admin: dict[str, str]) -> None:
    assert client.get("/v1/nodes/no-such-host", headers=admin).status_code == 404
    missing = "00000000-0000-0000-0000-000000000000"
    assert client.patch(f"/v1/nodes/{missing}", json={}, headers=admin).status_code == 404
    heartbeat = client.post(f"/v1/nodes/{missing}/heartbeat", json={"seq": 1}, headers=admin)
    assert heartbeat.status_code == 404


def test_ambiguous_hostname_is_409(client: TestClient, admin: dict[str, str]) -> None:
    register(client, admin, hostname="twin", gpu_uuids=(GPU_A,))
    register(client, admin, hostname="twin", gpu_uuids=(GPU_B,))
    response = client.get("/v1/nodes/twin", headers=admin)
    assert response.status_code == 409
    assert len(response.json()["error"]["details"]["ids"]) == 2


def test_every_change_is_in_the_chain(
    client: TestClient, admin: dict[str, str], fleet: dict[str, str], conn: DbConnection
) -> None:
    actions = [e.action for e in audit.list_events(conn, limit=1000).items]
    assert actions.count("zone.created") == 4
    assert actions.count("node.registered") == 5
    assert audit.verify_chain(conn).ok


def test_metrics_show_the_fleet(
    client: TestClient, admin: dict[str, str], fleet: dict[str, str]
) -> None:
    text = client.get("/metrics").text
    assert 'sovereign_fleet_nodes{origin_country="TW",status="active",zone="jp-east"} 1.0' in text
    assert 'sovereign_fleet_gpus{model="NVIDIA H100 80GB HBM3",zone="tw-north"} 1.0' in text
    assert "sovereign_http_request_duration_seconds_bucket" in text


def test_request_id_is_echoed_and_recorded(
    client: TestClient, admin: dict[str, str], conn: DbConnection
) -> None:
    response = client.post(
        "/v1/zones",
        json={"slug": "fr", "name": "France", "country": "FR"},
        headers={**admin, "X-Request-ID": "change-4711"},
    )
    assert response.headers["X-Request-ID"] == "change-4711"
    assert audit.list_events(conn, object_id="fr").items[0].request_id == "change-4711"
    generated = client.get("/healthz", headers={"X-Request-ID": "bad id with spaces"})
    assert generated.headers["X-Request-ID"] != "bad id with spaces"


# -- edges found in review -----------------------------------------------------------------


def test_zone_fields_cannot_be_nulled(
    client: TestClient, admin: dict[str, str], zones: None
) -> None:
    for field in ("name", "country", "description"):
        response = client.patch("/v1/zones/jp", json={field: None}, headers=admin)
        assert response.status_code == 422, field
        assert error_fields(response) == [field]


def test_unknown_routes_and_methods_use_the_error_shape(
    client: TestClient, admin: dict[str, str]
) -> None:
    missing = client.get("/v1/nope", headers=admin)
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    wrong = client.put("/v1/zones", headers=admin)
    assert wrong.status_code == 405
    assert wrong.json()["error"]["code"] == "method_not_allowed"


def test_unknown_zone_error_carries_the_value(client: TestClient, admin: dict[str, str]) -> None:
    response = client.post("/v1/agents/register", json=registration(zone="atlantis"), headers=admin)
    assert response.status_code == 422
    field = response.json()["error"]["details"]["fields"][0]
    assert field == {**field, "field": "zone", "value": "atlantis"}
    assert "atlantis" in response.json()["error"]["message"]


def test_reregistration_restarts_the_sequence_and_revives_the_node(
    client: TestClient, admin: dict[str, str], owner_conn: DbConnection
) -> None:
    body = registration(gpu_uuids=(GPU_A,))
    first = client.post("/v1/agents/register", json=body, headers=admin).json()
    url = f"/v1/nodes/{first['node_id']}/heartbeat"
    client.post(url, json={"seq": 40}, headers=bearer(first["token"]))
    owner_conn.execute("UPDATE node SET status = 'offline'")
    again = client.post("/v1/agents/register", json=body, headers=bearer(first["token"]))
    second = again.json()
    assert client.get(url.removesuffix("/heartbeat"), headers=admin).json()["status"] == "active"
    ack = client.post(url, json={"seq": 1}, headers=bearer(second["token"])).json()
    assert ack["accepted"] is True


def test_gpu_model_filter_is_a_plain_substring(
    client: TestClient, admin: dict[str, str], fleet: dict[str, str]
) -> None:
    assert hostnames(client, admin, gpu_model="%") == []
    assert hostnames(client, admin, gpu_model="H_00") == []
    assert len(hostnames(client, admin, gpu_model="80GB")) == 5


def test_site_and_zone_must_not_contradict(
    client: TestClient, admin: dict[str, str], zones: None
) -> None:
    site = {"slug": "taipei-1", "name": "Taipei 1", "zone": "tw-north"}
    assert client.post("/v1/sites", json=site, headers=admin).status_code == 201
    response = client.post(
        "/v1/agents/register", json=registration(zone="jp-east", site="taipei-1"), headers=admin
    )
    assert response.status_code == 422
    assert error_fields(response) == ["site"]
    inside = {"slug": "tokyo-hall-a", "name": "Hall A", "zone": "tokyo-dc1"}
    assert client.post("/v1/sites", json=inside, headers=admin).status_code == 201
    node = register(client, admin, zone="jp-east", site="tokyo-hall-a")
    moved = client.patch(f"/v1/nodes/{node['node_id']}", json={"zone": "tw-north"}, headers=admin)
    assert moved.status_code == 422
    assert error_fields(moved) == ["site"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"slug": "nul", "name": "Na\u0000me", "country": "JP"}, "name"),
        ({"slug": "nul", "name": "N", "country": "JP", "description": "\u0000"}, "description"),
    ],
)
def test_nul_characters_are_refused_by_field(
    client: TestClient, admin: dict[str, str], body: dict[str, Any], field: str
) -> None:
    response = client.post("/v1/zones", json=body, headers=admin)
    assert response.status_code == 422
    assert error_fields(response) == [field]


def test_unstorable_path_and_query_values_are_422_not_500(
    client: TestClient, admin: dict[str, str]
) -> None:
    assert client.get("/v1/zones/a%00b", headers=admin).status_code == 422
    assert client.get("/v1/nodes", params={"zone": "a\u0000"}, headers=admin).status_code == 422
    assert client.get("/v1/nodes/host%00name", headers=admin).status_code == 422


def test_out_of_range_numbers_are_refused(client: TestClient, admin: dict[str, str]) -> None:
    body = registration()
    body["inventory"]["gpus"][0]["memory_total_bytes"] = 2**70
    body["inventory"]["host"]["cpu_count"] = 2**40
    response = client.post("/v1/agents/register", json=body, headers=admin)
    assert response.status_code == 422
    assert set(error_fields(response)) == {
        "inventory.gpus.0.memory_total_bytes",
        "inventory.host.cpu_count",
    }


def test_two_gpus_with_one_index_are_refused(client: TestClient, admin: dict[str, str]) -> None:
    body = registration(gpu_uuids=(GPU_A, GPU_B))
    body["inventory"]["gpus"][1]["index"] = 0
    response = client.post("/v1/agents/register", json=body, headers=admin)
    assert response.status_code == 422
    assert error_fields(response) == ["inventory.gpus.1.index"]


def test_slugs_are_lower_cased(client: TestClient, admin: dict[str, str]) -> None:
    response = client.post(
        "/v1/zones", json={"slug": " KR-Seoul ", "name": "Seoul", "country": "KR"}, headers=admin
    )
    assert response.status_code == 201
    assert response.json()["slug"] == "kr-seoul"
