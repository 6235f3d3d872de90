"""The NVML backend against the readings recorded on a real H100 (nvml-dump.json).

The expected values below are written out, not read from the dump, so a backend (or a
fake) that drifts from what the H100 reported fails here.
"""

import dataclasses
import logging
import sys
from collections.abc import Iterator
from contextlib import closing
from typing import Any

import pytest

from agents.backends.base import BackendUnavailableError, GpuBackend
from agents.backends.nvml import NvmlBackend
from agents.protocol import GpuInventory, GpuTelemetry
from tests.unit.agent.fake_pynvml import CALL_COST_KEYS, ERRORS, FakeNvml, load_dump

UUID = "GPU-29b79b44-4926-3788-174b-399b5b491b55"

RECORDED_STATIC = GpuInventory(
    index=0,
    uuid=UUID,
    model="NVIDIA H100 80GB HBM3",
    serial="1654525039369",
    board_part_number="965-2G520-0100-001",
    vbios_version="96.00.DA.00.0C",
    pci_bus_id="00000000:00:06.0",
    memory_total_bytes=85520809984,
    mig_mode="disabled",
    mig_devices=(),
    compute_capability="9.0",
    ecc_mode="enabled",
    driver_version="580.159.04",
    cuda_version="13.0",
    power_limit_w=700.0,
    confidential_compute="off",
)

RECORDED_TELEMETRY = GpuTelemetry(
    uuid=UUID,
    utilization_pct=0.0,
    memory_used_bytes=503316480,
    temperature_c=35.0,
    power_w=69.949,
    ecc_uncorrected_errors=0,
    process_count=0,
    fan_speed_pct=None,  # recorded as NVMLError_NotSupported: an H100 SXM has no fan
)

# Measured at 0.15-3 ms a call on the H100; never to be made once per sweep.
SLOW_CALLS = {
    "nvmlDeviceGetMigMode",
    "nvmlDeviceGetEccMode",
    "nvmlDeviceGetMaxClockInfo",
    "nvmlDeviceGetTotalEnergyConsumption",
}


@pytest.fixture
def fake() -> FakeNvml:
    return FakeNvml()


@pytest.fixture
def backend(fake: FakeNvml) -> Iterator[NvmlBackend]:
    with closing(NvmlBackend(fake)) as backend:
        yield backend


# --- What the H100 reported ----------------------------------------------------------------


@pytest.mark.parametrize("strings_as_bytes", [False, True], ids=["str", "bytes"])
@pytest.mark.parametrize(
    ("field", "expected"),
    [(f.name, getattr(RECORDED_STATIC, f.name)) for f in dataclasses.fields(GpuInventory)],
)
def test_static_reports_the_recorded_value(
    field: str, expected: object, strings_as_bytes: bool
) -> None:
    # "bytes": older nvidia-ml-py releases return strings as bytes.
    with closing(NvmlBackend(FakeNvml(strings_as_bytes=strings_as_bytes))) as backend:
        (gpu,) = backend.static()
    assert getattr(gpu, field) == expected
    assert type(getattr(gpu, field)) is type(expected)


def test_static_reports_the_whole_recorded_gpu(backend: NvmlBackend) -> None:
    assert backend.static() == [RECORDED_STATIC]


@pytest.mark.parametrize(
    ("field", "expected"),
    [(f.name, getattr(RECORDED_TELEMETRY, f.name)) for f in dataclasses.fields(GpuTelemetry)],
)
def test_telemetry_reports_the_recorded_value(
    backend: NvmlBackend, field: str, expected: object
) -> None:
    (reading,) = backend.telemetry()
    assert getattr(reading, field) == expected
    assert type(getattr(reading, field)) is type(expected)


def test_the_expected_values_are_the_recorded_ones() -> None:
    # Guards the table above against a hand-edited fixture (or the reverse).
    dump = load_dump()
    (device,) = dump["devices"]
    assert (device["uuid"], device["serial"], device["name"]) == (
        UUID,
        RECORDED_STATIC.serial,
        RECORDED_STATIC.model,
    )
    assert device["memory_info"]["total"] == RECORDED_STATIC.memory_total_bytes
    assert device["memory_info"]["used"] == RECORDED_TELEMETRY.memory_used_bytes
    assert device["power_usage_mw"] == 69949
    assert dump["system"]["driver_version"] == RECORDED_STATIC.driver_version
    assert dump["system"]["cuda_driver_version"] == 13000
    assert device["fan_speed"].startswith("NVMLError_NotSupported")


@pytest.mark.parametrize(
    ("encoded", "version"),
    [(13000, "13.0"), (12040, "12.4"), (12090, "12.9"), (11080, "11.8")],
)
def test_the_cuda_version_is_decoded_as_nvml_encodes_it(encoded: int, version: str) -> None:
    # Only 13000 was recorded; NVML encodes major * 1000 + minor * 10 for every version.
    dump = load_dump()
    dump["system"]["cuda_driver_version"] = encoded
    with closing(NvmlBackend(FakeNvml(dump))) as backend:
        assert backend.static()[0].cuda_version == version


def test_it_is_a_gpu_backend_named_nvml(backend: NvmlBackend) -> None:
    typed: GpuBackend = backend
    assert typed.name == "nvml"


# --- Fields the board or driver does not offer ----------------------------------------------


@pytest.mark.parametrize("error", ["NVMLError_NotSupported", "NVMLError_FunctionNotFound"])
@pytest.mark.parametrize(
    ("function", "field"),
    [
        ("nvmlDeviceGetSerial", "serial"),
        ("nvmlDeviceGetBoardPartNumber", "board_part_number"),
        ("nvmlDeviceGetVbiosVersion", "vbios_version"),
        ("nvmlDeviceGetPciInfo", "pci_bus_id"),
        ("nvmlDeviceGetMemoryInfo", "memory_total_bytes"),
        ("nvmlDeviceGetMigMode", "mig_mode"),
        ("nvmlDeviceGetCudaComputeCapability", "compute_capability"),
        ("nvmlDeviceGetEccMode", "ecc_mode"),
        ("nvmlDeviceGetPowerManagementLimit", "power_limit_w"),
        ("nvmlSystemGetDriverVersion", "driver_version"),
        ("nvmlSystemGetCudaDriverVersion", "cuda_version"),
        ("nvmlSystemGetConfComputeState", "confidential_compute"),
    ],
)
def test_an_unsupported_static_field_is_none_and_the_rest_still_read(
    fake: FakeNvml, function: str, field: str, error: str
) -> None:
    fake.fail(function, error)
    with closing(NvmlBackend(fake)) as backend:
        unsupported: dict[str, Any] = {field: None}
        assert backend.static() == [dataclasses.replace(RECORDED_STATIC, **unsupported)]


def test_confidential_compute_is_none_with_a_pynvml_that_lacks_the_call(fake: FakeNvml) -> None:
    fake.remove("nvmlSystemGetConfComputeState")  # nvidia-ml-py before 12.535
    with closing(NvmlBackend(fake)) as backend:
        assert backend.static()[0].confidential_compute is None


@pytest.mark.parametrize(
    ("function", "field"),
    [
        ("nvmlDeviceGetUtilizationRates", "utilization_pct"),
        ("nvmlDeviceGetMemoryInfo", "memory_used_bytes"),
        ("nvmlDeviceGetTemperature", "temperature_c"),
        ("nvmlDeviceGetPowerUsage", "power_w"),
        ("nvmlDeviceGetTotalEccErrors", "ecc_uncorrected_errors"),
        ("nvmlDeviceGetComputeRunningProcesses", "process_count"),
    ],
)
def test_a_telemetry_field_that_becomes_unsupported_is_none(
    fake: FakeNvml, backend: NvmlBackend, function: str, field: str
) -> None:
    assert backend.telemetry() == [RECORDED_TELEMETRY]
    fake.fail(function, "NVMLError_NotSupported")
    unsupported: dict[str, Any] = {field: None}
    assert backend.telemetry() == [dataclasses.replace(RECORDED_TELEMETRY, **unsupported)]


def test_a_lost_gpu_reads_as_none_rather_than_failing_the_sweep(
    fake: FakeNvml, backend: NvmlBackend
) -> None:
    for function in CALL_COST_KEYS:
        fake.fail(function, "NVMLError_GpuIsLost")
    assert backend.telemetry() == [GpuTelemetry(uuid=UUID)]


def test_a_fanless_board_is_never_asked_for_its_fan_again(
    fake: FakeNvml, backend: NvmlBackend
) -> None:
    fake.calls.clear()
    assert backend.telemetry()[0].fan_speed_pct is None
    assert fake.calls_to("nvmlDeviceGetFanSpeed") == 0


def test_a_board_with_a_fan_reports_it_each_sweep() -> None:
    dump = load_dump()
    dump["devices"][0]["fan_speed"] = 30  # not recorded: the H100 SXM has no fan
    fake = FakeNvml(dump)
    with closing(NvmlBackend(fake)) as backend:
        assert backend.telemetry()[0].fan_speed_pct == 30.0
        dump_device = fake.devices[0]
        dump_device["fan_speed"] = 45
        assert backend.telemetry()[0].fan_speed_pct == 45.0


def test_ecc_errors_are_not_read_where_ecc_is_off() -> None:
    dump = load_dump()
    dump["devices"][0]["ecc_mode"] = [0, 0]  # the recorded H100 has ECC on
    fake = FakeNvml(dump)
    with closing(NvmlBackend(fake)) as backend:
        assert backend.static()[0].ecc_mode == "disabled"
        fake.calls.clear()
        assert backend.telemetry()[0].ecc_uncorrected_errors is None
        assert fake.calls_to("nvmlDeviceGetTotalEccErrors") == 0


# --- Cost: static facts once, cheap calls each sweep ----------------------------------------


def test_telemetry_makes_no_slow_call(fake: FakeNvml, backend: NvmlBackend) -> None:
    fake.calls.clear()
    backend.telemetry()
    assert fake.calls, "telemetry() made no NVML call at all"
    assert not SLOW_CALLS & set(fake.calls)


def test_a_sweep_costs_what_the_h100_measured_as_cheap(
    fake: FakeNvml, backend: NvmlBackend
) -> None:
    costs = load_dump()["call_median_us"]
    fake.calls.clear()
    backend.telemetry()
    measured = [costs[CALL_COST_KEYS[call]] for call in fake.calls]
    # Each call here was measured at 2-11 us; the slow ones start at ~140 us.
    assert max(measured) < 20
    assert sum(measured) < 50


def test_the_slow_calls_are_made_once_at_start(fake: FakeNvml, backend: NvmlBackend) -> None:
    for _ in range(3):
        backend.static()
        backend.telemetry()
    assert fake.calls_to("nvmlDeviceGetMigMode") == 1
    assert fake.calls_to("nvmlDeviceGetEccMode") == 1
    assert fake.calls_to("nvmlDeviceGetFanSpeed") == 1  # the probe that found no fan


# --- Several GPUs and MIG --------------------------------------------------------------------


def test_several_gpus_are_read_in_index_order() -> None:
    fake = FakeNvml(gpus=3)
    with closing(NvmlBackend(fake)) as backend:
        static = backend.static()
        telemetry = backend.telemetry()
    assert [gpu.index for gpu in static] == [0, 1, 2]
    assert static[0] == RECORDED_STATIC
    assert len({gpu.uuid for gpu in static}) == 3
    assert len({gpu.pci_bus_id for gpu in static}) == 3
    assert [reading.uuid for reading in telemetry] == [gpu.uuid for gpu in static]


def test_a_field_unsupported_on_one_gpu_is_none_on_that_gpu_only() -> None:
    fake = FakeNvml(gpus=2)
    fake.fail("nvmlDeviceGetPowerUsage", "NVMLError_NotSupported", gpu=1)
    with closing(NvmlBackend(fake)) as backend:
        first, second = backend.telemetry()
    assert first.power_w == 69.949
    assert second.power_w is None
    assert second.temperature_c == 35.0


def test_mig_devices_are_listed_where_mig_is_enabled() -> None:
    # Profiles and sizes from the MIG profile table recorded on the same H100.
    fake = FakeNvml(mig={0: ["3g.40gb", "1g.10gb"]})
    with closing(NvmlBackend(fake)) as backend:
        (gpu,) = backend.static()
    assert gpu.mig_mode == "enabled"
    assert [(d.index, d.profile, d.memory_total_bytes) for d in gpu.mig_devices] == [
        (0, "3g.40gb", 42412802048),
        (1, "1g.10gb", 10468982784),
    ]
    assert [(d.gpu_instance_id, d.compute_instance_id) for d in gpu.mig_devices] == [(1, 0), (2, 0)]
    assert all(d.uuid and d.uuid.startswith("MIG-") for d in gpu.mig_devices)
    assert fake.calls_to("nvmlDeviceGetMigDeviceHandleByIndex") == 7  # 5 empty slots skipped


@pytest.mark.parametrize(
    ("function", "field"),
    [
        ("nvmlDeviceGetGpuInstanceId", "gpu_instance_id"),
        ("nvmlDeviceGetComputeInstanceId", "compute_instance_id"),
    ],
)
def test_a_mig_instance_id_nvml_refuses_is_none(function: str, field: str) -> None:
    fake = FakeNvml(mig={0: ["1g.10gb"]})
    fake.fail(function, "NVMLError_NotSupported")
    with closing(NvmlBackend(fake)) as backend:
        (device,) = backend.static()[0].mig_devices
    assert getattr(device, field) is None
    assert (device.profile, device.memory_total_bytes) == ("1g.10gb", 10468982784)


def test_mig_devices_are_not_walked_where_mig_is_off(fake: FakeNvml) -> None:
    backend = NvmlBackend(fake)
    backend.close()
    assert fake.calls_to("nvmlDeviceGetMaxMigDeviceCount") == 0
    assert fake.calls_to("nvmlDeviceGetMigDeviceHandleByIndex") == 0


def test_a_board_without_mig_has_no_mig_mode(fake: FakeNvml) -> None:
    fake.fail("nvmlDeviceGetMigMode", "NVMLError_NotSupported")
    with closing(NvmlBackend(fake)) as backend:
        (gpu,) = backend.static()
    assert (gpu.mig_mode, gpu.mig_devices) == (None, ())


# --- When NVML cannot be used ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        ("NVMLError_DriverNotLoaded", "NVML could not initialise: Driver Not Loaded"),
        ("NVMLError_LibraryNotFound", "NVML could not initialise: NVML Shared Library Not Found"),
        ("NVMLError_NoPermission", "NVML could not initialise: Insufficient Permissions"),
    ],
)
def test_nvml_that_does_not_start_makes_the_backend_unavailable(error: str, reason: str) -> None:
    fake = FakeNvml(init_error=error)
    with pytest.raises(BackendUnavailableError) as raised:
        NvmlBackend(fake)
    assert str(raised.value) == reason
    assert isinstance(raised.value.__cause__, ERRORS[error])
    assert fake.calls_to("nvmlShutdown") == 0


def test_a_missing_nvidia_ml_py_makes_the_backend_unavailable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml now fails
    with pytest.raises(BackendUnavailableError) as raised:
        NvmlBackend()
    assert str(raised.value) == "nvidia-ml-py is not installed (no module pynvml)"


def test_without_a_module_it_imports_pynvml(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeNvml()
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    with closing(NvmlBackend()) as backend:
        assert backend.static() == [RECORDED_STATIC]
    assert fake.calls[0] == "nvmlInit"


def test_no_gpu_makes_the_backend_unavailable_and_shuts_nvml_down() -> None:
    fake = FakeNvml(gpus=0)
    with pytest.raises(BackendUnavailableError, match="NVML found no GPU"):
        NvmlBackend(fake)
    assert (fake.calls_to("nvmlShutdown"), fake.initialised) == (1, 0)


@pytest.mark.parametrize("function", ["nvmlDeviceGetUUID", "nvmlDeviceGetName"])
def test_a_gpu_that_cannot_be_identified_makes_the_backend_unavailable(function: str) -> None:
    fake = FakeNvml(gpus=2)
    fake.fail(function, "NVMLError_GpuIsLost", gpu=1)
    with pytest.raises(BackendUnavailableError) as raised:
        NvmlBackend(fake)
    assert str(raised.value) == "NVML could not identify GPU 1: GPU is lost"
    assert (fake.calls_to("nvmlShutdown"), fake.initialised) == (1, 0)


def test_gpus_that_cannot_be_listed_make_the_backend_unavailable(fake: FakeNvml) -> None:
    fake.fail("nvmlDeviceGetCount", "NVMLError_Unknown")
    with pytest.raises(BackendUnavailableError, match="could not list the GPUs: Unknown Error"):
        NvmlBackend(fake)
    assert fake.initialised == 0


def test_an_error_that_is_not_nvmls_propagates_and_still_shuts_nvml_down(fake: FakeNvml) -> None:
    fake.devices[0]["cuda_capability"] = None  # a broken reading: a bug, not "unsupported"
    with pytest.raises(TypeError):
        NvmlBackend(fake)
    assert fake.initialised == 0


# --- Closing ---------------------------------------------------------------------------------


def test_close_shuts_nvml_down_once(fake: FakeNvml) -> None:
    backend = NvmlBackend(fake)
    backend.close()
    backend.close()
    assert (fake.calls_to("nvmlShutdown"), fake.initialised) == (1, 0)


def test_telemetry_after_close_is_refused(fake: FakeNvml) -> None:
    backend = NvmlBackend(fake)
    backend.close()
    fake.calls.clear()
    with pytest.raises(BackendUnavailableError, match="closed"):
        backend.telemetry()
    assert fake.calls == []


def test_a_failed_shutdown_is_logged_not_raised(
    fake: FakeNvml, caplog: pytest.LogCaptureFixture
) -> None:
    backend = NvmlBackend(fake)
    fake.fail("nvmlShutdown", "NVMLError_Unknown")
    with caplog.at_level(logging.WARNING, logger="sovereign.agent.nvml"):
        backend.close()
    assert "NVML shutdown failed: Unknown Error" in caplog.text


# --- The fake against the real nvidia-ml-py, where it is installed ---------------------------


def test_the_fake_mirrors_the_real_pynvml() -> None:
    pynvml = pytest.importorskip("pynvml", reason="nvidia-ml-py is not installed")
    functions = [name for name in dir(FakeNvml) if name.startswith("nvml")]
    assert [name for name in functions if not callable(getattr(pynvml, name, None))] == []
    assert [name for name in ERRORS if not hasattr(pynvml, name)] == []
    for name, cls in ERRORS.items():
        assert getattr(pynvml, name)().value == cls.value, name
    constants = [name for name in dir(FakeNvml) if name.startswith("NVML_")]
    assert {name: getattr(pynvml, name) for name in constants} == {
        name: getattr(FakeNvml, name) for name in constants
    }
