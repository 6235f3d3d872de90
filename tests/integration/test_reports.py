"""The sovereignty and compliance reports, every number checked in all three formats.

A scenario runs through the API: a fleet in three zones (two of them the company's own),
one node verified by a bill of materials, policies, admitted, warned and denied
workloads, a grant, a drift, an offline node and a violation found by re-evaluation. The
expectations are worked out here from the scenario itself (the registration bodies, the
decisions the API answered), never from the report's own queries, and each is checked in
the JSON, in the CSV files and in the text of the PDF.
"""

import base64
import csv
import hashlib
import io
import json
import shutil
import subprocess
import time
import zipfile
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient
from pypdf import PdfReader

from agents.protocol import canonical_json
from control_plane.compliance import service as compliance
from control_plane.compliance.tasks import COMPLIANCE_ACTOR
from control_plane.core.db import DbConnection
from control_plane.core.settings import ReportSettings, Settings
from control_plane.inventory import agents
from control_plane.inventory.tasks import SWEEP_ACTOR
from control_plane.metering import service as metering
from control_plane.provenance import bom
from control_plane.reports import service
from control_plane.reports.render_pdf import number_text
from control_plane.reports.signing import Signer, signer_for
from tests.integration.test_metering import started
from tests.support import bearer, registration

pytestmark = pytest.mark.integration

GPU_MEMORY = 85520809984  # what tests.support.registration reports per GPU
HOME = ["DE", "FR"]
H100_PART = "965-2G520-0100-001"
BOM_HEADER = "system_serial,asset_tag,component,serial,part_number,origin_country"


@dataclass
class NodeSpec:
    """One server of the scenario, as registered."""

    hostname: str
    zone: str
    origin: str | None
    gpus: int
    before_period: bool


#: The fleet: two servers before the period starts, two during it.
FLEET = [
    NodeSpec("de-1", "de", None, 2, True),  # verified by the BOM below as DE, GPUs US
    NodeSpec("us-1", "us", "CN", 1, True),
    NodeSpec("fr-1", "fr", "DE", 4, False),
    NodeSpec("us-2", "us", None, 1, False),  # nothing declared: provenance unknown
]
ZONE_COUNTRY = {"de": "DE", "fr": "FR", "us": "US"}


@dataclass
class Scenario:
    period_from: datetime
    period_to: datetime
    node_ids: dict[str, str]
    workloads: list[dict[str, Any]]
    policy_sets: list[dict[str, Any]]
    grant_id: str
    violating_workload: str
    #: How long each admitted workload (one GPU each) was metered, in hours.
    metered_hours: float


def _now(conn: DbConnection) -> datetime:
    row = conn.execute("SELECT clock_timestamp() AS now").fetchone()
    assert row is not None
    moment: datetime = row["now"]
    return moment


def _register(client: TestClient, admin: dict[str, str], spec: NodeSpec) -> dict[str, Any]:
    uuids = tuple(f"GPU-{spec.hostname}-{i:04d}" for i in range(spec.gpus))
    body = registration(
        hostname=spec.hostname, gpu_uuids=uuids, zone=spec.zone, origin_country=spec.origin
    )
    body["inventory"]["host"]["system_serial"] = f"SER-{spec.hostname}"
    for gpu in body["inventory"]["gpus"]:
        gpu["serial"] = f"{spec.hostname}-{gpu['index']}"
    response = client.post("/v1/agents/register", json=body, headers=admin)
    assert response.status_code == 201, response.text
    return {**response.json(), "body": body}


def _post(client: TestClient, admin: dict[str, str], path: str, body: Any) -> Any:
    response = client.post(path, json=body, headers=admin)
    assert response.status_code in {200, 201}, response.text
    return response.json()


def _verify_de1(client: TestClient, admin: dict[str, str]) -> None:
    """de-1's bill of materials: assembled in DE, GPUs from the US; the readings agree."""
    rows = [
        "SER-de-1,AT-1,system,,SYS-821GE-TNHR,DE",
        *(f"SER-de-1,AT-1,gpu,de-1-{i},{H100_PART},US" for i in range(2)),
    ]
    parsed = [r.model_dump(mode="json") for r in bom.parse_csv("\n".join([BOM_HEADER, *rows]))]
    imported = _post(client, admin, "/v1/provenance/imports", {"name": "po.csv", "rows": parsed})
    assert imported["servers"][0]["status"] == "verified", imported


@pytest.fixture
def scenario(
    client: TestClient, admin: dict[str, str], conn: DbConnection, owner_conn: DbConnection
) -> Scenario:
    for slug, country in ZONE_COUNTRY.items():
        _post(client, admin, "/v1/zones", {"slug": slug, "name": slug.upper(), "country": country})
    for tenant in ("acme", "beta"):
        _post(client, admin, "/v1/tenants", {"slug": tenant, "name": tenant.title()})
    _post(
        client,
        admin,
        "/v1/datasets",
        {"name": "ledger", "tenant": "acme", "classification": "confidential", "zones": ["de"]},
    )
    grant = _post(
        client, admin, "/v1/datasets/ledger/grants", {"tenant": "beta", "reason": "audit"}
    )
    registered: dict[str, dict[str, Any]] = {}
    for spec in FLEET[:2]:
        registered[spec.hostname] = _register(client, admin, spec)
    _verify_de1(client, admin)
    # A deny policy for confidential data (the company's countries only), and a warning
    # for the partner tenant on servers not assembled in DE. Set 1, before the period.
    eu_only = {
        "name": "eu-only",
        "selector": {"classifications": ["confidential"]},
        "requirements": {"compute_countries": ["DE", "FR"]},
    }
    _post(client, admin, "/v1/policies", eu_only)
    _post(
        client,
        admin,
        "/v1/policies",
        {
            "name": "partner-origin",
            "enforcement_action": "warn",
            "selector": {"tenants": ["beta"]},
            "requirements": {"server_origin_countries": ["FR"]},
        },
    )
    sets = [_post(client, admin, "/v1/policy-sets/activate", {"note": "first"})]
    time.sleep(0.01)
    period_from = _now(conn)
    for spec in FLEET[2:]:
        registered[spec.hostname] = _register(client, admin, spec)
    workloads = []
    for body in (
        {"tenant": "acme", "datasets": ["ledger"], "gpu_count": 1},
        {"tenant": "beta", "datasets": ["ledger"], "gpu_count": 1},
        {"tenant": "acme", "gpu_count": 16},  # no node has 16 GPUs: denied
        {"tenant": "beta", "gpu_count": 1},
    ):
        response = client.post("/v1/workloads", json=body, headers=admin)
        assert response.status_code in {201, 422, 409}, response.text
        workloads.append(response.json())
    assert Counter(w["outcome"] for w in workloads) == {
        "admitted": 1,
        "admitted_with_warnings": 2,
        "denied": 1,
    }, workloads
    # Metering: every admitted workload runs from the same moment to the same roll-up, so
    # each has the same GPU-hours and the shares are by count.
    metered_from = _now(conn)
    for workload in workloads:
        if workload["outcome"] != "denied":
            started(owner_conn, workload["id"], metered_from)
    # A drift: us-1's agent reports another system serial (a swapped chassis, the same
    # GPUs); the node is quarantined.
    us1 = registered["us-1"]
    inventory = json.loads(json.dumps(us1["body"]["inventory"]))
    inventory["host"]["system_serial"] = "SER-us-1-swapped"
    ack = client.post(
        f"/v1/nodes/{us1['node_id']}/heartbeat",
        json={"seq": 1, "inventory": inventory},
        headers=bearer(us1["token"]),
    )
    assert ack.json()["status"] == "quarantined", ack.text
    # us-2 falls silent and goes offline.
    owner_conn.execute(
        "UPDATE node SET last_heartbeat_at = now() - interval '1 hour' WHERE id = %s",
        (registered["us-2"]["node_id"],),
    )
    assert (
        agents.mark_stale_nodes_offline(
            conn, SWEEP_ACTOR, heartbeat_interval_seconds=10, batch_size=10
        )
        == 1
    )
    # Set 2 moves confidential data to FR only: the workload on de-1 now violates it.
    _post(client, admin, "/v1/policies", {**eu_only, "requirements": {"compute_countries": ["FR"]}})
    sets.append(_post(client, admin, "/v1/policy-sets/activate", {"note": "fr only"}))
    evaluation = compliance.run_pending(
        conn, COMPLIANCE_ACTOR, sample_size=100, request_retention_days=7
    )
    assert evaluation is not None
    assert evaluation.violating_workloads >= 1
    on_de = [w for w in workloads if w["outcome"] != "denied" and w["zone"] == "de"]
    assert any(w["request"]["datasets"] == ["ledger"] for w in on_de), workloads
    violating = next(w["id"] for w in on_de if w["request"]["datasets"] == ["ledger"])
    metered_to = _now(conn)
    rolled = metering.roll_up(conn, until=metered_to, batch_size=100)
    assert rolled.workloads == 3, rolled
    time.sleep(0.01)
    return Scenario(
        metered_hours=(metered_to - metered_from).total_seconds() / 3600,
        period_from=period_from,
        period_to=_now(conn),
        node_ids={name: r["node_id"] for name, r in registered.items()},
        workloads=workloads,
        policy_sets=sets,
        grant_id=grant["id"],
        violating_workload=violating,
    )


@pytest.fixture
def signer() -> Signer:
    return signer_for(Ed25519PrivateKey.generate())


def _build(
    client: TestClient,
    admin: dict[str, str],
    settings: Settings,
    signer: Signer,
    sc: Scenario,
    kind: str,
    fmt: str,
) -> tuple[dict[str, Any], bytes, dict[str, str]]:
    body = {
        "kind": kind,
        "format": fmt,
        "period_from": sc.period_from.isoformat(),
        "period_to": sc.period_to.isoformat(),
    }
    asked = client.post("/v1/reports", json=body, headers=admin)
    assert asked.status_code == 202, asked.text
    job = asked.json()
    built = service.build(
        settings.database_url, UUID(job["id"]), signer, ReportSettings(home_countries=HOME)
    )
    assert built is not None
    download = client.get(f"/v1/reports/{job['id']}/download", headers=admin)
    assert download.status_code == 200, download.text
    status = client.get(f"/v1/reports/{job['id']}", headers=admin).json()
    return status, download.content, dict(download.headers)


def _pct(part: float, whole: float) -> float:
    return round(100.0 * part / whole, 2)


def sovereignty_expectations() -> dict[str, tuple[float | None, float | None]]:
    """The first page, from FLEET: (at start, at end) per measure."""
    start = [n for n in FLEET if n.before_period]
    origin, provenance = ORIGIN, PROVENANCE

    def share(nodes: list[NodeSpec], keep: Any) -> float | None:
        total = sum(n.gpus for n in nodes)
        return _pct(sum(n.gpus for n in nodes if keep(n)), total) if total else None

    def both(keep: Any) -> tuple[float | None, float | None]:
        return share(start, keep), share(FLEET, keep)

    expected = {"gpu_capacity_own_zones": both(lambda n: ZONE_COUNTRY[n.zone] in HOME)}
    for country in set(origin.values()):
        expected[f"gpu_capacity_origin_{country}"] = both(
            lambda n, c=country: origin[n.hostname] == c
        )
    for status in ("verified", "declared", "unverified"):
        expected[f"gpu_capacity_provenance_{status}"] = both(
            lambda n, s=status: provenance[n.hostname] == s
        )
    return expected


#: Each server's origin and provenance class, as the first page counts them.
ORIGIN = {"de-1": "DE", "us-1": "CN", "fr-1": "DE", "us-2": "unknown"}
PROVENANCE = {"de-1": "verified", "us-1": "declared", "fr-1": "declared", "us-2": "unverified"}


def gpu_hour_expectations(sc: Scenario) -> dict[str, float | None]:
    """The GPU-hour shares, from where the API placed each admitted workload (one GPU each,
    metered equally long): the same in the first hour, the last and the whole period."""
    hostname = {node_id: name for name, node_id in sc.node_ids.items()}
    placed = [hostname[w["node_id"]] for w in sc.workloads if w["outcome"] != "denied"]
    expected: dict[str, float | None] = {
        "gpu_hours_own_zones": _pct(
            sum(ZONE_COUNTRY[_spec(h).zone] in HOME for h in placed), len(placed)
        )
    }
    for country in {ORIGIN[h] for h in placed}:
        expected[f"gpu_hours_origin_{country}"] = _pct(
            sum(ORIGIN[h] == country for h in placed), len(placed)
        )
    for status in ("verified", "declared", "unverified"):
        expected[f"gpu_hours_provenance_{status}"] = _pct(
            sum(PROVENANCE[h] == status for h in placed), len(placed)
        )
    return expected


def gpu_hour_rows(sc: Scenario) -> dict[tuple[str, str, str], float]:
    """GPU-hours of the whole period per (zone, origin, provenance status)."""
    hostname = {node_id: name for name, node_id in sc.node_ids.items()}
    status = {"de-1": "verified", "us-1": "declared", "fr-1": "declared", "us-2": "unknown"}
    rows: dict[tuple[str, str, str], float] = {}
    for w in sc.workloads:
        if w["outcome"] != "denied":
            h = hostname[w["node_id"]]
            key = (_spec(h).zone, ORIGIN[h], status[h])
            rows[key] = rows.get(key, 0.0) + sc.metered_hours
    return rows


def _spec(hostname: str) -> NodeSpec:
    return next(n for n in FLEET if n.hostname == hostname)


def _tables(document: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    return {
        t["name"]: [dict(zip([c["name"] for c in t["columns"]], r, strict=True)) for r in t["rows"]]
        for t in document["tables"]
    }


def _csv_tables(archive: bytes) -> dict[str, list[dict[str, str]]]:
    with zipfile.ZipFile(io.BytesIO(archive)) as z:
        return {
            name.removesuffix(".csv"): list(csv.DictReader(io.TextIOWrapper(z.open(name), "utf-8")))
            for name in z.namelist()
            if name.endswith(".csv")
        }


def _pdf_text(data: bytes) -> tuple[str, list[str]]:
    pages = [page.extract_text() for page in PdfReader(io.BytesIO(data)).pages]
    return "\n".join(pages), pages


def _content_digest(document: dict[str, Any]) -> str:
    """docs/reports.md's recipe for the content digest, from a JSON report."""
    digest = hashlib.sha256()
    header = document["header"]
    first = {k: header[k] for k in ("schema", "kind", "period_from", "period_to", "checkpoint")}
    digest.update(canonical_json(first).encode() + b"\n")
    for table in document["tables"]:
        names = [c["name"] for c in table["columns"]]
        digest.update(canonical_json({"columns": names, "table": table["name"]}).encode() + b"\n")
        for row in table["rows"]:
            digest.update(canonical_json(row).encode() + b"\n")
    return digest.hexdigest()


def _check_signatures(
    signer: Signer, status: dict[str, Any], data: bytes, headers: dict[str, str], seal: Any
) -> None:
    public = signer.private_key.public_key()
    sha = hashlib.sha256(data).hexdigest()
    assert headers["x-sovereign-sha256"] == sha == status["sha256"]
    public.verify(base64.b64decode(headers["x-sovereign-signature"]), sha.encode())
    assert headers["x-sovereign-checkpoint"] == "none"
    assert headers["x-sovereign-content-sha256"] == status["content_sha256"]
    assert seal["content_sha256"] == status["content_sha256"]
    public.verify(base64.b64decode(seal["signature"]), seal["statement"].encode())
    statement = json.loads(seal["statement"])
    assert statement["content_sha256"] == status["content_sha256"]
    assert statement["checkpoint"] is None


def test_the_sovereignty_report_in_every_format(
    client: TestClient,
    admin: dict[str, str],
    settings: Settings,
    signer: Signer,
    scenario: Scenario,
    tmp_path: Path,
) -> None:
    expected = sovereignty_expectations()
    hours = gpu_hour_expectations(scenario)
    # The first page: capacity at two moments; GPU-hours in the first and last hour and
    # over the whole period (one GPU each, all metered equally long: the same shares).
    first_page = {
        **{m: (start, end, None) for m, (start, end) in expected.items()},
        **{m: (share, share, share) for m, share in hours.items()},
    }
    status, data, headers = _build(client, admin, settings, signer, scenario, "sovereignty", "json")
    assert headers["content-type"] == "application/json"
    assert "attachment; filename=" in headers["content-disposition"]
    document = json.loads(data)
    assert document["header"]["schema"] == "sovereign-report/2"
    assert document["header"]["checkpoint"] is None
    headline = {h["measure"]: h for h in document["headline"]}
    assert {
        m: (h["at_start"], h["at_end"], h["whole_period"]) for m, h in headline.items()
    } == first_page
    assert not [h for h in headline.values() if h["unavailable"]]
    assert headline["gpu_hours_own_zones"]["change"] == 0.0
    assert headline["gpu_capacity_own_zones"]["change"] == round(
        expected["gpu_capacity_own_zones"][1] - expected["gpu_capacity_own_zones"][0],  # type: ignore[operator]
        4,
    )
    _check_signatures(signer, status, data, headers, document["signature"])
    assert _content_digest(document) == status["content_sha256"]
    tables = _tables(document)
    by_zone = {r["zone"]: r for r in tables["capacity_by_zone"]}
    for zone in ZONE_COUNTRY:
        nodes = [n for n in FLEET if n.zone == zone]
        assert by_zone[zone]["servers"] == len(nodes)
        assert by_zone[zone]["gpus"] == sum(n.gpus for n in nodes)
        assert by_zone[zone]["gpu_memory_bytes"] == GPU_MEMORY * sum(n.gpus for n in nodes)
        assert by_zone[zone]["own"] == (ZONE_COUNTRY[zone] in HOME)
    by_origin = {
        (r["component"], r["origin_country"]): r["gpus"] for r in tables["capacity_by_origin"]
    }
    assert by_origin[("server", "DE")] == 6
    assert by_origin[("server", "CN")] == 1
    assert by_origin[("server", "unknown")] == 1
    assert by_origin[("gpu", "US")] == 2  # de-1's GPUs, from its BOM
    assert by_origin[("gpu", "unknown")] == 6
    provenance = {r["provenance_status"]: (r["servers"], r["gpus"]) for r in tables["provenance"]}
    assert provenance == {"verified": (1, 2), "declared": (2, 5), "unknown": (1, 1)}
    drift = tables["drift_quarantine_events"]
    assert [(e["action"], e["hostname"]) for e in drift] == [("node.drift_detected", "us-1")]
    offline = [(e["action"], e["hostname"]) for e in tables["unconfirmed_offline_nodes"]]
    assert offline == [("node.offline", "us-2")]
    over_time = tables["capacity_over_time"]
    first, last = over_time[0]["at"], over_time[-1]["at"]
    assert first == scenario.period_from.isoformat()
    assert last == scenario.period_to.isoformat()
    at_end = {
        r["group"]: r["gpus"]
        for r in over_time
        if r["at"] == last and r["series"] == "gpus_by_zone"
    }
    assert at_end == {"de": 2, "fr": 4, "us": 2}
    metered = {
        (r["zone"], r["origin_country"], r["provenance_status"]): r["gpu_hours"]
        for r in tables["gpu_hours"]
    }
    assert metered == pytest.approx(gpu_hour_rows(scenario), rel=1e-6)
    assert {r["zone"]: r["own"] for r in tables["gpu_hours"]} == {
        zone: ZONE_COUNTRY[zone] in HOME for zone, _, _ in metered
    }
    over_time = tables["gpu_hours_over_time"]
    assert sum(r["gpu_hours"] for r in over_time) == pytest.approx(sum(metered.values()))
    assert {r["bucket"][14:] for r in over_time} == {"00:00+00:00"}  # whole UTC hours
    charts = {c["name"]: c for c in document["charts"]}
    assert set(charts) == {
        "gpus_by_origin",
        "gpus_by_zone",
        "gpu_hours_by_origin",
        "gpu_hours_by_zone",
    }
    by_zone_hours = charts["gpu_hours_by_zone"]["groups"]
    assert {z: sum(v) for z, v in by_zone_hours.items()} == pytest.approx(
        {z: sum(h for (zz, _, _), h in metered.items() if zz == z) for z, _, _ in metered}
    )

    # CSV: the same numbers, one file per table, and the same content digest.
    csv_status, archive, csv_headers = _build(
        client, admin, settings, signer, scenario, "sovereignty", "csv"
    )
    assert csv_headers["content-type"] == "application/zip"
    assert csv_status["content_sha256"] == status["content_sha256"]
    with zipfile.ZipFile(io.BytesIO(archive)) as z:
        _check_signatures(
            signer, csv_status, archive, csv_headers, json.loads(z.read("signature.json"))
        )
    csv_tables = _csv_tables(archive)
    csv_headline = {r["measure"]: r for r in csv_tables["headline"]}
    assert set(csv_headline) == set(first_page)
    for measure, values in first_page.items():
        row = csv_headline[measure]
        for column, value in zip(("at_start", "at_end", "whole_period"), values, strict=True):
            assert row[column] == ("" if value is None else str(value)), (measure, column)
    csv_zone = {r["zone"]: r for r in csv_tables["capacity_by_zone"]}
    assert {z: int(r["gpus"]) for z, r in csv_zone.items()} == {"de": 2, "fr": 4, "us": 2}
    csv_hours = {
        (r["zone"], r["origin_country"], r["provenance_status"]): float(r["gpu_hours"])
        for r in csv_tables["gpu_hours"]
    }
    assert csv_hours == pytest.approx(gpu_hour_rows(scenario), rel=1e-6)
    assert sum(float(r["gpu_hours"]) for r in csv_tables["gpu_hours_over_time"]) == (
        pytest.approx(sum(metered.values()))
    )

    # PDF: the same numbers in its text, the period and checkpoint on every page.
    pdf_status, pdf, pdf_headers = _build(
        client, admin, settings, signer, scenario, "sovereignty", "pdf"
    )
    assert pdf_headers["content-type"] == "application/pdf"
    assert pdf_status["content_sha256"] == status["content_sha256"]
    text, pages = _pdf_text(pdf)
    assert len(pages) >= 3
    for number, page in enumerate(pages, start=1):
        assert f"Page {number} of {len(pages)}" in page
        assert "no audit checkpoint yet" in page
        assert scenario.period_from.strftime("%Y-%m-%d %H:%M:%S UTC") in page
    page_one = pages[0]
    for measure, values in first_page.items():
        line = headline[measure]["text"]
        assert line in page_one, line
        # The measure's row: its text, then its values in column order (capacity has no
        # whole-period value; a change between them).
        start, end, whole = values
        cells = page_one[page_one.index(line) + len(line) :].split("\n")[1:5]
        assert cells[0] == ("—" if start is None else f"{start:.2f} %"), (measure, cells)
        assert cells[1] == ("—" if end is None else f"{end:.2f} %"), (measure, cells)
        if whole is not None:
            assert cells[3] == f"{whole:.2f} %", (measure, cells)
    assert "Share of GPU-hours in the company's own zones" in page_one
    assert "Whole period" in page_one
    # The GPU-hours table: one row per group, its value as the PDF prints numbers.
    for (zone, origin, prov), value in gpu_hour_rows(scenario).items():
        own = "yes" if ZONE_COUNTRY[zone] in HOME else "no"
        printed = "\n".join([zone, own, origin, prov, number_text(value)])
        assert printed in text, (zone, origin, prov, value)
    for title in ("GPU-hours by server origin", "GPU-hours by zone"):
        assert title in text
    assert "us-1" in text
    assert "node.drift_detected" in text
    assert "node.offline" in text
    assert status["content_sha256"] in text
    (tmp_path / "sovereignty.pdf").write_bytes(pdf)


def test_the_compliance_report_in_every_format(
    client: TestClient,
    admin: dict[str, str],
    settings: Settings,
    signer: Signer,
    scenario: Scenario,
    tmp_path: Path,
) -> None:
    decided = Counter((w["tenant"], w["outcome"]) for w in scenario.workloads)
    status, data, headers = _build(client, admin, settings, signer, scenario, "compliance", "json")
    document = json.loads(data)
    _check_signatures(signer, status, data, headers, document["signature"])
    assert _content_digest(document) == status["content_sha256"]
    tables = _tables(document)
    sets = tables["policy_sets"]
    assert [(s["version"], s["content_hash"], s["note"]) for s in sets] == [
        (p["version"], p["content_hash"], p["note"]) for p in scenario.policy_sets
    ]
    assert all(s["activated_by"] for s in sets)
    assert sets[0]["replaced_at"] is not None
    assert sets[1]["replaced_at"] is None
    by_tenant = {
        (r["tenant"], r["outcome"]): r["decisions"] for r in tables["admissions_by_tenant"]
    }
    assert by_tenant == dict(decided)
    by_outcome = {
        (r["source"], r["outcome"]): r["decisions"] for r in tables["admissions_by_outcome"]
    }
    assert by_outcome == {
        ("workload", o): n for o, n in Counter(w["outcome"] for w in scenario.workloads).items()
    }
    listed = {r["id"]: r for r in tables["denials_and_warnings"]}
    not_plain = [w for w in scenario.workloads if w["outcome"] != "admitted"]
    assert set(listed) == {w["id"] for w in not_plain}
    for w in not_plain:
        for reason in w["reasons"]:
            assert reason["message"] in listed[w["id"]]["reasons"]
    findings = {(r["policy"], r["action"]) for r in tables["admissions_by_policy"]}
    assert ("partner-origin", "warn") in findings
    [evaluation] = tables["evaluations"]
    assert evaluation["violating_workloads"] >= 1
    violations = {(v["workload_id"], v["policy"]): v for v in tables["violations"]}
    found = violations[(scenario.violating_workload, "eu-only")]
    assert found["action"] == "record"
    assert found["workload_status"] == "admitted"
    assets = {(a["name"], a["tenant"]): a for a in tables["assets"]}
    ledger_users = Counter(
        (w["tenant"], w["zone"])
        for w in scenario.workloads
        if w["outcome"] != "denied" and "ledger" in w["request"]["datasets"]
    )
    assert {(n, t): a["workloads"] for (n, t), a in assets.items()} == {
        ("ledger", t): count for (t, _), count in ledger_users.items()
    }
    assert assets[("ledger", "beta")]["grants"] == scenario.grant_id
    assert assets[("ledger", "acme")]["grants"] == ""
    # The first page: measures of the whole period. Set 2 allows confidential data in FR
    # only: every admitted ledger workload outside fr violates it; nothing is revoked.
    outcomes = Counter(w["outcome"] for w in scenario.workloads)
    total = len(scenario.workloads)
    expected_headline: dict[str, float] = {
        "decisions": total,
        **{f"decisions_{o}": _pct(outcomes[o], total) for o in ("admitted", "denied")},
        "decisions_admitted_with_warnings": _pct(outcomes["admitted_with_warnings"], total),
        "violating_workloads": sum(
            w["outcome"] != "denied" and "ledger" in w["request"]["datasets"] and w["zone"] != "fr"
            for w in scenario.workloads
        ),
        "revoked_workloads": 0,
    }
    lines = {h["measure"]: h for h in document["headline"]}
    assert {m: h["whole_period"] for m, h in lines.items()} == expected_headline
    assert all(h["at_start"] is None and h["at_end"] is None for h in lines.values())

    csv_status, archive, _ = _build(client, admin, settings, signer, scenario, "compliance", "csv")
    assert csv_status["content_sha256"] == status["content_sha256"]
    csv_tables = _csv_tables(archive)
    assert {
        (r["tenant"], r["outcome"]): int(r["decisions"]) for r in csv_tables["admissions_by_tenant"]
    } == dict(decided)
    assert {r["id"] for r in csv_tables["denials_and_warnings"]} == {w["id"] for w in not_plain}
    assert {r["measure"]: r["whole_period"] for r in csv_tables["headline"]} == {
        m: str(float(v) if lines[m]["unit"] == "percent" else v)
        for m, v in expected_headline.items()
    }

    pdf_status, pdf, _ = _build(client, admin, settings, signer, scenario, "compliance", "pdf")
    (tmp_path / "compliance.pdf").write_bytes(pdf)
    assert pdf_status["content_sha256"] == status["content_sha256"]
    text, pages = _pdf_text(pdf)
    for number, page in enumerate(pages, start=1):
        assert f"Page {number} of {len(pages)}" in page
    for measure, value in expected_headline.items():
        line = lines[measure]["text"]
        shown = f"{value:.2f} %" if lines[measure]["unit"] == "percent" else f"{value:,}"
        assert f"{line}\n{shown}\n" in pages[0], (measure, shown)
    for p in scenario.policy_sets:
        assert p["content_hash"][:16] in text.replace("\n", "")
    for w in not_plain:
        assert w["id"] in text.replace("\n", "")
    assert scenario.violating_workload in text.replace("\n", "")


def test_asking_again_returns_the_stored_report_and_both_are_audited(
    client: TestClient,
    admin: dict[str, str],
    settings: Settings,
    signer: Signer,
    conn: DbConnection,
) -> None:
    body = {
        "kind": "compliance",
        "format": "json",
        "period_from": "2026-01-01T00:00:00Z",
        "period_to": "2026-02-01T00:00:00Z",
    }
    first = client.post("/v1/reports", json=body, headers=admin).json()
    service.build(settings.database_url, UUID(first["id"]), signer, ReportSettings())
    second = client.post("/v1/reports", json=body, headers=admin).json()
    assert second["id"] == first["id"]
    assert second["status"] == "done"
    assert client.get(f"/v1/reports/{first['id']}/download", headers=admin).status_code == 200
    actions = [
        r["action"]
        for r in conn.execute(
            "SELECT action FROM audit_event WHERE object_id = %s ORDER BY seq", (first["id"],)
        )
    ]
    assert actions == ["report.requested", "report.requested", "report.downloaded"]
    # A second build of a done job does nothing.
    assert service.build(settings.database_url, UUID(first["id"]), signer, ReportSettings()) is None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (
            {
                "kind": "compliance",
                "period_from": "0001-01-01T00:00:00+23:59",
                "period_to": "2026-01-02T00:00:00Z",
            },
            "body",
        ),
        (
            {
                "kind": "board",
                "period_from": "2026-01-01T00:00:00Z",
                "period_to": "2026-01-02T00:00:00Z",
            },
            "kind",
        ),
        (
            {
                "kind": "compliance",
                "period_from": "2026-01-02T00:00:00Z",
                "period_to": "2026-01-01T00:00:00Z",
            },
            "body",
        ),
        (
            {
                "kind": "compliance",
                "period_from": "2026-01-01T00:00:00",
                "period_to": "2026-01-02T00:00:00Z",
            },
            "body",
        ),
        (
            {
                "kind": "compliance",
                "format": "xlsx",
                "period_from": "2026-01-01T00:00:00Z",
                "period_to": "2026-01-02T00:00:00Z",
            },
            "format",
        ),
    ],
)
def test_a_bad_request_is_a_422_naming_the_field(
    client: TestClient, admin: dict[str, str], body: dict[str, Any], field: str
) -> None:
    response = client.post("/v1/reports", json=body, headers=admin)
    assert response.status_code == 422, response.text
    fields = [f["field"] for f in response.json()["error"]["details"]["fields"]]
    assert any(f == field or f.startswith(field) for f in fields), fields


def test_a_report_not_done_is_a_409_and_an_unknown_one_404(
    client: TestClient, admin: dict[str, str]
) -> None:
    body = {
        "kind": "sovereignty",
        "period_from": "2026-01-01T00:00:00Z",
        "period_to": "2026-01-02T00:00:00Z",
    }
    job = client.post("/v1/reports", json=body, headers=admin).json()
    assert job["status"] == "queued"
    assert job["percent"] == 0
    assert client.get(f"/v1/reports/{job['id']}/download", headers=admin).status_code == 409
    missing = client.get("/v1/reports/00000000-0000-0000-0000-000000000000", headers=admin)
    assert missing.status_code == 404


def _openssl_verify(key: Path, message: Path, signature: Path) -> subprocess.CompletedProcess[str]:
    command = ["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", str(key), "-rawin"]
    return subprocess.run(
        [*command, "-in", str(message), "-sigfile", str(signature)],
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_the_signature_verifies_by_hand_with_openssl(
    client: TestClient, admin: dict[str, str], settings: Settings, signer: Signer, tmp_path: Path
) -> None:
    body = {
        "kind": "sovereignty",
        "format": "pdf",
        "period_from": "2026-01-01T00:00:00Z",
        "period_to": "2026-01-02T00:00:00Z",
    }
    job = client.post("/v1/reports", json=body, headers=admin).json()
    service.build(settings.database_url, UUID(job["id"]), signer, ReportSettings())
    download = client.get(f"/v1/reports/{job['id']}/download", headers=admin)
    (tmp_path / "report.pdf").write_bytes(download.content)
    (tmp_path / "key.pem").write_text(signer.public_key_pem())
    (tmp_path / "sig").write_bytes(base64.b64decode(download.headers["x-sovereign-signature"]))
    # docs/reports.md, "Verifying a download by hand".
    digest = subprocess.run(
        ["openssl", "dgst", "-sha256", "-r", str(tmp_path / "report.pdf")],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()[0]
    (tmp_path / "digest").write_text(digest)
    verified = _openssl_verify(tmp_path / "key.pem", tmp_path / "digest", tmp_path / "sig")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "Signature Verified Successfully" in verified.stdout
    # A changed file no longer verifies.
    (tmp_path / "digest").write_text("0" * 64)
    tampered = _openssl_verify(tmp_path / "key.pem", tmp_path / "digest", tmp_path / "sig")
    assert tampered.returncode != 0


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_the_statement_in_the_file_verifies_by_hand_with_openssl(
    client: TestClient, admin: dict[str, str], settings: Settings, signer: Signer, tmp_path: Path
) -> None:
    body = {
        "kind": "compliance",
        "format": "json",
        "period_from": "2026-01-01T00:00:00Z",
        "period_to": "2026-01-02T00:00:00Z",
    }
    job = client.post("/v1/reports", json=body, headers=admin).json()
    service.build(settings.database_url, UUID(job["id"]), signer, ReportSettings())
    document = json.loads(client.get(f"/v1/reports/{job['id']}/download", headers=admin).content)
    # docs/reports.md, "Verifying the statement in the file" (what jq -j writes).
    (tmp_path / "statement.txt").write_text(document["signature"]["statement"])
    (tmp_path / "statement.sig").write_bytes(base64.b64decode(document["signature"]["signature"]))
    (tmp_path / "audit.pem").write_text(signer.public_key_pem())
    verified = _openssl_verify(
        tmp_path / "audit.pem", tmp_path / "statement.txt", tmp_path / "statement.sig"
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    statement = json.loads(document["signature"]["statement"])
    assert statement == {
        "checkpoint": None,
        "content_sha256": _content_digest(document),
        "format": "sovereign-report-signature/1",
        "key_fingerprint": signer.fingerprint,
        "kind": "compliance",
        "period_from": "2026-01-01T00:00:00+00:00",
        "period_to": "2026-01-02T00:00:00+00:00",
    }
    assert canonical_json(statement) == document["signature"]["statement"]


def test_a_report_covers_the_newest_checkpoint_signed_after_its_period(
    client: TestClient,
    admin: dict[str, str],
    settings: Settings,
    signer: Signer,
) -> None:
    """The checkpoint is in the job, the file's header and the download's headers; a newer
    checkpoint makes a new report, the same one returns the stored job."""
    assert client.post("/v1/zones", json=ZONE_FOR_CHECKPOINTS, headers=admin).status_code == 201
    signed = client.post("/v1/audit/checkpoints", headers=admin)
    assert signed.status_code == 201, signed.text
    number = signed.json()["number"]
    body = {
        "kind": "compliance",
        "format": "json",
        "period_from": "2026-01-01T00:00:00Z",
        "period_to": "2026-02-01T00:00:00Z",
    }
    first = client.post("/v1/reports", json=body, headers=admin).json()
    assert first["checkpoint"] == number
    service.build(settings.database_url, UUID(first["id"]), signer, ReportSettings())
    download = client.get(f"/v1/reports/{first['id']}/download", headers=admin)
    assert download.headers["X-Sovereign-Checkpoint"] == str(number)
    assert json.loads(download.content)["header"]["checkpoint"]["number"] == number
    again = client.post("/v1/reports", json=body, headers=admin).json()
    assert again["id"] == first["id"]
    # The report requests themselves moved the head: the next checkpoint is a new one.
    newer = client.post("/v1/audit/checkpoints", headers=admin)
    assert newer.status_code == 201, newer.text
    third = client.post("/v1/reports", json=body, headers=admin).json()
    assert third["checkpoint"] == newer.json()["number"] > number
    assert third["id"] != first["id"]


ZONE_FOR_CHECKPOINTS = {"slug": "ck", "name": "Checkpointed", "country": "JP"}


def test_capacity_at_the_start_is_the_fleet_as_it_was_then(
    client: TestClient,
    admin: dict[str, str],
    settings: Settings,
    signer: Signer,
    conn: DbConnection,
) -> None:
    """A bill of materials verifies a declared server during the period: the first page
    says declared at the start and verified at the end, not today's status at both."""
    _post(client, admin, "/v1/zones", {"slug": "de", "name": "DE", "country": "DE"})
    _register(client, admin, NodeSpec("de-1", "de", "DE", 2, True))
    time.sleep(0.01)
    period_from = _now(conn)
    _verify_de1(client, admin)
    time.sleep(0.01)
    sc = Scenario(period_from, _now(conn), {}, [], [], "", "", 0.0)
    _, data, _ = _build(client, admin, settings, signer, sc, "sovereignty", "json")
    headline = {h["measure"]: (h["at_start"], h["at_end"]) for h in json.loads(data)["headline"]}
    assert headline["gpu_capacity_provenance_declared"] == (100.0, 0.0)
    assert headline["gpu_capacity_provenance_verified"] == (0.0, 100.0)
