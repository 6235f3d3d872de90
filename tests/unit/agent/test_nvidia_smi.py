"""``nvidia-smi -q -x`` parsing, table-driven over the recorded H100 and hand-written captures.

Each expected value below was read from the capture by eye (for the H100, also from the
text capture and the NVML dump of the same machine), not produced by the parser.
"""

import json
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest

from agents.backends.base import BackendUnavailableError
from agents.backends.nvidia_smi import (
    MAX_DOCUMENT_BYTES,
    MAX_ELEMENT_DEPTH,
    MAX_NODES,
    MAX_TOKEN_BYTES,
    NvidiaSmiBackend,
    parse_nvidia_smi_xml,
)
from agents.protocol import GpuInventory, GpuTelemetry, MigDevice

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures/gpu"
H100 = FIXTURES / "h100-80gb-hbm3"
H100_XML = H100 / "nvidia-smi-q.xml"
K80 = FIXTURES / "nvidia-smi/v8-tesla-k80-one-board.xml"
V100_PCIE = FIXTURES / "nvidia-smi/v9-tesla-v100-pcie-16gb.xml"
V100 = FIXTURES / "nvidia-smi/v10-tesla-v100-sxm2-32gb.xml"
FOUR_H100 = FIXTURES / "nvidia-smi/v12-4x-h100-80gb-hbm3.xml"
A100_MIG = FIXTURES / "nvidia-smi/v12-a100-sxm4-80gb-mig.xml"
A100_V11 = FIXTURES / "nvidia-smi/v11-a100-sxm4-40gb.xml"
VGPU = FIXTURES / "nvidia-smi/v12-vgpu-guest-unsupported-fields.xml"
TRUNCATED = FIXTURES / "nvidia-smi/malformed-truncated-v12.xml"

MIB = 1024 * 1024

H100_UUID = "GPU-29b79b44-4926-3788-174b-399b5b491b55"
K80_UUIDS = (
    "GPU-4b2c91e7-5d0a-63f8-a1c4-7e9f20b85d13",
    "GPU-9e07f3a2-1b6c-d845-3f90-c26a8e4b71f0",
)
V100_PCIE_UUID = "GPU-c83f5e19-2a7d-94b6-0e3f-58d1a7c24b96"
V100_UUID = "GPU-7d3f2a91-5c4e-8b60-1f27-c9e04a6b3d58"
A100_V11_UUID = "GPU-6f1d8c3a-0e72-b594-2c4d-9a83e7f05b61"
FOUR_H100_UUIDS = (
    "GPU-5a1c0f3e-7b2d-4c89-9e61-0d2f4b8a7c11",
    "GPU-0e9b6d47-31a8-4f2c-b5d3-8c7e1f904a22",
    "GPU-c4f28a15-9d63-47e0-a1b8-2f6d0e5c7b33",
    "GPU-81d7e3b0-46fa-4c19-8e25-b93a0f6d1c44",
)
A100_UUID = "GPU-3b9e0d52-a7c4-1f86-d2e9-64f1b8c07a5d"
VGPU_UUID = "GPU-e21f7c68-0b4a-11ee-9d3c-5a7f40b2c919"


def k80(index: int, vbios: str, bus: str, power_limit_w: float) -> GpuInventory:
    """One GPU of the K80 board (DTD v8): the two GPUs share the board's serial number."""
    return GpuInventory(
        index=index,
        uuid=K80_UUIDS[index],
        model="Tesla K80",
        serial="0324816113540",  # one board, one serial: not unique per GPU
        board_part_number="900-22080-0000-000",  # from <gpu_part_number>
        vbios_version=vbios,
        pci_bus_id=f"0000:{bus}:00.0",  # v8 prints a 4-digit PCI domain, reported as printed
        memory_total_bytes=11439 * MIB,
        mig_mode=None,  # no <mig_mode> before Ampere
        ecc_mode="enabled",
        driver_version="375.51",
        cuda_version=None,  # no <cuda_version> before DTD v10
        power_limit_w=power_limit_w,
    )


def four_h100(index: int, serial: str, bus: str, power_limit_w: float) -> GpuInventory:
    """One GPU of the 4-GPU H100 capture: only these fields differ between the four."""
    return GpuInventory(
        index=index,
        uuid=FOUR_H100_UUIDS[index],
        model="NVIDIA H100 80GB HBM3",
        serial=serial,
        board_part_number="692-2G520-0200-000",
        vbios_version="96.00.74.00.0D",
        pci_bus_id=f"00000000:{bus}:00.0",
        memory_total_bytes=81559 * MIB,
        mig_mode="disabled",
        ecc_mode="enabled",
        driver_version="535.161.08",
        cuda_version="12.2",
        power_limit_w=power_limit_w,
    )


def a100_mig(index: int, gpu_instance_id: int, mib: int) -> MigDevice:
    """One MIG device of the A100 capture: -q -x names no profile and no UUID."""
    return MigDevice(
        index=index,
        uuid=None,
        profile=None,
        gpu_instance_id=gpu_instance_id,
        compute_instance_id=0,  # one compute instance filling each GPU instance
        memory_total_bytes=mib * MIB,
    )


# (capture, position in the capture, every static field). Fields left out are None/().
STATIC_CASES = [
    pytest.param(
        H100_XML,
        0,
        GpuInventory(
            index=0,
            uuid=H100_UUID,
            model="NVIDIA H100 80GB HBM3",
            serial="1654525039369",
            board_part_number="965-2G520-0100-001",
            vbios_version="96.00.DA.00.0C",
            pci_bus_id="00000000:00:06.0",
            memory_total_bytes=85520809984,  # 81559 MiB
            mig_mode="disabled",
            mig_devices=(),
            compute_capability=None,  # -q -x does not report it
            ecc_mode="enabled",
            driver_version="580.159.04",
            cuda_version="13.0",
            power_limit_w=700.0,
            confidential_compute=None,  # only `nvidia-smi conf-compute` reports it
        ),
        id="h100-recorded-v13",
    ),
    pytest.param(
        V100,
        0,
        GpuInventory(
            index=0,
            uuid=V100_UUID,
            model="Tesla V100-SXM2-32GB",
            serial="0323218094412",
            board_part_number="900-2G503-0430-000",  # from <gpu_part_number> on v10
            vbios_version="88.00.4F.00.09",
            pci_bus_id="00000000:18:00.0",
            memory_total_bytes=32480 * MIB,
            mig_mode=None,  # no <mig_mode> before Ampere
            ecc_mode="enabled",
            driver_version="418.87.01",
            cuda_version="10.1",
            power_limit_w=300.0,  # <power_readings><enforced_power_limit>
        ),
        id="v100-v10",
    ),
    pytest.param(K80, 0, k80(0, "80.21.1F.00.01", "85", 149.0), id="k80-v8-gpu0"),
    pytest.param(K80, 1, k80(1, "80.21.1F.00.02", "86", 175.0), id="k80-v8-gpu1-raised-limit"),
    pytest.param(
        V100_PCIE,
        0,
        GpuInventory(
            index=0,
            uuid=V100_PCIE_UUID,
            model="Tesla V100-PCIE-16GB",
            serial="0322818021734",
            board_part_number="900-2G500-0000-000",  # from <gpu_part_number> on v9
            vbios_version="88.00.43.00.01",
            pci_bus_id="00000000:3B:00.0",
            memory_total_bytes=16160 * MIB,
            mig_mode=None,
            ecc_mode="enabled",
            driver_version="390.87",
            cuda_version=None,  # no <cuda_version> before DTD v10
            power_limit_w=200.0,  # an administrator's cap below the 250 W default
        ),
        id="v100-pcie-v9",
    ),
    pytest.param(
        A100_V11,
        0,
        GpuInventory(
            index=0,
            uuid=A100_V11_UUID,
            model="NVIDIA A100-SXM4-40GB",
            serial="1322621047219",
            board_part_number="692-2G506-0200-002",  # still <gpu_part_number> on v11
            vbios_version="92.00.25.00.08",
            pci_bus_id="00000000:47:00.0",
            memory_total_bytes=40536 * MIB,
            mig_mode="disabled",
            mig_devices=(),  # <mig_devices>None</mig_devices>
            ecc_mode="enabled",
            driver_version="470.82.01",
            cuda_version="11.4",
            power_limit_w=400.0,
        ),
        id="a100-v11-mig-disabled",
    ),
    pytest.param(FOUR_H100, 0, four_h100(0, "1652823051234", "9A", 700.0), id="4xh100-gpu0"),
    pytest.param(FOUR_H100, 1, four_h100(1, "1652823051987", "AB", 700.0), id="4xh100-gpu1"),
    pytest.param(FOUR_H100, 2, four_h100(2, "1652823052410", "BA", 700.0), id="4xh100-gpu2"),
    pytest.param(FOUR_H100, 3, four_h100(3, "1652823053066", "DB", 500.0), id="4xh100-gpu3"),
    pytest.param(
        A100_MIG,
        0,
        GpuInventory(
            index=0,
            uuid=A100_UUID,
            model="NVIDIA A100-SXM4-80GB",
            serial="1324021057818",
            board_part_number="692-2G506-0210-002",
            vbios_version="92.00.36.00.10",
            pci_bus_id="00000000:07:00.0",
            memory_total_bytes=81920 * MIB,
            mig_mode="enabled",
            mig_devices=(
                a100_mig(0, gpu_instance_id=1, mib=40192),  # 3g.40gb by its size
                a100_mig(1, gpu_instance_id=5, mib=19968),  # 2g.20gb
                a100_mig(2, gpu_instance_id=13, mib=9728),  # 1g.10gb
            ),
            ecc_mode="enabled",
            driver_version="550.90.07",
            cuda_version="12.4",
            power_limit_w=400.0,
        ),
        id="a100-mig",
    ),
    pytest.param(
        VGPU,
        0,
        GpuInventory(
            index=0,
            uuid=VGPU_UUID,
            model="NVIDIA A16-2B",
            serial=None,  # [Insufficient Permissions]
            board_part_number=None,  # empty element
            vbios_version=None,  # [N/A]
            pci_bus_id="00000000:02:00.0",
            memory_total_bytes=2048 * MIB,
            mig_mode=None,  # N/A
            ecc_mode=None,  # N/A
            driver_version="535.129.03",
            cuda_version="12.2",
            power_limit_w=None,  # Not Supported
        ),
        id="vgpu-nulls",
    ),
]

# (capture, position in the capture, every telemetry field).
TELEMETRY_CASES = [
    pytest.param(
        H100_XML,
        0,
        GpuTelemetry(
            uuid=H100_UUID,
            utilization_pct=0.0,
            memory_used_bytes=0,  # nvidia-smi counts the 480 MiB reserved apart
            temperature_c=36.0,
            power_w=120.15,  # instant_power_draw, not average_power_draw (120.49)
            ecc_uncorrected_errors=0,
            process_count=0,
            fan_speed_pct=None,  # N/A on a passively cooled board
        ),
        id="h100-recorded-v13",
    ),
    pytest.param(
        V100,
        0,
        GpuTelemetry(
            uuid=V100_UUID,
            utilization_pct=87.0,
            memory_used_bytes=27611 * MIB,
            temperature_c=61.0,
            power_w=243.17,
            ecc_uncorrected_errors=2,  # <volatile><double_bit><total>, not single_bit (5)
            process_count=2,
            fan_speed_pct=None,
        ),
        id="v100-v10",
    ),
    pytest.param(
        K80,
        0,
        GpuTelemetry(K80_UUIDS[0], 98.0, 10873 * MIB, 71.0, 143.27, 0, 1, None),
        id="k80-v8-gpu0",
    ),
    pytest.param(
        K80,
        1,
        GpuTelemetry(K80_UUIDS[1], 0.0, 0, 38.0, 27.81, 1, 0, None),
        id="k80-v8-gpu1-double-bit-error",
    ),
    pytest.param(
        V100_PCIE,
        0,
        GpuTelemetry(
            uuid=V100_PCIE_UUID,
            utilization_pct=64.0,
            memory_used_bytes=9217 * MIB,
            temperature_c=57.0,
            power_w=197.64,
            ecc_uncorrected_errors=0,  # <double_bit><total>, not single_bit (3)
            process_count=2,
            fan_speed_pct=None,
        ),
        id="v100-pcie-v9",
    ),
    pytest.param(
        A100_V11,
        0,
        GpuTelemetry(
            uuid=A100_V11_UUID,
            utilization_pct=91.0,
            memory_used_bytes=31212 * MIB,
            temperature_c=52.0,
            power_w=318.45,
            ecc_uncorrected_errors=1,  # SRAM/DRAM layout already on v11 for Ampere: 0 + 1
            process_count=1,
            fan_speed_pct=None,
        ),
        id="a100-v11-dram-uncorrectable",
    ),
    pytest.param(
        FOUR_H100,
        0,
        GpuTelemetry(FOUR_H100_UUIDS[0], 97.0, 71234 * MIB, 58.0, 612.40, 0, 1, None),
        id="4xh100-gpu0",
    ),
    pytest.param(
        FOUR_H100,
        1,
        GpuTelemetry(FOUR_H100_UUIDS[1], 95.0, 71236 * MIB, 61.0, 598.77, 0, 1, None),
        id="4xh100-gpu1-correctable-only",
    ),
    pytest.param(
        FOUR_H100,
        2,
        GpuTelemetry(FOUR_H100_UUIDS[2], 0.0, 0, 35.0, 69.95, 3, 0, None),
        id="4xh100-gpu2-sram2-dram1",
    ),
    pytest.param(
        FOUR_H100,
        3,
        GpuTelemetry(FOUR_H100_UUIDS[3], 42.0, 30722 * MIB, 49.0, 333.90, 0, 2, None),
        id="4xh100-gpu3",
    ),
    pytest.param(
        A100_MIG,
        0,
        GpuTelemetry(
            uuid=A100_UUID,
            utilization_pct=None,  # N/A on the parent GPU under MIG
            memory_used_bytes=23581 * MIB,
            temperature_c=44.0,
            power_w=187.32,  # average_power_draw, as instant_power_draw is N/A
            ecc_uncorrected_errors=0,
            process_count=3,
            fan_speed_pct=None,
        ),
        id="a100-mig",
    ),
    pytest.param(VGPU, 0, GpuTelemetry(uuid=VGPU_UUID), id="vgpu-nulls"),
]


@pytest.mark.parametrize(("capture", "position", "expected"), STATIC_CASES)
def test_static_facts(capture: Path, position: int, expected: GpuInventory) -> None:
    assert NvidiaSmiBackend(xml_path=capture).static()[position] == expected


@pytest.mark.parametrize(("capture", "position", "expected"), TELEMETRY_CASES)
def test_telemetry(capture: Path, position: int, expected: GpuTelemetry) -> None:
    assert NvidiaSmiBackend(xml_path=capture).telemetry()[position] == expected


@pytest.mark.parametrize(
    ("capture", "gpus"),
    [
        pytest.param(H100_XML, 1, id="h100"),
        pytest.param(K80, 2, id="k80"),
        pytest.param(V100_PCIE, 1, id="v100-pcie"),
        pytest.param(V100, 1, id="v100"),
        pytest.param(FOUR_H100, 4, id="4xh100"),
        pytest.param(A100_V11, 1, id="a100-v11"),
        pytest.param(A100_MIG, 1, id="a100-mig"),
        pytest.param(VGPU, 1, id="vgpu"),
    ],
)
def test_every_gpu_once_in_order(capture: Path, gpus: int) -> None:
    statics, readings = parse_nvidia_smi_xml(capture.read_text())
    assert [s.index for s in statics] == list(range(gpus))
    assert len({s.uuid for s in statics}) == gpus
    assert [r.uuid for r in readings] == [s.uuid for s in statics]


def test_recorded_h100_agrees_with_nvml_on_the_same_machine() -> None:
    """The NVML dump was taken on the same H100 moments apart: static facts must agree."""
    device = json.loads((H100 / "nvml-dump.json").read_text())["devices"][0]
    (static,) = NvidiaSmiBackend(xml_path=H100_XML).static()
    assert static.index == device["index"]
    assert static.uuid == device["uuid"]
    assert static.serial == device["serial"]
    assert static.model == device["name"]
    assert static.board_part_number == device["board_part_number"]
    assert static.vbios_version == device["vbios_version"]
    assert static.pci_bus_id == device["pci_info"]["busId"]
    assert static.memory_total_bytes == device["memory_info"]["total"]
    assert static.power_limit_w == device["power_limit_mw"] / 1000
    assert static.mig_mode == ("enabled" if device["mig_mode"][0] else "disabled")
    assert static.ecc_mode == ("enabled" if device["ecc_mode"][0] else "disabled")


def document(gpu_body: str) -> str:
    """A minimal ``-q -x`` document with one GPU, for single-field cases."""
    return (
        '<?xml version="1.0" ?>\n<nvidia_smi_log><driver_version>580.1</driver_version>'
        f"<gpu><uuid>GPU-1</uuid><product_name>Test</product_name>{gpu_body}</gpu>"
        "</nvidia_smi_log>"
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("45 %", 45.0),
        ("12.5 %", 12.5),
        ("N/A", None),
        ("[N/A]", None),
        ("Not Supported", None),
        ("[Not Supported]", None),
        ("not supported", None),
        ("[Unknown Error]", None),
        ("", None),
        ("   ", None),
        ("45 C", None),  # the wrong unit is not a fan speed
        ("fast", None),
    ],
)
def test_null_values_and_units(value: str, expected: float | None) -> None:
    _, (reading,) = parse_nvidia_smi_xml(document(f"<fan_speed>{value}</fan_speed>"))
    assert reading.fan_speed_pct == expected


@pytest.mark.parametrize(
    ("memory", "expected"),
    [
        ("81559 MiB", 81559 * MIB),
        ("2 GiB", 2 * 1024 * MIB),
        ("512 KiB", 512 * 1024),
        ("81559", None),  # no unit: refuse to guess
        ("81559 MB", None),
    ],
)
def test_memory_units(memory: str, expected: int | None) -> None:
    body = f"<fb_memory_usage><total>{memory}</total></fb_memory_usage>"
    (static,), _ = parse_nvidia_smi_xml(document(body))
    assert static.memory_total_bytes == expected


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param("", None, id="no-ecc-section"),
        pytest.param(
            "<ecc_errors><volatile><sram_uncorrectable_parity>1</sram_uncorrectable_parity>"
            "<sram_uncorrectable_secded>2</sram_uncorrectable_secded>"
            "<dram_uncorrectable>4</dram_uncorrectable></volatile></ecc_errors>",
            7,
            id="v13-parity-secded-dram",
        ),
        pytest.param(
            "<ecc_errors><volatile><sram_uncorrectable>3</sram_uncorrectable>"
            "<sram_uncorrectable_parity>1</sram_uncorrectable_parity>"
            "<sram_uncorrectable_secded>2</sram_uncorrectable_secded>"
            "<dram_uncorrectable>N/A</dram_uncorrectable></volatile></ecc_errors>",
            3,
            id="sram-total-not-counted-twice",
        ),
        pytest.param(
            "<ecc_errors><volatile><double_bit><total>N/A</total></double_bit>"
            "</volatile></ecc_errors>",
            None,
            id="v10-unsupported",
        ),
    ],
)
def test_ecc_layouts(body: str, expected: int | None) -> None:
    _, (reading,) = parse_nvidia_smi_xml(document(body))
    assert reading.ecc_uncorrected_errors == expected


@pytest.mark.parametrize(
    ("body", "limit_w", "draw_w"),
    [
        pytest.param("", None, None, id="no-power-section"),
        pytest.param(
            "<power_readings><power_draw>95.50 W</power_draw><power_limit>300.00 W</power_limit>"
            "<enforced_power_limit>250.00 W</enforced_power_limit></power_readings>",
            250.0,  # the limit in force, not the one the administrator asked for
            95.5,
            id="v10-enforced-below-requested",
        ),
        pytest.param(
            "<power_readings><power_draw>N/A</power_draw><power_limit>300.00 W</power_limit>"
            "<enforced_power_limit>N/A</enforced_power_limit></power_readings>",
            300.0,
            None,
            id="v10-only-requested-limit",
        ),
        pytest.param(
            "<gpu_power_readings><power_draw>410.00 W</power_draw>"
            "<average_power_draw>400.00 W</average_power_draw>"
            "<current_power_limit>N/A</current_power_limit></gpu_power_readings>"
            "<power_readings><enforced_power_limit>600.00 W</enforced_power_limit>"
            "<power_draw>1.00 W</power_draw></power_readings>",
            600.0,
            410.0,
            id="v12-sections-win-field-by-field",
        ),
    ],
)
def test_power_layouts(body: str, limit_w: float | None, draw_w: float | None) -> None:
    (static,), (reading,) = parse_nvidia_smi_xml(document(body))
    assert static.power_limit_w == limit_w
    assert reading.power_w == draw_w


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param("<processes>\n\t\t</processes>", 0, id="empty-list"),
        pytest.param("<processes>N/A</processes>", None, id="not-listed"),
        pytest.param("", None, id="no-element"),
    ],
)
def test_process_count(body: str, expected: int | None) -> None:
    _, (reading,) = parse_nvidia_smi_xml(document(body))
    assert reading.process_count == expected


def test_pci_bus_id_falls_back_to_the_gpu_id_attribute() -> None:
    text = document("").replace("<gpu>", '<gpu id="00000000:3B:00.0">')
    (static,), _ = parse_nvidia_smi_xml(text)
    assert static.pci_bus_id == "00000000:3B:00.0"


@pytest.mark.parametrize(
    ("kwargs", "fragments"),
    [
        pytest.param(
            {"xml_path": TRUNCATED},
            ("malformed XML", "unclosed token", "line 74, column 4", str(TRUNCATED)),
            id="truncated-capture",
        ),
        pytest.param(
            {"xml_path": FIXTURES / "nvidia-smi/absent.xml"},
            ("cannot read", "absent.xml"),
            id="missing-capture",
        ),
        pytest.param(
            {"command": ("/nonexistent/bin/nvidia-smi", "-q", "-x")},
            ("/nonexistent/bin/nvidia-smi not found", "not installed"),
            id="not-installed",
        ),
        pytest.param({"command": ("false",)}, ("false exited with status 1",), id="exit-1"),
        pytest.param(
            {
                "command": (
                    sys.executable,
                    "-c",
                    "print('NVIDIA-SMI has failed because it could not communicate with the"
                    " NVIDIA driver.'); raise SystemExit(9)",
                )
            },
            ("exited with status 9", "could not communicate with the NVIDIA driver"),
            id="driver-down-message-quoted",
        ),
        pytest.param(
            {"command": ("sleep", "5"), "timeout": 0.2},
            ("timed out after 0.2 s",),
            id="hung",
        ),
        pytest.param(
            {"command": ("echo", "<nvidia_smi_log><gpu>")},
            ("malformed XML", "line 2, column 0"),
            id="live-output-truncated",
        ),
    ],
)
def test_failures_are_one_clear_line(kwargs: dict[str, object], fragments: tuple[str, ...]) -> None:
    backend = NvidiaSmiBackend(**kwargs)  # type: ignore[arg-type]
    for read in (backend.static, backend.telemetry):
        with pytest.raises(BackendUnavailableError) as caught:
            read()
        message = str(caught.value)
        assert "\n" not in message
        for fragment in fragments:
            assert fragment in message
        # No chained exception: a log shows this one line, not an OSError's traceback.
        assert caught.value.__cause__ is None
        assert caught.value.__context__ is None or caught.value.__suppress_context__


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        pytest.param("", "malformed XML: no element found at line 1, column 0", id="empty"),
        pytest.param(
            "<nvidia_smi_log><gpu></nvidia_smi_log>",
            "malformed XML: mismatched tag at line 1, column 23",
            id="mismatched-tag",
        ),
        pytest.param("<html><body/></html>", "not nvidia-smi -q -x output", id="wrong-root"),
        pytest.param(
            '<!DOCTYPE x [<!ENTITY a "aaaa">]><nvidia_smi_log>&a;</nvidia_smi_log>',
            "has an internal DTD subset",
            id="entity-declaration",
        ),
        pytest.param(
            # A thousand default attributes on <a/>, repeated, once cost 268 MiB from 52 KB.
            "<!DOCTYPE nvidia_smi_log [<!ATTLIST a x CDATA 'v'>]><nvidia_smi_log><a/>"
            "</nvidia_smi_log>",
            "has an internal DTD subset",
            id="attribute-defaults",
        ),
        pytest.param(
            '<!DOCTYPE nvidia_smi_log SYSTEM "nvsmi_device_v12.dtd"><nvidia_smi_log>&a;'
            "</nvidia_smi_log>",
            "malformed XML: undefined entity at line 1, column 71",
            id="undefined-entity-with-external-dtd",
        ),
        pytest.param(
            "<nvidia_smi_log><gpu><product_name>X</product_name></gpu></nvidia_smi_log>",
            "GPU 0 has no <uuid>",
            id="gpu-without-uuid",
        ),
        pytest.param(
            "<nvidia_smi_log><gpu><uuid>GPU-1</uuid><product_name>N/A</product_name>"
            "</gpu></nvidia_smi_log>",
            "GPU 0 has no <product_name>",
            id="gpu-without-model",
        ),
    ],
)
def test_unusable_documents(text: str, fragment: str) -> None:
    with pytest.raises(BackendUnavailableError, match=r"^nvidia-smi output") as caught:
        parse_nvidia_smi_xml(text)
    assert fragment in str(caught.value)


def nested(depth: int) -> str:
    """A document whose elements nest ``depth`` deep, the root counted."""
    return "<nvidia_smi_log>" + "<a>" * (depth - 1) + "</a>" * (depth - 1) + "</nvidia_smi_log>"


def siblings(count: int, attributes: str = "") -> str:
    """A document of ``count`` empty elements under the root."""
    return "<nvidia_smi_log>" + f"<a{attributes}/>" * count + "</nvidia_smi_log>"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        pytest.param(nested(MAX_ELEMENT_DEPTH), None, id="depth-at-the-limit"),
        pytest.param(
            nested(MAX_ELEMENT_DEPTH + 1), "nests elements more than 32 deep", id="depth-over"
        ),
        pytest.param(siblings(MAX_NODES - 1), None, id="nodes-at-the-limit"),
        pytest.param(
            siblings(MAX_NODES), "has more than 100,000 elements and attributes", id="nodes-over"
        ),
        pytest.param(
            siblings(MAX_NODES // 2, ' x="1"'),
            "has more than 100,000 elements and attributes",
            id="attributes-count-as-nodes",
        ),
        pytest.param(
            "<nvidia_smi_log><a " + " ".join(f"x{i}='1'" for i in range(20_000)) + "/>",
            "has a tag or declaration longer than 64 KiB",
            id="one-huge-tag",
        ),
        pytest.param(
            "<nvidia_smi_log><!--" + "x" * MAX_TOKEN_BYTES * 2,
            "has a tag or declaration longer than 64 KiB",
            id="one-huge-comment",
        ),
        pytest.param(
            "<nvidia_smi_log><a>" + "x" * MAX_TOKEN_BYTES * 4 + "</a></nvidia_smi_log>",
            None,
            id="long-text-is-no-token",
        ),
    ],
)
def test_tree_bounds(text: str, fragment: str | None) -> None:
    """Each bound refuses one step past it, with a reason naming it, and not before."""
    if fragment is None:
        assert parse_nvidia_smi_xml(text) == ([], [])
        return
    with pytest.raises(BackendUnavailableError) as caught:
        parse_nvidia_smi_xml(text)
    message = str(caught.value)
    assert message.startswith("nvidia-smi output ")
    assert message.endswith("; not parsing it")
    assert fragment in message


def padded_capture(path: Path, size: int) -> Path:
    """The H100 capture followed by whitespace (still well-formed) to exactly ``size`` bytes."""
    capture = H100_XML.read_bytes()
    with path.open("wb") as file:
        file.write(capture)
        for offset in range(len(capture), size, 1024 * 1024):
            file.write(b" " * min(1024 * 1024, size - offset))
    return path


@pytest.mark.parametrize("live", [False, True], ids=["capture", "live"])
def test_the_size_bound(tmp_path: Path, live: bool) -> None:
    """A document of exactly MAX_DOCUMENT_BYTES is read; one byte more is refused."""
    exact = padded_capture(tmp_path / "exact.xml", MAX_DOCUMENT_BYTES)
    over = padded_capture(tmp_path / "over.xml", MAX_DOCUMENT_BYTES + 1)

    def backend(capture: Path) -> NvidiaSmiBackend:
        return (
            NvidiaSmiBackend(command=("cat", str(capture))) if live else NvidiaSmiBackend(capture)
        )

    assert backend(exact).static()[0].uuid == H100_UUID
    with pytest.raises(BackendUnavailableError, match="is larger than 16 MiB") as caught:
        backend(over).static()
    assert "\n" not in str(caught.value)


def write_in_pieces(path: Path, pieces: Iterable[str]) -> Path:
    """Write a large hostile document piece by piece, never holding all of it."""
    with path.open("w") as file:
        file.writelines(pieces)
    return path


def thirteen_million_siblings(path: Path) -> Path:
    """Issue 10's first document: 50 MB of 13 million empty siblings (24 s, 1.3 GB there)."""
    return write_in_pieces(
        path, ["<nvidia_smi_log>", *["<a/>" * 100_000] * 130, "</nvidia_smi_log>"]
    )


def seven_and_a_half_million_deep(path: Path) -> Path:
    """Issue 10's second document: 7.5 million levels of nesting (a MemoryError there)."""
    return write_in_pieces(
        path,
        [
            "<nvidia_smi_log>",
            *["<a>" * 100_000] * 75,
            *["</a>" * 100_000] * 75,
            "</nvidia_smi_log>",
        ],
    )


def refused_cheaply(read: Callable[[], object], fragment: str) -> None:
    """``read`` is refused naming ``fragment``, in under 2 s of CPU and 24 MiB at the peak.

    Timed on its own (``tracemalloc`` slows allocation threefold), in this thread's CPU
    time, not wall time nor the process's: a reader that parsed the whole document would
    spend 24 s of CPU, and a busy CI machine's disk or scheduler, or a thread an earlier
    test left in the process, must not fail a reader that stops at the bound (the reader
    runs in the calling thread, the command's pipe included). Then run
    again under ``tracemalloc`` for the peak, which counts expat's allocations too (it
    allocates through Python): the 16 MiB the size bound lets in, and little more.
    """
    started = time.thread_time()
    with pytest.raises(BackendUnavailableError, match=fragment) as caught:
        read()
    assert time.thread_time() - started < 2.0
    assert "\n" not in str(caught.value)
    tracemalloc.start()
    try:
        with pytest.raises(BackendUnavailableError, match=fragment):
            read()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < MAX_DOCUMENT_BYTES + 8 * 1024 * 1024


HOSTILE = [
    pytest.param(thirteen_million_siblings, id="13-million-siblings"),
    pytest.param(seven_and_a_half_million_deep, id="7.5-million-deep"),
]


@pytest.mark.parametrize("hostile", HOSTILE)
@pytest.mark.parametrize("live", [False, True], ids=["capture", "live"])
def test_hostile_documents_are_refused_at_the_size_bound(
    tmp_path: Path, hostile: Callable[[Path], Path], live: bool
) -> None:
    """Read from a file or from the command, they stop at 16 MiB, whatever follows."""
    document = hostile(tmp_path / "hostile.xml")
    backend = (
        NvidiaSmiBackend(command=("cat", str(document))) if live else NvidiaSmiBackend(document)
    )
    refused_cheaply(backend.static, "is larger than 16 MiB")


@pytest.mark.parametrize(
    ("hostile", "fragment"),
    [
        pytest.param(thirteen_million_siblings, "more than 100,000 elements", id="13M-siblings"),
        pytest.param(seven_and_a_half_million_deep, "more than 32 deep", id="7.5M-deep"),
    ],
)
def test_hostile_text_is_refused_at_the_first_excess(
    tmp_path: Path, hostile: Callable[[Path], Path], fragment: str
) -> None:
    """Text already in memory is refused at the parser's first excess, whatever follows.

    Its cost is the bound's, not the document's: the 13 million siblings stop at the
    100,001st node, the 7.5 million levels at the 33rd.
    """
    text = hostile(tmp_path / "hostile.xml").read_text()
    refused_cheaply(lambda: parse_nvidia_smi_xml(text), fragment)


@pytest.mark.parametrize(
    "capture", [H100_XML, K80, V100_PCIE, V100, A100_V11, FOUR_H100, A100_MIG, VGPU], ids=str
)
def test_live_command_reads_the_same_as_the_capture(capture: Path) -> None:
    live = NvidiaSmiBackend(command=("cat", str(capture)))
    saved = NvidiaSmiBackend(xml_path=capture)
    assert live.static() == saved.static()
    assert live.telemetry() == saved.telemetry()


@pytest.mark.parametrize("live", [True, False], ids=["live", "capture"])
def test_every_read_is_fresh(tmp_path: Path, live: bool) -> None:
    """Telemetry re-runs the command (or re-reads the file) instead of caching."""
    capture = tmp_path / "capture.xml"
    capture.write_text(H100_XML.read_text())
    backend = NvidiaSmiBackend(command=("cat", str(capture))) if live else NvidiaSmiBackend(capture)
    assert backend.telemetry()[0].temperature_c == 36.0
    capture.write_text(H100_XML.read_text().replace("<gpu_temp>36 C<", "<gpu_temp>71 C<"))
    assert backend.telemetry()[0].temperature_c == 71.0
    backend.close()


def test_the_check_reading_serves_the_first_static_read_only(tmp_path: Path) -> None:
    """auto's check and the agent's start-up read cost one run; later reads are fresh."""
    runs = tmp_path / "runs"
    script = tmp_path / "fake-nvidia-smi"
    script.write_text(f'#!/bin/sh\necho run >> "{runs}"\ncat "{H100_XML}"\n')
    script.chmod(0o755)
    backend = NvidiaSmiBackend(command=(str(script),))
    backend.check()
    assert backend.static()[0].uuid == H100_UUID
    assert runs.read_text().count("run") == 1
    backend.static()
    backend.telemetry()
    assert runs.read_text().count("run") == 3


def test_backend_is_named_and_the_command_is_a_plain_argv(tmp_path: Path) -> None:
    """No shell: a capture path with spaces and quotes reaches the program unchanged."""
    capture = tmp_path / "a customer's capture; rm -rf x.xml"
    capture.write_text(H100_XML.read_text())
    backend = NvidiaSmiBackend(command=("cat", str(capture)))
    assert backend.name == "nvidia-smi"
    assert backend.static()[0].uuid == H100_UUID


def test_an_empty_command_is_refused() -> None:
    with pytest.raises(ValueError, match="command"):
        NvidiaSmiBackend(command=())
