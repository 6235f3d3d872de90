"""The sovereignty report's GPU-hour lines, from metering's rollups.

Two servers of two GPUs: one in zone jp (Japan, the company's own) made in TW, one in
zone us made in US. Two workloads of two GPUs each run for three whole hours, metered by
the real roll-up; the report of those three hours must say, by hand: 12 GPU-hours, half
in the company's own zones, half on servers of each origin, all of declared provenance.
"""

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient

from control_plane.core.db import DbConnection
from control_plane.core.settings import ReportSettings, Settings
from control_plane.metering import service as metering
from control_plane.reports import gpu_hours, service
from control_plane.reports.models import Period
from control_plane.reports.signing import signer_for
from tests.integration.test_metering import HOUR, since_ever, started
from tests.support import registration

pytestmark = pytest.mark.integration


def _created(client: TestClient, admin: dict[str, str], path: str, body: dict[str, Any]) -> Any:
    response = client.post(path, json=body, headers=admin)
    assert response.status_code in (201, 202), response.text
    return response.json()


@pytest.fixture
def two_sites(client: TestClient, admin: dict[str, str], owner_conn: DbConnection) -> None:
    """Zone jp (own) with a server made in TW, zone us with one made in US, two GPUs each."""
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


def _sovereignty(
    client: TestClient, admin: dict[str, str], settings: Settings, start: datetime, end: datetime
) -> Any:
    """The sovereignty report of ``[start, end)`` as JSON, built with JP as home."""
    body = {
        "kind": "sovereignty",
        "format": "json",
        "period_from": start.isoformat(),
        "period_to": end.isoformat(),
    }
    job = _created(client, admin, "/v1/reports", body)
    signer = signer_for(Ed25519PrivateKey.generate())
    service.build(
        settings.database_url, UUID(job["id"]), signer, ReportSettings(home_countries=["JP"])
    )
    return client.get(f"/v1/reports/{job['id']}/download", headers=admin).json()


@pytest.mark.usefixtures("two_sites")
def test_the_gpu_hour_lines_add_up_the_metered_hours(
    client: TestClient,
    admin: dict[str, str],
    settings: Settings,
    conn: DbConnection,
    owner_conn: DbConnection,
) -> None:
    for _ in range(2):
        workload = _created(client, admin, "/v1/workloads", {"tenant": "research", "gpu_count": 2})
        assert workload["status"] == "admitted", workload
        started(owner_conn, workload["id"], HOUR)
    end = HOUR + timedelta(hours=3)
    assert metering.roll_up(conn, until=end, batch_size=100).workloads == 2

    document = _sovereignty(client, admin, settings, HOUR, end)
    # Every hour alike: the first hour's, the last hour's and the whole period's shares.
    shares = {
        line["measure"]: line["whole_period"]
        for line in document["headline"]
        if line["measure"].startswith("gpu_hours")
    }
    for line in document["headline"]:
        if line["measure"].startswith("gpu_hours"):
            assert line["at_start"] == line["at_end"] == line["whole_period"], line
    assert shares == {
        "gpu_hours_own_zones": 50.0,
        "gpu_hours_origin_TW": 50.0,
        "gpu_hours_origin_US": 50.0,
        "gpu_hours_provenance_verified": 0.0,
        "gpu_hours_provenance_declared": 100.0,
        "gpu_hours_provenance_unverified": 0.0,
    }
    assert not [line for line in document["headline"] if line.get("unavailable")]
    tables = {t["name"]: t for t in document["tables"]}
    hours = [
        dict(zip([c["name"] for c in tables["gpu_hours_over_time"]["columns"]], row, strict=True))
        for row in tables["gpu_hours_over_time"]["rows"]
    ]
    assert sorted({r["bucket"] for r in hours}) == [
        (HOUR + timedelta(hours=h)).isoformat() for h in range(3)
    ]
    assert sum(r["gpu_hours"] for r in hours) == pytest.approx(12.0)


@pytest.mark.usefixtures("two_sites")
def test_a_long_period_goes_day_by_day_and_its_first_and_last_day_differ(
    client: TestClient,
    admin: dict[str, str],
    settings: Settings,
    conn: DbConnection,
    owner_conn: DbConnection,
) -> None:
    """Three days: two GPUs in jp (own) for the first day's first three hours, two in us
    for three hours of the last day. Day by day: 100 % own on the first, 0 % on the last,
    50 % over the period; the chart has a bar per day, the empty middle one at zero."""
    day = HOUR.replace(hour=0) - timedelta(days=3)
    # Each node has two GPUs: the two workloads take one node each.
    starts = {"jp": day, "us": day + timedelta(days=2, hours=5)}
    for _ in starts:
        workload = _created(client, admin, "/v1/workloads", {"tenant": "research", "gpu_count": 2})
        assert workload["status"] == "admitted", workload
        started(owner_conn, workload["id"], starts[workload["zone"]], lease=timedelta(hours=3))
    end = day + timedelta(days=3)
    assert metering.roll_up(conn, until=end, batch_size=100).workloads == 2

    document = _sovereignty(client, admin, settings, day, end)
    lines = {line["measure"]: line for line in document["headline"]}
    own = lines["gpu_hours_own_zones"]
    assert (own["at_start"], own["at_end"], own["whole_period"], own["change"]) == (
        100.0,
        0.0,
        50.0,
        -100.0,
    )
    assert (lines["gpu_hours_origin_US"]["at_start"], lines["gpu_hours_origin_US"]["at_end"]) == (
        0.0,
        100.0,
    )
    charts = {chart["name"]: chart for chart in document["charts"]}
    by_zone = charts["gpu_hours_by_zone"]
    assert by_zone["times"] == [(day + timedelta(days=d)).isoformat() for d in range(3)]
    assert by_zone["groups"] == {"jp": [6.0, 0.0, 0.0], "us": [0.0, 0.0, 6.0]}


@pytest.mark.usefixtures("two_sites")
def test_more_groups_than_one_answer_holds_are_asked_for_in_halves(
    client: TestClient, admin: dict[str, str], conn: DbConnection, owner_conn: DbConnection
) -> None:
    """With room for two groups per answer, the 13-hour window of two busy servers (26
    groups) is cut down to single hours; the sums are those of one query with room for
    all. Two groups in one hour with room for one: no answer rather than part of one."""
    for _ in range(2):
        workload = _created(client, admin, "/v1/workloads", {"tenant": "research", "gpu_count": 2})
        started(owner_conn, workload["id"], HOUR)
    end = HOUR + timedelta(hours=13)
    assert metering.roll_up(conn, until=end, batch_size=100).workloads == 2
    period = Period(HOUR, end)
    whole = gpu_hours.metered(conn, period, ["JP"])
    assert whole is not None
    assert len(whole.rows) == 26  # 13 hours x 2 zones
    assert gpu_hours.metered(conn, period, ["JP"], limit=2) == whole
    assert gpu_hours.metered(conn, period, ["JP"], limit=1) is None


@pytest.mark.usefixtures("two_sites")
def test_a_period_into_the_future_is_metered_up_to_now_only(
    client: TestClient, admin: dict[str, str], settings: Settings
) -> None:
    """The API allows periods up to 9999: the GPU-hours stop at now (no day of the next
    eight thousand years is asked for or charted), and a period wholly ahead has none."""
    now = datetime.now(UTC)
    document = _sovereignty(client, admin, settings, HOUR, datetime(9999, 1, 1, tzinfo=UTC))
    [chart] = [c for c in document["charts"] if c["name"] == "gpu_hours_by_zone"]
    assert datetime.fromisoformat(chart["times"][-1]) <= now
    ahead = _sovereignty(
        client, admin, settings, now + timedelta(days=1), datetime(9999, 1, 1, tzinfo=UTC)
    )
    lines = {line["measure"]: line for line in ahead["headline"]}
    own = lines["gpu_hours_own_zones"]
    assert (own["at_start"], own["at_end"], own["whole_period"], own["unavailable"]) == (
        None,
        None,
        None,
        None,
    )
