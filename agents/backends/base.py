"""The interface every GPU backend offers, and how it says it cannot run.

Modelled on NVIDIA's device plugin and GPU Feature Discovery: a small backend protocol with
several implementations, chosen explicitly or by fallback. Static facts are read once at
start (some NVML calls cost 0.15-3 ms on an H100); telemetry is read every sweep. Backends
produce the wire protocol's types (``agents.protocol``) directly, so what they read is what
the control plane receives. A field the board does not support is ``None``, never an
exception.
"""

from typing import Protocol

from agents.protocol import GpuInventory, GpuTelemetry


class BackendUnavailableError(Exception):
    """The backend cannot run here (library missing, no driver, no GPU, bad capture)."""


class GpuBackend(Protocol):
    """A source of GPU readings."""

    #: "nvml", "nvidia-smi" or "replay"; reported with every probe.
    name: str

    def static(self) -> list[GpuInventory]:
        """Read every GPU's static facts (once, at start); ``health`` is left ``"unknown"``."""
        ...

    def telemetry(self) -> list[GpuTelemetry]:
        """Read every GPU's current telemetry (each sweep; must be cheap)."""
        ...

    def close(self) -> None:
        """Release the library or files the backend holds."""
        ...
