"""What every GPU backend reads, and the interface it offers.

Modelled on NVIDIA's device plugin and GPU Feature Discovery: a small backend protocol with
several implementations, chosen explicitly or by fallback. Static facts are read once at
start (some NVML calls cost 0.15-3 ms on an H100); telemetry is read every sweep. A field
the board does not support is ``None``, never an exception.
"""

from dataclasses import dataclass, field
from typing import Protocol


class BackendUnavailableError(Exception):
    """The backend cannot run here (library missing, no driver, no GPU, bad capture)."""


@dataclass(frozen=True, slots=True)
class MigDevice:
    """One MIG instance carved out of a GPU."""

    index: int
    uuid: str | None
    profile: str | None  # e.g. "1g.10gb"
    memory_total_bytes: int | None


@dataclass(frozen=True, slots=True)
class GpuStatic:
    """Facts about a GPU that do not change while the agent runs."""

    index: int
    uuid: str
    model: str
    serial: str | None = None
    board_part_number: str | None = None
    vbios_version: str | None = None
    pci_bus_id: str | None = None
    memory_total_bytes: int | None = None
    mig_mode: str | None = None  # "enabled" | "disabled"; None where MIG is unsupported
    mig_devices: tuple[MigDevice, ...] = field(default_factory=tuple)
    compute_capability: str | None = None  # e.g. "9.0"
    ecc_mode: str | None = None  # "enabled" | "disabled"; None where unsupported
    driver_version: str | None = None
    cuda_version: str | None = None  # e.g. "13.0"
    power_limit_w: float | None = None
    confidential_compute: str | None = None  # "on" | "off"; None where not exposed


@dataclass(frozen=True, slots=True)
class GpuTelemetry:
    """One sweep's readings of a GPU; ``None`` where the board does not report it."""

    uuid: str
    utilization_pct: float | None = None
    memory_used_bytes: int | None = None
    temperature_c: float | None = None
    power_w: float | None = None
    ecc_uncorrected_errors: int | None = None
    process_count: int | None = None
    fan_speed_pct: float | None = None


class GpuBackend(Protocol):
    """A source of GPU readings."""

    #: "nvml", "nvidia-smi" or "replay"; reported with every probe.
    name: str

    def static(self) -> list[GpuStatic]:
        """Read every GPU's static facts (once, at start)."""
        ...

    def telemetry(self) -> list[GpuTelemetry]:
        """Read every GPU's current telemetry (each sweep; must be cheap)."""
        ...

    def close(self) -> None:
        """Release the library or files the backend holds."""
        ...
