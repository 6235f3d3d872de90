"""``sovctl demo seed``: idempotent demo data for ``make up``."""

import json
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient

from control_plane.access.models import Role
from control_plane.cli.demo import SIMULATED_ZONES, simulator_command
from control_plane.core.db import DbConnection
from tests.certificates import make_tls_files
from tests.support import Run, bearer, registration

pytestmark = pytest.mark.integration


def test_seed_twice_creates_once(
    sovctl: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, conn: DbConnection
) -> None:
    monkeypatch.setenv("SOVEREIGN_STATE_DIR", str(tmp_path / "state"))
    code, out, _ = sovctl("demo", "seed", "--port", "18080")
    assert code == 0
    assert "shown once" in out
    assert "demo zones created: jp, jp-east, jp-west, tw-north, us-east" in out
    token_file = tmp_path / "state/admin.token"
    assert token_file.read_text().strip() in out
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600

    config_file = tmp_path / "state/simulator.yaml"
    config = yaml.safe_load(config_file.read_text())
    assert config["control_plane"]["url"] == "http://127.0.0.1:18080"
    assert config["control_plane"]["bootstrap_token"].startswith("sov_")
    assert stat.S_IMODE(config_file.stat().st_mode) == 0o600

    code, out, _ = sovctl("demo", "seed", "--port", "18080")
    assert code == 0
    assert "exists" in out
    assert "zones created" not in out
    tokens = conn.execute(
        "SELECT name, zone_slug FROM api_token WHERE revoked_at IS NULL"
    ).fetchall()
    # The simulator's zones each have a token scoped to them, so its nodes are confirmed.
    assert sorted((t["name"], t["zone_slug"]) for t in tokens) == sorted(
        [("demo-admin", None), ("demo-simulator", None)]
        + [(f"demo-simulator-{zone}", zone) for zone in SIMULATED_ZONES]
    )


def test_with_tls_the_simulator_is_told_https_and_its_ca(
    sovctl: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = make_tls_files(tmp_path / "tls")
    monkeypatch.setenv("SOVEREIGN_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("SOVEREIGN_TLS_CERT_FILE", str(files.cert))
    monkeypatch.setenv("SOVEREIGN_TLS_KEY_FILE", str(files.key))
    code, _, err = sovctl("demo", "seed", "--port", "18443", "--ca-bundle", str(files.ca_cert))
    assert code == 0, err
    config = yaml.safe_load((tmp_path / "state/simulator.yaml").read_text())
    assert config["control_plane"]["url"] == "https://127.0.0.1:18443"
    assert config["control_plane"]["ca_bundle"] == str(files.ca_cert)


def test_simulator_command_spreads_over_the_demo_zones(tmp_path: Path) -> None:
    command = simulator_command(tmp_path / "simulator.yaml", 50)
    assert command is not None
    assert command[command.index("--nodes") + 1] == "50"
    assert command[command.index("--zones") + 1] == ",".join(SIMULATED_ZONES)
    given = [command[i + 1] for i, part in enumerate(command) if part == "--zone-token"]
    assert given == [f"{zone}={tmp_path}/simulator-{zone}.token" for zone in SIMULATED_ZONES]
    assert simulator_command(tmp_path / "simulator.yaml", 0) is None


def test_seed_approves_simulated_nodes_whose_state_is_gone(
    sovctl: Run,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    conn: DbConnection,
    client: TestClient,
    make_token: Callable[[Role], str],
) -> None:
    # Two simulated nodes registered earlier; only sim-0001's agent state survives.
    monkeypatch.setenv("SOVEREIGN_STATE_DIR", str(tmp_path / "state"))
    bootstrap = bearer(make_token(Role.BOOTSTRAP))
    for n, hostname in enumerate(("sim-0000", "sim-0001", "real-01")):
        body = registration(
            hostname=hostname, gpu_uuids=(f"GPU-00000000-0000-0000-0000-00000000000{n}",)
        )
        if hostname.startswith("sim"):
            body["labels"] = {"simulated": "true"}
        response = client.post("/v1/agents/register", json=body, headers=bootstrap)
        assert response.status_code == 201, response.text
    kept = tmp_path / "state/simulator/sim-0001/credential.json"
    kept.parent.mkdir(parents=True)
    kept.write_text(json.dumps({"control_plane_url": "http://127.0.0.1:18080"}))

    code, out, _ = sovctl("demo", "seed", "--port", "18080")
    assert code == 0
    assert "approved to register again: 1" in out
    approved = conn.execute(
        "SELECT n.hostname FROM node_replacement_approval a JOIN node n ON n.id = a.node_id"
    ).fetchall()
    assert [row["hostname"] for row in approved] == ["sim-0000"]
