"""MIG slices as inventory and as what placement books (issue 11 item 8), on the real stack.

A node registers through the agent endpoints with an A100 80GB in MIG mode (the recorded
``nvidia-smi/v12-a100-sxm4-80gb-mig.xml`` board, carved into seven ``1g.10gb`` slices as
NVML names them) and, beside it, a GPU with MIG off. Requests go through the API; the
reservations are read back from the database.
"""

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from control_plane.audit import service as audit
from control_plane.compliance import service as compliance
from control_plane.compliance.tasks import COMPLIANCE_ACTOR
from control_plane.core.db import DbConnection
from control_plane.core.settings import Settings
from control_plane.scheduling import service
from control_plane.scheduling.tasks import LEASE_SWEEP_ACTOR
from tests.support import Run, bearer, registration

pytestmark = pytest.mark.integration

A100 = "NVIDIA A100-SXM4-80GB"
A100_MEMORY = 81920 * 2**20
MIG_GPU = "GPU-3b9e0d52-a7c4-1f86-d2e9-64f1b8c07a5d"
FULL_GPU = "GPU-7f0c1e2a-0000-4000-8000-000000000002"
SLICE_MEMORY = 9728 * 2**20


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """A pool wide enough for the concurrent requests to really run side by side."""
    return settings.model_copy(update={"db_pool_max_size": 16})


def slice_uuid(number: int) -> str:
    return f"MIG-5c9d0e8f-1a2b-5c3d-8e4f-{number:012d}"


def mig_devices(numbers: range | list[int]) -> list[dict[str, Any]]:
    """``1g.10gb`` MIG devices as NVML reports them (GPU instances 7 to 13 on an A100)."""
    return [
        {
            "index": position,
            "uuid": slice_uuid(number),
            "profile": "1g.10gb",
            "gpu_instance_id": 7 + number,
            "compute_instance_id": 0,
            "memory_total_bytes": SLICE_MEMORY,
        }
        for position, number in enumerate(numbers)
    ]


@dataclass
class MigNode:
    """The registered node: its id, its agent's credential and machine id, the admin."""

    admin: dict[str, str]
    node_id: str
    token: str
    machine_id: str
    seq: int = 0


def inventory(
    machine_id: str, slices: range | list[int] = range(7), *, with_mig_gpu: bool = True
) -> dict[str, Any]:
    """The node's inventory: the MIG A100 with ``slices``, and an A100 with MIG off."""
    body = registration(hostname="mig-a", machine_id=machine_id, gpu_uuids=(MIG_GPU, FULL_GPU))
    mig, full = body["inventory"]["gpus"]
    for gpu in (mig, full):
        gpu.update(model=A100, memory_total_bytes=A100_MEMORY, mig_mode="disabled")
    mig.update(mig_mode="enabled", mig_devices=mig_devices(slices))
    if not with_mig_gpu:
        body["inventory"]["gpus"] = [full]
    inventory: dict[str, Any] = body["inventory"]
    return inventory


@pytest.fixture
def mig_node(client: TestClient, admin: dict[str, str]) -> MigNode:
    for path, item in (
        ("/v1/zones", {"slug": "jp", "name": "Japan", "country": "JP"}),
        ("/v1/tenants", {"slug": "research", "name": "Research"}),
    ):
        response = client.post(path, json=item, headers=admin)
        assert response.status_code == 201, response.text
    body = registration(hostname="mig-a", zone="jp")
    body["inventory"] = inventory(body["inventory"]["host"]["machine_id"])
    response = client.post("/v1/agents/register", json=body, headers=admin)
    assert response.status_code == 201, response.text
    registered = response.json()
    return MigNode(
        admin, registered["node_id"], registered["token"], body["inventory"]["host"]["machine_id"]
    )


def report(client: TestClient, node: MigNode, **changes: Any) -> None:
    """The node's agent heartbeats its inventory (with ``changes`` to ``inventory``)."""
    node.seq += 1
    response = client.post(
        f"/v1/nodes/{node.node_id}/heartbeat",
        json={"seq": node.seq, "inventory": inventory(node.machine_id, **changes)},
        headers=bearer(node.token),
    )
    assert response.status_code == 200, response.text
    assert response.json()["inventory_changed"] is True


def submit(client: TestClient, node: MigNode, **overrides: Any) -> dict[str, Any]:
    body = {"tenant": "research", "gpu_count": 1, **overrides}
    response = client.post("/v1/workloads", json=body, headers=node.admin)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


def slice_request(client: TestClient, node: MigNode, count: int = 1) -> dict[str, Any]:
    return submit(client, node, mig_profile="1g.10gb", gpu_count=count, gpu_model="A100")


def slice_reservations(conn: DbConnection) -> dict[str, str]:
    """Booked MIG devices: UUID to the workload holding it."""
    rows = conn.execute("SELECT mig_uuid, workload_id FROM mig_reservation")
    return {row["mig_uuid"]: str(row["workload_id"]) for row in rows}


def mig_rows(conn: DbConnection) -> dict[str, Any]:
    """MIG device rows: UUID to ``missing_since``."""
    rows = conn.execute("SELECT uuid, missing_since FROM mig_device")
    return {row["uuid"]: row["missing_since"] for row in rows}


def slice_counts(client: TestClient, node: MigNode) -> list[dict[str, Any]]:
    detail = client.get(f"/v1/nodes/{node.node_id}", headers=node.admin).json()
    listed = client.get("/v1/nodes", headers=node.admin).json()["items"]
    assert [n["mig_slices"] for n in listed] == [detail["mig_slices"]]
    counts: list[dict[str, Any]] = detail["mig_slices"]
    return counts


def release(client: TestClient, node: MigNode, workload: dict[str, Any]) -> dict[str, Any]:
    response = client.post(f"/v1/workloads/{workload['id']}/release", headers=node.admin)
    assert response.status_code == 200, response.text
    released: dict[str, Any] = response.json()
    return released


def test_two_slice_requests_share_one_mig_gpu_with_distinct_slices(
    client: TestClient, conn: DbConnection, mig_node: MigNode
) -> None:
    first = slice_request(client, mig_node)
    second = slice_request(client, mig_node)
    assert (first["status"], second["status"]) == ("admitted", "admitted")
    assert first["mig_slices"] == [
        {"uuid": slice_uuid(0), "profile": "1g.10gb", "gpu_uuid": MIG_GPU}
    ]
    assert second["mig_slices"] == [
        {"uuid": slice_uuid(1), "profile": "1g.10gb", "gpu_uuid": MIG_GPU}
    ]
    # What a workload was given is its MIG devices; it reads back the same.
    assert first["gpu_uuids"] == [slice_uuid(0)]
    shown = client.get(f"/v1/workloads/{second['id']}", headers=mig_node.admin).json()
    assert shown["mig_slices"] == second["mig_slices"]
    assert slice_reservations(conn) == {slice_uuid(0): first["id"], slice_uuid(1): second["id"]}
    # Neither GPU is booked whole.
    assert conn.execute("SELECT count(*) AS n FROM gpu_reservation").fetchone() == {"n": 0}
    assert slice_counts(client, mig_node) == [{"profile": "1g.10gb", "total": 7, "free": 5}]
    detail = client.get(f"/v1/nodes/{mig_node.node_id}", headers=mig_node.admin).json()
    devices = {d["uuid"]: d["booked"] for d in detail["gpus"][0]["mig_devices"]}
    assert [uuid for uuid, booked in devices.items() if booked] == [slice_uuid(0), slice_uuid(1)]
    [event] = audit.list_events(conn, object_id=first["id"], action="workload.admitted").items
    assert event.after["mig_slices"] == first["mig_slices"]


def test_a_request_for_several_slices_books_distinct_ones_on_one_node(
    client: TestClient, conn: DbConnection, mig_node: MigNode
) -> None:
    four = slice_request(client, mig_node, 4)
    assert four["status"] == "admitted"
    assert four["gpu_uuids"] == [slice_uuid(n) for n in range(4)]
    assert {s["gpu_uuid"] for s in four["mig_slices"]} == {MIG_GPU}
    # Four are not left: the engine counts three, and says so in slices.
    denied = slice_request(client, mig_node, 4)
    assert denied["status"] == "denied"
    assert [r["rule"] for r in denied["reasons"]] == ["capacity"]
    assert "MIG slices of the profile" in denied["reasons"][0]["message"]
    assert len(slice_reservations(conn)) == 4


def test_the_last_slice_booked_the_next_is_denied_for_capacity_and_release_frees(
    client: TestClient, conn: DbConnection, mig_node: MigNode
) -> None:
    held = [slice_request(client, mig_node) for _ in range(7)]
    assert [w["status"] for w in held] == ["admitted"] * 7
    assert sorted(u for w in held for u in w["gpu_uuids"]) == [slice_uuid(n) for n in range(7)]
    assert slice_counts(client, mig_node) == [{"profile": "1g.10gb", "total": 7, "free": 0}]

    denied = slice_request(client, mig_node)
    assert denied["status"] == "denied"
    assert denied["mig_slices"] == []
    assert denied["gpu_uuids"] == []
    [reason] = denied["reasons"]
    assert reason["rule"] == "capacity"
    assert reason["message"] == (
        "no eligible node is active, undrifted and has enough free MIG slices of the profile"
        " asked for"
    )

    released = release(client, mig_node, held[2])
    assert released["status"] == "released"
    [event] = audit.list_events(conn, object_id=held[2]["id"], action="workload.released").items
    assert event.after["freed_gpu_uuids"] == held[2]["gpu_uuids"]
    assert slice_counts(client, mig_node) == [{"profile": "1g.10gb", "total": 7, "free": 1}]
    again = slice_request(client, mig_node)
    assert again["status"] == "admitted"
    assert again["gpu_uuids"] == held[2]["gpu_uuids"]
    assert audit.verify_chain(conn).ok


def test_a_whole_gpu_request_never_takes_the_mig_gpu(
    client: TestClient, conn: DbConnection, mig_node: MigNode
) -> None:
    whole = submit(client, mig_node, gpu_model="A100")
    assert whole["status"] == "admitted"
    assert whole["gpu_uuids"] == [FULL_GPU]
    assert whole["mig_slices"] == []
    # The MIG GPU has seven free slices and no booking, but it is never booked whole.
    second = submit(client, mig_node, gpu_model="A100")
    assert second["status"] == "denied"
    assert [r["rule"] for r in second["reasons"]] == ["capacity"]
    assert "free GPUs of the kind" in second["reasons"][0]["message"]
    # Two whole GPUs: the engine itself finds no node (the MIG GPU is not counted).
    pair = submit(client, mig_node, gpu_model="A100", gpu_count=2)
    assert pair["reasons"][0]["message"] == "1 active node lack 2 GPUs (model A100, MIG off)"
    # And its slices are still all free, for slice requests.
    assert slice_request(client, mig_node)["status"] == "admitted"
    reserved = conn.execute("SELECT gpu_uuid FROM gpu_reservation").fetchall()
    assert reserved == [{"gpu_uuid": FULL_GPU}]


def test_a_slice_of_a_gpu_booked_whole_is_never_booked(
    client: TestClient, conn: DbConnection, owner_conn: DbConnection, mig_node: MigNode
) -> None:
    # A GPU booked whole before MIG was enabled on it (the workload still runs there).
    whole = submit(client, mig_node, gpu_model="A100")
    assert whole["gpu_uuids"] == [FULL_GPU]
    owner_conn.execute("UPDATE gpu SET mig_mode = 'enabled' WHERE uuid = %s", (FULL_GPU,))
    owner_conn.execute(
        "INSERT INTO mig_device (gpu_uuid, index, uuid, profile) VALUES (%s, 0, %s, '1g.10gb')",
        (FULL_GPU, slice_uuid(99)),
    )
    tries = [slice_request(client, mig_node) for _ in range(8)]
    booked = [u for w in tries if w["status"] == "admitted" for u in w["gpu_uuids"]]
    assert sorted(booked) == [slice_uuid(n) for n in range(7)]
    assert slice_uuid(99) not in slice_reservations(conn)


def test_a_booked_slice_that_leaves_the_report_stays_booked(
    client: TestClient, conn: DbConnection, mig_node: MigNode
) -> None:
    held = slice_request(client, mig_node)
    assert held["gpu_uuids"] == [slice_uuid(0)]
    free_one = slice_uuid(6)
    # The MIG layout changes: slices 0 (booked) and 6 (free) are gone from the report.
    report(client, mig_node, slices=range(1, 6))
    rows = mig_rows(conn)
    assert rows[slice_uuid(0)] is not None  # kept, as missing
    assert free_one not in rows  # an unbooked device that went is deleted
    assert slice_reservations(conn) == {slice_uuid(0): held["id"]}
    detail = client.get(f"/v1/nodes/{mig_node.node_id}", headers=mig_node.admin).json()
    [missing] = [d for d in detail["gpus"][0]["mig_devices"] if d["missing_since"] is not None]
    assert (missing["uuid"], missing["booked"]) == (slice_uuid(0), True)
    # Missing slices are out of the counts and of placement.
    assert slice_counts(client, mig_node) == [{"profile": "1g.10gb", "total": 5, "free": 5}]
    taken = [slice_request(client, mig_node) for _ in range(6)]
    assert [w["status"] for w in taken] == ["admitted"] * 5 + ["denied"]
    assert slice_uuid(0) not in {u for w in taken for u in w["gpu_uuids"]}

    # Reported again: back, and still the first workload's.
    report(client, mig_node)
    assert mig_rows(conn)[slice_uuid(0)] is None
    assert slice_reservations(conn)[slice_uuid(0)] == held["id"]
    again = slice_request(client, mig_node)  # only slice 6 is free now
    assert again["gpu_uuids"] == [free_one]
    assert slice_request(client, mig_node)["status"] == "denied"
    assert audit.verify_chain(conn).ok


def test_releasing_deletes_the_slices_and_gpu_that_went_missing(
    client: TestClient, conn: DbConnection, mig_node: MigNode
) -> None:
    held = slice_request(client, mig_node, 2)
    # The whole MIG GPU goes from the report while two of its slices are booked.
    report(client, mig_node, with_mig_gpu=False)
    gpu = conn.execute("SELECT missing_since FROM gpu WHERE uuid = %s", (MIG_GPU,)).fetchone()
    assert gpu is not None
    assert gpu["missing_since"] is not None
    assert set(mig_rows(conn)) == {slice_uuid(0), slice_uuid(1)}  # the booked ones only
    assert slice_counts(client, mig_node) == []
    detail = client.get(f"/v1/nodes/{mig_node.node_id}", headers=mig_node.admin).json()
    assert detail["gpu_count"] == 1

    release(client, mig_node, held)
    [event] = audit.list_events(conn, object_id=held["id"], action="workload.released").items
    assert event.after["removed_gpu_uuids"] == sorted([MIG_GPU, slice_uuid(0), slice_uuid(1)])
    assert mig_rows(conn) == {}
    assert conn.execute("SELECT uuid FROM gpu WHERE uuid = %s", (MIG_GPU,)).fetchone() is None


def test_an_expired_lease_frees_its_slices(
    client: TestClient, conn: DbConnection, owner_conn: DbConnection, mig_node: MigNode
) -> None:
    stale = slice_request(client, mig_node, 7)
    owner_conn.execute(
        "UPDATE workload SET lease_expires_at = now() - interval '1 second' WHERE id = %s",
        (stale["id"],),
    )
    assert slice_request(client, mig_node)["status"] == "denied"
    assert service.expire_leases(conn, LEASE_SWEEP_ACTOR, batch_size=10) == 1
    assert slice_reservations(conn) == {}
    assert slice_request(client, mig_node, 7)["status"] == "admitted"


def test_the_quota_counts_a_slice_as_one(client: TestClient, mig_node: MigNode) -> None:
    response = client.put(
        "/v1/tenants/research/quotas/jp", json={"max_gpus": 2}, headers=mig_node.admin
    )
    assert response.status_code == 200, response.text
    assert slice_request(client, mig_node, 2)["status"] == "admitted"
    denied = slice_request(client, mig_node)
    assert [r["rule"] for r in denied["reasons"]] == ["quota"]


def test_a_mig_device_reported_twice_is_refused_naming_the_field(
    client: TestClient, mig_node: MigNode
) -> None:
    body = inventory(mig_node.machine_id)
    body["gpus"][1].update(mig_mode="enabled", mig_devices=mig_devices([3]))
    response = client.post(
        f"/v1/nodes/{mig_node.node_id}/heartbeat",
        json={"seq": 1, "inventory": body},
        headers=bearer(mig_node.token),
    )
    assert response.status_code == 422, response.text
    [problem] = response.json()["error"]["details"]["fields"]
    assert problem["field"] == "inventory.gpus.1.mig_devices.0.uuid"


def test_20_concurrent_requests_for_7_free_slices(
    live_server: str, conn: DbConnection, mig_node: MigNode
) -> None:
    def post(_: int) -> httpx.Response:
        return httpx.post(
            f"{live_server}/v1/workloads",
            json={"tenant": "research", "mig_profile": "1g.10gb"},
            headers=mig_node.admin,
            timeout=60,
        )

    with ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(post, range(20)))
    assert [r.status_code for r in responses] == [201] * 20, [r.text for r in responses]
    results = [r.json() for r in responses]
    admitted = [w for w in results if w["status"] == "admitted"]
    assert len(admitted) == 7
    assert all(
        {r["rule"] for r in w["reasons"]} == {"capacity"}
        for w in results
        if w["status"] == "denied"
    )
    booked = [u for w in admitted for u in w["gpu_uuids"]]
    assert sorted(booked) == [slice_uuid(n) for n in range(7)]  # each once
    assert slice_reservations(conn) == {u: w["id"] for w in admitted for u in w["gpu_uuids"]}
    assert audit.verify_chain(conn).ok


def test_sovctl_shows_slice_counts_and_the_slices_booked(
    client: TestClient, mig_node: MigNode, admin_sovctl: Run
) -> None:
    workload = slice_request(client, mig_node, 2)
    code, out, err = admin_sovctl("nodes", "list")
    assert code == 0, err
    assert "1g.10gb 5/7" in out
    code, out, err = admin_sovctl("nodes", "show", "mig-a")
    assert code == 0, err
    assert "1g.10gb 5/7" in out
    assert slice_uuid(6) in out  # the MIG device table
    code, out, err = admin_sovctl("workloads", "show", workload["id"])
    assert code == 0, err
    assert f"1g.10gb {slice_uuid(0)} on {MIG_GPU}" in out


def test_whatif_counts_usable_slices_by_profile(client: TestClient, mig_node: MigNode) -> None:
    slice_request(client, mig_node)  # booked or not, a usable slice counts
    response = client.post(
        "/v1/zones", json={"slug": "tw", "name": "Taiwan", "country": "TW"}, headers=mig_node.admin
    )
    assert response.status_code == 201, response.text
    candidate = {
        "name": "research-in-taiwan",
        "selector": {"tenants": ["research"]},
        "requirements": {"compute_zones": ["tw"]},
    }
    response = client.post("/v1/policies/whatif", json=candidate, headers=mig_node.admin)
    assert response.status_code == 200, response.text
    [research] = response.json()["tenants"]
    assert research["usable_mig_slices_now"] == {"1g.10gb": 7}
    assert research["usable_mig_slices_candidate"] == {"1g.10gb": 0}
    # GPUs are counted as before: all the GPUs of a node the GPU probe may use.
    assert (research["usable_gpus_now"], research["usable_gpus_candidate"]) == (2, 0)


def test_metrics_count_slices_and_free_ones(client: TestClient, mig_node: MigNode) -> None:
    slice_request(client, mig_node, 3)
    text = client.get("/metrics").text
    labels = '{model="NVIDIA A100-SXM4-80GB",profile="1g.10gb",zone="jp"}'
    assert f"sovereign_fleet_mig_slices{labels} 7.0" in text
    assert f"sovereign_fleet_mig_slices_free{labels} 4.0" in text


def test_a_revoked_workload_frees_its_slices(
    client: TestClient, conn: DbConnection, mig_node: MigNode
) -> None:
    held = slice_request(client, mig_node, 7)
    response = client.post(
        "/v1/zones", json={"slug": "tw", "name": "Taiwan", "country": "TW"}, headers=mig_node.admin
    )
    assert response.status_code == 201, response.text
    policy = {
        "name": "research-in-taiwan",
        "selector": {"tenants": ["research"]},
        "requirements": {"compute_zones": ["tw"]},
        "on_violation": "revoke",
    }
    applied = client.post("/v1/policies", json=[policy], headers=mig_node.admin)
    assert applied.status_code in (200, 201), applied.text
    activated = client.post("/v1/policy-sets/activate", json={}, headers=mig_node.admin)
    assert activated.status_code == 200, activated.text
    evaluation = compliance.run_pending(
        conn, COMPLIANCE_ACTOR, sample_size=10, request_retention_days=7
    )
    assert evaluation is not None
    assert evaluation.revoked_workloads == 1
    assert slice_reservations(conn) == {}
    [event] = audit.list_events(conn, action="workload.revoked").items
    assert event.after["freed_gpu_uuids"] == sorted(held["gpu_uuids"])
    assert slice_counts(client, mig_node) == [{"profile": "1g.10gb", "total": 7, "free": 7}]
