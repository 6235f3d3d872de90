"""The simulated fleet: replayed GPUs with identity as recorded and moving load, and its files."""

import os
import resource
import threading
from pathlib import Path

import pytest

from agents.backends.replay import ReplayBackend
from agents.client import ControlPlaneClient
from agents.config import AgentConfig
from agents.simulator import FleetPlan, LivelyReplay, allow_open_files, build_fleet, run_fleet

RECORDING = Path(__file__).resolve().parents[2] / "fixtures/gpu/h100-80gb-hbm3"


def test_load_wanders_within_bounds_and_identity_stays() -> None:
    recording = ReplayBackend(RECORDING, variant=3)
    lively = LivelyReplay(recording, seed=3)
    assert lively.static() == recording.static()
    sweeps = [lively.telemetry()[0] for _ in range(200)]
    loads = [s.utilization_pct for s in sweeps]
    assert all(load is not None and 0 <= load <= 100 for load in loads)
    assert len(set(loads)) > 50
    assert all(s.uuid == recording.static()[0].uuid for s in sweeps)
    assert all(
        s.memory_used_bytes is not None and s.memory_used_bytes < 85520809984 for s in sweeps
    )
    again = LivelyReplay(ReplayBackend(RECORDING, variant=3), seed=3)
    assert [again.telemetry()[0] for _ in range(5)] == sweeps[:5]


def _open_files() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_the_fleet_closes_its_agents_files_when_it_stops(tmp_path: Path) -> None:
    config = AgentConfig(control_plane_url="http://127.0.0.1:9", state_dir=tmp_path)
    client = ControlPlaneClient("http://127.0.0.1:9", timeout=0.2)  # nothing listens
    agents = build_fleet(FleetPlan(nodes=3, fixture=RECORDING), config, client)
    before = _open_files()
    stop = threading.Event()
    threading.Timer(0.5, stop.set).start()
    run_fleet(agents, interval=0.1, stop=stop)
    assert all((tmp_path / f"sim-{n:04d}" / "seq").exists() for n in range(3))  # they swept
    assert _open_files() <= before


def test_open_file_limit_is_raised_for_a_large_fleet_or_refused_past_the_hard_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
        allow_open_files(100)  # fits: unchanged
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == 256
        allow_open_files(400)
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] >= 400
        if hard != resource.RLIM_INFINITY:
            with pytest.raises(OSError, match="ulimit -Hn"):
                allow_open_files(hard)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
