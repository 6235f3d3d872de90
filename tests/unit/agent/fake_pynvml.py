"""A stand-in for the ``pynvml`` module that answers from a recorded H100.

No GPU exists where the unit tests run, so the NVML backend is driven by this module-like
object. What it returns comes from tests/fixtures/gpu/h100-80gb-hbm3/nvml-dump.json, every
reading nvidia-ml-py made on a real H100; a reading recorded as
"NVMLError_NotSupported: Not Supported" (the fan) raises that error. The error classes
mirror pynvml's names, codes and messages (nvidia-ml-py 13.615.71), so ``except
NVMLError`` and ``str(error)`` behave as they do against the real library.

What was not recorded is derived from what was, and says so:

- extra GPUs (``gpus=3``) are clones of the recorded one, each with its own index, UUID,
  serial and PCI bus id;
- MIG devices (``mig={0: ["3g.40gb"]}``) take their profile names, sizes and the number of
  slots from the MIG profile table recorded on the same H100 (nvidia-smi-extra.txt); their
  UUIDs are derived from the parent's and their names follow NVML's
  "<board> MIG <profile>". Their GPU instance ids are numbered from 1 in slot order (the
  driver picks them by placement), each with one compute instance, id 0, filling it (what
  ``nvidia-smi mig -cgi <profiles> -C`` creates).

It also simulates what a test needs to break: ``fail()`` makes a function raise (a field
becoming unsupported, ``nvmlInit`` failing), ``remove()`` takes a function out as an older
nvidia-ml-py lacks it, ``strings_as_bytes`` answers as older nvidia-ml-py releases did.
Every call is appended to ``calls``, so tests can say which functions a step made.
"""

# The functions below keep pynvml's camelCase names: the backend calls them by those names.
# ruff: noqa: N802

import copy
import functools
import json
import re
import string
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any, TypeVar

FIXTURE_DIR = Path(__file__).resolve().parents[2] / "fixtures" / "gpu" / "h100-80gb-hbm3"

# pynvml's NVML_ERROR_* codes and nvmlErrorString messages, as nvidia-ml-py 13.615.71 has them.
_ERROR_CODES = {
    "UNINITIALIZED": (1, "Uninitialized"),
    "INVALID_ARGUMENT": (2, "Invalid Argument"),
    "NOT_SUPPORTED": (3, "Not Supported"),
    "NO_PERMISSION": (4, "Insufficient Permissions"),
    "ALREADY_INITIALIZED": (5, "Already Initialized"),
    "NOT_FOUND": (6, "Not Found"),
    "INSUFFICIENT_SIZE": (7, "Insufficient Size"),
    "INSUFFICIENT_POWER": (8, "Insufficient External Power"),
    "DRIVER_NOT_LOADED": (9, "Driver Not Loaded"),
    "TIMEOUT": (10, "Timeout"),
    "IRQ_ISSUE": (11, "Interrupt Request Issue"),
    "LIBRARY_NOT_FOUND": (12, "NVML Shared Library Not Found"),
    "FUNCTION_NOT_FOUND": (13, "Function Not Found"),
    "CORRUPTED_INFOROM": (14, "Corrupted infoROM"),
    "GPU_IS_LOST": (15, "GPU is lost"),
    "RESET_REQUIRED": (16, "GPU requires restart"),
    "OPERATING_SYSTEM": (17, "The operating system has blocked the request."),
    "LIB_RM_VERSION_MISMATCH": (18, "RM has detected an NVML/RM version mismatch."),
    "MEMORY": (20, "Insufficient Memory"),
    "NO_DATA": (21, "No data"),
    "UNKNOWN": (999, "Unknown Error"),
}


class NVMLError(Exception):
    """pynvml's base error; ``value`` is the NVML return code."""

    value = 999
    message = "Unknown Error"

    def __str__(self) -> str:
        return self.message


def _error_class(name: str, code: int, message: str) -> type[NVMLError]:
    # pynvml turns NVML_ERROR_GPU_IS_LOST into NVMLError_GpuIsLost the same way.
    class_name = "NVMLError_" + string.capwords(name, "_").replace("_", "")
    return type(class_name, (NVMLError,), {"value": code, "message": message})


ERRORS: dict[str, type[NVMLError]] = {
    cls.__name__: cls
    for cls in (_error_class(name, *code_message) for name, code_message in _ERROR_CODES.items())
}

# Costs recorded per call (call_median_us in the dump), keyed by pynvml function.
CALL_COST_KEYS = {
    "nvmlSystemGetDriverVersion": "driver_version",
    "nvmlSystemGetNVMLVersion": "nvml_version",
    "nvmlSystemGetCudaDriverVersion": "cuda_driver_version",
    "nvmlDeviceGetCount": "device_count",
    "nvmlDeviceGetName": "name",
    "nvmlDeviceGetUUID": "uuid",
    "nvmlDeviceGetSerial": "serial",
    "nvmlDeviceGetBoardPartNumber": "board_part_number",
    "nvmlDeviceGetPciInfo": "pci_info",
    "nvmlDeviceGetMemoryInfo": "memory_info",
    "nvmlDeviceGetUtilizationRates": "utilization",
    "nvmlDeviceGetTemperature": "temperature",
    "nvmlDeviceGetPowerUsage": "power_usage_mw",
    "nvmlDeviceGetPowerManagementLimit": "power_limit_mw",
    "nvmlDeviceGetVbiosVersion": "vbios_version",
    "nvmlDeviceGetMigMode": "mig_mode",
    "nvmlDeviceGetCudaComputeCapability": "cuda_capability",
    "nvmlDeviceGetEccMode": "ecc_mode",
    "nvmlDeviceGetTotalEccErrors": "ecc_uncorrected_volatile",
    "nvmlDeviceGetMaxClockInfo": "max_clock_sm_mhz",
    "nvmlDeviceGetComputeRunningProcesses": "running_compute_processes",
    "nvmlDeviceGetTotalEnergyConsumption": "total_energy_mj",
    "nvmlDeviceGetFanSpeed": "fan_speed",
}

_PROFILE_ROW = re.compile(r"^\|\s+\d+\s+MIG\s+(\S+)\s+\d+\s+\d+/(\d+)\s+([\d.]+)\s", re.MULTILINE)

_F = TypeVar("_F", bound=Callable[..., Any])


def load_dump(directory: Path = FIXTURE_DIR) -> dict[str, Any]:
    """The recorded NVML readings (nvml-dump.json)."""
    loaded: dict[str, Any] = json.loads((directory / "nvml-dump.json").read_text())
    return loaded


@dataclass(frozen=True)
class MigProfile:
    """One row of the recorded MIG profile table."""

    name: str
    instances: int
    memory_bytes: int


def load_mig_profiles(directory: Path = FIXTURE_DIR) -> dict[str, MigProfile]:
    """The MIG profiles `nvidia-smi mig -lgip` listed on the recorded H100."""
    text = (directory / "nvidia-smi-extra.txt").read_text()
    return {
        name: MigProfile(name, int(total), round(float(gib) * 2**30))
        for name, total, gib in _PROFILE_ROW.findall(text)
    }


@dataclass(frozen=True)
class FakeHandle:
    """An opaque device handle, as pynvml's ``c_nvmlDevice_t``; ``mig`` is a MIG slot."""

    gpu: int
    mig: int | None = None


def clone_device(reading: dict[str, Any], index: int) -> dict[str, Any]:
    """The recorded GPU as GPU ``index``: same board, its own identity and PCI slot."""
    clone = copy.deepcopy(reading)
    if index == 0:
        return clone
    clone["index"] = clone["minor_number"] = index
    clone["uuid"] = f"{reading['uuid'][:-4]}{index:04x}"
    clone["serial"] = str(int(reading["serial"]) + index)
    pci = clone["pci_info"]
    pci["device"] += index
    pci["busId"] = f"{pci['domain']:08X}:{pci['bus']:02X}:{pci['device']:02X}.0"
    pci["busIdLegacy"] = f"{pci['domain']:04X}:{pci['bus']:02X}:{pci['device']:02X}.0"
    return clone


def _nvml_function(function: _F) -> _F:
    """Record the call, then refuse it as NVML would (not initialised, or told to fail)."""

    @functools.wraps(function)
    def call(self: "FakeNvml", *args: Any) -> Any:
        self.calls.append(function.__name__)
        self._refuse(function.__name__, args)
        return function(self, *args)

    return call  # type: ignore[return-value]


class FakeNvml(ModuleType):
    """A ``pynvml`` module answering from the recorded readings; see the module docstring."""

    NVMLError = NVMLError

    NVML_FEATURE_DISABLED = 0
    NVML_FEATURE_ENABLED = 1
    NVML_DEVICE_MIG_DISABLE = 0
    NVML_DEVICE_MIG_ENABLE = 1
    NVML_TEMPERATURE_GPU = 0
    NVML_MEMORY_ERROR_TYPE_CORRECTED = 0
    NVML_MEMORY_ERROR_TYPE_UNCORRECTED = 1
    NVML_VOLATILE_ECC = 0
    NVML_AGGREGATE_ECC = 1
    NVML_CLOCK_SM = 1
    NVML_CC_SYSTEM_FEATURE_DISABLED = 0
    NVML_CC_SYSTEM_FEATURE_ENABLED = 1

    def __init__(
        self,
        dump: dict[str, Any] | None = None,
        *,
        gpus: int = 1,
        mig: dict[int, list[str]] | None = None,
        init_error: str | None = None,
        strings_as_bytes: bool = False,
    ) -> None:
        super().__init__("pynvml")
        self._removed: set[str] = set()
        for name, cls in ERRORS.items():
            setattr(self, name, cls)
        for name, (code, _) in _ERROR_CODES.items():
            setattr(self, f"NVML_ERROR_{name}", code)
        self.dump = copy.deepcopy(dump if dump is not None else load_dump())
        self.system: dict[str, Any] = self.dump["system"]
        recorded = self.dump["devices"][0]
        self.devices = [clone_device(recorded, index) for index in range(gpus)]
        self.system["device_count"] = gpus
        self.strings_as_bytes = strings_as_bytes
        self.calls: list[str] = []
        self.initialised = 0
        self._failures: dict[str, tuple[str, int | None]] = {}
        profiles = load_mig_profiles()
        self.mig_slots = max(profile.instances for profile in profiles.values())
        for gpu, names in (mig or {}).items():
            self._enable_mig(gpu, [profiles[name] for name in names])
        if init_error is not None:
            self.fail("nvmlInit", init_error)

    def __getattribute__(self, name: str) -> Any:
        removed = ModuleType.__getattribute__(self, "__dict__").get("_removed", ())
        if name in removed:
            raise AttributeError(f"module 'pynvml' has no attribute {name!r}")
        return ModuleType.__getattribute__(self, name)

    # What a test can change.

    def fail(
        self, function: str, error: str = "NVMLError_NotSupported", gpu: int | None = None
    ) -> None:
        """Make ``function`` raise ``error`` from now on, for one GPU or (``None``) all."""
        if error not in ERRORS:
            raise ValueError(f"pynvml has no error class {error}")
        self._failures[function] = (error, gpu)

    def remove(self, function: str) -> None:
        """Take ``function`` out of the module, as a nvidia-ml-py release without it."""
        self._removed.add(function)

    def calls_to(self, function: str) -> int:
        """How many times ``function`` was called."""
        return self.calls.count(function)

    def _enable_mig(self, gpu: int, profiles: list[MigProfile]) -> None:
        reading = self.devices[gpu]
        reading["mig_mode"] = [self.NVML_DEVICE_MIG_ENABLE, self.NVML_DEVICE_MIG_ENABLE]
        parent = reading["uuid"]
        reading["mig_devices"] = [
            {
                "uuid": f"MIG-{uuid.uuid5(uuid.NAMESPACE_OID, f'{parent}/{slot}')}",
                "name": f"{reading['name']} MIG {profile.name}",
                "memory_info": {"total": profile.memory_bytes, "used": 0},
                "gpu_instance_id": slot + 1,
                "compute_instance_id": 0,
            }
            for slot, profile in enumerate(profiles)
        ]

    # How a call is answered.

    def _refuse(self, function: str, args: tuple[Any, ...]) -> None:
        if function != "nvmlInit" and not self.initialised:
            raise ERRORS["NVMLError_Uninitialized"]
        error, only_gpu = self._failures.get(function, (None, None))
        if error is None:
            return
        handle = args[0] if args and isinstance(args[0], FakeHandle) else None
        if only_gpu is None or (handle is not None and handle.gpu == only_gpu):
            raise ERRORS[error]

    def _reading(self, handle: FakeHandle, key: str) -> Any:
        """One recorded reading of a device; a recorded "NVMLError_...: ..." is raised."""
        if not isinstance(handle, FakeHandle) or handle.gpu >= len(self.devices):
            raise ERRORS["NVMLError_InvalidArgument"]
        reading = self.devices[handle.gpu]
        if handle.mig is not None:
            mig_devices = reading.get("mig_devices", [])
            if handle.mig >= len(mig_devices):
                raise ERRORS["NVMLError_InvalidArgument"]
            # NVML answers far fewer queries for a MIG device than for a whole GPU.
            if key not in mig_devices[handle.mig]:
                raise ERRORS["NVMLError_NotSupported"]
            reading = mig_devices[handle.mig]
        value = reading[key]
        if isinstance(value, str) and value.startswith("NVMLError_"):
            raise ERRORS[value.split(":", 1)[0]]
        return value

    def _string(self, value: str) -> str | bytes:
        return value.encode() if self.strings_as_bytes else value

    # pynvml's functions.

    @_nvml_function
    def nvmlInit(self) -> None:
        self.initialised += 1

    @_nvml_function
    def nvmlShutdown(self) -> None:
        self.initialised -= 1

    @_nvml_function
    def nvmlSystemGetDriverVersion(self) -> str | bytes:
        return self._string(self.system["driver_version"])

    @_nvml_function
    def nvmlSystemGetNVMLVersion(self) -> str | bytes:
        return self._string(self.system["nvml_version"])

    @_nvml_function
    def nvmlSystemGetCudaDriverVersion(self) -> int:
        return int(self.system["cuda_driver_version"])

    @_nvml_function
    def nvmlSystemGetConfComputeState(self) -> SimpleNamespace:
        return SimpleNamespace(**self.system["conf_compute_state"])

    @_nvml_function
    def nvmlDeviceGetCount(self) -> int:
        return int(self.system["device_count"])

    @_nvml_function
    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeHandle:
        if not 0 <= index < len(self.devices):
            raise ERRORS["NVMLError_InvalidArgument"]
        return FakeHandle(index)

    @_nvml_function
    def nvmlDeviceGetName(self, handle: FakeHandle) -> str | bytes:
        return self._string(self._reading(handle, "name"))

    @_nvml_function
    def nvmlDeviceGetUUID(self, handle: FakeHandle) -> str | bytes:
        return self._string(self._reading(handle, "uuid"))

    @_nvml_function
    def nvmlDeviceGetSerial(self, handle: FakeHandle) -> str | bytes:
        return self._string(self._reading(handle, "serial"))

    @_nvml_function
    def nvmlDeviceGetBoardPartNumber(self, handle: FakeHandle) -> str | bytes:
        return self._string(self._reading(handle, "board_part_number"))

    @_nvml_function
    def nvmlDeviceGetVbiosVersion(self, handle: FakeHandle) -> str | bytes:
        return self._string(self._reading(handle, "vbios_version"))

    @_nvml_function
    def nvmlDeviceGetPciInfo(self, handle: FakeHandle) -> SimpleNamespace:
        pci = dict(self._reading(handle, "pci_info"))
        pci["busId"] = self._string(pci["busId"])
        pci["busIdLegacy"] = self._string(pci["busIdLegacy"])
        return SimpleNamespace(**pci)

    @_nvml_function
    def nvmlDeviceGetMemoryInfo(self, handle: FakeHandle) -> SimpleNamespace:
        return SimpleNamespace(**self._reading(handle, "memory_info"))

    @_nvml_function
    def nvmlDeviceGetUtilizationRates(self, handle: FakeHandle) -> SimpleNamespace:
        return SimpleNamespace(**self._reading(handle, "utilization"))

    @_nvml_function
    def nvmlDeviceGetTemperature(self, handle: FakeHandle, sensor: int) -> int:
        if sensor != self.NVML_TEMPERATURE_GPU:
            raise LookupError(f"only the GPU temperature sensor was recorded, not {sensor}")
        return int(self._reading(handle, "temperature"))

    @_nvml_function
    def nvmlDeviceGetPowerUsage(self, handle: FakeHandle) -> int:
        return int(self._reading(handle, "power_usage_mw"))

    @_nvml_function
    def nvmlDeviceGetPowerManagementLimit(self, handle: FakeHandle) -> int:
        return int(self._reading(handle, "power_limit_mw"))

    @_nvml_function
    def nvmlDeviceGetMigMode(self, handle: FakeHandle) -> list[int]:
        return list(self._reading(handle, "mig_mode"))

    @_nvml_function
    def nvmlDeviceGetMaxMigDeviceCount(self, handle: FakeHandle) -> int:
        self._reading(handle, "mig_mode")
        return self.mig_slots

    @_nvml_function
    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle: FakeHandle, index: int) -> FakeHandle:
        mig_mode = self._reading(handle, "mig_mode")
        if mig_mode[0] != self.NVML_DEVICE_MIG_ENABLE:
            raise ERRORS["NVMLError_InvalidArgument"]
        if not 0 <= index < self.mig_slots:
            raise ERRORS["NVMLError_InvalidArgument"]
        if index >= len(self.devices[handle.gpu].get("mig_devices", [])):
            raise ERRORS["NVMLError_NotFound"]  # an empty slot
        return FakeHandle(handle.gpu, index)

    @_nvml_function
    def nvmlDeviceGetGpuInstanceId(self, handle: FakeHandle) -> int:
        if handle.mig is None:
            raise ERRORS["NVMLError_NotSupported"]  # only a MIG device has one
        return int(self._reading(handle, "gpu_instance_id"))

    @_nvml_function
    def nvmlDeviceGetComputeInstanceId(self, handle: FakeHandle) -> int:
        if handle.mig is None:
            raise ERRORS["NVMLError_NotSupported"]
        return int(self._reading(handle, "compute_instance_id"))

    @_nvml_function
    def nvmlDeviceGetCudaComputeCapability(self, handle: FakeHandle) -> tuple[int, int]:
        major, minor = self._reading(handle, "cuda_capability")
        return (major, minor)

    @_nvml_function
    def nvmlDeviceGetEccMode(self, handle: FakeHandle) -> list[int]:
        return list(self._reading(handle, "ecc_mode"))

    @_nvml_function
    def nvmlDeviceGetTotalEccErrors(self, handle: FakeHandle, error_type: int, counter: int) -> int:
        recorded = (self.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, self.NVML_VOLATILE_ECC)
        if (error_type, counter) != recorded:
            raise LookupError("only the volatile uncorrected ECC count was recorded")
        return int(self._reading(handle, "ecc_uncorrected_volatile"))

    @_nvml_function
    def nvmlDeviceGetMaxClockInfo(self, handle: FakeHandle, clock: int) -> int:
        if clock != self.NVML_CLOCK_SM:
            raise LookupError("only the SM clock was recorded")
        return int(self._reading(handle, "max_clock_sm_mhz"))

    @_nvml_function
    def nvmlDeviceGetComputeRunningProcesses(self, handle: FakeHandle) -> list[SimpleNamespace]:
        return [SimpleNamespace(**p) for p in self._reading(handle, "running_compute_processes")]

    @_nvml_function
    def nvmlDeviceGetTotalEnergyConsumption(self, handle: FakeHandle) -> int:
        return int(self._reading(handle, "total_energy_mj"))

    @_nvml_function
    def nvmlDeviceGetFanSpeed(self, handle: FakeHandle) -> int:
        return int(self._reading(handle, "fan_speed"))
