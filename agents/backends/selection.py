"""Choosing a GPU backend: explicitly, or ``auto`` (NVML, then nvidia-smi) with the reason."""

from enum import StrEnum
from pathlib import Path

from agents.backends.base import BackendUnavailableError, GpuBackend


class BackendKind(StrEnum):
    """The ``--backend`` choices."""

    AUTO = "auto"
    NVML = "nvml"
    NVIDIA_SMI = "nvidia-smi"
    REPLAY = "replay"


def open_backend(
    kind: BackendKind,
    *,
    nvidia_smi_xml: Path | None = None,
    replay: Path | None = None,
) -> tuple[GpuBackend, str]:
    """Open the requested backend and say why it was chosen.

    ``auto`` prefers NVML (cheapest per sweep), falls back to ``nvidia-smi -q -x`` when
    NVML cannot load, and names both failures if neither works. A capture file or a
    recording given on the command line is used as asked.
    """
    if kind is BackendKind.AUTO:
        if nvidia_smi_xml is not None:
            kind = BackendKind.NVIDIA_SMI
        elif replay is not None:
            kind = BackendKind.REPLAY
    if kind is BackendKind.REPLAY:
        from agents.backends.replay import ReplayBackend

        if replay is None:
            raise BackendUnavailableError("--backend replay needs --replay PATH (a recording)")
        return ReplayBackend(replay), f"replay of {replay}, as requested"
    if kind is BackendKind.NVIDIA_SMI:
        from agents.backends.nvidia_smi import NvidiaSmiBackend

        backend = NvidiaSmiBackend(xml_path=nvidia_smi_xml)
        source = f"the capture {nvidia_smi_xml}" if nvidia_smi_xml else "nvidia-smi -q -x"
        return backend, f"{source}, as requested"
    from agents.backends.nvml import NvmlBackend

    if kind is BackendKind.NVML:
        return NvmlBackend(), "NVML, as requested"
    try:
        return NvmlBackend(), "auto: NVML loaded"
    except BackendUnavailableError as nvml_error:
        from agents.backends.nvidia_smi import NvidiaSmiBackend

        try:
            backend = NvidiaSmiBackend()
            backend.check()
        except BackendUnavailableError as smi_error:
            raise BackendUnavailableError(
                f"no GPU backend works here: nvml: {nvml_error}; nvidia-smi: {smi_error}"
            ) from None
        return backend, f"auto: NVML unavailable ({nvml_error}); using nvidia-smi -q -x"
