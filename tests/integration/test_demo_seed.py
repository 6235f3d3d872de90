"""``sovctl demo seed``: idempotent demo data for ``make up``."""

import stat
from pathlib import Path

import pytest
import yaml

from control_plane.cli.demo import SIMULATED_ZONES, simulator_command
from control_plane.core.db import DbConnection
from tests.support import Run

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
    tokens = conn.execute("SELECT name FROM api_token WHERE revoked_at IS NULL").fetchall()
    assert sorted(t["name"] for t in tokens) == ["demo-admin", "demo-simulator"]


def test_simulator_command_spreads_over_the_demo_zones(tmp_path: Path) -> None:
    command = simulator_command(tmp_path / "simulator.yaml", 50)
    assert command is not None
    assert command[command.index("--nodes") + 1] == "50"
    assert command[command.index("--zones") + 1] == ",".join(SIMULATED_ZONES)
    assert simulator_command(tmp_path / "simulator.yaml", 0) is None
