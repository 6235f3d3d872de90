"""Metering (issue 13): usage rolled up from reservations, on the real database.

Workloads are admitted, released, expired and revoked through the real paths; to make the
hours exact, a test moves a workload's start (and the node's history) into the past with
the owner's connection, as if it had been admitted then, and meters up to a chosen time.
"""

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import httpx
import psycopg
import pytest
from celery import Celery
from fastapi.testclient import TestClient

from control_plane.access.models import Role
from control_plane.compliance import repository as compliance
from control_plane.core.db import DbConnection
from control_plane.domain.metering import mig_slice_weight
from control_plane.inventory import agents
from control_plane.inventory.tasks import SWEEP_ACTOR
from control_plane.metering import service
from control_plane.metering.models import UsageQuery
from control_plane.metering.tasks import ROLL_UP_TASK
from control_plane.scheduling import service as scheduling
from control_plane.scheduling.tasks import LEASE_SWEEP_ACTOR
from tests.support import bearer, registration

pytestmark = pytest.mark.integration

#: 10:00 UTC three days ago: the tests' clock starts here. A fixed morning hour, so the few
#: hours a test meters after it fall in one UTC day whenever the suite runs (the hour of
#: the run itself put them across midnight from 22:00 on, and day totals came out short).
HOUR = (datetime.now(UTC) - timedelta(days=3)).replace(hour=10, minute=0, second=0, microsecond=0)
A100 = "NVIDIA A100-SXM4-80GB"


@dataclass
class Site:
    """Zone jp (country JP), tenant research, one node with two GPUs made in TW."""

    admin: dict[str, str]
    node_id: str


@pytest.fixture
def site(client: TestClient, admin: dict[str, str], owner_conn: DbConnection) -> Site:
    for path, item in (
        ("/v1/zones", {"slug": "jp", "name": "Japan", "country": "JP"}),
        ("/v1/tenants", {"slug": "research", "name": "Research"}),
    ):
        response = client.post(path, json=item, headers=admin)
        assert response.status_code == 201, response.text
    body = registration(
        hostname="gpu-a", zone="jp", origin_country="TW", gpu_uuids=("GPU-a-0", "GPU-a-1")
    )
    response = client.post("/v1/agents/register", json=body, headers=admin)
    assert response.status_code == 201, response.text
    node_id = response.json()["node_id"]
    since_ever(owner_conn, node_id)
    return Site(admin, node_id)


def since_ever(owner_conn: DbConnection, node_id: str) -> None:
    """Let the node's first recorded state reach back before any test's clock."""
    owner_conn.execute(
        "UPDATE node_state_history SET valid_from = '-infinity' WHERE node_id = %s"
        " AND valid_from = (SELECT min(valid_from) FROM node_state_history WHERE node_id = %s)",
        (node_id, node_id),
    )


def moved_at(owner_conn: DbConnection, node_id: str, at: datetime) -> None:
    """Put the node's one state change (its two history rows) at ``at``."""
    for query in (
        "UPDATE node_state_history SET valid_to = %(at)s WHERE node_id = %(n)s"
        " AND valid_to IS NOT NULL",
        "UPDATE node_state_history SET valid_from = %(at)s WHERE node_id = %(n)s"
        " AND valid_to IS NULL",
    ):
        owner_conn.execute(query, {"at": at, "n": node_id})


def submit(client: TestClient, site: Site, **overrides: Any) -> str:
    body = {"tenant": "research", "gpu_count": 1, **overrides}
    response = client.post("/v1/workloads", json=body, headers=site.admin)
    assert response.status_code == 201, response.text
    assert response.json()["status"] == "admitted", response.json()["reasons"]
    workload_id: str = response.json()["id"]
    return workload_id


def started(
    owner_conn: DbConnection, workload_id: str, at: datetime, lease: timedelta = timedelta(days=5)
) -> None:
    """As if the workload had been admitted at ``at`` with a lease of ``lease``."""
    owner_conn.execute(
        "UPDATE workload SET created_at = %(at)s, lease_expires_at = %(end)s WHERE id = %(id)s",
        {"at": at, "end": at + lease, "id": workload_id},
    )
    owner_conn.execute(
        "UPDATE usage_watermark SET metered_until = %(at)s WHERE workload_id = %(id)s",
        {"at": at, "id": workload_id},
    )


def hourly(conn: DbConnection, workload_id: str) -> dict[datetime, tuple[float, float]]:
    """The workload's rollup: UTC hour to (GPU-seconds, slice-seconds)."""
    rows = conn.execute(
        "SELECT bucket, sum(gpu_seconds) AS g, sum(mig_slice_seconds) AS s FROM usage_hourly"
        " WHERE workload_id = %s GROUP BY bucket ORDER BY bucket",
        (workload_id,),
    )
    return {row["bucket"]: (row["g"], row["s"]) for row in rows}


def daily_total(conn: DbConnection) -> float:
    row = conn.execute("SELECT coalesce(sum(gpu_seconds), 0) AS g FROM usage_daily").fetchone()
    assert row is not None
    return float(row["g"])


def watermark(conn: DbConnection, workload_id: str) -> tuple[datetime, bool]:
    row = conn.execute(
        "SELECT metered_until, closed FROM usage_watermark WHERE workload_id = %s", (workload_id,)
    ).fetchone()
    assert row is not None
    return row["metered_until"], row["closed"]


def roll_up(conn: DbConnection, until: datetime) -> int:
    return service.roll_up(conn, until=until, batch_size=100).workloads


def test_a_running_workload_is_metered_per_hour_and_twice_is_once(
    client: TestClient, site: Site, conn: DbConnection, owner_conn: DbConnection
) -> None:
    workload = submit(client, site, gpu_count=2)
    started(owner_conn, workload, HOUR + timedelta(minutes=30))

    assert roll_up(conn, HOUR + timedelta(hours=2)) == 1
    expected = {HOUR: (2 * 1800.0, 0.0), HOUR + timedelta(hours=1): (2 * 3600.0, 0.0)}
    assert hourly(conn, workload) == expected
    assert daily_total(conn) == 2 * 5400.0

    # The same roll-up again finds nothing to do and changes nothing.
    assert roll_up(conn, HOUR + timedelta(hours=2)) == 0
    assert hourly(conn, workload) == expected
    assert daily_total(conn) == 2 * 5400.0

    # A later one adds only what passed since, into the hour it passed in.
    roll_up(conn, HOUR + timedelta(hours=2, minutes=15))
    assert hourly(conn, workload)[HOUR + timedelta(hours=2)] == (2 * 900.0, 0.0)
    assert watermark(conn, workload) == (HOUR + timedelta(hours=2, minutes=15), False)


def test_release_meters_the_workload_to_its_end_in_the_releasing_transaction(
    client: TestClient, site: Site, conn: DbConnection, owner_conn: DbConnection
) -> None:
    workload = submit(client, site)
    started(owner_conn, workload, HOUR + timedelta(minutes=50))
    roll_up(conn, HOUR + timedelta(hours=1))

    response = client.post(f"/v1/workloads/{workload}/release", headers=site.admin)
    assert response.status_code == 200, response.text
    ended_at = datetime.fromisoformat(response.json()["ended_at"])

    held = (ended_at - (HOUR + timedelta(minutes=50))).total_seconds()
    assert sum(g for g, _ in hourly(conn, workload).values()) == pytest.approx(held, abs=1e-3)
    assert watermark(conn, workload) == (ended_at, True)
    # A roll-up after the end adds nothing.
    roll_up(conn, datetime.now(UTC))
    assert daily_total(conn) == pytest.approx(held, abs=1e-3)


def test_an_expired_lease_is_charged_up_to_its_expiry_not_up_to_the_sweep(
    client: TestClient, site: Site, conn: DbConnection, owner_conn: DbConnection
) -> None:
    workload = submit(client, site)
    started(owner_conn, workload, HOUR, lease=timedelta(minutes=90))
    # A roll-up long after the lease passed stops at the lease's end...
    roll_up(conn, HOUR + timedelta(hours=5))
    assert watermark(conn, workload) == (HOUR + timedelta(minutes=90), False)

    assert scheduling.expire_leases(conn, LEASE_SWEEP_ACTOR, batch_size=10) == 1
    assert hourly(conn, workload) == {
        HOUR: (3600.0, 0.0),
        HOUR + timedelta(hours=1): (1800.0, 0.0),
    }
    assert watermark(conn, workload) == (HOUR + timedelta(minutes=90), True)


def test_a_lapsed_lease_not_yet_swept_is_not_picked_again_and_starves_no_one(
    client: TestClient, site: Site, conn: DbConnection, owner_conn: DbConnection
) -> None:
    """Metered to its lease's end, a workload the sweep has not expired yet has nothing
    left to meter: a batch of one goes to the next workload, and then there is none."""
    lapsed = submit(client, site)
    started(owner_conn, lapsed, HOUR, lease=timedelta(minutes=30))
    running = submit(client, site)
    started(owner_conn, running, HOUR + timedelta(hours=1))
    until = HOUR + timedelta(hours=3)
    assert service.roll_up(conn, until=until, batch_size=1).workloads == 1
    assert watermark(conn, lapsed) == (HOUR + timedelta(minutes=30), False)
    assert service.roll_up(conn, until=until, batch_size=1).workloads == 1
    assert watermark(conn, running) == (until, False)
    assert service.roll_up(conn, until=until, batch_size=1).workloads == 0
    # A renewed lease has time to meter again.
    owner_conn.execute(
        "UPDATE workload SET lease_expires_at = %s WHERE id = %s",
        (HOUR + timedelta(hours=2), lapsed),
    )
    assert service.roll_up(conn, until=until, batch_size=10).workloads == 1
    assert watermark(conn, lapsed) == (HOUR + timedelta(hours=2), False)


def test_revocation_ends_the_metering_where_it_ended_the_workload(
    client: TestClient, site: Site, conn: DbConnection, owner_conn: DbConnection
) -> None:
    workload = submit(client, site)
    started(owner_conn, workload, HOUR)
    with conn.transaction():
        revoked = compliance.revoke_workloads(conn, {UUID(workload): {"policy": "test"}})
        compliance.free_reservations(conn, [UUID(workload)])
    (row,) = revoked
    held = (row.ended_at - HOUR).total_seconds()
    assert daily_total(conn) == pytest.approx(held, abs=1e-3)
    assert watermark(conn, workload) == (row.ended_at, True)


def test_a_node_outage_ends_no_lease_and_is_counted_as_offline(
    client: TestClient, site: Site, conn: DbConnection, owner_conn: DbConnection
) -> None:
    workload = submit(client, site)
    started(owner_conn, workload, HOUR)
    # The node falls silent and the real sweep marks it offline: its history says so.
    conn.execute(
        "UPDATE node SET last_heartbeat_at = now() - interval '1 hour' WHERE id = %s",
        (site.node_id,),
    )
    marked = agents.mark_stale_nodes_offline(
        conn, SWEEP_ACTOR, heartbeat_interval_seconds=10, batch_size=10
    )
    assert marked == 1
    states = conn.execute(
        "SELECT status, valid_to IS NULL AS current FROM node_state_history"
        " WHERE node_id = %s ORDER BY valid_from",
        (site.node_id,),
    ).fetchall()
    assert [(s["status"], s["current"]) for s in states] == [("active", False), ("offline", True)]
    # Put the outage at HOUR + 40 min, to meter it exactly.
    moved_at(owner_conn, site.node_id, HOUR + timedelta(minutes=40))
    roll_up(conn, HOUR + timedelta(hours=1, minutes=30))
    by_status = {
        row["node_status"]: row["g"]
        for row in conn.execute(
            "SELECT node_status, sum(gpu_seconds) AS g FROM usage_daily GROUP BY node_status"
        )
    }
    assert by_status == {"active": 2400.0, "offline": 3000.0}
    # The reservation is still there: only release, expiry or revocation ends it.
    assert scheduling.get_workload(conn, UUID(workload)).status == "admitted"


def test_provenance_and_zone_are_those_of_the_time_of_use(
    client: TestClient, site: Site, conn: DbConnection, owner_conn: DbConnection
) -> None:
    workload = submit(client, site)
    started(owner_conn, workload, HOUR)
    response = client.post(
        "/v1/zones", json={"slug": "tw", "name": "Taiwan", "country": "TW"}, headers=site.admin
    )
    assert response.status_code == 201
    response = client.patch(f"/v1/nodes/{site.node_id}", json={"zone": "tw"}, headers=site.admin)
    assert response.status_code == 200, response.text
    moved_at(owner_conn, site.node_id, HOUR + timedelta(minutes=15))
    roll_up(conn, HOUR + timedelta(hours=1))
    rows = conn.execute(
        "SELECT zone_slug, zone_country, origin_country, provenance_status, gpu_seconds"
        " FROM usage_hourly ORDER BY gpu_seconds"
    ).fetchall()
    assert [tuple(r.values()) for r in rows] == [
        ("jp", "JP", "TW", "declared", 900.0),
        ("tw", "TW", "TW", "declared", 2700.0),
    ]


def test_capacity_counts_the_gpus_there_per_hour_once(
    site: Site, conn: DbConnection, owner_conn: DbConnection
) -> None:
    owner_conn.execute("UPDATE metering_position SET metered_until = %s", (HOUR,))
    service.roll_up(conn, until=HOUR + timedelta(hours=2), batch_size=10)
    service.roll_up(conn, until=HOUR + timedelta(hours=2), batch_size=10)
    rows = conn.execute(
        "SELECT bucket, zone_slug, node_status, gpu_seconds FROM capacity_hourly ORDER BY bucket"
    ).fetchall()
    assert [tuple(r.values()) for r in rows] == [
        (HOUR, "jp", "active", 7200.0),
        (HOUR + timedelta(hours=1), "jp", "active", 7200.0),
    ]
    report = service.usage(
        conn,
        UsageQuery.model_validate(
            {
                "measure": "capacity",
                "since": HOUR.isoformat(),
                "until": (HOUR + timedelta(hours=3)).isoformat(),
                "group_by": ["zone_country", "origin_country", "node_status"],
                "granularity": "hour",
            }
        ),
    )
    assert report.source == "capacity_hourly"
    assert [
        (r.period_start, r.zone_country, r.origin_country, r.gpu_hours) for r in report.rows
    ] == [
        (HOUR, "JP", "TW", 2.0),
        (HOUR + timedelta(hours=1), "JP", "TW", 2.0),
    ]


def test_the_usage_query_reads_the_rollups_by_any_dimension(
    client: TestClient,
    site: Site,
    conn: DbConnection,
    owner_conn: DbConnection,
    make_token: Any,
) -> None:
    workload = submit(client, site, gpu_count=2)
    started(owner_conn, workload, HOUR)
    roll_up(conn, HOUR + timedelta(hours=3))
    day = HOUR.replace(hour=0)
    auditor = bearer(make_token(Role.AUDITOR))
    params = {
        "since": day.isoformat(),
        "until": (day + timedelta(days=2)).isoformat(),
        "group_by": ["tenant", "zone_country", "origin_country", "provenance_status"],
    }
    response = client.get("/v1/usage", params=params, headers=auditor)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["source"] == "usage_daily"
    (row,) = body["rows"]
    assert row["tenant"] == "research"
    assert row["zone_country"] == "JP"
    assert row["origin_country"] == "TW"
    assert row["provenance_status"] == "declared"
    assert row["node_id"] is None
    assert row["gpu_hours"] == body["gpu_hours"] == 6.0

    hours = client.get(
        "/v1/usage",
        params={**params, "granularity": "hour", "group_by": ["workload"]},
        headers=auditor,
    ).json()
    assert hours["source"] == "usage_hourly"
    assert [r["gpu_hours"] for r in hours["rows"]] == [2.0, 2.0, 2.0]
    assert {r["workload_id"] for r in hours["rows"]} == {workload}

    # The service answers the same without HTTP.
    report = service.usage(
        conn,
        UsageQuery.model_validate({**params, "group_by": ["node"]}),
        now=HOUR + timedelta(days=1),
    )
    assert [(str(r.node_id), r.gpu_hours) for r in report.rows] == [(site.node_id, 6.0)]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"since": "2026-01-01T00:30:00Z"}, "query.since"),
        ({"since": "2026-01-01T00:00:00"}, "query.since"),
        ({"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, "query.until"),
        ({"since": "2024-01-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, "query.until"),
        ({"group_by": "galaxy"}, "query.group_by"),
        ({"measure": "capacity", "group_by": "tenant"}, "query.group_by"),
        ({"tenant": "nobody"}, "query.tenant"),
        ({"limit": "0"}, "query.limit"),
    ],
)
def test_a_bad_usage_query_is_a_422_naming_the_field(
    client: TestClient, admin: dict[str, str], params: dict[str, str], field: str
) -> None:
    response = client.get("/v1/usage", params=params, headers=admin)
    assert response.status_code == 422, response.text
    fields = [f["field"] for f in response.json()["error"]["details"]["fields"]]
    assert field in fields


def test_usage_is_for_auditors_and_admins(client: TestClient, make_token: Any) -> None:
    assert client.get("/v1/usage", headers=bearer(make_token(Role.OPERATOR))).status_code == 403
    assert client.get("/v1/usage", headers=bearer(make_token(Role.AUDITOR))).status_code == 200


def test_a_mig_slice_is_charged_its_share_of_the_gpu(
    client: TestClient, admin: dict[str, str], conn: DbConnection, owner_conn: DbConnection
) -> None:
    for path, item in (
        ("/v1/zones", {"slug": "jp", "name": "Japan", "country": "JP"}),
        ("/v1/tenants", {"slug": "research", "name": "Research"}),
    ):
        assert client.post(path, json=item, headers=admin).status_code == 201
    body = registration(hostname="mig-a", zone="jp", gpu_uuids=("GPU-mig-0",))
    (gpu,) = body["inventory"]["gpus"]
    gpu.update(
        model=A100,
        mig_mode="enabled",
        mig_devices=[
            {"index": i, "uuid": f"MIG-mig-{i}", "profile": "3g.40gb", "gpu_instance_id": i + 1}
            for i in range(2)
        ],
    )
    response = client.post("/v1/agents/register", json=body, headers=admin)
    assert response.status_code == 201, response.text
    since_ever(owner_conn, response.json()["node_id"])
    site = Site(admin, response.json()["node_id"])
    workload = submit(client, site, mig_profile="3g.40gb", gpu_count=2, gpu_model="A100")
    started(owner_conn, workload, HOUR)
    roll_up(conn, HOUR + timedelta(hours=1))
    ((gpu_seconds, slice_seconds),) = hourly(conn, workload).values()
    assert mig_slice_weight("3g.40gb") == pytest.approx(3 / 7)
    assert gpu_seconds == pytest.approx(2 * 3600 * 3 / 7)
    assert slice_seconds == 2 * 3600.0
    profiles = conn.execute("SELECT DISTINCT mig_profile FROM usage_daily").fetchall()
    assert [p["mig_profile"] for p in profiles] == ["3g.40gb"]


@pytest.mark.parametrize(
    "profile", ["1g.10gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb", "1g.10gb+me", "odd", None]
)
def test_the_sql_and_python_slice_weights_agree(conn: DbConnection, profile: str | None) -> None:
    row = conn.execute("SELECT mig_slice_weight(%s::text) AS w", (profile,)).fetchone()
    assert row is not None
    expected = mig_slice_weight(profile)
    assert (row["w"] if profile is not None else 1.0) == pytest.approx(expected)


def test_the_application_role_cannot_write_the_ledger(conn: DbConnection) -> None:
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("UPDATE usage_daily SET gpu_seconds = 0")


# -- GPU-hour quotas ---------------------------------------------------------------------


def decide(client: TestClient, site: Site, **overrides: Any) -> dict[str, Any]:
    body = {"tenant": "research", "gpu_count": 1, "lease_seconds": 3600, **overrides}
    response = client.post("/v1/workloads", json=body, headers=site.admin)
    assert response.status_code == 201, response.text
    decided: dict[str, Any] = response.json()
    return decided


def quota_messages(decided: dict[str, Any]) -> list[str]:
    return [r["message"] for r in decided["reasons"] if r["rule"] == "quota"]


def test_an_origin_quota_counts_gpu_hours_on_servers_of_that_origin(
    client: TestClient, site: Site
) -> None:
    response = client.put(
        "/v1/tenants/research/origin-quotas/tw",
        json={"gpu_hours_per_period": 1.5, "period": "week"},
        headers=site.admin,
    )
    assert response.status_code == 200, response.text
    assert response.json()["origin_country"] == "TW"
    tenant = client.get("/v1/tenants/research", headers=site.admin).json()
    assert [q["origin_country"] for q in tenant["origin_quotas"]] == ["TW"]

    denied = decide(client, site, gpu_count=2)
    assert denied["status"] == "denied"
    (message,) = quota_messages(denied)
    assert "may use 1.5 GPU-hours per week on servers made in TW" in message
    assert decide(client, site)["status"] == "admitted"
    # Half an hour is left: 30 minutes fit, 31 do not.
    assert decide(client, site, lease_seconds=1860)["status"] == "denied"
    assert decide(client, site, lease_seconds=1800)["status"] == "admitted"

    removed = client.delete("/v1/tenants/research/origin-quotas/TW", headers=site.admin)
    assert removed.status_code == 204
    again = client.delete("/v1/tenants/research/origin-quotas/TW", headers=site.admin)
    assert again.status_code == 404


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/tenants/research/origin-quotas/XX", {"gpu_hours_per_period": 1}, "path.country"),
        ("/v1/tenants/research/origin-quotas/TW", {"gpu_hours_per_period": -1}, None),
        ("/v1/tenants/research/origin-quotas/TW", {}, None),
    ],
)
def test_a_bad_origin_quota_is_a_422(
    client: TestClient, site: Site, path: str, body: dict[str, Any], field: str | None
) -> None:
    response = client.put(path, json=body, headers=site.admin)
    assert response.status_code == 422, response.text
    fields = [f["field"] for f in response.json()["error"]["details"]["fields"]]
    assert (field or "gpu_hours_per_period") in fields, fields


def test_a_slice_is_charged_its_share_of_the_gpu_by_the_quota(
    client: TestClient, admin: dict[str, str], owner_conn: DbConnection
) -> None:
    for path, item in (
        ("/v1/zones", {"slug": "jp", "name": "Japan", "country": "JP"}),
        ("/v1/tenants", {"slug": "research", "name": "Research"}),
    ):
        assert client.post(path, json=item, headers=admin).status_code == 201
    body = registration(hostname="mig-a", zone="jp", gpu_uuids=("GPU-mig-0",))
    (gpu,) = body["inventory"]["gpus"]
    gpu.update(
        model=A100,
        mig_mode="enabled",
        mig_devices=[
            {"index": i, "uuid": f"MIG-mig-{i}", "profile": "3g.40gb", "gpu_instance_id": i + 1}
            for i in range(2)
        ],
    )
    assert client.post("/v1/agents/register", json=body, headers=admin).status_code == 201
    quota = {"max_gpus": 8, "gpu_hours_per_period": 1, "period": "day"}
    assert (
        client.put("/v1/tenants/research/quotas/jp", json=quota, headers=admin).status_code == 200
    )
    site = Site(admin, "")
    # Two 3g slices for an hour: 6/7 of a GPU-hour (a whole GPU each would be 2).
    one = decide(client, site, mig_profile="3g.40gb", gpu_count=2, gpu_model="A100")
    assert one["status"] == "admitted", one["reasons"]
    client.post(f"/v1/workloads/{one['id']}/release", headers=admin)
    # Released at once: only seconds were used; one more hour of one slice is 3/7, fits.
    two = decide(client, site, mig_profile="3g.40gb", gpu_count=1, gpu_model="A100")
    assert two["status"] == "admitted", two["reasons"]
    # 3/7 held plus 3/7 more is under 1, plus 3/7 again is not.
    three = decide(client, site, mig_profile="3g.40gb", gpu_count=1, gpu_model="A100")
    assert three["status"] == "admitted", three["reasons"]
    client.post(f"/v1/workloads/{two['id']}/release", headers=admin)
    row = owner_conn.execute("SELECT count(*) AS n FROM usage_watermark WHERE closed").fetchone()
    assert row is not None
    assert row["n"] == 2


def test_two_admissions_racing_for_the_last_gpu_hours_one_wins(
    client: TestClient, site: Site, live_server: str
) -> None:
    quota = {"max_gpus": 8, "gpu_hours_per_period": 1.5, "period": "month"}
    response = client.put("/v1/tenants/research/quotas/jp", json=quota, headers=site.admin)
    assert response.status_code == 200
    body = {"tenant": "research", "gpu_count": 1, "lease_seconds": 3600}

    def post(_: int) -> dict[str, Any]:
        with httpx.Client(base_url=live_server, headers=site.admin, timeout=30) as http:
            answer = http.post("/v1/workloads", json=body)
            assert answer.status_code == 201, answer.text
            decided: dict[str, Any] = answer.json()
            return decided

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(post, range(2)))
    assert sorted(r["status"] for r in results) == ["admitted", "denied"]
    (loser,) = [r for r in results if r["status"] == "denied"]
    assert any("1.5 GPU-hours per month in zone jp" in m for m in quota_messages(loser))


# -- sovctl --------------------------------------------------------------------------------


def test_sovctl_usage_prints_the_rollups_as_a_table_or_json(
    client: TestClient,
    site: Site,
    conn: DbConnection,
    owner_conn: DbConnection,
    admin_sovctl: Any,
) -> None:
    workload = submit(client, site)
    started(owner_conn, workload, HOUR)
    roll_up(conn, HOUR + timedelta(hours=2))
    day = HOUR.replace(hour=0).isoformat()
    until = (HOUR.replace(hour=0) + timedelta(days=1)).isoformat()
    code, out, err = admin_sovctl(
        "usage", "--since", day, "--until", until, "--by", "tenant", "--by", "zone"
    )
    assert code == 0, err
    assert "research" in out
    assert "2.000 GPU-hours" in out
    code, out, err = admin_sovctl("usage", "--since", day, "--until", until, "-o", "json")
    assert code == 0, err
    assert json.loads(out)["gpu_hours"] == 2.0
    code, _, err = admin_sovctl("usage", "--since", "2026-01-01T00:30:00Z")
    assert code == 1
    assert "query.since" in err
    code, out, err = admin_sovctl("tenants", "origin-quota", "research", "TW", "--gpu-hours", "9")
    assert code == 0, err
    assert "TW" in out


# -- the Celery task -------------------------------------------------------------------------


def test_the_roll_up_runs_on_a_real_worker_and_twice_counts_once(
    client: TestClient,
    site: Site,
    conn: DbConnection,
    owner_conn: DbConnection,
    celery_app: Celery,
    worker: None,
) -> None:
    entry = celery_app.conf.beat_schedule["metering-roll-up"]
    assert entry["task"] == ROLL_UP_TASK
    workload = submit(client, site)
    started(owner_conn, workload, HOUR)
    until = (HOUR + timedelta(hours=2)).isoformat()
    assert celery_app.send_task(ROLL_UP_TASK, kwargs={"until": until}).get(timeout=30) == 1
    assert celery_app.send_task(ROLL_UP_TASK, kwargs={"until": until}).get(timeout=30) == 0
    assert daily_total(conn) == 7200.0
    # Beat's own call (no `until`): up to now minus the lag, so more, once.
    assert celery_app.send_task(ROLL_UP_TASK).get(timeout=30) == 1
    assert daily_total(conn) > 7200.0
