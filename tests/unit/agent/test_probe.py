"""``sovereign-agent probe`` over recorded readings: what the agent would report."""

import json
from pathlib import Path
from typing import Any

import pytest

from agents.backends.base import BackendUnavailableError
from agents.backends.replay import ReplayBackend
from agents.cli import main

RECORDING = Path(__file__).resolve().parents[2] / "fixtures/gpu/h100-80gb-hbm3"
IDENTITY = ("uuid", "serial", "model", "memory_total_bytes", "driver_version")


def probe_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    assert main(["probe", "--json", *args]) == 0
    report: dict[str, Any] = json.loads(capsys.readouterr().out)
    return report


def test_replay_reports_the_recorded_h100(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    report = probe_json(
        capsys, "--backend", "replay", "--replay", str(RECORDING), "--state-dir", str(tmp_path)
    )
    assert report["backend"] == "replay"
    (gpu,) = report["gpus"]
    assert gpu["uuid"] == "GPU-29b79b44-4926-3788-174b-399b5b491b55"
    assert gpu["serial"] == "1654525039369"
    assert gpu["model"] == "NVIDIA H100 80GB HBM3"
    assert gpu["memory_total_bytes"] == 85520809984
    assert gpu["driver_version"] == "580.159.04"
    assert gpu["cuda_version"] == "13.0"
    assert gpu["telemetry"]["temperature_c"] == 35.0
    assert gpu["telemetry"]["fan_speed_pct"] is None  # not supported on data-center boards


def test_nvidia_smi_capture_agrees_with_nvml_on_identity(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The same H100, read by the two backends, must be the same GPU."""
    nvml = probe_json(
        capsys, "--backend", "replay", "--replay", str(RECORDING), "--state-dir", str(tmp_path)
    )
    smi = probe_json(
        capsys,
        "--backend",
        "nvidia-smi",
        "--nvidia-smi-xml",
        str(RECORDING / "nvidia-smi-q.xml"),
        "--state-dir",
        str(tmp_path),
    )
    assert smi["backend"] == "nvidia-smi"
    for field in IDENTITY:
        assert smi["gpus"][0][field] == nvml["gpus"][0][field], field


def test_auto_without_nvml_or_nvidia_smi_names_both(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi to be found
    monkeypatch.setitem(__import__("sys").modules, "pynvml", None)  # import fails
    assert main(["probe", "--state-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "nvml:" in err[0]
    assert "nvidia-smi:" in err[0]


def test_variants_are_distinct_and_stable() -> None:
    uuids = {ReplayBackend(RECORDING, variant=n).static()[0].uuid for n in range(50)}
    assert len(uuids) == 50
    again = ReplayBackend(RECORDING, variant=7).static()[0]
    assert again == ReplayBackend(RECORDING, variant=7).static()[0]
    assert again.model == "NVIDIA H100 80GB HBM3"


def test_missing_recording_is_one_clear_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["probe", "--replay", str(tmp_path / "nothing")]) == 1
    assert "no recording" in capsys.readouterr().err


def test_a_hostile_capture_is_one_clear_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Issue 10: 13 million empty siblings once took 24 s and 1.3 GB to read as no GPUs."""
    capture = tmp_path / "hostile.xml"
    with capture.open("w") as file:
        file.writelines(["<nvidia_smi_log>", *["<a/>" * 100_000] * 130, "</nvidia_smi_log>"])
    assert main(["probe", "--nvidia-smi-xml", str(capture), "--state-dir", str(tmp_path)]) == 1
    assert capsys.readouterr().err == (
        f"sovereign-agent: {capture} is larger than 16 MiB"
        " (nvidia-smi -q -x prints well under 1 MiB); not parsing it\n"
    )


def test_a_replayed_capture_is_bounded_too(tmp_path: Path) -> None:
    """The replay backend reads nvidia-smi captures through the same bounded reader."""
    with (tmp_path / "nvidia-smi-q.xml").open("w") as file:
        file.writelines(["<nvidia_smi_log>", *["<a>" * 100_000] * 75])
    with pytest.raises(BackendUnavailableError, match=r"nvidia-smi-q\.xml is larger than 16 MiB"):
        ReplayBackend(tmp_path)
