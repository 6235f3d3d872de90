"""The agent ↔ control plane contract: the agent's bodies are what the server's models accept.

The wire protocol is written once, in ``agents/protocol.py``; the control plane checks it
with its own pydantic models. Three things keep the two from drifting apart:

- field by field, each protocol dataclass and its server model have the same fields, with
  the same types (up to the server's constraints), optionality, defaults and nesting, so
  a field added on one side only fails here;
- for every recorded GPU reading (the H100 recording through replay and the NVML test
  double, every ``nvidia-smi -q -x`` capture but the malformed one), the register and
  heartbeat bodies the real agent code puts on the wire validate against the server's
  models, and come back out of them unchanged (nothing dropped or rewritten);
- the agent's inventory hash equals the one the control plane computes for that body.
"""

import dataclasses
import functools
import json
import typing
from collections.abc import Callable, Iterator, Mapping
from enum import StrEnum
from pathlib import Path
from types import UnionType
from typing import Annotated, Any

import pytest
from pydantic import BaseModel

from agents import protocol
from agents.backends.base import GpuBackend
from agents.backends.nvidia_smi import NvidiaSmiBackend
from agents.backends.nvml import NvmlBackend
from agents.backends.replay import ReplayBackend
from agents.client import ControlPlaneClient, _Answer
from agents.config import AgentConfig
from agents.daemon import Agent
from control_plane.inventory import models
from control_plane.inventory.agents import inventory_hash
from tests.unit.agent.fake_pynvml import FakeNvml

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures/gpu"
H100 = FIXTURES / "h100-80gb-hbm3"
CAPTURES = sorted(
    path
    for path in (FIXTURES / "nvidia-smi").glob("*.xml")
    if not path.name.startswith("malformed-")
)

# -- the same fields on both sides --------------------------------------------------------

#: Every protocol type with the server model that checks it (the same name on both sides).
PAIRS = [
    (protocol.MigDevice, models.MigDevice),
    (protocol.GpuInventory, models.GpuInventory),
    (protocol.GpuTelemetry, models.GpuTelemetry),
    (protocol.HostFacts, models.HostFacts),
    (protocol.Inventory, models.Inventory),
    (protocol.DeclaredProvenance, models.DeclaredProvenance),
    (protocol.NodeRegister, models.NodeRegister),
    (protocol.Heartbeat, models.Heartbeat),
]
REQUIRED = "required"


def shape(hint: Any) -> Any:
    """A field type as JSON sees it: constraints dropped, arrays and objects alike.

    ``tuple[X, ...]`` (agent) and ``list[X]`` (server) are both a JSON array of X; a
    ``StrEnum`` key is a string; a nested type is known by its name.
    """
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Annotated:
        return shape(args[0])
    if origin in (typing.Union, UnionType):
        return frozenset(shape(arg) for arg in args)
    if origin in (tuple, list):
        return ("array of", shape(args[0]))
    if origin in (dict, Mapping):
        return ("object of", shape(args[0]), shape(args[1]))
    if isinstance(hint, type) and issubclass(hint, StrEnum):
        return str
    if isinstance(hint, type) and (dataclasses.is_dataclass(hint) or issubclass(hint, BaseModel)):
        return hint.__name__
    return hint


def default(value: object) -> object:
    """A default as the body shows it: empty collections alike, a nested object by type."""
    if isinstance(value, tuple | list | dict) and not value:
        return "empty"
    if dataclasses.is_dataclass(value) or isinstance(value, BaseModel):
        return f"{type(value).__name__}()"
    return value


def protocol_fields(cls: type) -> dict[str, tuple[Any, object]]:
    hints = typing.get_type_hints(cls)
    fields = {}
    for spec in dataclasses.fields(cls):
        if spec.default is not dataclasses.MISSING:
            value: object = default(spec.default)
        elif spec.default_factory is not dataclasses.MISSING:
            value = default(spec.default_factory())
        else:
            value = REQUIRED
        fields[spec.name] = (shape(hints[spec.name]), value)
    return fields


def server_fields(model: type[BaseModel]) -> dict[str, tuple[Any, object]]:
    return {
        name: (
            shape(info.annotation),
            REQUIRED
            if info.is_required()
            else default(info.get_default(call_default_factory=True)),
        )
        for name, info in model.model_fields.items()
    }


def test_every_protocol_type_has_its_server_model() -> None:
    declared = {
        value.__name__
        for value in vars(protocol).values()
        if isinstance(value, type)
        and dataclasses.is_dataclass(value)
        and value.__module__ == protocol.__name__
    }
    assert declared == {agent_type.__name__ for agent_type, _ in PAIRS}
    assert all(agent_type.__name__ == model.__name__ for agent_type, model in PAIRS)


@pytest.mark.parametrize(("agent_type", "model"), PAIRS, ids=[a.__name__ for a, _ in PAIRS])
def test_the_agent_and_the_server_have_the_same_fields(
    agent_type: type, model: type[BaseModel]
) -> None:
    assert protocol_fields(agent_type) == server_fields(model)


def test_the_server_shows_every_fact_the_agent_reports() -> None:
    """What is accepted and stored is also shown, or it would be dropped on the way out."""
    assert set(models.GpuInventory.model_fields) <= set(models.GpuPublic.model_fields)
    shown = set(models.NodePublic.model_fields) | set(models.Provenance.model_fields)
    assert set(models.HostFacts.model_fields) <= shown


# -- real bodies from real readings -------------------------------------------------------


class RecordingClient(ControlPlaneClient):
    """The agent's real HTTP client with the socket cut out: it keeps each body it sends.

    Registration is answered with a credential, heartbeats are accepted.
    """

    def __init__(self) -> None:
        super().__init__("http://127.0.0.1:9")
        self.sent: list[tuple[str, bytes]] = []

    def _exchange(self, request: bytes) -> _Answer:
        head, _, body = request.partition(b"\r\n\r\n")
        path = head.split(b" ", 2)[1].decode()
        self.sent.append((path, body))
        if path == "/v1/agents/register":
            answer = {"node_id": "node-1", "token": "sov_node", "heartbeat_interval_seconds": 10}
        else:
            answer = {"accepted": True, "duplicate": False, "last_seq": json.loads(body)["seq"]}
        return _Answer(200, "OK", json.dumps(answer).encode(), will_close=False)


SOURCES: dict[str, Callable[[], GpuBackend]] = {
    "h100-replay": lambda: ReplayBackend(H100),
    "h100-nvml-double": lambda: NvmlBackend(FakeNvml()),
    "h100-nvml-double-mig": lambda: NvmlBackend(
        FakeNvml(gpus=2, mig={0: ["3g.40gb", "2g.20gb", "1g.10gb"], 1: ["7g.80gb"]})
    ),
    "h100-nvidia-smi": lambda: NvidiaSmiBackend(xml_path=H100 / "nvidia-smi-q.xml"),
    **{
        f"nvidia-smi-{path.stem}": functools.partial(NvidiaSmiBackend, xml_path=path)
        for path in CAPTURES
    },
}


def write(root: Path, relative: str, text: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def host_root(tmp_path: Path) -> Path:
    """A bare-metal host's files, so every host fact is in the bodies."""
    root = tmp_path / "root"
    write(root, "etc/machine-id", "3d1219c7c4c5404aaa1f6d2a48adfda4\n")
    write(root, "etc/os-release", 'PRETTY_NAME="Ubuntu 24.04.1 LTS"\n')
    write(root, "proc/sys/kernel/osrelease", "6.8.0-49-generic\n")
    write(root, "proc/cpuinfo", "processor\t: 0\nmodel name\t: AMD EPYC 9454\n")
    write(root, "proc/meminfo", "MemTotal:       131899052 kB\n")
    dmi = {
        "sys_vendor": "Supermicro",
        "product_name": "AS -8125GS-TNHR",
        "product_serial": "S123456X4B01234",
        "board_vendor": "Supermicro",
        "board_name": "H13DSG-O-CPU",
        "chassis_asset_tag": "AT-00417",
    }
    for name, value in dmi.items():
        write(root, f"sys/class/dmi/id/{name}", value + "\n")
    return root


@dataclasses.dataclass
class Sent:
    """What one agent put on the wire: registration, first and second heartbeat."""

    agent: Agent
    register: bytes
    first: bytes
    second: bytes


@pytest.fixture(params=sorted(SOURCES))
def sent(request: pytest.FixtureRequest, tmp_path: Path, host_root: Path) -> Iterator[Sent]:
    """Run the agent over one source: register, then two sweeps delivered."""
    client = RecordingClient()
    config = AgentConfig(
        control_plane_url=client.base_url,
        bootstrap_token="sov_bootstrap",
        state_dir=tmp_path / "state",
        zone="jp-east",
        site="tokyo-dc1",
        origin_country="TW",
        component_origins={"gpu": "TW", "cpu": "US"},
        labels={"team": "research"},
        asset_tag="AT-00417",
        kubernetes_node_name="gpu-01.cluster.example",
    )
    agent = Agent(config, SOURCES[request.param](), client, hostname="gpu-01", host_root=host_root)
    try:
        agent.deliver(agent.sweep())
        agent.deliver(agent.sweep())
        paths = [path for path, _ in client.sent]
        assert paths == ["/v1/agents/register", *["/v1/nodes/node-1/heartbeat"] * 2]
        yield Sent(agent, *(body for _, body in client.sent))
    finally:
        agent.close()


def test_the_registration_is_what_the_server_accepts_unchanged(sent: Sent) -> None:
    registration = models.NodeRegister.model_validate_json(sent.register)
    assert registration.model_dump(mode="json") == json.loads(sent.register)
    assert registration.inventory.gpus, "a source with no GPU tests nothing"


def test_the_heartbeats_are_what_the_server_accepts_unchanged(sent: Sent) -> None:
    first = models.Heartbeat.model_validate_json(sent.first)
    assert first.model_dump(mode="json") == json.loads(sent.first)
    assert first.inventory is not None  # the first after a start carries the inventory
    assert len(first.telemetry) == len(first.inventory.gpus)
    second = models.Heartbeat.model_validate_json(sent.second)
    assert "inventory" not in json.loads(sent.second)  # unchanged since: left out
    assert second.model_dump(mode="json", exclude={"inventory"}) == json.loads(sent.second)


def test_the_agent_and_the_server_hash_an_inventory_alike(sent: Sent) -> None:
    registration = models.NodeRegister.model_validate_json(sent.register)
    _, agent_hash = sent.agent._inventory_and_hash()
    assert inventory_hash(registration.inventory) == agent_hash
    assert protocol.inventory_hash(json.loads(sent.register)["inventory"]) == agent_hash


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        # nvidia-smi -q -x names neither the profile nor the UUID of a MIG device.
        (
            "nvidia-smi-v12-a100-sxm4-80gb-mig",
            [(0, None, None, 1, 0, 40192 * 2**20), (1, None, None, 5, 0, 19968 * 2**20)],
        ),
        (
            "h100-nvml-double-mig",
            [(0, "MIG-", "3g.40gb", 1, 0, 42412802048), (1, "MIG-", "2g.20gb", 2, 0, 21066814587)],
        ),
    ],
)
def test_mig_devices_reach_the_server(
    source: str,
    expected: list[tuple[object, ...]],
    tmp_path: Path,
    host_root: Path,
) -> None:
    client = RecordingClient()
    config = AgentConfig(
        control_plane_url=client.base_url, bootstrap_token="sov_b", state_dir=tmp_path / "s"
    )
    agent = Agent(config, SOURCES[source](), client, hostname="gpu-01", host_root=host_root)
    try:
        agent.register()
    finally:
        agent.close()
    gpu = models.NodeRegister.model_validate_json(client.sent[0][1]).inventory.gpus[0]
    assert gpu.mig_mode == "enabled"
    read = [
        (
            d.index,
            d.uuid and d.uuid[:4],
            d.profile,
            d.gpu_instance_id,
            d.compute_instance_id,
            d.memory_total_bytes,
        )
        for d in gpu.mig_devices[:2]
    ]
    assert read == expected
