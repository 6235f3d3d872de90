"""Host identity from a filesystem tree: real machine-id, DMI, and the derived fallback."""

from pathlib import Path

import pytest

from agents.host import derive_machine_id, read_host_identity

GPUS = ["GPU-29b79b44-4926-3788-174b-399b5b491b55"]


def write(root: Path, relative: str, text: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def bare_metal(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    write(root, "etc/machine-id", "3d1219c7c4c5404aaa1f6d2a48adfda4\n")
    write(root, "etc/os-release", 'NAME="Ubuntu"\nPRETTY_NAME="Ubuntu 24.04.1 LTS"\n')
    write(root, "proc/sys/kernel/osrelease", "6.8.0-49-generic\n")
    write(
        root,
        "proc/cpuinfo",
        "processor\t: 0\nmodel name\t: AMD EPYC 9454\n\n"
        "processor\t: 1\nmodel name\t: AMD EPYC 9454\n",
    )
    write(root, "proc/meminfo", "MemTotal:       131899052 kB\nMemFree: 1 kB\n")
    dmi = {
        "sys_vendor": "Supermicro",
        "product_name": "AS -8125GS-TNHR",
        "product_serial": "S123456X4B01234",
        "board_vendor": "Supermicro",
        "board_name": "H13DSG-O-CPU",
        "chassis_asset_tag": "To Be Filled By O.E.M.",
        "product_uuid": "00000000-0000-0000-0000-AC1F6B000001",
    }
    for name, value in dmi.items():
        write(root, f"sys/class/dmi/id/{name}", value + "\n")
    return root


def test_bare_metal_host(bare_metal: Path, tmp_path: Path) -> None:
    host = read_host_identity(tmp_path / "state", GPUS, root=bare_metal, hostname="gpu-01")
    assert host.facts.machine_id == "3d1219c7c4c5404aaa1f6d2a48adfda4"
    assert host.machine_id_source == "machine-id"
    assert host.facts.os_name == "Ubuntu 24.04.1 LTS"
    assert host.facts.kernel_version == "6.8.0-49-generic"
    assert host.facts.cpu_model == "AMD EPYC 9454"
    assert host.facts.cpu_count == 2
    assert host.facts.memory_bytes == 131899052 * 1024
    assert (host.facts.system_manufacturer, host.facts.system_model, host.facts.system_serial) == (
        "Supermicro",
        "AS -8125GS-TNHR",
        "S123456X4B01234",
    )
    assert host.facts.board_name == "H13DSG-O-CPU"
    assert host.facts.asset_tag is None  # a firmware placeholder is not an asset tag


def test_empty_machine_id_falls_back_to_dmi_product_uuid(bare_metal: Path, tmp_path: Path) -> None:
    write(bare_metal, "etc/machine-id", "\n")
    host = read_host_identity(tmp_path / "state", GPUS, root=bare_metal, hostname="gpu-01")
    assert host.facts.machine_id == "00000000-0000-0000-0000-ac1f6b000001"
    assert host.machine_id_source == "dmi-product-uuid"


def test_vm_without_dmi_or_machine_id_derives_and_keeps_an_id(tmp_path: Path) -> None:
    """The recorded H100 host: a KVM guest with no DMI table and an empty machine-id."""
    root = tmp_path / "root"
    write(root, "etc/machine-id", "")
    state = tmp_path / "state"
    first = read_host_identity(state, GPUS, root=root, hostname="h100-vm")
    assert first.machine_id_source == "derived"
    assert first.facts.machine_id == derive_machine_id("h100-vm", GPUS)
    assert first.facts.system_manufacturer is None
    assert (state / "machine-id").read_text().strip() == first.facts.machine_id
    # A GPU swap later does not change who the host is: the persisted id wins.
    again = read_host_identity(state, ["GPU-other"], root=root, hostname="h100-vm")
    assert again.facts.machine_id == first.facts.machine_id


def test_derived_ids_differ_by_hardware() -> None:
    assert derive_machine_id("a", GPUS) != derive_machine_id("b", GPUS)
    assert derive_machine_id("a", GPUS) != derive_machine_id("a", ["GPU-x"])
    assert derive_machine_id("a", ["GPU-1", "GPU-2"]) == derive_machine_id("a", ["GPU-2", "GPU-1"])
