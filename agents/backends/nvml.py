"""The NVML backend: reads GPUs through nvidia-ml-py (``pynvml``), the library nvidia-smi uses.

``pynvml`` is imported only when the backend opens, so the agent installs and runs without
it (the other backends take over). Static facts are read once, when the backend opens:
several of them are slow on an H100 (MIG mode and ECC mode ~160 us, max clocks 1.4 ms,
total energy 2.9 ms; recorded in tests/fixtures/gpu/h100-80gb-hbm3/nvml-dump.json), while
every call ``telemetry()`` makes was measured at 2-11 us. Fan speed is read only where it
worked at start: data-center boards have no fan and refuse it at ~140 us a time.

A field the board or driver does not offer (any ``NVMLError``: NotSupported,
FunctionNotFound, NoPermission, ...) becomes ``None``; only a failure to start NVML or to
identify a GPU makes the backend unavailable.
"""

import importlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any, TypeVar

from agents.backends.base import BackendUnavailableError
from agents.protocol import GpuInventory, GpuTelemetry, MigDevice

log = logging.getLogger("sovereign.agent.nvml")

_T = TypeVar("_T")

# NVML names a MIG device "<board name> MIG <profile>", e.g. "NVIDIA H100 80GB HBM3 MIG 1g.10gb".
_MIG_PROFILE = re.compile(r"\bMIG\s+(\S+)\s*$")


@dataclass(frozen=True, slots=True)
class _Gpu:
    """One GPU's handle and what telemetry needs to know about it from the start."""

    handle: Any
    uuid: str
    ecc_enabled: bool
    fan_supported: bool


def _import_pynvml() -> ModuleType:
    """Import nvidia-ml-py, or explain in one line why the NVML backend cannot run."""
    try:
        return importlib.import_module("pynvml")
    except ModuleNotFoundError as exc:
        if exc.name != "pynvml":
            raise BackendUnavailableError(f"pynvml could not be imported: {exc}") from exc
        raise BackendUnavailableError("nvidia-ml-py is not installed (no module pynvml)") from exc
    except ImportError as exc:
        raise BackendUnavailableError(f"pynvml could not be imported: {exc}") from exc


def _text(value: object) -> str:
    """A string reading as ``str``: older nvidia-ml-py releases return ``bytes``."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace").strip()
    return str(value).strip()


def _one_line(error: BaseException) -> str:
    """An NVML error message on one line, for a logged reason."""
    return " ".join(str(error).split()) or type(error).__name__


def _watts(milliwatts: int) -> float:
    """NVML reports power in milliwatts; we report watts."""
    return milliwatts / 1000


def _cuda_version(encoded: int) -> str:
    """NVML encodes the CUDA version as major * 1000 + minor * 10: 13000 is "13.0"."""
    return f"{encoded // 1000}.{encoded % 1000 // 10}"


def _enabled(state: object, enabled_value: object) -> str:
    """An NVML enable-state reading (MIG mode, ECC mode) as "enabled" or "disabled"."""
    return "enabled" if state == enabled_value else "disabled"


def _mig_profile(device_name: object) -> str | None:
    """The MIG profile ("1g.10gb") at the end of a MIG device's name, if it is there."""
    match = _MIG_PROFILE.search(_text(device_name))
    return match.group(1).lower() if match else None


class NvmlBackend:
    """GPU readings from NVML, the most complete and cheapest source where a driver is loaded.

    Opening it initialises NVML, caches every GPU's handle and reads the static facts;
    ``close()`` shuts NVML down. Pass ``nvml`` to use a module other than ``pynvml`` (a
    recorded stand-in in tests).
    """

    name = "nvml"

    def __init__(self, nvml: ModuleType | None = None) -> None:
        """Initialise NVML and read every GPU's static facts once.

        Raises ``BackendUnavailableError`` when nvidia-ml-py is missing, NVML does not
        start (no driver, no library), there is no GPU, or a GPU cannot be identified.
        """
        self._nvml = nvml if nvml is not None else _import_pynvml()
        self._error: type[Exception] = self._nvml.NVMLError
        try:
            self._nvml.nvmlInit()
        except self._error as exc:
            raise BackendUnavailableError(f"NVML could not initialise: {_one_line(exc)}") from exc
        self._open = True
        try:
            self._static, self._gpus = self._read_start()
        except BaseException:
            # Leave NVML as we found it whatever went wrong, then let the error through.
            self.close()
            raise

    def static(self) -> list[GpuInventory]:
        """Every GPU's static facts, as read when the backend opened."""
        return list(self._static)

    def telemetry(self) -> list[GpuTelemetry]:
        """Read every GPU's current telemetry, with cheap NVML calls only (a few us each)."""
        if not self._open:
            raise BackendUnavailableError("the NVML backend is closed")
        return [self._read_telemetry(gpu) for gpu in self._gpus]

    def close(self) -> None:
        """Shut NVML down; a second call does nothing."""
        if not self._open:
            return
        self._open = False
        try:
            self._nvml.nvmlShutdown()
        except self._error as exc:
            # Closing runs on the way out; a failed shutdown must not hide why we are leaving.
            log.warning("NVML shutdown failed: %s", _one_line(exc))

    def _read(self, call: Callable[[], _T]) -> _T | None:
        """Make one NVML call; ``None`` where NVML refuses it (not supported, no permission...)."""
        try:
            return call()
        except self._error:
            return None

    def _read_start(self) -> tuple[list[GpuInventory], list[_Gpu]]:
        """List the GPUs and read what does not change: system facts, then each GPU's."""
        nvml = self._nvml
        try:
            handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(nvml.nvmlDeviceGetCount())]
        except self._error as exc:
            raise BackendUnavailableError(
                f"NVML could not list the GPUs: {_one_line(exc)}"
            ) from exc
        if not handles:
            raise BackendUnavailableError("NVML found no GPU")
        system = {
            "driver_version": self._read(lambda: _text(nvml.nvmlSystemGetDriverVersion())),
            "cuda_version": self._read(
                lambda: _cuda_version(nvml.nvmlSystemGetCudaDriverVersion())
            ),
            "confidential_compute": self._confidential_compute(),
        }
        static = [
            self._read_static(index, handle, **system) for index, handle in enumerate(handles)
        ]
        gpus = [
            _Gpu(
                handle=handle,
                uuid=facts.uuid,
                ecc_enabled=facts.ecc_mode == "enabled",
                fan_supported=self._has_fan(handle),
            )
            for handle, facts in zip(handles, static, strict=True)
        ]
        return static, gpus

    def _has_fan(self, handle: Any) -> bool:
        """Whether the GPU reports a fan speed, asked once: fanless boards refuse at ~140 us."""
        return self._read(lambda: self._nvml.nvmlDeviceGetFanSpeed(handle)) is not None

    def _confidential_compute(self) -> str | None:
        """The system's confidential-computing state, "on" or "off"; ``None`` if not exposed."""
        # nvidia-ml-py added this in 12.535; older releases lack the function altogether.
        read_state = getattr(self._nvml, "nvmlSystemGetConfComputeState", None)
        if read_state is None:
            return None
        state = self._read(read_state)
        if state is None:
            return None
        enabled = int(state.ccFeature) == self._nvml.NVML_CC_SYSTEM_FEATURE_ENABLED
        return "on" if enabled else "off"

    def _read_static(
        self,
        index: int,
        handle: Any,
        *,
        driver_version: str | None,
        cuda_version: str | None,
        confidential_compute: str | None,
    ) -> GpuInventory:
        """Read one GPU's static facts; every field NVML refuses is ``None``."""
        nvml = self._nvml
        try:
            uuid = _text(nvml.nvmlDeviceGetUUID(handle))
            model = _text(nvml.nvmlDeviceGetName(handle))
        except self._error as exc:
            # Without its UUID a GPU cannot be told apart from the next; better no inventory
            # from NVML (another backend takes over) than one that miscounts.
            raise BackendUnavailableError(
                f"NVML could not identify GPU {index}: {_one_line(exc)}"
            ) from exc
        mig_mode = self._read(
            lambda: _enabled(nvml.nvmlDeviceGetMigMode(handle)[0], nvml.NVML_DEVICE_MIG_ENABLE)
        )
        capability = self._read(lambda: nvml.nvmlDeviceGetCudaComputeCapability(handle))
        return GpuInventory(
            index=index,
            uuid=uuid,
            model=model,
            serial=self._read(lambda: _text(nvml.nvmlDeviceGetSerial(handle))),
            board_part_number=self._read(lambda: _text(nvml.nvmlDeviceGetBoardPartNumber(handle))),
            vbios_version=self._read(lambda: _text(nvml.nvmlDeviceGetVbiosVersion(handle))),
            pci_bus_id=self._read(lambda: _text(nvml.nvmlDeviceGetPciInfo(handle).busId)),
            memory_total_bytes=self._read(lambda: int(nvml.nvmlDeviceGetMemoryInfo(handle).total)),
            mig_mode=mig_mode,
            mig_devices=self._read_mig_devices(handle) if mig_mode == "enabled" else (),
            compute_capability=(
                f"{int(capability[0])}.{int(capability[1])}" if capability is not None else None
            ),
            ecc_mode=self._read(
                lambda: _enabled(nvml.nvmlDeviceGetEccMode(handle)[0], nvml.NVML_FEATURE_ENABLED)
            ),
            driver_version=driver_version,
            cuda_version=cuda_version,
            power_limit_w=self._read(
                lambda: _watts(nvml.nvmlDeviceGetPowerManagementLimit(handle))
            ),
            confidential_compute=confidential_compute,
        )

    def _read_mig_devices(self, handle: Any) -> tuple[MigDevice, ...]:
        """The MIG devices carved out of a GPU; slots with no device are skipped."""
        slots = self._read(lambda: int(self._nvml.nvmlDeviceGetMaxMigDeviceCount(handle)))
        devices = (self._read_mig_device(handle, slot) for slot in range(slots or 0))
        return tuple(device for device in devices if device is not None)

    def _read_mig_device(self, handle: Any, slot: int) -> MigDevice | None:
        """One MIG slot's device, or ``None`` where the slot is empty (NVML: Not Found)."""
        nvml = self._nvml
        mig_handle = self._read(lambda: nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, slot))
        if mig_handle is None:
            return None
        return MigDevice(
            index=slot,
            uuid=self._read(lambda: _text(nvml.nvmlDeviceGetUUID(mig_handle))),
            # The name ends in the profile; the profile APIs would cost a GPU-instance walk.
            profile=self._read(lambda: _mig_profile(nvml.nvmlDeviceGetName(mig_handle))),
            gpu_instance_id=self._read(lambda: int(nvml.nvmlDeviceGetGpuInstanceId(mig_handle))),
            compute_instance_id=self._read(
                lambda: int(nvml.nvmlDeviceGetComputeInstanceId(mig_handle))
            ),
            memory_total_bytes=self._read(
                lambda: int(nvml.nvmlDeviceGetMemoryInfo(mig_handle).total)
            ),
        )

    def _read_telemetry(self, gpu: _Gpu) -> GpuTelemetry:
        """One GPU's readings for this sweep; each NVML call here costs 2-11 us on an H100."""
        nvml = self._nvml
        handle = gpu.handle
        ecc_errors = None
        if gpu.ecc_enabled:
            ecc_errors = self._read(
                lambda: int(
                    nvml.nvmlDeviceGetTotalEccErrors(
                        handle, nvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, nvml.NVML_VOLATILE_ECC
                    )
                )
            )
        fan_speed = None
        if gpu.fan_supported:
            fan_speed = self._read(lambda: float(nvml.nvmlDeviceGetFanSpeed(handle)))
        return GpuTelemetry(
            uuid=gpu.uuid,
            utilization_pct=self._read(
                lambda: float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
            ),
            memory_used_bytes=self._read(lambda: int(nvml.nvmlDeviceGetMemoryInfo(handle).used)),
            temperature_c=self._read(
                lambda: float(nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU))
            ),
            power_w=self._read(lambda: _watts(nvml.nvmlDeviceGetPowerUsage(handle))),
            ecc_uncorrected_errors=ecc_errors,
            process_count=self._read(
                lambda: len(nvml.nvmlDeviceGetComputeRunningProcesses(handle))
            ),
            fan_speed_pct=fan_speed,
        )
