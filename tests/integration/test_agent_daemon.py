"""The agent's real code against the real API: registration, heartbeats, spool, backoff, MIG."""

import dataclasses
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agents.backends.base import BackendUnavailableError, GpuBackend
from agents.backends.nvml import NvmlBackend
from agents.backends.replay import ReplayBackend
from agents.client import ControlPlaneClient
from agents.config import AgentConfig
from agents.daemon import Agent
from agents.metrics import AgentMetrics
from agents.protocol import to_wire
from control_plane.access.models import Role
from control_plane.core.settings import Settings
from tests.support import api_in_thread, bearer, free_port
from tests.unit.agent.fake_pynvml import FakeNvml

pytestmark = pytest.mark.integration

RECORDING = Path(__file__).resolve().parents[1] / "fixtures/gpu/h100-80gb-hbm3"
A100_MIG = RECORDING.parent / "nvidia-smi/v12-a100-sxm4-80gb-mig.xml"
MIB = 2**20


class Clock:
    """A clock the test moves by hand, so backoff is observable without sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def make_agent(
    live_server: str, make_token: Callable[[Role], str], tmp_path: Path
) -> Iterator[Callable[..., Agent]]:
    bootstrap = make_token(Role.BOOTSTRAP)
    made: list[Agent] = []

    def make(
        variant: int = 0,
        clock: Clock | None = None,
        backend: GpuBackend | None = None,
        **overrides: Any,
    ) -> Agent:
        settings: dict[str, Any] = {
            "control_plane_url": live_server,
            "bootstrap_token": bootstrap,
            "state_dir": tmp_path / "state",
            "origin_country": "TW",
        }
        config = AgentConfig(**{**settings, **overrides})
        empty_root = tmp_path / "root"
        empty_root.mkdir(exist_ok=True)
        agent = Agent(
            config,
            backend or ReplayBackend(RECORDING, variant=variant),
            ControlPlaneClient(live_server),
            hostname="h100-vm",
            host_root=empty_root,
            clock=clock or Clock(),
        )
        made.append(agent)
        return agent

    yield make
    for agent in made:
        agent.close()


def use_client(agent: Agent, client: ControlPlaneClient) -> ControlPlaneClient:
    """Point the agent at another control plane; return the previous client (closed)."""
    previous = agent.client
    previous.close()
    agent.client = client
    return previous


def node(live_server: str, headers: dict[str, str], node_id: str) -> dict[str, Any]:
    response = httpx.get(f"{live_server}/v1/nodes/{node_id}", headers=headers)
    assert response.status_code == 200, response.text
    detail: dict[str, Any] = response.json()
    return detail


def test_register_heartbeat_and_restart(
    make_agent: Callable[..., Agent],
    live_server: str,
    make_token: Callable[[Role], str],
) -> None:
    admin = bearer(make_token(Role.ADMIN))
    agent = make_agent()
    first = agent.sweep()
    assert "inventory" in first  # nothing sent yet: the inventory goes with the first beat
    agent.deliver(first)
    assert agent.credential is not None
    credential_file = agent.state_dir / "credential.json"
    assert stat.S_IMODE(credential_file.stat().st_mode) == 0o600
    second = agent.sweep()
    assert "inventory" not in second  # unchanged since registration
    agent.deliver(second)

    detail = node(live_server, admin, agent.credential["node_id"])
    assert detail["hostname"] == "h100-vm"
    assert detail["last_heartbeat_seq"] == 2
    assert detail["provenance"]["origin_country"] == "TW"
    (gpu,) = detail["gpus"]
    assert gpu["uuid"] == agent.statics[0].uuid
    assert gpu["model"] == "NVIDIA H100 80GB HBM3"
    assert gpu["temperature_c"] == 35.0
    assert gpu["memory_total_bytes"] == 85520809984

    # A restart reuses the credential and continues the sequence: no second node.
    restarted = make_agent()
    assert restarted.credential == agent.credential
    restarted.deliver(restarted.sweep())
    assert node(live_server, admin, agent.credential["node_id"])["last_heartbeat_seq"] == 3
    nodes = httpx.get(f"{live_server}/v1/nodes", headers=admin).json()
    assert nodes["total"] == 1


def test_outage_spools_then_replays_in_order(
    make_agent: Callable[..., Agent],
    live_server: str,
    make_token: Callable[[Role], str],
) -> None:
    admin = bearer(make_token(Role.ADMIN))
    clock = Clock()
    agent = make_agent(clock=clock, backoff_max_seconds=30.0)
    agent.deliver(agent.sweep())
    assert agent.credential is not None
    reachable = use_client(agent, ControlPlaneClient(f"http://127.0.0.1:{free_port()}", timeout=1))
    for _ in range(5):
        clock.now += 10
        agent.deliver(agent.sweep())
    assert len(agent.spool) == 5
    assert node(live_server, admin, agent.credential["node_id"])["last_heartbeat_seq"] == 1

    use_client(agent, reachable)
    agent.deliver(agent.sweep())  # still backing off: queued behind the others
    assert len(agent.spool) == 6
    clock.now += 60  # past the capped backoff
    agent.drain()
    assert len(agent.spool) == 0
    assert node(live_server, admin, agent.credential["node_id"])["last_heartbeat_seq"] == 7


def test_backoff_grows_and_is_capped(make_agent: Callable[..., Agent]) -> None:
    clock = Clock()
    agent = make_agent(clock=clock, backoff_max_seconds=8.0)
    use_client(agent, ControlPlaneClient(f"http://127.0.0.1:{free_port()}", timeout=1))
    delays = []
    for _ in range(8):
        clock.now = agent._next_attempt
        before = clock.now
        agent.deliver(agent.sweep())
        delays.append(agent._next_attempt - before)
    assert all(0.5 <= d <= 1.0 for d in delays[:1])
    assert delays[3] > delays[0]
    assert max(delays) <= 8.0
    assert len(agent.spool) == 8


def test_a_lost_credential_waits_for_an_admins_approval(
    make_agent: Callable[..., Agent],
    live_server: str,
    make_token: Callable[[Role], str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    admin = bearer(make_token(Role.ADMIN))
    clock = Clock()
    agent = make_agent(clock=clock, backoff_max_seconds=30.0)
    agent.deliver(agent.sweep())
    assert agent.credential is not None
    node_id = agent.credential["node_id"]
    agent.credential["token"] = "sov_revoked"  # the server no longer knows this one
    # The bootstrap token alone may not take over a known machine id: a clear error, the
    # heartbeat kept in the spool, and registration retried with backoff, not a crash.
    agent.deliver(agent.sweep())
    assert agent.credential is None
    assert len(agent.spool) == 1
    assert "an admin must approve a replacement" in caplog.text
    assert "sovctl nodes approve-replacement" in caplog.text
    approved = httpx.post(f"{live_server}/v1/nodes/{node_id}/replacement", headers=admin)
    assert approved.status_code == 201, approved.text
    clock.now += 60  # past the capped backoff
    agent.drain()
    assert agent.credential is not None
    assert agent.credential["node_id"] == node_id
    assert len(agent.spool) == 0
    assert node(live_server, admin, node_id)["last_heartbeat_seq"] == 2


def test_an_agent_registers_again_with_its_own_credential(
    make_agent: Callable[..., Agent],
    live_server: str,
    make_token: Callable[[Role], str],
) -> None:
    agent = make_agent()
    agent.deliver(agent.sweep())
    assert agent.credential is not None
    old = dict(agent.credential)
    # No bootstrap token needed: the node proves who it is with its credential.
    agent.config = dataclasses.replace(agent.config, bootstrap_token=None)
    agent.register()
    assert agent.credential["node_id"] == old["node_id"]
    assert agent.credential["token"] != old["token"]
    agent.deliver(agent.sweep())
    assert len(agent.spool) == 0
    admin = bearer(make_token(Role.ADMIN))
    # The server restarted its sequence at 0; the agent simply continues with its own.
    assert node(live_server, admin, old["node_id"])["last_heartbeat_seq"] == 2


def test_without_a_bootstrap_token_heartbeats_wait_in_the_spool(
    make_agent: Callable[..., Agent],
) -> None:
    agent = make_agent(bootstrap_token=None)
    agent.deliver(agent.sweep())
    assert agent.credential is None
    assert len(agent.spool) == 1


def test_a_lost_sequence_file_resumes_after_the_spool(make_agent: Callable[..., Agent]) -> None:
    agent = make_agent()
    use_client(agent, ControlPlaneClient(f"http://127.0.0.1:{free_port()}", timeout=1))
    for _ in range(3):
        agent.deliver(agent.sweep())
    (agent.state_dir / "seq").unlink()
    restarted = make_agent()
    assert restarted.sweep()["seq"] == 4  # never reuses a number still waiting to be sent


class FlakyBackend(ReplayBackend):
    """A recording whose telemetry read fails once, like an nvidia-smi timeout."""

    failures = 1

    def telemetry(self) -> list[Any]:
        if self.failures:
            self.failures -= 1
            raise BackendUnavailableError("nvidia-smi timed out")
        return super().telemetry()


def test_a_failed_telemetry_read_is_a_gap_not_a_stop(
    make_agent: Callable[..., Agent],
    live_server: str,
    make_token: Callable[[Role], str],
) -> None:
    agent = make_agent()
    agent.backend = FlakyBackend(RECORDING, variant=0)
    first = agent.sweep()
    assert first["telemetry"] == []
    agent.deliver(first)
    agent.deliver(agent.sweep())
    assert agent.credential is not None
    detail = node(live_server, bearer(make_token(Role.ADMIN)), agent.credential["node_id"])
    assert detail["last_heartbeat_seq"] == 2
    assert detail["gpus"][0]["temperature_c"] == 35.0


def test_the_control_planes_interval_is_adopted(make_agent: Callable[..., Agent]) -> None:
    agent = make_agent(sweep_interval_seconds=60.0)
    agent.deliver(agent.sweep())
    assert agent.interval == 10.0  # the control plane's default heartbeat interval


def test_spooled_and_sent_heartbeats_are_counted(make_agent: Callable[..., Agent]) -> None:
    agent = make_agent()
    agent.metrics = AgentMetrics(node="h100-vm")
    agent.deliver(agent.sweep())
    use_client(agent, ControlPlaneClient(f"http://127.0.0.1:{free_port()}", timeout=1))
    agent.deliver(agent.sweep())
    agent.deliver(agent.sweep())
    text = agent.metrics.render().decode()
    assert 'sovereign_agent_heartbeats_total{outcome="sent"} 1.0' in text
    assert 'sovereign_agent_heartbeats_total{outcome="spooled"} 2.0' in text
    assert "sovereign_agent_spool_depth 2.0" in text


def test_a_lost_sequence_catches_up_from_the_control_plane(
    make_agent: Callable[..., Agent],
    live_server: str,
    make_token: Callable[[Role], str],
) -> None:
    agent = make_agent()
    for _ in range(5):
        agent.deliver(agent.sweep())
    assert agent.credential is not None
    agent.close()
    (agent.state_dir / "seq").unlink()  # lost, with nothing in the spool to recover from
    restarted = make_agent()
    restarted.deliver(restarted.sweep())  # seq 1: a duplicate, answered with last_seq 5
    assert restarted.seq == 5
    restarted.deliver(restarted.sweep())
    admin = bearer(make_token(Role.ADMIN))
    assert node(live_server, admin, agent.credential["node_id"])["last_heartbeat_seq"] == 6
    assert int((agent.state_dir / "seq").read_text()) == 6


@pytest.fixture
def quick_to_hang_up_server(settings: Settings) -> Iterator[str]:
    """The real API, closing keep-alive connections after 1 s idle (uvicorn's default: 5 s)."""
    with api_in_thread(settings, timeout_keep_alive=1) as base:
        yield base


def test_a_keep_alive_connection_the_control_plane_closed_is_not_an_outage(
    make_agent: Callable[..., Agent], quick_to_hang_up_server: str
) -> None:
    # Sweeping less often than the server keeps idle connections (the defaults: 10 s and
    # 5 s) must not spool every heartbeat: the client resends on a new connection.
    agent = make_agent()
    use_client(agent, ControlPlaneClient(quick_to_hang_up_server))
    agent.metrics = AgentMetrics(node="h100-vm")
    agent.deliver(agent.sweep())
    for _ in range(2):
        time.sleep(1.5)  # the server hangs up meanwhile
        agent.deliver(agent.sweep())
    assert len(agent.spool) == 0
    assert agent._failures == 0
    text = agent.metrics.render().decode()
    assert 'sovereign_agent_heartbeats_total{outcome="sent"} 3.0' in text


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        pytest.param(
            lambda: ReplayBackend(A100_MIG),
            # nvidia-smi -q -x names neither the profile nor the UUID of a MIG device.
            [
                (0, None, None, 1, 0, 40192 * MIB),
                (1, None, None, 5, 0, 19968 * MIB),
                (2, None, None, 13, 0, 9728 * MIB),
            ],
            id="a100-mig-capture",
        ),
        pytest.param(
            lambda: NvmlBackend(FakeNvml(mig={0: ["3g.40gb", "2g.20gb", "1g.10gb"]})),
            [
                (0, "MIG-", "3g.40gb", 1, 0, 42412802048),
                (1, "MIG-", "2g.20gb", 2, 0, 21066814587),
                (2, "MIG-", "1g.10gb", 3, 0, 10468982784),
            ],
            id="h100-mig-nvml-double",
        ),
    ],
)
def test_a_mig_enabled_gpu_shows_its_mig_devices(
    make_agent: Callable[..., Agent],
    live_server: str,
    make_token: Callable[[Role], str],
    source: Callable[[], GpuBackend],
    expected: list[tuple[object, ...]],
) -> None:
    agent = make_agent(backend=source())
    agent.deliver(agent.sweep())
    assert agent.credential is not None
    (gpu,) = node(live_server, bearer(make_token(Role.ADMIN)), agent.credential["node_id"])["gpus"]
    reported = to_wire(agent.inventory().gpus[0])
    # Every fact shown as the agent reported it; a MIG device also says booked and missing.
    devices = [
        {**device, "booked": False, "missing_since": None} for device in reported["mig_devices"]
    ]
    assert gpu == {**gpu, **reported, "mig_devices": devices}
    assert gpu["mig_mode"] == "enabled"
    shown = [
        (
            d["index"],
            d["uuid"] and d["uuid"][:4],
            d["profile"],
            d["gpu_instance_id"],
            d["compute_instance_id"],
            d["memory_total_bytes"],
        )
        for d in gpu["mig_devices"]
    ]
    assert shown == expected
