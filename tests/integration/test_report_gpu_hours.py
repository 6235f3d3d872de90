"""The sovereignty report's GPU-hour lines, from metering's rollups.

Two servers of two GPUs: one in zone jp (Japan, the company's own) made in TW, one in
zone us made in US. Two workloads of two GPUs each run for three whole hours, metered by
the real roll-up; the report of those three hours must say, by hand: 12 GPU-hours, half
in the company's own zones, half on servers of each origin, all of declared provenance.
"""

from datetime import timedelta
from typing import Any
from uuid import UUID

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient

from control_plane.core.db import DbConnection
from control_plane.core.settings import ReportSettings, Settings
from control_plane.metering import service as metering
from control_plane.reports import service
from control_plane.reports.signing import signer_for
from tests.integration.test_metering import HOUR, since_ever, started
from tests.support import registration

pytestmark = pytest.mark.integration


def _created(client: TestClient, admin: dict[str, str], path: str, body: dict[str, Any]) -> Any:
    response = client.post(path, json=body, headers=admin)
    assert response.status_code in (201, 202), response.text
    return response.json()


def test_the_gpu_hour_lines_add_up_the_metered_hours(
    client: TestClient,
    admin: dict[str, str],
    settings: Settings,
    conn: DbConnection,
    owner_conn: DbConnection,
) -> None:
    _created(client, admin, "/v1/zones", {"slug": "jp", "name": "Japan", "country": "JP"})
    _created(client, admin, "/v1/zones", {"slug": "us", "name": "US East", "country": "US"})
    _created(client, admin, "/v1/tenants", {"slug": "research", "name": "Research"})
    for hostname, zone, origin in (("gpu-jp", "jp", "TW"), ("gpu-us", "us", "US")):
        body = registration(
            hostname=hostname,
            zone=zone,
            origin_country=origin,
            gpu_uuids=(f"GPU-{hostname}-0", f"GPU-{hostname}-1"),
        )
        since_ever(owner_conn, _created(client, admin, "/v1/agents/register", body)["node_id"])
    for _ in range(2):
        workload = _created(client, admin, "/v1/workloads", {"tenant": "research", "gpu_count": 2})
        assert workload["status"] == "admitted", workload
        started(owner_conn, workload["id"], HOUR)
    end = HOUR + timedelta(hours=3)
    assert metering.roll_up(conn, until=end, batch_size=100).workloads == 2

    job = _created(
        client,
        admin,
        "/v1/reports",
        {
            "kind": "sovereignty",
            "format": "json",
            "period_from": HOUR.isoformat(),
            "period_to": end.isoformat(),
        },
    )
    signer = signer_for(Ed25519PrivateKey.generate())
    service.build(
        settings.database_url, UUID(job["id"]), signer, ReportSettings(home_countries=["JP"])
    )
    document = client.get(f"/v1/reports/{job['id']}/download", headers=admin).json()
    shares = {
        line["measure"]: line["at_end"]
        for line in document["headline"]
        if line["measure"].startswith("gpu_hours")
    }
    assert shares == {
        "gpu_hours_own_zones": 50.0,
        "gpu_hours_origin_TW": 50.0,
        "gpu_hours_origin_US": 50.0,
        "gpu_hours_provenance_verified": 0.0,
        "gpu_hours_provenance_declared": 100.0,
        "gpu_hours_provenance_unverified": 0.0,
    }
    assert not [line for line in document["headline"] if line.get("unavailable")]
