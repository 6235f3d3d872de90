"""A real agent process against a real control plane that goes away for a minute.

The agent keeps sweeping every second while the API is down, spools what it cannot send,
and replays it oldest first when the API is back. The control plane counts heartbeats it
accepts and drops repeated sequence numbers, so "received == sent" and "last seq == the
agent's seq" together mean every heartbeat arrived exactly once, in order. Restarting the
agent with other GPUs (same host) then shows identity drift and quarantine.
"""

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from control_plane.access.models import Role
from control_plane.core.settings import Settings
from tests.support import SOVCTL, MakeBootstrap, bearer, free_port, subprocess_env, wait_until_ready

pytestmark = pytest.mark.e2e

RECORDING = Path(__file__).resolve().parents[1] / "fixtures/gpu/h100-80gb-hbm3"
OUTAGE_SECONDS = 60


class ControlPlane:
    """``sovctl serve`` as a separate process that can be stopped and started again."""

    def __init__(self, settings: Settings, log: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.settings = settings
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [*SOVCTL, "serve", "--port", str(self.port)],
                env=subprocess_env(self.settings),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        wait_until_ready(f"{self.url}/readyz", process=self.process)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=20)


@pytest.fixture
def control_plane(settings: Settings, tmp_path: Path) -> Iterator[ControlPlane]:
    plane = ControlPlane(settings, tmp_path / "api.log")
    plane.start()
    yield plane
    plane.stop()


def start_agent(
    plane: ControlPlane, bootstrap: str, state_dir: Path, log: Path, replay: Path
) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOVEREIGN_")}
    env.update({"SOVEREIGN_AGENT_BACKOFF_MAX_SECONDS": "4", "PYTHONUNBUFFERED": "1"})
    with log.open("ab") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "agents",
                "run",
                "--config",
                str(state_dir / "none.yaml"),
                "--control-plane",
                plane.url,
                "--bootstrap-token",
                bootstrap,
                "--backend",
                "replay",
                "--replay",
                str(replay),
                "--interval",
                "1",
                "--state-dir",
                str(state_dir),
                "--metrics-port",
                str(free_port()),
                "--origin-country",
                "TW",
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def only_node(plane: ControlPlane, headers: dict[str, str]) -> dict[str, Any]:
    page = httpx.get(f"{plane.url}/v1/nodes", headers=headers, timeout=10).json()
    assert page["total"] <= 1
    return page["items"][0] if page["items"] else {}


def test_outage_replay_and_drift(
    control_plane: ControlPlane,
    make_token: Callable[[Role], str],
    make_bootstrap: MakeBootstrap,
    tmp_path: Path,
) -> None:
    admin = bearer(make_token(Role.ADMIN))
    # The rack's token is scoped to its zone, so the node stands there, confirmed, active.
    bootstrap = make_bootstrap()
    state_dir = tmp_path / "agent"
    state_dir.mkdir()
    (state_dir / "none.yaml").write_text("version: v1\n")
    agent_log = tmp_path / "agent.log"
    agent = start_agent(control_plane, bootstrap, state_dir, agent_log, RECORDING)
    try:
        wait_for(
            lambda: only_node(control_plane, admin).get("heartbeats_received", 0) >= 3,
            30,
            "the agent to register and send heartbeats",
        )

        control_plane.stop()
        time.sleep(OUTAGE_SECONDS)
        spooled = len(list((state_dir / "spool").glob("*.json")))
        assert spooled >= OUTAGE_SECONDS // 2, agent_log.read_text()[-2000:]
        control_plane.start()

        def caught_up() -> bool:
            sent = int((state_dir / "seq").read_text())
            node = only_node(control_plane, admin)
            return node["last_heartbeat_seq"] == sent and not list(
                (state_dir / "spool").glob("*.json")
            )

        wait_for(caught_up, 60, "the spool to drain")
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=20) == 0, "the agent must stop cleanly on SIGTERM"
        sent = int((state_dir / "seq").read_text())
        node = only_node(control_plane, admin)
        assert node["last_heartbeat_seq"] == sent
        assert node["heartbeats_received"] == sent, "each heartbeat arrives exactly once"
        assert node["status"] == "active"
        assert "stopped" in agent_log.read_text()

        # Same host, another GPU: the node drifts and leaves placement until acknowledged.
        swapped = tmp_path / "swapped"
        swapped.mkdir()
        dump = json.loads((RECORDING / "nvml-dump.json").read_text())
        dump["devices"][0]["uuid"] = "GPU-11111111-2222-3333-4444-555555555555"
        (swapped / "nvml-dump.json").write_text(json.dumps(dump))
        agent = start_agent(control_plane, bootstrap, state_dir, agent_log, swapped)
        wait_for(
            lambda: only_node(control_plane, admin)["drift"]["status"] == "drifted",
            30,
            "identity drift to be detected",
        )
        node = only_node(control_plane, admin)
        assert node["status"] == "quarantined"
        events = httpx.get(
            f"{control_plane.url}/v1/audit/events",
            headers=admin,
            params={"action": "node.drift_detected"},
        ).json()
        assert events["total"] == 1
        assert "GPU-11111111-2222-3333-4444-555555555555" in json.dumps(events["items"][0])
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
