"""The demo fleet's replayed GPUs: identity as recorded, load that moves within bounds."""

from pathlib import Path

from agents.backends.replay import ReplayBackend
from agents.simulator import LivelyReplay

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
