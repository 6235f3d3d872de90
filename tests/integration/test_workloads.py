"""Workload admission and GPU placement against the real database (and a real worker)."""

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import httpx
import psycopg
import pytest
from celery import Celery
from fastapi.testclient import TestClient

from control_plane.access.models import Role
from control_plane.app import create_app
from control_plane.audit import service as audit
from control_plane.compliance import service as compliance
from control_plane.compliance.tasks import COMPLIANCE_ACTOR
from control_plane.core.db import DbConnection
from control_plane.core.outbox import request_evaluation
from control_plane.core.settings import Settings
from control_plane.domain.compliance import EvaluationTrigger
from control_plane.facts.fleet import fleet_generation
from control_plane.scheduling import repository, service
from control_plane.scheduling.tasks import (
    EXPIRE_LEASES_TASK,
    LEASE_SWEEP_ACTOR,
    LEASE_SWEEP_SECONDS,
)
from tests.support import Run, bearer, registration

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """A pool wide enough for the concurrent requests to really run side by side."""
    return settings.model_copy(update={"db_pool_max_size": 16})


@dataclass
class Fleet:
    """Zones jp and tw, nodes with free GPUs in them, and a tenant with a dataset in jp."""

    admin: dict[str, str]
    node_ids: dict[str, str]
    gpus: dict[str, tuple[str, ...]]
    agents: dict[str, tuple[str, str]]  # hostname -> (agent token, machine id)


def _gpu_uuids(hostname: str, count: int) -> tuple[str, ...]:
    return tuple(f"GPU-{hostname}-{i:04d}" for i in range(count))


def _register(client: TestClient, fleet: Fleet, hostname: str, zone: str, count: int) -> None:
    uuids = _gpu_uuids(hostname, count)
    body = registration(hostname=hostname, zone=zone, gpu_uuids=uuids)
    response = client.post("/v1/agents/register", json=body, headers=fleet.admin)
    assert response.status_code == 201, response.text
    fleet.node_ids[hostname] = response.json()["node_id"]
    fleet.gpus[hostname] = uuids
    fleet.agents[hostname] = (response.json()["token"], body["inventory"]["host"]["machine_id"])


def _build(client: TestClient, admin: dict[str, str], nodes: list[tuple[str, str, int]]) -> Fleet:
    fleet = Fleet(admin=admin, node_ids={}, gpus={}, agents={})
    for item in (
        ("/v1/zones", {"slug": "jp", "name": "Japan", "country": "JP"}),
        ("/v1/zones", {"slug": "tw", "name": "Taiwan", "country": "TW"}),
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
        ("/v1/destinations", {"name": "results-jp", "zone": "jp"}),
    ):
        response = client.post(item[0], json=item[1], headers=admin)
        assert response.status_code == 201, response.text
    for hostname, zone, count in nodes:
        _register(client, fleet, hostname, zone, count)
    return fleet


@pytest.fixture
def fleet(client: TestClient, admin: dict[str, str]) -> Fleet:
    """jp-a (4 GPUs) and jp-b (2) in jp, tw-a (2) in tw."""
    return _build(client, admin, [("jp-a", "jp", 4), ("jp-b", "jp", 2), ("tw-a", "tw", 2)])


def request_body(**overrides: Any) -> dict[str, Any]:
    return {
        "tenant": "research",
        "datasets": ["tickets"],
        "output": "results-jp",
        "gpu_count": 1,
        **overrides,
    }


def submit(client: TestClient, fleet: Fleet, **overrides: Any) -> dict[str, Any]:
    response = client.post("/v1/workloads", json=request_body(**overrides), headers=fleet.admin)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


def reservations(conn: DbConnection) -> dict[str, UUID]:
    return {
        row["gpu_uuid"]: row["workload_id"]
        for row in conn.execute("SELECT gpu_uuid, workload_id FROM gpu_reservation")
    }


def rules(workload: dict[str, Any]) -> set[str]:
    return {reason["rule"] for reason in workload["reasons"]}


# -- admission and placement -----------------------------------------------------------


def test_an_admitted_workload_holds_gpus_on_one_node(
    client: TestClient, conn: DbConnection, fleet: Fleet
) -> None:
    workload = submit(client, fleet, gpu_count=2, lease_seconds=120, labels={"team": "nlp"})
    assert workload["status"] == "admitted"
    assert workload["outcome"] == "admitted"
    # Bin-pack: jp-b and tw-a have exactly 2 free; the tie goes to the hostname.
    assert workload["hostname"] == "jp-b"
    assert workload["node_id"] == fleet.node_ids["jp-b"]
    assert workload["zone"] == "jp"
    assert sorted(workload["gpu_uuids"]) == sorted(fleet.gpus["jp-b"])
    assert workload["request"]["labels"] == {"team": "nlp"}
    assert workload["lease_seconds"] == 120
    assert reservations(conn) == {uuid: UUID(workload["id"]) for uuid in fleet.gpus["jp-b"]}
    fetched = client.get(f"/v1/workloads/{workload['id']}", headers=fleet.admin).json()
    assert fetched == workload
    lease = conn.execute(
        "SELECT lease_expires_at - created_at AS lease FROM workload WHERE id = %s",
        (workload["id"],),
    ).fetchone()
    assert lease is not None
    assert lease["lease"].total_seconds() == pytest.approx(120, abs=2)

    [event] = audit.list_events(conn, action="workload.admitted").items
    assert event.object_type == "workload"
    assert event.object_id == workload["id"]
    assert event.after["gpu_uuids"] == workload["gpu_uuids"]
    assert event.after["node_id"] == fleet.node_ids["jp-b"]
    assert event.after["policy_set_version"] == 0
    assert event.after["policy_set_hash"] == workload["policy_set_hash"]
    assert event.after["point"] == "api"


def test_binpack_fills_nodes_and_spread_picks_the_emptiest(
    client: TestClient, fleet: Fleet
) -> None:
    assert submit(client, fleet)["hostname"] == "jp-b"
    # jp-b now has the fewest free GPUs that still fit.
    assert submit(client, fleet)["hostname"] == "jp-b"
    assert submit(client, fleet, strategy="spread")["hostname"] == "jp-a"
    assert submit(client, fleet, gpu_count=3)["hostname"] == "jp-a"
    # tw-a, the only node left with free GPUs, is whole until nothing else fits.
    assert submit(client, fleet)["hostname"] == "tw-a"


def test_gpu_kind_is_respected(client: TestClient, fleet: Fleet) -> None:
    assert submit(client, fleet, gpu_model="h100")["status"] == "admitted"
    denied = submit(client, fleet, gpu_model="A100")
    assert denied["status"] == "denied"
    assert rules(denied) == {"capacity"}
    assert submit(client, fleet, min_gpu_memory_bytes=200 * 1024**3)["status"] == "denied"
    # No GPU has MIG enabled.
    assert submit(client, fleet, mig_profile="1g.10gb")["status"] == "denied"


def test_a_policy_denial_is_stored_and_audited_with_the_policy_set(
    client: TestClient, conn: DbConnection, fleet: Fleet
) -> None:
    policy = {
        "name": "results-in-taiwan",
        "requirements": {"compute_zones": ["tw"], "data_residency": True},
    }
    assert client.post("/v1/policies", json=policy, headers=fleet.admin).status_code == 201
    active = client.post("/v1/policy-sets/activate", json={}, headers=fleet.admin).json()

    denied = submit(client, fleet)
    assert denied["status"] == "denied"
    assert denied["outcome"] == "denied"
    assert denied["node_id"] is None
    assert denied["gpu_uuids"] == []
    assert denied["lease_expires_at"] is None
    assert denied["policy_set_version"] == active["version"]
    assert denied["policy_set_hash"] == active["content_hash"]
    # The dataset and the output are both stored in jp.
    found = [r for r in denied["reasons"] if r["rule"] == "data_residency"]
    assert {r["policy"] for r in found} == {"results-in-taiwan"}
    assert any("tickets" in r["message"] for r in found)
    assert reservations(conn) == {}

    [event] = audit.list_events(conn, action="workload.denied").items
    assert event.object_id == denied["id"]
    assert event.after["policy_set_hash"] == active["content_hash"]
    assert event.after["reasons"] == denied["reasons"]
    # Denied workloads are listed like admitted ones.
    page = client.get("/v1/workloads?status=denied", headers=fleet.admin).json()
    assert [w["id"] for w in page["items"]] == [denied["id"]]
    assert page["total"] == 1


def test_never_on_offline_quarantined_or_drifted_nodes(
    client: TestClient, owner_conn: DbConnection, fleet: Fleet
) -> None:
    token, machine_id = fleet.agents["jp-a"]
    changed = registration(machine_id=machine_id, gpu_uuids=("GPU-swapped-0000",))["inventory"]
    ack = client.post(
        f"/v1/nodes/{fleet.node_ids['jp-a']}/heartbeat",
        json={"seq": 1, "inventory": changed},
        headers=bearer(token),
    ).json()
    assert ack["status"] == "quarantined"
    for hostname, node_status in (("jp-b", "quarantined"), ("tw-a", "offline")):
        response = client.patch(
            f"/v1/nodes/{fleet.node_ids[hostname]}",
            json={"status": node_status},
            headers=fleet.admin,
        )
        assert response.status_code == 200, response.text

    denied = submit(client, fleet)
    assert denied["status"] == "denied"
    assert "node_status" in rules(denied)

    # Even a drifted node that is somehow active again is never used.
    owner_conn.execute("UPDATE node SET status = 'active' WHERE id = %s", (fleet.node_ids["jp-a"],))
    denied = submit(client, fleet)
    assert denied["status"] == "denied"
    assert "capacity" in rules(denied)


def test_unknown_names_are_422_naming_the_field(
    client: TestClient, conn: DbConnection, fleet: Fleet
) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"datasets": ["tickets", "nope"]}, "datasets.1"),
        ({"tenant": "nobody"}, "tenant"),
        ({"models": ["nope"]}, "models.0"),
        ({"output": "nowhere"}, "output"),
    ]
    for overrides, field in cases:
        response = client.post("/v1/workloads", json=request_body(**overrides), headers=fleet.admin)
        assert response.status_code == 422, response.text
        [problem] = response.json()["error"]["details"]["fields"]
        assert problem["field"] == field
    for body, field in (
        (request_body(lease_seconds=10), "lease_seconds"),
        (request_body(gpu_count=0), "gpu_count"),
        (request_body(strategy="random"), "strategy"),
        (request_body(datasets=["tickets", "tickets"]), "datasets"),
    ):
        response = client.post("/v1/workloads", json=body, headers=fleet.admin)
        assert response.status_code == 422
        assert response.json()["error"]["details"]["fields"][0]["field"] == field
    assert conn.execute("SELECT count(*) AS n FROM workload").fetchone() == {"n": 0}


# -- quotas ----------------------------------------------------------------------------


def test_the_quota_in_a_zone_refuses_with_a_reason(client: TestClient, fleet: Fleet) -> None:
    for zone, limit in (("jp", 3), ("tw", 0)):
        response = client.put(
            f"/v1/tenants/research/quotas/{zone}", json={"max_gpus": limit}, headers=fleet.admin
        )
        assert response.status_code == 200
    assert submit(client, fleet, gpu_count=2)["zone"] == "jp"
    denied = submit(client, fleet, gpu_count=2)
    assert denied["status"] == "denied"
    assert rules(denied) == {"quota"}
    messages = sorted(r["message"] for r in denied["reasons"])
    assert messages == [
        "tenant research may hold 0 GPUs at once in zone tw; it holds 0 and asks for 2",
        "tenant research may hold 3 GPUs at once in zone jp; it holds 2 and asks for 2",
    ]
    assert submit(client, fleet, gpu_count=1)["status"] == "admitted"
    # Another tenant's quota is its own.
    platform = submit(client, fleet, tenant="platform", datasets=[], gpu_count=2)
    assert platform["status"] == "admitted"
    # Its workloads are on record, so the tenant stays.
    deleted = client.delete("/v1/tenants/platform", headers=fleet.admin)
    assert deleted.status_code == 409
    assert "workloads on record" in deleted.json()["error"]["message"]


def test_gpu_hours_used_this_period_are_enforced(
    client: TestClient, owner_conn: DbConnection, fleet: Fleet
) -> None:
    """Admission charges the lease up front, up to the limit exactly; a release gives back."""
    response = client.put(
        "/v1/tenants/research/quotas/jp",
        json={"max_gpus": 8, "gpu_hours_per_period": 5, "period": "month"},
        headers=fleet.admin,
    )
    assert response.status_code == 200
    client.put("/v1/tenants/research/quotas/tw", json={"max_gpus": 0}, headers=fleet.admin)
    # 4 GPUs for an hour, then 1 for an hour: 5 GPU-hours, the limit exactly.
    first = submit(client, fleet, gpu_count=4, lease_seconds=3600)
    assert first["status"] == "admitted"
    second = submit(client, fleet, gpu_count=1, lease_seconds=3600)
    assert second["status"] == "admitted", second["reasons"]
    # Even 30 s more of one GPU is over.
    denied = submit(client, fleet, gpu_count=1, lease_seconds=30)
    assert denied["status"] == "denied"
    (reason,) = [r for r in denied["reasons"] if "GPU-hours" in r["message"]]
    assert "quota: tenant research may use 5 GPU-hours per month in zone jp" in reason["message"]
    assert "5.00 are used or held by running leases" in reason["message"]
    # The first ran a minute and is released: what it did not use is free again.
    owner_conn.execute(
        "UPDATE workload SET created_at = now() - interval '1 minute' WHERE id = %(id)s;",
        {"id": first["id"]},
    )
    owner_conn.execute(
        "UPDATE usage_watermark SET metered_until = now() - interval '1 minute'"
        " WHERE workload_id = %(id)s",
        {"id": first["id"]},
    )
    released = client.post(f"/v1/workloads/{first['id']}/release", headers=fleet.admin)
    assert released.status_code == 200
    again = submit(client, fleet, gpu_count=2, lease_seconds=3600)
    assert again["status"] == "admitted", again["reasons"]


# -- release, renewal, expiry ----------------------------------------------------------


def test_release_frees_the_gpus(client: TestClient, conn: DbConnection, fleet: Fleet) -> None:
    workload = submit(client, fleet, gpu_count=2)
    response = client.post(f"/v1/workloads/{workload['id']}/release", headers=fleet.admin)
    assert response.status_code == 200, response.text
    released = response.json()
    assert released["status"] == "released"
    assert released["ended_at"] is not None
    assert released["gpu_uuids"] == workload["gpu_uuids"]
    assert reservations(conn) == {}
    [event] = audit.list_events(conn, action="workload.released").items
    assert event.before["gpu_uuids"] == workload["gpu_uuids"]
    assert event.after["freed_gpu_uuids"] == sorted(workload["gpu_uuids"])
    # The same GPUs can be booked again; a second release is a conflict.
    assert sorted(submit(client, fleet, gpu_count=2)["gpu_uuids"]) == sorted(workload["gpu_uuids"])
    again = client.post(f"/v1/workloads/{workload['id']}/release", headers=fleet.admin)
    assert again.status_code == 409
    assert again.json()["error"]["details"] == {"status": "released"}
    missing = client.post(
        "/v1/workloads/00000000-0000-0000-0000-000000000000/release", headers=fleet.admin
    )
    assert missing.status_code == 404


def test_renew_extends_the_lease(
    client: TestClient, conn: DbConnection, owner_conn: DbConnection, fleet: Fleet
) -> None:
    workload = submit(client, fleet, lease_seconds=30)
    path = f"/v1/workloads/{workload['id']}/renew"
    renewed = client.post(path, json={"lease_seconds": 600}, headers=fleet.admin).json()
    assert renewed["lease_seconds"] == 600
    assert renewed["lease_expires_at"] > workload["lease_expires_at"]
    # Without a body, the workload's own lease length is used again.
    assert client.post(path, headers=fleet.admin).json()["lease_seconds"] == 600
    owner_conn.execute(
        "UPDATE workload SET lease_expires_at = now() - interval '1 second' WHERE id = %s",
        (workload["id"],),
    )
    late = client.post(path, headers=fleet.admin)
    assert late.status_code == 409
    assert late.json()["error"]["details"]["reason"] == "lease_expired"


def test_a_denied_workload_can_be_neither_renewed_nor_released(
    client: TestClient, fleet: Fleet
) -> None:
    # A denial has no lease at all, which is not an expired one (found by schemathesis: a 500).
    denied = submit(client, fleet, gpu_model="A100")
    assert denied["status"] == "denied"
    for verb in ("renew", "release"):
        response = client.post(f"/v1/workloads/{denied['id']}/{verb}", headers=fleet.admin)
        assert response.status_code == 409, response.text
        assert response.json()["error"]["details"] == {"status": "denied"}


def age_lease(owner_conn: DbConnection, workload_id: str) -> None:
    owner_conn.execute(
        "UPDATE workload SET lease_expires_at = now() - interval '1 second' WHERE id = %s",
        (workload_id,),
    )


def test_leases_not_renewed_expire(
    client: TestClient, conn: DbConnection, owner_conn: DbConnection, fleet: Fleet
) -> None:
    stale = submit(client, fleet)
    fresh = submit(client, fleet)
    age_lease(owner_conn, stale["id"])
    assert service.expire_leases(conn, LEASE_SWEEP_ACTOR, batch_size=100) == 1
    assert set(reservations(conn)) == set(fresh["gpu_uuids"])
    expired = client.get(f"/v1/workloads/{stale['id']}", headers=fleet.admin).json()
    assert expired["status"] == "expired"
    assert expired["ended_at"] is not None
    [event] = audit.list_events(conn, action="workload.expired").items
    assert event.object_id == stale["id"]
    assert event.actor_id == "system:lease-sweep"
    assert event.after["reason"] == "lease not renewed"
    # Idempotent; and an expired workload can be neither renewed nor released.
    assert service.expire_leases(conn, LEASE_SWEEP_ACTOR, batch_size=100) == 0
    for verb in ("renew", "release"):
        response = client.post(f"/v1/workloads/{stale['id']}/{verb}", headers=fleet.admin)
        assert response.status_code == 409


def test_the_lease_sweep_runs_on_a_real_worker(
    celery_app: Celery,
    worker: None,
    client: TestClient,
    conn: DbConnection,
    owner_conn: DbConnection,
    fleet: Fleet,
) -> None:
    workload = submit(client, fleet, gpu_count=2)
    age_lease(owner_conn, workload["id"])
    assert celery_app.send_task(EXPIRE_LEASES_TASK).get(timeout=30) == 1
    assert reservations(conn) == {}
    assert celery_app.send_task(EXPIRE_LEASES_TASK).get(timeout=30) == 0
    assert audit.verify_chain(conn).ok


def test_beat_schedules_the_lease_sweep(celery_app: Celery) -> None:
    entry = celery_app.conf.beat_schedule["expire-leases"]
    assert entry["task"] == EXPIRE_LEASES_TASK
    assert entry["schedule"] == LEASE_SWEEP_SECONDS
    # The offline sweep is still there beside it.
    assert "mark-offline-nodes" in celery_app.conf.beat_schedule


# -- concurrency -----------------------------------------------------------------------


@pytest.fixture
def last_eight(client: TestClient, admin: dict[str, str]) -> Fleet:
    """Twelve GPUs in jp; another tenant already holds four, so the last eight are free."""
    nodes = [("c-0", "jp", 4), ("c-1", "jp", 4), ("c-2", "jp", 2), ("c-3", "jp", 2)]
    fleet = _build(client, admin, nodes)
    held = submit(client, fleet, tenant="platform", datasets=[], gpu_count=4)
    assert held["hostname"] == "c-0"
    return fleet


def race(live_server: str, fleet: Fleet, requests: int = 64) -> list[dict[str, Any]]:
    """``requests`` one-GPU submissions at once, 16 in flight, through the real server."""

    def post(_: int) -> httpx.Response:
        return httpx.post(
            f"{live_server}/v1/workloads", json=request_body(), headers=fleet.admin, timeout=60
        )

    with ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(post, range(requests)))
    assert [r.status_code for r in responses] == [201] * requests, [
        r.text for r in responses if r.status_code != 201
    ]
    return [r.json() for r in responses]


def test_64_concurrent_requests_for_the_last_8_gpus(
    live_server: str, conn: DbConnection, last_eight: Fleet
) -> None:
    results = race(live_server, last_eight)
    admitted = [w for w in results if w["status"] == "admitted"]
    denied = [w for w in results if w["status"] == "denied"]
    assert len(admitted) == 8
    assert len(denied) == 56
    assert all(rules(w) == {"capacity"} for w in denied)
    booked = [uuid for w in admitted for uuid in w["gpu_uuids"]]
    free = {u for host in ("c-1", "c-2", "c-3") for u in last_eight.gpus[host]}
    assert len(booked) == len(set(booked)) == 8
    assert set(booked) == free
    held = reservations(conn)
    assert len(held) == 12
    assert {held[u] for u in booked} == {UUID(w["id"]) for w in admitted}
    counts = {
        row["action"]: row["n"]
        for row in conn.execute(
            "SELECT action, count(*) AS n FROM audit_event WHERE action LIKE 'workload.%%'"
            " GROUP BY action"
        )
    }
    assert counts == {"workload.admitted": 9, "workload.denied": 56}
    assert audit.verify_chain(conn).ok


def test_concurrent_requests_never_exceed_the_quota(
    client: TestClient, live_server: str, conn: DbConnection, last_eight: Fleet
) -> None:
    response = client.put(
        "/v1/tenants/research/quotas/jp", json={"max_gpus": 3}, headers=last_eight.admin
    )
    assert response.status_code == 200
    results = race(live_server, last_eight)
    admitted = [w for w in results if w["status"] == "admitted"]
    assert len(admitted) == 3
    assert all(rules(w) == {"quota"} for w in results if w["status"] == "denied")
    research = conn.execute(
        "SELECT count(*) AS n FROM gpu_reservation WHERE tenant_slug = 'research'"
    ).fetchone()
    assert research == {"n": 3}
    assert audit.verify_chain(conn).ok


# -- sovctl ----------------------------------------------------------------------------


def test_sovctl_workloads_create_list_show_renew_release(
    sovctl_as: Callable[[Role], Run], fleet: Fleet
) -> None:
    sovctl = sovctl_as(Role.OPERATOR)
    code, out, err = sovctl(
        "workloads", "create", "--tenant", "research", "--dataset", "tickets",
        "--destination", "results-jp", "--gpus", "2", "--gpu-model", "H100",
        "--min-memory-gib", "40", "--strategy", "spread", "--lease-seconds", "600",
        "-o", "json",
    )  # fmt: skip
    assert code == 0, err
    admitted = json.loads(out)
    assert admitted["hostname"] == "jp-a"
    assert admitted["request"]["min_gpu_memory_bytes"] == 40 * 1024**3

    code, out, _ = sovctl("workloads", "create", "--tenant", "research", "--gpus", "8")
    assert code == 1
    assert "denied" in out
    assert "capacity" in out

    code, out, err = sovctl("workloads", "list", "--status", "admitted")
    assert code == 0, err
    assert admitted["id"] in out
    assert "(1 of 1)" in out
    code, out, err = sovctl("workloads", "show", admitted["id"])
    assert code == 0, err
    assert "jp-a" in out
    code, out, err = sovctl(
        "workloads", "renew", admitted["id"], "--lease-seconds", "900", "-o", "json"
    )
    assert code == 0, err
    assert json.loads(out)["lease_expires_at"] > admitted["lease_expires_at"]

    code, out, err = sovctl("workloads", "release", admitted["id"])
    assert code == 0, err
    assert "released" in out
    code, _, err = sovctl("workloads", "release", admitted["id"])
    assert code == 1
    assert "HTTP 409" in err


# -- the fleet snapshot and the occupancy belief ------------------------------------------


def generation(conn: DbConnection) -> int:
    return fleet_generation(conn)


def test_the_fleet_generation_moves_only_with_what_placement_reads(
    owner_conn: DbConnection, conn: DbConnection, fleet: Fleet
) -> None:
    node_id = fleet.node_ids["jp-a"]
    start = generation(conn)
    # Heartbeat bookkeeping and telemetry leave it alone.
    owner_conn.execute(
        "UPDATE node SET last_heartbeat_at = now(), last_heartbeat_seq = 9 WHERE id = %s",
        (node_id,),
    )
    owner_conn.execute("UPDATE gpu SET utilization_pct = 50, temperature_c = 60")
    owner_conn.execute("UPDATE node SET labels = labels WHERE id = %s", (node_id,))
    assert generation(conn) == start
    # A zone change, a new GPU and a zone-tree change each move it, once per transaction.
    owner_conn.execute("UPDATE node SET zone_slug = 'tw' WHERE id = %s", (node_id,))
    assert generation(conn) == start + 1
    with owner_conn.transaction():
        owner_conn.execute("UPDATE node SET status = 'maintenance'")
        owner_conn.execute(
            "INSERT INTO gpu (uuid, node_id, index, model, memory_total_bytes)"
            " VALUES ('GPU-new', %s, 9, 'NVIDIA H100 80GB HBM3', 1)",
            (node_id,),
        )
        assert generation(conn) == start + 1  # not before commit
    assert generation(conn) == start + 2
    owner_conn.execute("UPDATE residency_zone SET country = 'TW' WHERE slug = 'jp'")
    assert generation(conn) == start + 3


def test_admission_sees_fleet_changes_made_by_other_processes(
    client: TestClient, owner_conn: DbConnection, fleet: Fleet
) -> None:
    first = submit(client, fleet)  # warms the app's snapshot
    assert first["hostname"] == "jp-b"  # binpack: the smaller node first
    # Another process (an admin's SQL, a worker) takes jp-b and jp-a out of service.
    owner_conn.execute("UPDATE node SET status = 'offline' WHERE hostname IN ('jp-b', 'jp-a')")
    placed = submit(client, fleet)
    assert placed["status"] == "admitted"
    assert placed["hostname"] == "tw-a"


def test_gpus_booked_elsewhere_are_skipped_and_never_booked_twice(
    client: TestClient, conn: DbConnection, owner_conn: DbConnection, fleet: Fleet
) -> None:
    submit(client, fleet)  # the app now believes jp-b has one GPU free
    # Another API process books the rest of jp-b behind this process's back.
    owner_conn.execute(
        """INSERT INTO workload (id, tenant_slug, request, strategy, status, outcome,
                                 policy_set_version, policy_set_hash, node_id, zone_slug,
                                 gpu_uuids, lease_seconds, lease_expires_at, created_by)
           VALUES ('00000000-0000-0000-0000-0000000000aa', 'research', '{}', 'binpack',
                   'admitted', 'admitted', 0, repeat('0', 64), %(node)s, 'jp',
                   ARRAY['GPU-jp-b-0001'], 60, now() + interval '1 minute', 'elsewhere')""",
        {"node": fleet.node_ids["jp-b"]},
    )
    owner_conn.execute(
        """INSERT INTO gpu_reservation (gpu_uuid, workload_id, node_id, zone_slug, tenant_slug)
           VALUES ('GPU-jp-b-0001', '00000000-0000-0000-0000-0000000000aa', %s, 'jp',
                   'research')""",
        (fleet.node_ids["jp-b"],),
    )
    placed = submit(client, fleet)
    assert placed["status"] == "admitted"
    assert placed["hostname"] == "tw-a"  # jp-b is full after all; tw-a is the next fullest
    assert len(reservations(conn)) == 3


def test_gpus_freed_elsewhere_are_found_before_a_capacity_denial(
    client: TestClient, conn: DbConnection, fleet: Fleet
) -> None:
    held = [submit(client, fleet) for _ in range(8)]
    assert all(w["status"] == "admitted" for w in held)
    assert "capacity" in rules(submit(client, fleet))
    # The lease sweep (a worker, another process) frees one behind the app's back.
    with conn.transaction():
        repository.end_workload(conn, UUID(held[3]["id"]), "released")
        repository.delete_reservations(conn, [UUID(held[3]["id"])])
    placed = submit(client, fleet)
    assert placed["status"] == "admitted"
    assert placed["gpu_uuids"] == held[3]["gpu_uuids"]


# -- booked GPUs that leave their node's inventory -------------------------------------


@pytest.fixture
def full_node(client: TestClient, admin: dict[str, str]) -> Fleet:
    """jp-a alone, with 8 GPUs."""
    return _build(client, admin, [("jp-a", "jp", 8)])


def report(
    client: TestClient, fleet: Fleet, hostname: str, seq: int, *, without: tuple[str, ...] = ()
) -> dict[str, Any]:
    """The node's agent heartbeats its registered inventory, less the GPUs ``without``.

    The GPUs left keep their index and serial, as when a board is pulled or stops
    answering NVML.
    """
    token, machine_id = fleet.agents[hostname]
    inventory = registration(
        hostname=hostname, machine_id=machine_id, gpu_uuids=fleet.gpus[hostname]
    )["inventory"]
    inventory["gpus"] = [gpu for gpu in inventory["gpus"] if gpu["uuid"] not in without]
    response = client.post(
        f"/v1/nodes/{fleet.node_ids[hostname]}/heartbeat",
        json={"seq": seq, "inventory": inventory},
        headers=bearer(token),
    )
    assert response.status_code == 200, response.text
    ack: dict[str, Any] = response.json()
    return ack


def acknowledge(client: TestClient, fleet: Fleet, hostname: str) -> None:
    path = f"/v1/nodes/{fleet.node_ids[hostname]}/drift/acknowledge"
    response = client.post(path, json={}, headers=fleet.admin)
    assert response.status_code == 200, response.text


def gpu_rows(conn: DbConnection, node_id: str) -> dict[str, Any]:
    """The node's GPU rows: UUID to ``missing_since``."""
    rows = conn.execute("SELECT uuid, missing_since FROM gpu WHERE node_id = %s", (node_id,))
    return {row["uuid"]: row["missing_since"] for row in rows}


def held_twice(client: TestClient, fleet: Fleet) -> list[str]:
    """GPU UUIDs that appear in more than one admitted workload."""
    page = client.get("/v1/workloads?status=admitted&limit=500", headers=fleet.admin).json()
    seen: list[str] = [uuid for workload in page["items"] for uuid in workload["gpu_uuids"]]
    return sorted({uuid for uuid in seen if seen.count(uuid) > 1})


def test_a_booked_gpu_that_leaves_and_comes_back_is_not_booked_twice(
    client: TestClient, conn: DbConnection, full_node: Fleet
) -> None:
    # Issue 10 item 8, as reproduced against the real server.
    fleet = full_node
    node_id = fleet.node_ids["jp-a"]
    first = submit(client, fleet, gpu_count=8)
    assert first["status"] == "admitted"
    gone = fleet.gpus["jp-a"][3]

    ack = report(client, fleet, "jp-a", 1, without=(gone,))
    assert ack["inventory_changed"] is True
    # Kept, as missing, and still booked by the first workload.
    assert gpu_rows(conn, node_id)[gone] is not None
    assert reservations(conn)[gone] == UUID(first["id"])
    detail = client.get(f"/v1/nodes/{node_id}", headers=fleet.admin).json()
    assert detail["gpu_count"] == 7
    [missing] = [gpu for gpu in detail["gpus"] if gpu["missing_since"] is not None]
    assert missing["uuid"] == gone
    # The inventory change is audited with the GPU going missing in its snapshots.
    [event] = audit.list_events(conn, object_id=node_id, action="node.inventory_changed").items
    assert {g["uuid"]: g["missing_since"] for g in event.before["gpus"]}[gone] is None
    assert {g["uuid"]: g["missing_since"] for g in event.after["gpus"]}[gone] is not None

    report(client, fleet, "jp-a", 2)
    acknowledge(client, fleet, "jp-a")
    # Back, and still the first workload's.
    assert gpu_rows(conn, node_id)[gone] is None
    assert reservations(conn)[gone] == UUID(first["id"])
    assert client.get(f"/v1/nodes/{node_id}", headers=fleet.admin).json()["gpu_count"] == 8

    second = submit(client, fleet, gpu_count=1)
    assert second["status"] == "denied"
    assert "capacity" in rules(second)
    assert gone not in second["gpu_uuids"]
    assert held_twice(client, fleet) == []
    assert len(reservations(conn)) == 8
    assert audit.verify_chain(conn).ok


def test_a_missing_gpu_is_out_of_placement_and_counts_but_the_others_are_not(
    client: TestClient, conn: DbConnection, fleet: Fleet
) -> None:
    # jp-b (2 GPUs): one booked, then left out of a report.
    node_id = fleet.node_ids["jp-b"]
    first = submit(client, fleet, gpu_count=1)
    assert first["hostname"] == "jp-b"
    [gone] = first["gpu_uuids"]
    report(client, fleet, "jp-b", 1, without=(gone,))
    acknowledge(client, fleet, "jp-b")
    assert set(gpu_rows(conn, node_id)) == set(fleet.gpus["jp-b"])
    # Two GPUs asked for: jp-b has one there and free, so another node takes it.
    pair = submit(client, fleet, gpu_count=2)
    assert pair["hostname"] != "jp-b"
    # The metrics and the node list count the GPUs that are there.
    listed = client.get("/v1/nodes?zone=jp", headers=fleet.admin).json()["items"]
    assert {node["hostname"]: node["gpu_count"] for node in listed} == {"jp-a": 4, "jp-b": 1}
    metrics = client.get("/metrics").text
    assert 'sovereign_fleet_gpus{model="NVIDIA H100 80GB HBM3",zone="jp"} 5.0' in metrics
    # The free GPU on jp-b is still bookable, the missing one never.
    single = submit(client, fleet, gpu_count=1)
    assert single["hostname"] == "jp-b"
    assert single["gpu_uuids"] != [gone]
    assert held_twice(client, fleet) == []


def test_another_gpu_may_take_a_missing_gpus_index(
    client: TestClient, conn: DbConnection, full_node: Fleet
) -> None:
    fleet = full_node
    node_id = fleet.node_ids["jp-a"]
    first = submit(client, fleet, gpu_count=8)
    token, machine_id = fleet.agents["jp-a"]
    inventory = registration(hostname="jp-a", machine_id=machine_id, gpu_uuids=fleet.gpus["jp-a"])[
        "inventory"
    ]
    # The board in slot 3 replaced by another one: a new UUID at the same index.
    inventory["gpus"][3]["uuid"] = "GPU-replacement-0003"
    inventory["gpus"][3]["serial"] = "1652329999999"
    response = client.post(
        f"/v1/nodes/{node_id}/heartbeat",
        json={"seq": 1, "inventory": inventory},
        headers=bearer(token),
    )
    assert response.status_code == 200, response.text
    acknowledge(client, fleet, "jp-a")
    rows = gpu_rows(conn, node_id)
    assert rows[fleet.gpus["jp-a"][3]] is not None
    assert rows["GPU-replacement-0003"] is None
    replacement = submit(client, fleet, gpu_count=1)
    assert replacement["gpu_uuids"] == ["GPU-replacement-0003"]
    assert reservations(conn)[fleet.gpus["jp-a"][3]] == UUID(first["id"])
    assert held_twice(client, fleet) == []


def test_releasing_a_workload_deletes_the_gpus_that_went_missing(
    client: TestClient, conn: DbConnection, fleet: Fleet
) -> None:
    node_id = fleet.node_ids["jp-b"]
    workload = submit(client, fleet, gpu_count=2)
    assert workload["hostname"] == "jp-b"
    gone = fleet.gpus["jp-b"][1]
    report(client, fleet, "jp-b", 1, without=(gone,))
    response = client.post(f"/v1/workloads/{workload['id']}/release", headers=fleet.admin)
    assert response.status_code == 200, response.text
    assert set(gpu_rows(conn, node_id)) == {fleet.gpus["jp-b"][0]}
    assert reservations(conn) == {}
    [event] = audit.list_events(conn, action="workload.released").items
    assert event.after["freed_gpu_uuids"] == sorted(fleet.gpus["jp-b"])
    assert event.after["removed_gpu_uuids"] == [gone]
    # Reported again, it is a new GPU of the node, free to book.
    report(client, fleet, "jp-b", 2)
    acknowledge(client, fleet, "jp-b")
    assert gpu_rows(conn, node_id) == dict.fromkeys(fleet.gpus["jp-b"])
    again = submit(client, fleet, gpu_count=2)
    assert sorted(again["gpu_uuids"]) == sorted(fleet.gpus["jp-b"])


def test_an_expired_lease_deletes_the_gpus_that_went_missing(
    client: TestClient, conn: DbConnection, owner_conn: DbConnection, fleet: Fleet
) -> None:
    node_id = fleet.node_ids["jp-b"]
    workload = submit(client, fleet, gpu_count=2)
    gone = fleet.gpus["jp-b"][0]
    report(client, fleet, "jp-b", 1, without=(gone,))
    age_lease(owner_conn, workload["id"])
    assert service.expire_leases(conn, LEASE_SWEEP_ACTOR, batch_size=100) == 1
    assert set(gpu_rows(conn, node_id)) == {fleet.gpus["jp-b"][1]}
    [event] = audit.list_events(conn, action="workload.expired").items
    assert event.after["removed_gpu_uuids"] == [gone]
    assert audit.verify_chain(conn).ok


def test_reregistering_without_a_booked_gpu_keeps_it_booked(
    client: TestClient, conn: DbConnection, fleet: Fleet
) -> None:
    node_id = fleet.node_ids["jp-b"]
    workload = submit(client, fleet, gpu_count=1)
    [held] = workload["gpu_uuids"]
    free = next(uuid for uuid in fleet.gpus["jp-b"] if uuid != held)
    _, machine_id = fleet.agents["jp-b"]
    # The agent restarts and registers again seeing neither GPU.
    body = registration(hostname="jp-b", machine_id=machine_id, gpu_uuids=(), zone="jp")
    response = client.post("/v1/agents/register", json=body, headers=fleet.admin)
    assert response.status_code == 201, response.text
    assert set(gpu_rows(conn, node_id)) == {held}
    assert gpu_rows(conn, node_id)[held] is not None
    assert free not in gpu_rows(conn, node_id)
    assert reservations(conn) == {held: UUID(workload["id"])}
    [event] = audit.list_events(conn, object_id=node_id, action="node.reregistered").items
    assert [g["uuid"] for g in event.after["gpus"] if g["missing_since"] is not None] == [held]


def test_another_node_cannot_claim_a_missing_booked_gpu(client: TestClient, fleet: Fleet) -> None:
    workload = submit(client, fleet, gpu_count=2)
    assert workload["hostname"] == "jp-b"
    moved = fleet.gpus["jp-b"][0]
    report(client, fleet, "jp-b", 1, without=(moved,))
    body = registration(hostname="tw-b", gpu_uuids=(moved,), zone="tw")
    response = client.post("/v1/agents/register", json=body, headers=fleet.admin)
    assert response.status_code == 409, response.text
    error = response.json()["error"]
    assert error["details"] == {"field": "inventory.gpus.0.uuid", "uuid": moved}
    assert "a workload there still holds it" in error["message"]


def test_the_database_refuses_to_delete_a_booked_gpu(
    client: TestClient, owner_conn: DbConnection, fleet: Fleet
) -> None:
    workload = submit(client, fleet, gpu_count=1)
    [held] = workload["gpu_uuids"]
    with pytest.raises(psycopg.errors.ForeignKeyViolation) as refused:
        owner_conn.execute("DELETE FROM gpu WHERE uuid = %s", (held,))
    assert refused.value.diag.constraint_name == "gpu_reservation_gpu_fkey"
    # Nor through its node: the reservation names the node as well.
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        owner_conn.execute("DELETE FROM node WHERE id = %s", (workload["node_id"],))


# -- the recorded outcome describes the placement made -----------------------------------

#: A warn policy on an older GPU model: it applies to some nodes of the fleet, not all.
OLD_GPUS = {
    "name": "prefer-current-gpus",
    "enforcement_action": "warn",
    "requirements": {
        "cel": [
            {
                "name": "not-v100",
                "expression": '!node.gpu_models.exists(m, m.contains("V100"))',
                "message": "V100s are due for retirement",
            }
        ]
    },
}


@pytest.fixture
def mixed_gpus(client: TestClient, admin: dict[str, str]) -> Fleet:
    """h100-a (2 H100s) and v100-a, v100-b (4 V100s each), all in jp; warn on V100s."""
    fleet = _build(client, admin, [("h100-a", "jp", 2)])
    for hostname in ("v100-a", "v100-b"):
        body = registration(hostname=hostname, zone="jp", gpu_uuids=_gpu_uuids(hostname, 4))
        for gpu in body["inventory"]["gpus"]:
            gpu["model"] = "Tesla V100-SXM2-32GB"
        response = client.post("/v1/agents/register", json=body, headers=admin)
        assert response.status_code == 201, response.text
        fleet.node_ids[hostname] = response.json()["node_id"]
    assert client.post("/v1/policies", json=OLD_GPUS, headers=admin).status_code == 201
    activated = client.post("/v1/policy-sets/activate", json={}, headers=admin)
    assert activated.status_code == 200, activated.text
    return fleet


def evaluate_compliance(conn: DbConnection) -> dict[str, Any]:
    """Ask for a compliance evaluation and run it here, as the worker would; its record."""
    with conn.transaction():
        request_evaluation(conn, EvaluationTrigger.REQUESTED, {})
    evaluation = compliance.run_pending(
        conn, COMPLIANCE_ACTOR, sample_size=100, request_retention_days=7
    )
    assert evaluation is not None
    return evaluation.model_dump(mode="json")


def test_warnings_that_apply_only_to_other_eligible_nodes_do_not_make_the_outcome(
    client: TestClient,
    conn: DbConnection,
    mixed_gpus: Fleet,
    sovctl_as: Callable[[Role], Run],
) -> None:
    # Bin-pack: h100-a has the fewest free GPUs, so it is chosen; the V100 nodes were
    # eligible too, and the warn policy applies to them only.
    placed = submit(client, mixed_gpus, datasets=[], output=None)
    assert placed["hostname"] == "h100-a"
    assert placed["outcome"] == "admitted"
    assert placed["reasons"] == []
    # What warned against the other eligible nodes is kept, labelled as such.
    other = placed["other_nodes"]
    assert other["eligible"] == 2
    [reason] = other["reasons"]
    assert (reason["policy"], reason["rule"], reason["action"]) == (
        "prefer-current-gpus",
        "cel.not-v100",
        "warn",
    )
    assert "2 of 2 other eligible nodes: v100-a, v100-b" in reason["message"]
    # The recorded explanation is the chosen node's too: the rule passed there.
    [policy] = placed["explanation"]["selected"]
    assert {rule["rule"]: rule["result"] for rule in policy["rules"]}["cel.not-v100"] == "passed"
    [event] = audit.list_events(conn, action="workload.admitted").items
    assert event.after["outcome"] == "admitted"
    assert event.after["other_nodes"] == other
    # sovctl shows them under their own heading, apart from the workload's reasons.
    code, out, err = sovctl_as(Role.OPERATOR)("workloads", "show", placed["id"])
    assert code == 0, err
    assert "admitted_with_warnings" not in out
    heading, rows = out.split("other eligible nodes (2), not used by this workload:")
    assert "cel.not-v100" not in heading
    assert "cel.not-v100" in rows
    # Compliance judges the workload on the node it holds, and agrees.
    evaluation = evaluate_compliance(conn)
    assert evaluation["workloads_evaluated"] == 1
    assert evaluation["warned_workloads"] == 0
    assert evaluation["violating_workloads"] == 0


def test_warnings_on_the_chosen_node_make_the_outcome_and_compliance_agrees(
    client: TestClient, conn: DbConnection, mixed_gpus: Fleet
) -> None:
    # Spread: v100-a (4 free, before v100-b by hostname) is chosen, and the warning is
    # about it.
    placed = submit(client, mixed_gpus, datasets=[], output=None, strategy="spread")
    assert placed["hostname"] == "v100-a"
    assert placed["outcome"] == "admitted_with_warnings"
    [reason] = placed["reasons"]
    assert (reason["policy"], reason["rule"], reason["action"]) == (
        "prefer-current-gpus",
        "cel.not-v100",
        "warn",
    )
    assert "(node v100-a;" in reason["message"]
    [policy] = placed["explanation"]["selected"]
    assert {rule["rule"]: rule["result"] for rule in policy["rules"]}["cel.not-v100"] == "warned"
    other = placed["other_nodes"]
    assert other["eligible"] == 2
    [elsewhere] = other["reasons"]
    assert "1 of 2 other eligible nodes: v100-b" in elsewhere["message"]
    evaluation = evaluate_compliance(conn)
    assert evaluation["workloads_evaluated"] == 1
    assert evaluation["warned_workloads"] == 1
    assert evaluation["violating_workloads"] == 0
    # What-if on the active set's own policy predicts the same: one warned workload.
    response = client.post("/v1/policies/whatif", json=OLD_GPUS, headers=mixed_gpus.admin)
    assert response.status_code == 200, response.text
    assert response.json()["violations"]["warned"] == 1
    # A denial still summarises across nodes and has no placement to compare with.
    denied = submit(client, mixed_gpus, datasets=[], output=None, gpu_count=9)
    assert denied["status"] == "denied"
    assert denied["other_nodes"] is None


# -- selection by level, a declared output, and what each decision records --------------


def _apply(client: TestClient, fleet: Fleet, *documents: dict[str, Any]) -> dict[str, Any]:
    for document in documents:
        response = client.post("/v1/policies", json=document, headers=fleet.admin)
        assert response.status_code == 201, response.text
    activated = client.post("/v1/policy-sets/activate", json={}, headers=fleet.admin)
    assert activated.status_code == 200, activated.text
    result: dict[str, Any] = activated.json()
    return result


CONFIDENTIAL_AND_UP = {
    "name": "confidential-in-japan",
    "selector": {"min_classification": "confidential"},
    "requirements": {"compute_zones": ["jp"], "data_residency": True, "require_output": True},
}


def test_restricted_data_with_its_output_abroad_is_denied_by_a_level_selector(
    client: TestClient, fleet: Fleet
) -> None:
    """Issue 11: ``classifications: [confidential]`` let restricted data out; a level does not."""
    for path, body in (
        ("/v1/destinations", {"name": "results-tw", "zone": "tw"}),
        (
            "/v1/datasets",
            {
                "name": "customer-pii",
                "tenant": "research",
                "classification": "restricted",
                "zones": ["jp"],
            },
        ),
    ):
        assert client.post(path, json=body, headers=fleet.admin).status_code == 201
    _apply(client, fleet, CONFIDENTIAL_AND_UP)
    abroad = submit(client, fleet, datasets=["customer-pii"], output="results-tw")
    assert abroad["status"] == "denied"
    assert [(r["policy"], r["rule"]) for r in abroad["reasons"]] == [
        ("confidential-in-japan", "data_residency")
    ]
    assert "output destination results-tw is in tw" in abroad["reasons"][0]["message"]
    # With no output named at all, require_output says so instead of passing vacuously.
    unnamed = submit(client, fleet, datasets=["customer-pii"], output=None)
    assert unnamed["status"] == "denied"
    assert [r["rule"] for r in unnamed["reasons"]] == ["require_output"]
    # Confidential data with its results in Japan runs in Japan.
    admitted = submit(client, fleet)
    assert (admitted["status"], admitted["zone"]) == ("admitted", "jp")


@pytest.mark.parametrize(
    ("document", "field"),
    [
        (
            {"name": "p", "selector": {"min_classification": "secret"}},
            "policies[0].selector.min_classification",
        ),
        (
            {"name": "p", "requirements": {"require_output": "yes"}},
            "policies[0].requirements.require_output",
        ),
        (
            {"name": "p", "selector": {"min_clasification": "internal"}},
            "policies[0].selector.min_clasification",
        ),
    ],
)
def test_the_new_policy_fields_are_422_naming_the_field(
    client: TestClient, admin: dict[str, str], document: dict[str, Any], field: str
) -> None:
    response = client.post("/v1/policies", json=document, headers=admin)
    assert response.status_code == 422, response.text
    assert [f["field"] for f in response.json()["error"]["details"]["fields"]] == [field]


def test_every_decision_records_the_policies_selected_and_not(
    client: TestClient, conn: DbConnection, fleet: Fleet
) -> None:
    only_restricted = {
        "name": "restricted-in-japan",
        "selector": {"classifications": ["restricted"]},
        "requirements": {"compute_zones": ["jp"]},
    }
    _apply(client, fleet, CONFIDENTIAL_AND_UP, only_restricted)
    policies = {p["name"]: p for p in client.get("/v1/policies", headers=fleet.admin).json()}
    admitted = submit(client, fleet)
    assert admitted["outcome"] == "admitted"
    assert admitted["explanation"] == {
        "selected": [
            {
                "name": "confidential-in-japan",
                "version": 1,
                "content_hash": policies["confidential-in-japan"]["content_hash"],
                "enforcement_action": "deny",
                "rules": [
                    {"rule": "require_output", "result": "passed", "nodes_excluded": None},
                    {"rule": "data_residency", "result": "passed", "nodes_excluded": None},
                    {"rule": "compute_location", "result": "passed", "nodes_excluded": None},
                    {"rule": "exclude_quarantined", "result": "passed", "nodes_excluded": None},
                ],
            }
        ],
        "not_selected": [
            {
                "name": "restricted-in-japan",
                "version": 1,
                "content_hash": policies["restricted-in-japan"]["content_hash"],
                "reason": "selector classifications [restricted] did not match confidential",
            }
        ],
    }
    # Stored with the workload and in its audit event: what was decided, not recomputed.
    stored = conn.execute(
        "SELECT explanation FROM workload WHERE id = %s", (admitted["id"],)
    ).fetchone()
    assert stored is not None
    assert stored["explanation"] == admitted["explanation"]
    [event] = audit.list_events(conn, action="workload.admitted").items
    assert event.after["explanation"] == admitted["explanation"]
    _apply(client, fleet, {**only_restricted, "selector": {}})
    fetched = client.get(f"/v1/workloads/{admitted['id']}", headers=fleet.admin).json()
    assert fetched["explanation"] == admitted["explanation"]
    # The next decision is taken, and explained, under the new set.
    again = submit(client, fleet)
    assert [(p["name"], p["version"]) for p in again["explanation"]["selected"]] == [
        ("confidential-in-japan", 1),
        ("restricted-in-japan", 2),
    ]


def test_default_deny_unselected_denies_classified_work_no_policy_covers(
    settings: Settings, client: TestClient, fleet: Fleet
) -> None:
    other_tenant = {
        "name": "platform-in-taiwan",
        "selector": {"tenants": ["platform"]},
        "requirements": {"compute_zones": ["tw"]},
    }
    _apply(client, fleet, other_tenant)
    # Off by default: admitted, and the answer says that no policy applied.
    lenient = submit(client, fleet)
    assert lenient["outcome"] == "admitted"
    assert lenient["explanation"]["selected"] == []
    assert lenient["explanation"]["not_selected"][0]["reason"] == (
        "selector tenants [platform] did not match tenant research"
    )
    strict = create_app(settings.model_copy(update={"default_deny_unselected": True}))
    with TestClient(strict) as strict_client:
        denied = submit(strict_client, fleet)
        assert denied["status"] == "denied"
        assert [(r["policy"], r["rule"]) for r in denied["reasons"]] == [
            (None, "default_deny_unselected")
        ]
        assert "dataset tickets is classified confidential" in denied["reasons"][0]["message"]
        # A workload naming no data is not classified: admitted as before.
        assert submit(strict_client, fleet, datasets=[], output=None)["status"] == "admitted"
