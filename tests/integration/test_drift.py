"""Identity drift: a node whose agent reports other hardware than its baseline is quarantined
until an admin acknowledges the new identity."""

import copy
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg.types.json import Jsonb

from control_plane.audit import service as audit
from control_plane.audit.models import AuditEventPublic
from control_plane.core import migrations
from control_plane.core.db import DbConnection
from tests.support import Run, bearer, registration, scratch_database, url_for

pytestmark = pytest.mark.integration

# The recorded H100 (tests/fixtures/gpu/h100-80gb-hbm3) and a second board like it.
GPU_A, SERIAL_A = "GPU-29b79b44-4926-3788-174b-399b5b491b55", "1654525039369"
GPU_B, SERIAL_B = "GPU-7d3e1c52-90aa-4f6b-b1d2-5e8f0c4a9b17", "1654525039412"
GPU_C, SERIAL_C = "GPU-c04f9e21-6b7d-4a35-8e19-2f6a7b8c9d03", "1654525040077"
SYSTEM_SERIAL = "S452938X3A11720"


@dataclass
class Node:
    """A registered node, its agent's credential and the registration it sent."""

    id: str
    token: str
    body: dict[str, Any]
    seq: int = 0

    @property
    def url(self) -> str:
        return f"/v1/nodes/{self.id}"


def body_with(
    gpus: tuple[tuple[str, str | None], ...] = ((GPU_A, SERIAL_A), (GPU_B, SERIAL_B)),
    system_serial: str | None = SYSTEM_SERIAL,
    **kwargs: Any,
) -> dict[str, Any]:
    body = registration(gpu_uuids=tuple(u for u, _ in gpus), **kwargs)
    body["inventory"]["host"]["system_serial"] = system_serial
    for gpu, (_, serial) in zip(body["inventory"]["gpus"], gpus, strict=True):
        gpu["serial"] = serial
    return body


def register(client: TestClient, admin: dict[str, str], body: dict[str, Any]) -> Node:
    response = client.post("/v1/agents/register", json=body, headers=admin)
    assert response.status_code == 201, response.text
    return Node(response.json()["node_id"], response.json()["token"], body)


@pytest.fixture
def node(client: TestClient, admin: dict[str, str]) -> Node:
    return register(client, admin, body_with(hostname="gpu-a"))


def report(
    client: TestClient,
    node: Node,
    gpus: tuple[tuple[str, str | None], ...] = ((GPU_A, SERIAL_A), (GPU_B, SERIAL_B)),
    system_serial: str | None = SYSTEM_SERIAL,
) -> dict[str, Any]:
    """Heartbeat with an inventory of these GPUs (same machine id)."""
    inventory = copy.deepcopy(node.body["inventory"])
    inventory["host"]["system_serial"] = system_serial
    inventory["gpus"] = body_with(gpus)["inventory"]["gpus"]
    node.seq += 1
    response = client.post(
        f"{node.url}/heartbeat",
        json={"seq": node.seq, "inventory": inventory},
        headers=bearer(node.token),
    )
    assert response.status_code == 200, response.text
    ack: dict[str, Any] = response.json()
    return ack


def identity(system_serial: str | None, *gpus: tuple[str, str | None]) -> dict[str, Any]:
    return {
        "system_serial": system_serial,
        "gpus": [{"uuid": u, "serial": s} for u, s in sorted(gpus)],
    }


def events(conn: DbConnection, node: Node, action: str) -> list[AuditEventPublic]:
    return audit.list_events(conn, object_id=node.id, action=action, limit=1000).items


BASELINE = identity(SYSTEM_SERIAL, (GPU_A, SERIAL_A), (GPU_B, SERIAL_B))
SWAPPED = identity(SYSTEM_SERIAL, (GPU_A, SERIAL_A), (GPU_C, SERIAL_C))


def test_a_replaced_gpu_drifts_and_quarantines_the_node(
    client: TestClient, admin: dict[str, str], node: Node, conn: DbConnection
) -> None:
    ack = report(client, node, ((GPU_A, SERIAL_A), (GPU_C, SERIAL_C)))
    assert ack["status"] == "quarantined"
    detail = client.get(node.url, headers=admin).json()
    assert detail["status"] == "quarantined"
    drift = detail["drift"]
    assert drift["status"] == "drifted"
    assert drift["detected_at"] is not None
    assert drift["evidence"]["before"] == BASELINE
    assert drift["evidence"]["after"] == SWAPPED
    assert drift["evidence"]["source"] == "heartbeat"
    assert drift["evidence"]["differences"] == [
        f"GPU {GPU_B} (serial {SERIAL_B}) is no longer reported",
        f"new GPU {GPU_C} (serial {SERIAL_C})",
    ]
    # The GPU rows show what is there now; the baseline still says what was accepted.
    assert {g["uuid"] for g in detail["gpus"]} == {GPU_A, GPU_C}
    [event] = events(conn, node, "node.drift_detected")
    assert event.before == {"identity": BASELINE, "status": "active", "drift_status": "none"}
    assert event.after["identity"] == SWAPPED
    assert event.after["status"] == "quarantined"
    assert event.after["differences"] == drift["evidence"]["differences"]
    assert audit.verify_chain(conn).ok


def test_the_same_drift_reported_again_writes_no_new_event(
    client: TestClient, admin: dict[str, str], node: Node, conn: DbConnection
) -> None:
    for _ in range(4):
        assert report(client, node, ((GPU_A, SERIAL_A), (GPU_C, SERIAL_C)))["status"] == (
            "quarantined"
        )
    assert len(events(conn, node, "node.drift_detected")) == 1
    # A different identity again is new evidence, still compared with the baseline.
    report(client, node, ((GPU_C, SERIAL_C),))
    drifts = events(conn, node, "node.drift_detected")
    assert len(drifts) == 2
    assert drifts[1].before["identity"] == BASELINE
    assert drifts[1].before["drift_status"] == "drifted"
    assert drifts[1].after["identity"] == identity(SYSTEM_SERIAL, (GPU_C, SERIAL_C))
    # Hardware put back as it was is still for an admin to acknowledge.
    report(client, node)
    detail = client.get(node.url, headers=admin).json()
    assert detail["status"] == "quarantined"
    assert detail["drift"]["evidence"]["differences"] == [
        "the reported identity matches the baseline again; acknowledge to clear it"
    ]
    assert len(events(conn, node, "node.drift_detected")) == 3


def test_a_changed_gpu_serial_alone_is_drift(
    client: TestClient, admin: dict[str, str], node: Node, conn: DbConnection
) -> None:
    report(client, node, ((GPU_A, "1654525099999"), (GPU_B, SERIAL_B)))
    drift = client.get(node.url, headers=admin).json()["drift"]
    assert drift["status"] == "drifted"
    assert drift["evidence"]["differences"] == [
        f"GPU {GPU_A} serial changed from {SERIAL_A} to 1654525099999"
    ]


def test_a_changed_system_serial_is_drift(
    client: TestClient, admin: dict[str, str], node: Node
) -> None:
    ack = report(client, node, system_serial="S452938X3A99999")
    assert ack["status"] == "quarantined"
    drift = client.get(node.url, headers=admin).json()["drift"]
    assert drift["evidence"]["differences"] == [
        f"system serial changed from {SYSTEM_SERIAL} to S452938X3A99999"
    ]
    # A serial the agent can no longer read is a change too.
    report(client, node, system_serial=None)
    drift = client.get(node.url, headers=admin).json()["drift"]
    assert drift["evidence"]["differences"] == [
        f"system serial changed from {SYSTEM_SERIAL} to unread"
    ]


def test_an_unchanged_identity_is_not_drift(
    client: TestClient, admin: dict[str, str], node: Node, conn: DbConnection
) -> None:
    assert report(client, node)["status"] == "active"
    # Other facts may change freely: a new kernel, GPUs reported in another order.
    inventory = copy.deepcopy(node.body["inventory"])
    inventory["host"]["kernel_version"] = "6.8.0-49-generic"
    inventory["gpus"].reverse()
    for gpu, index in zip(inventory["gpus"], (1, 0), strict=True):
        gpu["index"] = index
    ack = client.post(
        f"{node.url}/heartbeat", json={"seq": 9, "inventory": inventory}, headers=bearer(node.token)
    ).json()
    assert ack["inventory_changed"] is True
    assert ack["status"] == "active"
    detail = client.get(node.url, headers=admin).json()
    assert detail["drift"] == {"status": "none", "detected_at": None, "evidence": {}}
    assert events(conn, node, "node.drift_detected") == []


def test_acknowledging_adopts_the_reported_identity(
    client: TestClient, admin: dict[str, str], node: Node, conn: DbConnection
) -> None:
    report(client, node, ((GPU_A, SERIAL_A), (GPU_C, SERIAL_C)))
    response = client.post(
        "/v1/nodes/gpu-a/drift/acknowledge",
        json={"note": "GPU 1 replaced under RMA 88123"},
        headers=admin,
    )
    assert response.status_code == 200, response.text
    detail = response.json()
    assert detail["status"] == "active"
    assert detail["drift"] == {"status": "none", "detected_at": None, "evidence": {}}
    [event] = events(conn, node, "node.drift_acknowledged")
    assert event.before["identity"] == BASELINE
    assert event.before["status"] == "quarantined"
    assert event.before["drift_evidence"]["after"] == SWAPPED
    assert event.after == {
        "identity": SWAPPED,
        "status": "active",
        "drift_status": "none",
        "note": "GPU 1 replaced under RMA 88123",
    }
    # The new identity is the baseline now: reporting it is not drift, the old one is.
    assert report(client, node, ((GPU_A, SERIAL_A), (GPU_C, SERIAL_C)))["status"] == "active"
    assert len(events(conn, node, "node.drift_detected")) == 1
    assert report(client, node)["status"] == "quarantined"
    assert len(events(conn, node, "node.drift_detected")) == 2
    assert audit.verify_chain(conn).ok


def test_acknowledging_needs_no_body(client: TestClient, admin: dict[str, str], node: Node) -> None:
    report(client, node, system_serial="S452938X3A99999")
    response = client.post(f"{node.url}/drift/acknowledge", headers=admin)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "active"


def test_acknowledging_a_node_without_drift_is_409(
    client: TestClient, admin: dict[str, str], node: Node, conn: DbConnection
) -> None:
    before = audit.list_events(conn).total
    response = client.post(f"{node.url}/drift/acknowledge", json={}, headers=admin)
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "conflict"
    assert "no identity drift" in response.json()["error"]["message"]
    assert audit.list_events(conn).total == before
    missing = "/v1/nodes/00000000-0000-0000-0000-000000000000/drift/acknowledge"
    assert client.post(missing, headers=admin).status_code == 404


def test_reregistering_with_other_gpus_is_drift(
    client: TestClient, admin: dict[str, str], node: Node, conn: DbConnection
) -> None:
    body = copy.deepcopy(node.body)
    body["inventory"]["gpus"] = body_with(((GPU_C, SERIAL_C),))["inventory"]["gpus"]
    # The node's own agent re-registers (no one else may) with other hardware.
    again = client.post("/v1/agents/register", json=body, headers=bearer(node.token))
    assert again.status_code == 201
    assert again.json()["node_id"] == node.id
    detail = client.get(node.url, headers=admin).json()
    assert detail["status"] == "quarantined"
    assert detail["drift"]["evidence"]["source"] == "registration"
    assert detail["drift"]["evidence"]["after"] == identity(SYSTEM_SERIAL, (GPU_C, SERIAL_C))
    assert [g["uuid"] for g in detail["gpus"]] == [GPU_C]
    assert len(events(conn, node, "node.drift_detected")) == 1
    # Registering the same hardware once more (with the credential it got) adds nothing.
    token = bearer(again.json()["token"])
    assert client.post("/v1/agents/register", json=body, headers=token).status_code == 201
    assert len(events(conn, node, "node.drift_detected")) == 1


def test_list_nodes_by_drift_status(client: TestClient, admin: dict[str, str], node: Node) -> None:
    register(client, admin, body_with(((GPU_C, SERIAL_C),), hostname="gpu-b"))
    report(client, node, ((GPU_A, SERIAL_A),))

    def hostnames(**params: str) -> list[str]:
        response = client.get("/v1/nodes", params=params, headers=admin)
        assert response.status_code == 200, response.text
        return [n["hostname"] for n in response.json()["items"]]

    assert hostnames(drift_status="drifted") == ["gpu-a"]
    assert hostnames(drift_status="none") == ["gpu-b"]
    assert hostnames(drift_status="drifted", status="quarantined") == ["gpu-a"]
    assert hostnames() == ["gpu-a", "gpu-b"]
    response = client.get("/v1/nodes", params={"drift_status": "maybe"}, headers=admin)
    assert response.status_code == 422
    assert response.json()["error"]["details"]["fields"][0]["field"] == "query.drift_status"


def test_a_drifted_node_stays_quarantined(
    client: TestClient, admin: dict[str, str], node: Node, conn: DbConnection
) -> None:
    report(client, node, ((GPU_A, SERIAL_A),))
    refused = client.patch(node.url, json={"status": "active"}, headers=admin)
    assert refused.status_code == 409
    assert refused.json()["error"]["details"]["field"] == "status"
    # Back from offline (here: set by hand), a drifted node is online but still quarantined.
    assert client.patch(node.url, json={"status": "offline"}, headers=admin).status_code == 200
    assert report(client, node, ((GPU_A, SERIAL_A),))["status"] == "quarantined"
    [online] = events(conn, node, "node.online")
    assert online.after == {"status": "quarantined"}
    assert client.patch(node.url, json={"status": "offline"}, headers=admin).status_code == 200
    again = client.post("/v1/agents/register", json=node.body, headers=admin)
    assert again.status_code == 201
    assert client.get(node.url, headers=admin).json()["status"] == "quarantined"


def test_ack_drift_from_the_cli(
    sovctl: Run,
    live_server: str,
    client: TestClient,
    admin: dict[str, str],
    node: Node,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SOVCTL_URL", live_server)
    monkeypatch.setenv("SOVCTL_TOKEN", admin["Authorization"].removeprefix("Bearer "))
    code, _, err = sovctl("nodes", "ack-drift", "gpu-a")
    assert code == 1
    assert "HTTP 409" in err
    report(client, node, ((GPU_A, SERIAL_A),))
    code, out, _ = sovctl("nodes", "list", "--drift", "drifted")
    assert "gpu-a" in out
    assert "drifted" in out
    code, out, err = sovctl("nodes", "ack-drift", "gpu-a", "--note", "GPU 1 out for RMA")
    assert code == 0, err
    assert "active" in out
    assert client.get(node.url, headers=admin).json()["drift"]["status"] == "none"


# -- provenance: verified means the hardware read matches a checked BOM -----------------------

RESTRICTED_ON_VERIFIED = {
    "name": "restricted-on-verified",
    "selector": {"classifications": ["restricted"]},
    "requirements": {"min_provenance_status": "verified"},
}


def bom_rows(*gpu_serials: str) -> list[dict[str, Any]]:
    """A BOM of the test server: its chassis (assembled in the US) and these GPUs."""
    return [
        {"system_serial": SYSTEM_SERIAL, "component": "system", "origin_country": "US"},
        *(
            {
                "system_serial": SYSTEM_SERIAL,
                "component": "gpu",
                "serial": s,
                "origin_country": "TW",
            }
            for s in gpu_serials
        ),
    ]


def import_bom(client: TestClient, admin: dict[str, str], *gpu_serials: str) -> str:
    response = client.post(
        "/v1/provenance/imports",
        json={"name": "po-2291.csv", "rows": bom_rows(*gpu_serials)},
        headers=admin,
    )
    assert response.status_code == 200, response.text
    status: str = response.json()["servers"][0]["status"]
    return status


@pytest.fixture
def restricted(client: TestClient, admin: dict[str, str]) -> Node:
    """A node in jp verified by a BOM, a restricted dataset there, and a policy that
    places restricted workloads on verified hardware only."""
    for path, created in (
        ("/v1/zones", {"slug": "jp", "name": "Japan", "country": "JP"}),
        ("/v1/tenants", {"slug": "research", "name": "Research"}),
        (
            "/v1/datasets",
            {
                "name": "patients",
                "tenant": "research",
                "classification": "restricted",
                "zones": ["jp"],
            },
        ),
        ("/v1/destinations", {"name": "results-jp", "zone": "jp"}),
    ):
        response = client.post(path, json=created, headers=admin)
        assert response.status_code == 201, response.text
    node = register(client, admin, body_with(hostname="gpu-a", zone="jp"))
    assert import_bom(client, admin, SERIAL_A, SERIAL_B) == "verified"
    applied = client.post("/v1/policies", json=RESTRICTED_ON_VERIFIED, headers=admin)
    assert applied.status_code == 201, applied.text
    activated = client.post("/v1/policy-sets/activate", json={}, headers=admin)
    assert activated.status_code == 200, activated.text
    return node


def submit_restricted(client: TestClient, admin: dict[str, str]) -> dict[str, Any]:
    body = {"tenant": "research", "datasets": ["patients"], "output": "results-jp", "gpu_count": 1}
    response = client.post("/v1/workloads", json=body, headers=admin)
    assert response.status_code == 201, response.text
    workload: dict[str, Any] = response.json()
    return workload


def test_acknowledging_a_gpu_swap_drops_verified_until_a_bom_verifies_the_new_parts(
    client: TestClient, admin: dict[str, str], restricted: Node, conn: DbConnection
) -> None:
    node = restricted
    running = submit_restricted(client, admin)
    assert running["status"] == "admitted", running["reasons"]
    verified = client.get(node.url, headers=admin).json()["provenance"]
    assert verified["status"] == "verified"

    # GPU B is swapped for C under the running workload: quarantined, drifted.
    assert report(client, node, ((GPU_A, SERIAL_A), (GPU_C, SERIAL_C)))["status"] == "quarantined"
    acked = client.post(f"{node.url}/drift/acknowledge", json={"note": "RMA 88123"}, headers=admin)
    assert acked.status_code == 200, acked.text
    detail = acked.json()
    assert detail["status"] == "active"
    provenance = detail["provenance"]
    # No BOM ever listed GPU C: the node is declared (its origin came from the BOM), and
    # the evidence keeps the superseded verification as history.
    assert provenance["status"] == "declared"
    assert provenance["origin_country"] == "US"
    evidence = provenance["evidence"]
    assert evidence["source"] == "identity-change"
    assert evidence["identity"] == SWAPPED
    assert evidence["verified_identity"] == BASELINE
    assert evidence["previous"] == {"status": "verified", "evidence": verified["evidence"]}
    assert client.get(node.url, headers=admin).json()["provenance"] == provenance

    [event] = events(conn, node, "node.provenance_downgraded")
    assert event.before["status"] == "verified"
    assert event.before["evidence"] == verified["evidence"]
    assert event.after["status"] == "declared"
    assert event.after["evidence"] == evidence
    # The log reads in order: the acknowledgement, then what it did to provenance.
    [ack_event] = events(conn, node, "node.drift_acknowledged")
    assert ack_event.seq < event.seq

    # The next restricted workload is not placed on the unverified GPU.
    denied = submit_restricted(client, admin)
    assert denied["status"] == "denied"
    assert "min_provenance_status" in {r["rule"] for r in denied["reasons"]}

    # A BOM that lists the new GPU verifies the node again, and it is used again.
    assert import_bom(client, admin, SERIAL_A, SERIAL_C) == "verified"
    reverified = client.get(node.url, headers=admin).json()["provenance"]
    assert reverified["status"] == "verified"
    assert submit_restricted(client, admin)["status"] == "admitted"
    assert audit.verify_chain(conn).ok


def test_acknowledging_the_verified_hardware_back_keeps_verified(
    client: TestClient, admin: dict[str, str], restricted: Node, conn: DbConnection
) -> None:
    node = restricted
    report(client, node, ((GPU_A, SERIAL_A),))
    # The board came back before anyone acknowledged: the baseline the BOM verified.
    report(client, node)
    acked = client.post(f"{node.url}/drift/acknowledge", headers=admin)
    assert acked.status_code == 200, acked.text
    assert acked.json()["provenance"]["status"] == "verified"
    assert events(conn, node, "node.provenance_downgraded") == []
    assert submit_restricted(client, admin)["status"] == "admitted"


def test_a_bom_of_the_new_parts_before_the_acknowledgement_keeps_verified(
    client: TestClient, admin: dict[str, str], restricted: Node, conn: DbConnection
) -> None:
    node = restricted
    report(client, node, ((GPU_A, SERIAL_A), (GPU_C, SERIAL_C)))
    # The replacement's paperwork is imported while the node is still quarantined.
    assert import_bom(client, admin, SERIAL_A, SERIAL_C) == "verified"
    acked = client.post(f"{node.url}/drift/acknowledge", headers=admin)
    assert acked.status_code == 200, acked.text
    assert acked.json()["provenance"]["status"] == "verified"
    assert events(conn, node, "node.provenance_downgraded") == []


def test_acknowledging_a_swap_on_a_declared_node_changes_no_provenance(
    client: TestClient, admin: dict[str, str], node: Node, conn: DbConnection
) -> None:
    before = client.get(node.url, headers=admin).json()["provenance"]
    report(client, node, ((GPU_A, SERIAL_A), (GPU_C, SERIAL_C)))
    acked = client.post(f"{node.url}/drift/acknowledge", headers=admin)
    assert acked.status_code == 200, acked.text
    assert acked.json()["provenance"] == before
    assert events(conn, node, "node.provenance_downgraded") == []


# -- the migration ---------------------------------------------------------------------------


@pytest.fixture
def foundation_database() -> Iterator[str]:
    """A database with only the first migration applied."""
    with scratch_database("sovereign_drift") as name:
        url = url_for(name)
        with migrations._backend(url) as backend, backend.lock():
            first = backend.to_apply(migrations._migrations()).filter(
                lambda m: m.id == "0001_foundation"
            )
            backend.apply_migrations(first)
        yield url


def test_nodes_from_before_the_migration_accept_their_current_identity(
    foundation_database: str,
) -> None:
    with psycopg.connect(foundation_database, autocommit=True) as conn:
        older = conn.execute(
            "INSERT INTO node (hostname, machine_id, system_serial, labels) "
            "VALUES ('old-1', 'mid-old-1', %s, %s) RETURNING id",
            (SYSTEM_SERIAL, Jsonb({})),
        ).fetchone()
        bare = conn.execute(
            "INSERT INTO node (hostname, machine_id) VALUES ('old-2', 'mid-old-2') RETURNING id"
        ).fetchone()
        assert older is not None
        assert bare is not None
        for index, (gpu_uuid, serial) in enumerate(((GPU_B, SERIAL_B), (GPU_A, None))):
            conn.execute(
                "INSERT INTO gpu (uuid, node_id, index, model, serial) "
                "VALUES (%s, %s, %s, 'NVIDIA H100 80GB HBM3', %s)",
                (gpu_uuid, older[0], index, serial),
            )
    migrations.upgrade(foundation_database)
    with psycopg.connect(foundation_database) as conn:
        rows = conn.execute(
            "SELECT hostname, identity_baseline, drift_status, drift_evidence FROM node "
            "ORDER BY hostname"
        ).fetchall()
    assert rows == [
        ("old-1", identity(SYSTEM_SERIAL, (GPU_A, None), (GPU_B, SERIAL_B)), "none", {}),
        ("old-2", identity(None), "none", {}),
    ]
