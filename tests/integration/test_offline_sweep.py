"""Nodes that miss three heartbeats go offline: the service, and the task on a real worker."""

from uuid import UUID

import pytest
from celery import Celery
from fastapi.testclient import TestClient

from control_plane.audit import service as audit
from control_plane.core.db import DbConnection
from control_plane.core.settings import Settings
from control_plane.inventory import agents
from control_plane.inventory.tasks import MARK_OFFLINE_TASK, SWEEP_ACTOR
from tests.support import MakeBootstrap, bearer, registration

pytestmark = pytest.mark.integration


@pytest.fixture
def nodes(client: TestClient, admin: dict[str, str]) -> dict[str, UUID]:
    ids = {}
    for n, hostname in enumerate(("silent", "chatty", "parked")):
        body = registration(hostname=hostname, gpu_uuids=(f"GPU-{n:08d}-0000",))
        ids[hostname] = UUID(
            client.post("/v1/agents/register", json=body, headers=admin).json()["node_id"]
        )
    client.patch(f"/v1/nodes/{ids['parked']}", json={"status": "maintenance"}, headers=admin)
    return ids


def age_heartbeats(owner_conn: DbConnection, node_ids: list[UUID], seconds: int) -> None:
    owner_conn.execute(
        "UPDATE node SET last_heartbeat_at = now() - make_interval(secs => %s) WHERE id = ANY(%s)",
        (seconds, node_ids),
    )


def sweep(conn: DbConnection, batch_size: int = 100) -> int:
    """Run the offline sweep once, with a 10 s heartbeat interval (offline after 30 s)."""
    return agents.mark_stale_nodes_offline(
        conn, SWEEP_ACTOR, heartbeat_interval_seconds=10, batch_size=batch_size
    )


def statuses(conn: DbConnection) -> dict[str, str]:
    return {r["hostname"]: r["status"] for r in conn.execute("SELECT hostname, status FROM node")}


def test_only_active_nodes_silent_for_three_intervals_go_offline(
    conn: DbConnection, owner_conn: DbConnection, nodes: dict[str, UUID]
) -> None:
    age_heartbeats(owner_conn, [nodes["silent"], nodes["parked"]], 31)
    age_heartbeats(owner_conn, [nodes["chatty"]], 29)
    assert sweep(conn) == 1
    assert statuses(conn) == {"silent": "offline", "chatty": "active", "parked": "maintenance"}
    event = audit.list_events(conn, action="node.offline").items[0]
    assert event.object_id == str(nodes["silent"])
    assert event.actor_id == "system:offline-sweep"
    assert event.before["status"] == "active"
    # Idempotent: a second sweep finds nothing more to do.
    assert sweep(conn) == 0


def test_batches_are_bounded(
    conn: DbConnection, owner_conn: DbConnection, nodes: dict[str, UUID]
) -> None:
    age_heartbeats(owner_conn, [nodes["silent"], nodes["chatty"]], 300)
    assert sweep(conn, batch_size=1) == 1
    assert sweep(conn, batch_size=1) == 1
    assert sorted(statuses(conn).values()) == ["maintenance", "offline", "offline"]


def test_a_heartbeat_brings_an_offline_node_back(
    client: TestClient,
    conn: DbConnection,
    owner_conn: DbConnection,
    make_bootstrap: MakeBootstrap,
) -> None:
    registered = client.post(
        "/v1/agents/register", json=registration(), headers=bearer(make_bootstrap())
    ).json()
    age_heartbeats(owner_conn, [UUID(registered["node_id"])], 60)
    sweep(conn)
    ack = client.post(
        f"/v1/nodes/{registered['node_id']}/heartbeat",
        json={"seq": 1},
        headers=bearer(registered["token"]),
    ).json()
    assert ack["status"] == "active"
    actions = [e.action for e in audit.list_events(conn).items]
    assert actions[-2:] == ["node.offline", "node.online"]


def test_the_task_runs_on_a_real_worker(
    celery_app: Celery,
    worker: None,
    conn: DbConnection,
    owner_conn: DbConnection,
    nodes: dict[str, UUID],
) -> None:
    age_heartbeats(owner_conn, [nodes["silent"]], 3600)
    result = celery_app.send_task(MARK_OFFLINE_TASK)
    assert result.get(timeout=30) == 1
    assert statuses(conn)["silent"] == "offline"
    assert celery_app.send_task(MARK_OFFLINE_TASK).get(timeout=30) == 0
    assert audit.verify_chain(conn).ok


def test_beat_schedules_the_sweep(celery_app: Celery, settings: Settings) -> None:
    entry = celery_app.conf.beat_schedule["mark-offline-nodes"]
    assert entry["task"] == MARK_OFFLINE_TASK
    assert entry["schedule"] == settings.offline_sweep_seconds
