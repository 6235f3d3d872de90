"""Provenance from a bill of materials: BOM rows checked against what the agents read."""

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2
import pytest
from fastapi.testclient import TestClient

from control_plane.access.models import Role
from control_plane.audit import service as audit
from control_plane.core.db import DbConnection
from control_plane.provenance import bom
from tests.support import Run, bearer, registration

pytestmark = pytest.mark.integration

# The recorded H100 (tests/fixtures/gpu/h100-80gb-hbm3) and boards like it.
H100_PART = "965-2G520-0100-001"
GPU_A, SERIAL_A = "GPU-29b79b44-4926-3788-174b-399b5b491b55", "1654525039369"
GPU_B, SERIAL_B = "GPU-7d3e1c52-90aa-4f6b-b1d2-5e8f0c4a9b17", "1654525039412"
GPU_C, SERIAL_C = "GPU-c04f9e21-6b7d-4a35-8e19-2f6a7b8c9d03", "1654525040077"
SYSTEM_A, SYSTEM_B = "S452938X3A11720", "S452938X3A11721"

HEADER = "system_serial,asset_tag,component,serial,part_number,origin_country"


def server_rows(
    system_serial: str, asset_tag: str, gpu_serials: tuple[str, ...], system_origin: str = "US"
) -> list[str]:
    """A Supermicro 8U HGX server as procurement lists it: chassis, GPUs, CPU, board, NIC."""
    return [
        f"{system_serial},{asset_tag},system,,SYS-821GE-TNHR,{system_origin}",
        *(f"{system_serial},{asset_tag},gpu,{s},{H100_PART},TW" for s in gpu_serials),
        f"{system_serial},{asset_tag},cpu,,PK8071305072902,MY",
        f"{system_serial},{asset_tag},board,,X13DEG-OAD,TW",
        f"{system_serial},{asset_tag},nic,,MCX75310AAS-NEAT,IL",
    ]


def csv_text(*rows: str) -> str:
    return "\n".join([HEADER, *rows]) + "\n"


def register(
    client: TestClient,
    admin: dict[str, str],
    hostname: str,
    system_serial: str | None,
    gpus: tuple[tuple[str, str | None], ...],
    **kwargs: Any,
) -> str:
    body = registration(hostname=hostname, gpu_uuids=tuple(u for u, _ in gpus), **kwargs)
    body["inventory"]["host"].update(
        system_serial=system_serial,
        system_manufacturer="Supermicro",
        system_model="SYS-821GE-TNHR",
    )
    for gpu, (_, serial) in zip(body["inventory"]["gpus"], gpus, strict=True):
        gpu["serial"] = serial
    response = client.post("/v1/agents/register", json=body, headers=admin)
    assert response.status_code == 201, response.text
    node_id: str = response.json()["node_id"]
    return node_id


@pytest.fixture
def node_a(client: TestClient, admin: dict[str, str]) -> str:
    """Nothing declared; the agent read the system serial and both GPU serials."""
    return register(client, admin, "gpu-a", SYSTEM_A, ((GPU_A, SERIAL_A), (GPU_B, SERIAL_B)))


def import_csv(client: TestClient, headers: dict[str, str], text: str) -> httpx2.Response:
    rows = [r.model_dump(mode="json") for r in bom.parse_csv(text)]
    return client.post(
        "/v1/provenance/imports", json={"name": "po-2291.csv", "rows": rows}, headers=headers
    )


def checks_of(server: dict[str, Any]) -> list[tuple[str, Any, Any, str]]:
    return [(c["check"], c["expected"], c["observed"], c["result"]) for c in server["checks"]]


def test_a_bom_the_readings_confirm_verifies_the_node(
    client: TestClient, admin: dict[str, str], node_a: str, conn: DbConnection
) -> None:
    response = import_csv(
        client, admin, csv_text(*server_rows(SYSTEM_A, "AT-00417", (SERIAL_A, SERIAL_B)))
    )
    assert response.status_code == 200, response.text
    result = response.json()
    [server] = result["servers"]
    assert server == {
        **server,
        "system_serial": SYSTEM_A,
        "asset_tag": "AT-00417",
        "status": "verified",
        "node_id": node_a,
        "hostname": "gpu-a",
        "matched_by": "system_serial",
        "reason": None,
    }
    assert checks_of(server) == [
        ("system_serial", SYSTEM_A, SYSTEM_A, "match"),
        ("gpu_count", 2, 2, "match"),
        ("gpu_serial", SERIAL_A, SERIAL_A, "match"),
        ("gpu_serial", SERIAL_B, SERIAL_B, "match"),
        ("origin_country", "US", None, "unverifiable"),
        ("component_origins.gpu", "TW", None, "unverifiable"),
        ("component_origins.cpu", "MY", None, "unverifiable"),
        ("component_origins.board", "TW", None, "unverifiable"),
        ("component_origins.nic", "IL", None, "unverifiable"),
    ]
    provenance = client.get(f"/v1/nodes/{node_a}", headers=admin).json()["provenance"]
    assert provenance["status"] == "verified"
    # Nothing was declared, so the BOM's origins are adopted.
    assert provenance["origin_country"] == "US"
    assert provenance["component_origins"] == {"gpu": "TW", "cpu": "MY", "board": "TW", "nic": "IL"}
    evidence = provenance["evidence"]
    assert evidence["source"] == "bom-import"
    assert evidence["import_id"] == result["import_id"]
    assert evidence["bom_name"] == "po-2291.csv"
    assert evidence["checks"] == server["checks"]
    [event] = audit.list_events(conn, object_id=node_a, action="node.provenance_checked").items
    assert event.before["status"] == "unknown"
    assert event.before["origin_country"] is None
    assert event.after == provenance
    assert audit.verify_chain(conn).ok


def test_a_gpu_serial_the_agent_did_not_read_is_a_mismatch(
    client: TestClient, admin: dict[str, str], node_a: str
) -> None:
    text = csv_text(*server_rows(SYSTEM_A, "AT-00417", (SERIAL_A, "1654525039999")))
    [server] = import_csv(client, admin, text).json()["servers"]
    assert server["status"] == "mismatch"
    gpu_checks = [c for c in checks_of(server) if c[0] == "gpu_serial"]
    assert gpu_checks == [
        ("gpu_serial", SERIAL_A, SERIAL_A, "match"),
        ("gpu_serial", "1654525039999", None, "mismatch"),
        ("gpu_serial", None, SERIAL_B, "mismatch"),
    ]
    provenance = client.get(f"/v1/nodes/{node_a}", headers=admin).json()["provenance"]
    assert provenance["status"] == "mismatch"
    assert provenance["evidence"]["checks"] == server["checks"]


def test_a_declared_origin_that_disagrees_is_a_mismatch_and_is_kept(
    client: TestClient, admin: dict[str, str], conn: DbConnection
) -> None:
    node_b = register(client, admin, "gpu-b", SYSTEM_B, ((GPU_C, SERIAL_C),), origin_country="JP")
    client.patch(
        f"/v1/nodes/{node_b}",
        json={"provenance": {"origin_country": "JP", "component_origins": {"gpu": "TW"}}},
        headers=admin,
    )
    [server] = import_csv(
        client, admin, csv_text(*server_rows(SYSTEM_B, "AT-00418", (SERIAL_C,)))
    ).json()["servers"]
    assert server["status"] == "mismatch"
    assert ("origin_country", "US", "JP", "mismatch") in checks_of(server)
    assert ("component_origins.gpu", "TW", "TW", "match") in checks_of(server)
    assert ("gpu_serial", SERIAL_C, SERIAL_C, "match") in checks_of(server)
    provenance = client.get(f"/v1/nodes/{node_b}", headers=admin).json()["provenance"]
    assert provenance["status"] == "mismatch"
    # Declared values are not overwritten; classes nobody declared are filled in.
    assert provenance["origin_country"] == "JP"
    assert provenance["component_origins"] == {"gpu": "TW", "cpu": "MY", "board": "TW", "nic": "IL"}
    [event] = audit.list_events(conn, object_id=node_b, action="node.provenance_checked").items
    assert event.before["status"] == "declared"
    assert event.after["status"] == "mismatch"


def test_a_server_is_matched_by_asset_tag_when_no_serial_matches(
    client: TestClient, admin: dict[str, str]
) -> None:
    # A VM-like host: DMI gives no system serial, but the admin declared the asset tag.
    node = register(
        client,
        admin,
        "gpu-c",
        None,
        ((GPU_C, SERIAL_C),),
        provenance={"asset_tag": "AT-00533"},
    )
    [server] = import_csv(
        client, admin, csv_text(*server_rows(SYSTEM_B, "AT-00533", (SERIAL_C,)))
    ).json()["servers"]
    assert (server["node_id"], server["matched_by"]) == (node, "asset_tag")
    assert ("system_serial", SYSTEM_B, None, "unverifiable") in checks_of(server)
    assert server["status"] == "verified"


def test_a_bom_nothing_read_can_confirm_leaves_the_node_alone(
    client: TestClient, admin: dict[str, str], conn: DbConnection
) -> None:
    # No system serial and no GPU serial read; the BOM lists no serials either.
    node = register(
        client,
        admin,
        "gpu-d",
        None,
        ((GPU_C, None),),
        provenance={"origin_country": "US", "asset_tag": "AT-00534"},
    )
    text = csv_text(",AT-00534,system,,SYS-821GE-TNHR,US", f",AT-00534,gpu,,{H100_PART},TW")
    [server] = import_csv(client, admin, text).json()["servers"]
    assert server["status"] == "unverifiable"
    assert checks_of(server) == [
        ("gpu_count", 1, 1, "match"),
        ("origin_country", "US", "US", "match"),
        ("component_origins.gpu", "TW", None, "unverifiable"),
    ]
    provenance = client.get(f"/v1/nodes/{node}", headers=admin).json()["provenance"]
    assert provenance["status"] == "declared"
    assert provenance["evidence"]["source"] == "agent-config"
    assert audit.list_events(conn, action="node.provenance_checked").total == 0


def test_an_unmatched_server_is_reported_and_changes_nothing(
    client: TestClient, admin: dict[str, str], node_a: str, conn: DbConnection
) -> None:
    before = audit.list_events(conn).total
    text = csv_text(
        *server_rows("S452938X3A19999", "AT-09999", (SERIAL_A,)),
        *server_rows(SYSTEM_A, "AT-00417", (SERIAL_A, SERIAL_B)),
    )
    servers = import_csv(client, admin, text).json()["servers"]
    assert [s["status"] for s in servers] == ["unmatched", "verified"]
    assert servers[0]["node_id"] is None
    assert servers[0]["checks"] == []
    assert servers[0]["reason"] == (
        "no node has system serial S452938X3A19999; no node has asset tag AT-09999"
    )
    assert audit.list_events(conn).total == before + 1


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"origin_country": "XX"}, "rows.2.origin_country", "ISO 3166-1"),
        ({"origin_country": None}, "rows.2.origin_country", ""),
        ({"component": "psu"}, "rows.2.component", "'system'"),
        ({"system_serial": None, "asset_tag": None}, "rows.2", "system_serial or an asset_tag"),
        ({"asset_tag": "AT-99999"}, "rows.2.asset_tag", "AT-00417"),
        ({"component": "system"}, "rows.2.component", "second system row"),
        ({"serial": SERIAL_B}, "rows.2.serial", "listed twice"),
    ],
)
def test_a_bad_row_is_422_naming_the_row_and_field(
    client: TestClient,
    admin: dict[str, str],
    node_a: str,
    conn: DbConnection,
    change: dict[str, Any],
    field: str,
    words: str,
) -> None:
    server = {"system_serial": SYSTEM_A, "asset_tag": "AT-00417", "origin_country": "TW"}
    rows: list[dict[str, Any]] = [
        {**server, "component": "system", "origin_country": "US"},
        {**server, "component": "gpu", "serial": SERIAL_B},
        {**server, "component": "gpu", "serial": SERIAL_A, **change},
    ]
    before = audit.list_events(conn).total
    response = client.post("/v1/provenance/imports", json={"rows": rows}, headers=admin)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_input"
    assert [f["field"] for f in error["details"]["fields"]] == [field]
    assert field in error["message"]
    assert words in error["message"]
    assert audit.list_events(conn).total == before


@pytest.mark.parametrize("role", [Role.AUDITOR, Role.OPERATOR, Role.BOOTSTRAP])
def test_only_admins_may_import(
    client: TestClient, make_token: Callable[[Role], str], node_a: str, role: Role
) -> None:
    text = csv_text(*server_rows(SYSTEM_A, "AT-00417", (SERIAL_A, SERIAL_B)))
    response = import_csv(client, bearer(make_token(role)), text)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "permission_denied"


# -- sovctl provenance import ----------------------------------------------------------------


@pytest.fixture
def api_env(live_server: str, admin: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOVCTL_URL", live_server)
    monkeypatch.setenv("SOVCTL_TOKEN", admin["Authorization"].removeprefix("Bearer "))


def test_import_from_the_cli(
    sovctl: Run,
    api_env: None,
    client: TestClient,
    admin: dict[str, str],
    node_a: str,
    tmp_path: Path,
) -> None:
    path = tmp_path / "po-2291.csv"
    path.write_text(
        csv_text(
            *server_rows(SYSTEM_A, "AT-00417", (SERIAL_A, "1654525039999")),
            "",
            *server_rows("S452938X3A19999", "AT-09999", ()),
        ),
        encoding="utf-8-sig",  # as spreadsheets save it
    )
    code, out, err = sovctl("provenance", "import", str(path))
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["SYSTEM_SERIAL", "ASSET_TAG", "HOSTNAME", "STATUS", "DETAIL"]
    assert "mismatch: gpu_serial" in lines[1]
    assert "gpu-a" in lines[1]
    assert "unmatched" in lines[2]
    assert "no node has system serial S452938X3A19999" in lines[2]
    assert (
        client.get(f"/v1/nodes/{node_a}", headers=admin).json()["provenance"]["evidence"][
            "bom_name"
        ]
        == "po-2291.csv"
    )


@pytest.mark.parametrize(
    ("rows", "words"),
    [
        ([f"{SYSTEM_A},AT-00417,gpu,{SERIAL_A},{H100_PART},XX"], "line 4, origin_country"),
        ([f"{SYSTEM_A},AT-00417,gpu,{SERIAL_A},TW"], "line 4: expected 6 fields, found 5"),
        ([f"{SYSTEM_A},AT-00417,fpga,,,TW"], "line 4, component"),
        ([",,gpu,,,TW"], "line 4: a row needs a system_serial or an asset_tag"),
        ([f"{SYSTEM_A},AT-00999,gpu,,,TW"], "line 4, asset_tag"),
        ([f'{SYSTEM_A},AT-00417,gpu,"{SERIAL_A},,TW'], "not valid CSV"),
    ],
)
def test_a_bad_csv_names_the_line(sovctl: Run, tmp_path: Path, rows: list[str], words: str) -> None:
    path = tmp_path / "bom.csv"
    path.write_text(
        csv_text(
            f"{SYSTEM_A},AT-00417,system,,SYS-821GE-TNHR,US",
            f"{SYSTEM_A},AT-00417,gpu,{SERIAL_B},{H100_PART},TW",
            *rows,
        )
    )
    code, _, err = sovctl("provenance", "import", str(path))
    assert code == 1
    assert err.startswith(f"error: {path}: ")
    assert words in err


def test_a_bad_header_or_an_empty_file_is_refused(sovctl: Run, tmp_path: Path) -> None:
    path = tmp_path / "bom.csv"
    path.write_text("serial,country\nS1,US\n")
    code, _, err = sovctl("provenance", "import", str(path))
    assert code == 1
    assert "line 1: the header must name the columns" in err
    path.write_text(HEADER + "\n\n")
    code, _, err = sovctl("provenance", "import", str(path))
    assert code == 1
    assert "no component rows" in err
    code, _, err = sovctl("provenance", "import", str(tmp_path / "missing.csv"))
    assert code == 2
