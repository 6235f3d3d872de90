"""The wire protocol's own rules: how a value becomes a body, and how an inventory is hashed."""

import ast
import dataclasses
import hashlib
import json
from pathlib import Path

import pytest

from agents.protocol import (
    GpuInventory,
    GpuTelemetry,
    Heartbeat,
    HostFacts,
    Inventory,
    MigDevice,
    NodeRegister,
    inventory_hash,
    to_wire,
)

AGENTS = Path(__file__).resolve().parents[3] / "agents"
HOST = HostFacts(hostname="gpu-01", machine_id="m-1", agent_version="0.1.0")
MIG = (
    MigDevice(index=0, uuid="MIG-a", profile="3g.40gb", gpu_instance_id=1, compute_instance_id=0),
    MigDevice(index=1, uuid="MIG-b", profile="1g.10gb", gpu_instance_id=13, compute_instance_id=0),
)
GPU_A = GpuInventory(uuid="GPU-a", index=0, model="NVIDIA A100-SXM4-80GB", mig_devices=MIG)
GPU_B = GpuInventory(uuid="GPU-b", index=1, model="NVIDIA A100-SXM4-80GB")


def test_every_field_is_sent_and_nested_values_become_json() -> None:
    body = to_wire(NodeRegister(inventory=Inventory(HOST, (GPU_A,)), labels={"team": "ml"}))
    gpu = body["inventory"]["gpus"][0]
    assert set(gpu) == {f.name for f in dataclasses.fields(GpuInventory)}
    assert gpu["mig_devices"][1] == {
        "index": 1,
        "uuid": "MIG-b",
        "profile": "1g.10gb",
        "gpu_instance_id": 13,
        "compute_instance_id": 0,
        "memory_total_bytes": None,
    }
    assert body["labels"] == {"team": "ml"}
    assert body["provenance"] == {
        "origin_country": None,
        "component_origins": {},
        "asset_tag": None,
    }
    assert json.loads(json.dumps(body)) == body  # only JSON types: lists, dicts, scalars


def test_a_heartbeat_without_inventory_leaves_the_key_out() -> None:
    reading = GpuTelemetry(uuid="GPU-a", temperature_c=35.0)
    assert to_wire(Heartbeat(seq=7, telemetry=(reading,))) == {
        "seq": 7,
        "telemetry": [dataclasses.asdict(reading)],
    }
    with_inventory = to_wire(Heartbeat(seq=8, inventory=Inventory(HOST)))
    assert with_inventory["inventory"] == {"host": dataclasses.asdict(HOST), "gpus": []}


def test_a_field_type_without_a_json_form_is_refused_at_first_use() -> None:
    @dataclasses.dataclass(frozen=True)
    class Odd:
        when: set[str]

    with pytest.raises(TypeError, match=r"Odd\.when: no JSON form"):
        to_wire(Odd(when={"now"}))


def test_the_inventory_hash_ignores_gpu_order_but_not_the_mig_layout() -> None:
    inventory = to_wire(Inventory(HOST, (GPU_A, GPU_B)))
    reordered = to_wire(Inventory(HOST, (GPU_B, GPU_A)))
    digest = inventory_hash(inventory)
    assert len(digest) == 64
    assert inventory_hash(reordered) == digest
    relaid = dataclasses.replace(GPU_A, mig_devices=MIG[:1])
    assert inventory_hash(to_wire(Inventory(HOST, (relaid, GPU_B)))) != digest


def test_the_inventory_hash_is_sha256_of_canonical_json() -> None:
    # The canonical text written out: sorted keys, no spaces, UTF-8 rather than \u escapes.
    inventory = {"host": {"machine_id": "m", "hostname": "gpu-東京"}, "gpus": []}
    canonical = '{"gpus":[],"host":{"hostname":"gpu-東京","machine_id":"m"}}'
    assert inventory_hash(inventory) == hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def test_the_agent_never_imports_the_control_plane() -> None:
    """The agent installs without the control plane (agents/pyproject.toml)."""
    imported = set()
    for path in AGENTS.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                imported.add(node.module.split(".")[0])
    assert "control_plane" not in imported
    assert {"fastapi", "pydantic", "psycopg", "celery"}.isdisjoint(imported)
