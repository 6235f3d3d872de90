"""Host identity: hostname, machine id, DMI and basic facts, read from the filesystem.

What is read is the protocol's ``HostFacts`` (what the control plane receives), plus where
the machine id came from, which only ``probe`` shows.

Virtual machines often have no DMI table and an empty ``/etc/machine-id`` (the recorded
H100 host has neither). Then the agent derives an id once, from the hostname and the GPU
UUIDs (globally unique), and persists it, so a restart or a lost cache never turns one
server into two.
"""

import hashlib
import socket
from dataclasses import dataclass
from pathlib import Path

from agents import __version__
from agents.files import write_atomically
from agents.protocol import HostFacts

#: Values firmware vendors leave in DMI fields they did not fill in.
DMI_PLACEHOLDERS = frozenset(
    {
        "",
        "to be filled by o.e.m.",
        "default string",
        "not specified",
        "not applicable",
        "none",
        "n/a",
        "system serial number",
        "system product name",
        "system manufacturer",
        "chassis serial number",
        "0",
        "0123456789",
        "123456789",
    }
)
DERIVED_ID_FILE = "machine-id"


@dataclass(frozen=True, slots=True)
class HostIdentity:
    """What the filesystem tells about this host, and how its machine id was found."""

    facts: HostFacts
    #: Where ``facts.machine_id`` came from: "machine-id", "dmi-product-uuid" or "derived".
    machine_id_source: str


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:  # absent, or root-only (product_serial on many distributions)
        return None


def _dmi(root: Path, name: str) -> str | None:
    value = _read(root / "sys/class/dmi/id" / name)
    if value is None or value.lower() in DMI_PLACEHOLDERS:
        return None
    return value


def _os_name(root: Path) -> str | None:
    text = _read(root / "etc/os-release") or ""
    for line in text.splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip().strip('"') or None
    return None


def _cpu_model(cpuinfo: list[str]) -> str | None:
    for line in cpuinfo:
        if line.lower().startswith("model name"):
            return line.split(":", 1)[1].strip() or None
    return None


def _cpu_count(cpuinfo: list[str]) -> int | None:
    count = sum(1 for line in cpuinfo if line.split(":", 1)[0].strip() == "processor")
    return count or None


def _memory_bytes(root: Path) -> int | None:
    for line in (_read(root / "proc/meminfo") or "").splitlines():
        if line.startswith("MemTotal:"):
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                return int(parts[1]) * 1024
    return None


def derive_machine_id(hostname: str, gpu_uuids: list[str]) -> str:
    """A stable id for hosts with neither machine-id nor DMI: hostname plus GPU UUIDs."""
    material = "|".join([hostname, *sorted(gpu_uuids)])
    return "derived-" + hashlib.sha256(material.encode()).hexdigest()[:32]


def _machine_id(
    root: Path, state_dir: Path, hostname: str, gpu_uuids: list[str]
) -> tuple[str, str]:
    machine_id = _read(root / "etc/machine-id")
    if machine_id:
        return machine_id, "machine-id"
    product_uuid = _dmi(root, "product_uuid")
    if product_uuid:
        return product_uuid.lower(), "dmi-product-uuid"
    persisted = state_dir / DERIVED_ID_FILE
    existing = _read(persisted)
    if existing:
        return existing, "derived"
    derived = derive_machine_id(hostname, gpu_uuids)
    state_dir.mkdir(parents=True, exist_ok=True)
    write_atomically(persisted, derived + "\n")
    return derived, "derived"


def read_host_identity(
    state_dir: Path,
    gpu_uuids: list[str],
    *,
    root: Path = Path("/"),
    hostname: str | None = None,
) -> HostIdentity:
    """Read the host's identity; ``root`` lets tests point at a recorded filesystem tree."""
    name = hostname or socket.gethostname()
    machine_id, source = _machine_id(root, state_dir, name, gpu_uuids)
    cpuinfo = (_read(root / "proc/cpuinfo") or "").splitlines()
    facts = HostFacts(
        hostname=name,
        machine_id=machine_id,
        agent_version=__version__,
        os_name=_os_name(root),
        kernel_version=_read(root / "proc/sys/kernel/osrelease") or None,
        cpu_model=_cpu_model(cpuinfo),
        cpu_count=_cpu_count(cpuinfo),
        memory_bytes=_memory_bytes(root),
        system_manufacturer=_dmi(root, "sys_vendor"),
        system_model=_dmi(root, "product_name"),
        system_serial=_dmi(root, "product_serial"),
        board_vendor=_dmi(root, "board_vendor"),
        board_name=_dmi(root, "board_name"),
        asset_tag=_dmi(root, "chassis_asset_tag"),
    )
    return HostIdentity(facts=facts, machine_id_source=source)
