"""The agent's Prometheus metrics, read back as a scraper would parse them."""

import dataclasses
import socket
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from agents.backends.replay import ReplayBackend
from agents.metrics import DEFAULT_METRICS_PORT, AgentMetrics
from agents.protocol import GpuInventory, GpuTelemetry

RECORDING = Path(__file__).resolve().parents[2] / "fixtures/gpu/h100-80gb-hbm3"
UUID = "GPU-29b79b44-4926-3788-174b-399b5b491b55"
NODE = "gpu-7"
TELEMETRY = (
    "sovereign_gpu_utilization_ratio",
    "sovereign_gpu_memory_used_bytes",
    "sovereign_gpu_temperature_celsius",
    "sovereign_gpu_power_watts",
    "sovereign_gpu_ecc_uncorrected_errors",
    "sovereign_gpu_processes",
)


def recorded() -> tuple[list[GpuInventory], list[GpuTelemetry]]:
    backend = ReplayBackend(RECORDING)
    return backend.static(), backend.telemetry()


def samples(metrics: AgentMetrics) -> list[Sample]:
    text = metrics.render().decode()
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def named(metrics: AgentMetrics, name: str) -> list[Sample]:
    return [s for s in samples(metrics) if s.name == name]


def value(metrics: AgentMetrics, name: str, **labels: str) -> float:
    (sample,) = [s for s in named(metrics, name) if labels.items() <= s.labels.items()]
    return sample.value


def h100_metrics() -> AgentMetrics:
    statics, readings = recorded()
    metrics = AgentMetrics(NODE, zone="jp-east", origin_country="JP")
    metrics.set_inventory(
        statics, zone=None, origin_country=None, component_origins={"gpu": "TW", "nic": "IL"}
    )
    metrics.observe(readings)
    return metrics


def test_info_carries_the_recorded_h100_identity() -> None:
    (info,) = named(h100_metrics(), "sovereign_gpu_info")
    assert info.value == 1
    assert info.labels == {
        "uuid": UUID,
        "serial": "1654525039369",
        "model": "NVIDIA H100 80GB HBM3",
        "index": "0",
        "node": NODE,
        "zone": "jp-east",
        "origin_country": "JP",
        "gpu_origin_country": "TW",
        "driver_version": "580.159.04",
        "mig_mode": "disabled",
    }


def test_unknown_identity_is_the_empty_string_and_set_inventory_overrides() -> None:
    statics, _ = recorded()
    metrics = AgentMetrics(NODE, zone="jp-east")
    metrics.set_inventory(
        [dataclasses.replace(statics[0], serial=None, mig_mode=None, driver_version=None)],
        zone="jp-west",
        origin_country=None,
        component_origins={},
    )
    (info,) = named(metrics, "sovereign_gpu_info")
    assert info.labels["zone"] == "jp-west"
    for label in ("serial", "origin_country", "gpu_origin_country", "driver_version", "mig_mode"):
        assert info.labels[label] == "", label


def test_telemetry_from_the_recording() -> None:
    metrics = h100_metrics()
    gpu = {"uuid": UUID, "node": NODE}
    assert value(metrics, "sovereign_gpu_utilization_ratio", **gpu) == 0.0
    assert value(metrics, "sovereign_gpu_temperature_celsius", **gpu) == 35
    assert value(metrics, "sovereign_gpu_power_watts", **gpu) == pytest.approx(69.949)
    assert value(metrics, "sovereign_gpu_memory_used_bytes", **gpu) == 503316480
    assert value(metrics, "sovereign_gpu_ecc_uncorrected_errors", **gpu) == 0
    assert value(metrics, "sovereign_gpu_processes", **gpu) == 0
    for name in TELEMETRY:
        (sample,) = named(metrics, name)
        assert sample.labels == gpu, name  # low cardinality: identity is on the info metric


def test_utilization_percent_becomes_a_ratio() -> None:
    metrics = AgentMetrics(NODE)
    metrics.observe([GpuTelemetry(uuid=UUID, utilization_pct=87.5)])
    assert value(metrics, "sovereign_gpu_utilization_ratio") == 0.875


def test_none_reading_leaves_no_sample_and_removes_the_previous_one() -> None:
    metrics = h100_metrics()
    assert value(metrics, "sovereign_gpu_temperature_celsius") == 35
    _, (reading,) = recorded()
    metrics.observe([dataclasses.replace(reading, temperature_c=None, power_w=float("nan"))])
    assert named(metrics, "sovereign_gpu_temperature_celsius") == []
    assert named(metrics, "sovereign_gpu_power_watts") == []  # NaN is no reading either
    assert value(metrics, "sovereign_gpu_memory_used_bytes") == 503316480
    metrics.observe([reading])
    assert value(metrics, "sovereign_gpu_temperature_celsius") == 35


def test_unsupported_field_never_has_a_sample() -> None:
    metrics = AgentMetrics(NODE)
    metrics.observe([GpuTelemetry(uuid=UUID)])
    for name in TELEMETRY:
        assert named(metrics, name) == [], name


def test_gpu_removed_from_inventory_loses_its_series() -> None:
    statics, readings = recorded()
    other = dataclasses.replace(statics[0], uuid="GPU-other", serial="1", index=1)
    metrics = AgentMetrics(NODE)
    metrics.set_inventory([*statics, other], zone=None, origin_country=None, component_origins={})
    metrics.observe([*readings, dataclasses.replace(readings[0], uuid="GPU-other")])
    assert {s.labels["uuid"] for s in named(metrics, "sovereign_gpu_info")} == {UUID, "GPU-other"}
    assert len(named(metrics, "sovereign_gpu_power_watts")) == 2

    metrics.set_inventory(statics, zone=None, origin_country=None, component_origins={})
    for name in ("sovereign_gpu_info", *TELEMETRY):
        assert {s.labels["uuid"] for s in named(metrics, name)} == {UUID}, name


def test_gpu_missing_from_a_sweep_loses_its_telemetry() -> None:
    metrics = h100_metrics()
    metrics.observe([])
    for name in TELEMETRY:
        assert named(metrics, name) == [], name
    assert len(named(metrics, "sovereign_gpu_info")) == 1  # still in the inventory


def test_changed_identity_replaces_the_info_series() -> None:
    statics, _ = recorded()
    metrics = AgentMetrics(NODE)
    metrics.set_inventory(statics, zone="a", origin_country=None, component_origins={})
    metrics.set_inventory(statics, zone="b", origin_country=None, component_origins={})
    (info,) = named(metrics, "sovereign_gpu_info")
    assert info.labels["zone"] == "b"


def test_agent_self_metrics() -> None:
    metrics = AgentMetrics(NODE)
    metrics.observe_sweep(0.000033)
    metrics.observe_sweep(0.02)
    metrics.set_spool_depth(12)
    metrics.count_dropped()
    metrics.count_dropped(3)
    metrics.count_heartbeat("sent")
    metrics.count_heartbeat("sent")
    metrics.count_heartbeat("spooled")
    metrics.set_agent_info("0.1.0", "nvml")
    metrics.set_agent_info("0.1.0", "replay")

    assert value(metrics, "sovereign_agent_sweep_duration_seconds_count") == 2
    assert value(metrics, "sovereign_agent_sweep_duration_seconds_sum") == pytest.approx(0.020033)
    assert value(metrics, "sovereign_agent_sweep_duration_seconds_bucket", le="1e-05") == 0
    assert value(metrics, "sovereign_agent_sweep_duration_seconds_bucket", le="5e-05") == 1
    assert value(metrics, "sovereign_agent_sweep_duration_seconds_bucket", le="0.1") == 2
    assert value(metrics, "sovereign_agent_spool_depth") == 12
    assert value(metrics, "sovereign_agent_spool_dropped_total") == 4
    assert value(metrics, "sovereign_agent_heartbeats_total", outcome="sent") == 2
    assert value(metrics, "sovereign_agent_heartbeats_total", outcome="spooled") == 1
    assert value(metrics, "sovereign_agent_heartbeats_total", outcome="duplicate") == 0
    assert value(metrics, "sovereign_agent_heartbeats_total", outcome="failed") == 0
    (info,) = named(metrics, "sovereign_agent_info")
    assert info.labels == {"version": "0.1.0", "backend": "replay"}
    assert info.value == 1


def test_unknown_heartbeat_outcome_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown heartbeat outcome"):
        AgentMetrics(NODE).count_heartbeat("lost")  # type: ignore[arg-type]


def test_registries_are_independent() -> None:
    first, second = AgentMetrics("a"), AgentMetrics("b")
    first.set_spool_depth(5)
    assert value(first, "sovereign_agent_spool_depth") == 5
    assert value(second, "sovereign_agent_spool_depth") == 0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_serve_answers_a_scrape_then_stops() -> None:
    assert DEFAULT_METRICS_PORT == 9402
    metrics = h100_metrics()
    port = free_port()
    server = metrics.serve("127.0.0.1", port)
    try:
        assert server.port == port
        url = f"http://127.0.0.1:{port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            assert response.status == 200
            body = response.read().decode()
    finally:
        server.close()
    families = {f.name: f for f in text_string_to_metric_families(body)}
    (info,) = families["sovereign_gpu_info"].samples
    assert info.labels["uuid"] == UUID
    with pytest.raises(OSError), urllib.request.urlopen(url, timeout=1):
        pass
