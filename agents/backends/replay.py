"""Replay of recorded GPU readings, for demos, the fleet simulator and tests.

A recording is a folder (or file) holding ``nvml-dump.json`` (every NVML reading, as in
``tests/fixtures/gpu/``) or ``nvidia-smi-q.xml``. With ``variant=n`` the GPUs get distinct
but stable UUIDs and serials, so one recording can stand for many servers.
"""

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

from agents.backends.base import BackendUnavailableError
from agents.protocol import GpuInventory, GpuTelemetry

NVML_DUMP = "nvml-dump.json"
NVIDIA_SMI_XML = "nvidia-smi-q.xml"


def _on_off(pair: Any) -> str | None:
    """NVML (current, pending) mode pairs: 1 is enabled, 0 disabled."""
    if not isinstance(pair, list) or not pair:
        return None
    return "enabled" if pair[0] == 1 else "disabled"


def _number(value: Any) -> float | None:
    """Recorded values that are not numbers (NVML errors as text) are unsupported fields."""
    return float(value) if isinstance(value, int | float) else None


def _from_nvml_dump(dump: dict[str, Any]) -> tuple[list[GpuInventory], list[GpuTelemetry]]:
    system = dump.get("system", {})
    cuda = system.get("cuda_driver_version")
    cuda_version = f"{cuda // 1000}.{cuda % 1000 // 10}" if isinstance(cuda, int) else None
    cc_state = system.get("conf_compute_state")
    confidential = (
        ("on" if cc_state.get("ccFeature") else "off") if isinstance(cc_state, dict) else None
    )
    statics, readings = [], []
    for device in dump.get("devices", []):
        capability = device.get("cuda_capability")
        power_limit = _number(device.get("power_limit_mw"))
        statics.append(
            GpuInventory(
                index=device["index"],
                uuid=device["uuid"],
                model=device["name"],
                serial=device.get("serial"),
                board_part_number=device.get("board_part_number"),
                vbios_version=device.get("vbios_version"),
                pci_bus_id=device.get("pci_info", {}).get("busId"),
                memory_total_bytes=device.get("memory_info", {}).get("total"),
                mig_mode=_on_off(device.get("mig_mode")),
                compute_capability=(
                    f"{capability[0]}.{capability[1]}" if isinstance(capability, list) else None
                ),
                ecc_mode=_on_off(device.get("ecc_mode")),
                driver_version=system.get("driver_version"),
                cuda_version=cuda_version,
                power_limit_w=None if power_limit is None else power_limit / 1000,
                confidential_compute=confidential,
            )
        )
        power = _number(device.get("power_usage_mw"))
        utilization = device.get("utilization", {})
        processes = device.get("running_compute_processes")
        ecc_errors = device.get("ecc_uncorrected_volatile")
        readings.append(
            GpuTelemetry(
                uuid=device["uuid"],
                utilization_pct=_number(utilization.get("gpu")),
                memory_used_bytes=device.get("memory_info", {}).get("used"),
                temperature_c=_number(device.get("temperature")),
                power_w=None if power is None else power / 1000,
                ecc_uncorrected_errors=ecc_errors if isinstance(ecc_errors, int) else None,
                process_count=len(processes) if isinstance(processes, list) else None,
                fan_speed_pct=_number(device.get("fan_speed")),
            )
        )
    return statics, readings


def _varied(value: str | None, variant: int | str, digits_only: bool = False) -> str | None:
    """Replace the tail of an identifier with one derived from ``variant``, stably."""
    if value is None:
        return None
    digest = hashlib.sha256(f"{value}|{variant}".encode()).hexdigest()
    if digits_only:
        tail = str(int(digest, 16))[-6:]
        return value[: max(len(value) - 6, 0)] + tail
    return value[:-12] + digest[:12]


class ReplayBackend:
    """Serves recorded readings as if they came from the GPUs of this host."""

    name = "replay"

    def __init__(self, recording: str | Path, variant: int | str | None = None):
        path = Path(recording)
        if path.is_dir():
            candidates = [path / NVML_DUMP, path / NVIDIA_SMI_XML]
            path = next((c for c in candidates if c.is_file()), candidates[0])
        if not path.is_file():
            raise BackendUnavailableError(
                f"no recording at {recording} (expected {NVML_DUMP} or {NVIDIA_SMI_XML})"
            )
        if path.suffix == ".json":
            try:
                statics, readings = _from_nvml_dump(json.loads(path.read_text()))
            except (ValueError, KeyError, TypeError) as exc:
                raise BackendUnavailableError(f"{path}: not an NVML dump ({exc})") from None
        else:
            from agents.backends.nvidia_smi import parse_nvidia_smi_xml, read_nvidia_smi_capture

            statics, readings = parse_nvidia_smi_xml(
                read_nvidia_smi_capture(path), source=str(path)
            )
        if variant is not None:
            renamed = {s.uuid: _varied(s.uuid, variant) or s.uuid for s in statics}
            statics = [
                dataclasses.replace(
                    s, uuid=renamed[s.uuid], serial=_varied(s.serial, variant, digits_only=True)
                )
                for s in statics
            ]
            readings = [dataclasses.replace(r, uuid=renamed.get(r.uuid, r.uuid)) for r in readings]
        self._statics = statics
        self._readings = readings

    def static(self) -> list[GpuInventory]:
        """The recorded static facts."""
        return list(self._statics)

    def telemetry(self) -> list[GpuTelemetry]:
        """The recorded telemetry (the same each sweep)."""
        return list(self._readings)

    def close(self) -> None:
        """Nothing to release."""
