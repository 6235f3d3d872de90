"""Prometheus metrics of the node agent: its GPUs, and the agent itself.

Each :class:`AgentMetrics` owns its own registry (no global state), so tests and the fleet
simulator can run many agents in one process. Per-GPU gauges carry only ``uuid`` and
``node`` labels, to keep cardinality low; identity (serial, model, origin, zone, driver)
is on one ``sovereign_gpu_info`` series per GPU, joined in PromQL with
``* on (uuid, node) group_left(serial, model) sovereign_gpu_info``. That identity is what
DCGM exporter users ask for and lack.

A reading the board does not report leaves no sample at all: a missing series says
"unknown", where 0 or NaN would be mistaken for a measurement. GPUs that disappear lose
their series, so dashboards do not show stale values for hardware that is gone.

The per-GPU telemetry is turned into samples when Prometheus scrapes (every 15 s or so),
not on every sweep (every second): a sweep only keeps a reference to its readings. Setting
48 gauges per sweep for 8 GPUs, each behind its own lock, cost about 90 µs of CPU when the
daemon wakes with cold caches, nearly a tenth of the agent's whole budget.
"""

import math
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from socketserver import ThreadingMixIn
from typing import Final, Literal, get_args
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    make_wsgi_app,
)
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from agents.protocol import GpuInventory, GpuTelemetry

#: Where the agent serves ``/metrics`` unless told otherwise (DCGM exporter has 9400).
DEFAULT_METRICS_PORT: Final = 9402

#: What became of a heartbeat: delivered, written to the spool for later, refused by the
#: control plane as already seen, or lost (neither delivered nor spooled).
HeartbeatOutcome = Literal["sent", "spooled", "duplicate", "failed"]
HEARTBEAT_OUTCOMES: Final[tuple[str, ...]] = get_args(HeartbeatOutcome)

#: A sweep reads telemetry from every GPU: about 33 µs on one H100 through NVML, up to tens
#: of milliseconds when nvidia-smi is run. Buckets span 10 µs to 100 ms.
SWEEP_BUCKETS: Final = (
    0.00001,
    0.000025,
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
)

GPU_INFO_LABELS: Final = (
    "uuid",
    "serial",
    "model",
    "index",
    "node",
    "zone",
    "origin_country",
    "gpu_origin_country",
    "driver_version",
    "mig_mode",
)

# (metric name, help, how to read the value from a reading). Percent becomes a 0-1 ratio.
_GPU_GAUGES: Final[tuple[tuple[str, str, Callable[[GpuTelemetry], float | None]], ...]] = (
    (
        "sovereign_gpu_utilization_ratio",
        "Fraction of the last sample period a kernel ran on the GPU (0-1).",
        lambda r: None if r.utilization_pct is None else r.utilization_pct / 100,
    ),
    (
        "sovereign_gpu_memory_used_bytes",
        "GPU memory in use, in bytes.",
        lambda r: r.memory_used_bytes,
    ),
    (
        "sovereign_gpu_temperature_celsius",
        "GPU core temperature, in degrees Celsius.",
        lambda r: r.temperature_c,
    ),
    (
        "sovereign_gpu_power_watts",
        "GPU board power draw, in watts.",
        lambda r: r.power_w,
    ),
    (
        "sovereign_gpu_ecc_uncorrected_errors",
        "Uncorrected ECC errors since the driver loaded (NVML volatile count), as read. "
        "A gauge, not a counter: the count resets when the driver reloads.",
        lambda r: r.ecc_uncorrected_errors,
    ),
    (
        "sovereign_gpu_processes",
        "Compute processes running on the GPU.",
        lambda r: r.process_count,
    ),
)


def _label(value: object) -> str:
    """A label value; unknown (``None``) is the empty string, as Prometheus treats absence."""
    return "" if value is None else str(value)


class _TelemetryCollector:
    """The per-GPU telemetry gauges, built from the latest sweep's readings at scrape time.

    Only GPUs in ``readings`` have samples, and only for values that are known and finite,
    so a GPU that vanished or a reading the board does not report leaves no series.
    """

    def __init__(self, node: str) -> None:
        self.node = node
        #: Replaced whole by each sweep (one reference assignment, atomic under the GIL),
        #: read once per scrape from the server thread.
        self.readings: tuple[GpuTelemetry, ...] = ()

    def describe(self) -> Iterator[Metric]:
        """The families without samples, so the registry checks names at registration."""
        for name, doc, _ in _GPU_GAUGES:
            yield GaugeMetricFamily(name, doc, labels=("uuid", "node"))

    def collect(self) -> Iterator[Metric]:
        """One gauge family per telemetry field, one sample per GPU that reported it."""
        readings = self.readings
        for name, doc, read in _GPU_GAUGES:
            family = GaugeMetricFamily(name, doc, labels=("uuid", "node"))
            for reading in readings:
                value = read(reading)
                if value is not None and math.isfinite(value):
                    family.add_metric((reading.uuid, self.node), value)
            yield family


class _QuietHandler(WSGIRequestHandler):
    """Scrapes are not worth a log line each."""

    def log_message(self, format: str, *args: object) -> None:
        """Say nothing."""


class _MetricsHTTPServer(ThreadingMixIn, WSGIServer):
    """One thread per scrape, so a slow client never blocks the next."""

    daemon_threads = True


class MetricsServer:
    """The HTTP server answering ``/metrics`` from a daemon thread; ``close()`` stops it.

    The thread blocks in ``accept`` between scrapes instead of polling twice a second, as
    ``serve_forever`` does: on an idle GPU server those wake-ups alone cost as much CPU as
    the agent's whole budget. ``close()`` wakes it with a connection of its own.
    """

    def __init__(self, host: str, port: int, registry: CollectorRegistry):
        self._server = make_server(
            host, port, make_wsgi_app(registry), _MetricsHTTPServer, handler_class=_QuietHandler
        )
        self._server.timeout = None  # handle_request blocks until a scrape arrives
        #: The port actually bound (useful when asked for port 0).
        self.port: int = self._server.server_port
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="metrics", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stopping.is_set():
            self._server.handle_request()

    def close(self) -> None:
        """Stop serving, release the port and wait for the thread to end."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        host = self._server.server_address[0]
        wake = "127.0.0.1" if host in ("0.0.0.0", "") else str(host)  # noqa: S104
        try:
            with socket.create_connection((wake, self.port), timeout=1):
                pass
        except OSError:
            pass  # the thread may be gone already
        self._thread.join(timeout=5)
        self._server.server_close()


class AgentMetrics:
    """Every metric one node agent exposes, in a registry of its own."""

    def __init__(self, node: str, zone: str | None = None, origin_country: str | None = None):
        #: The registry holding these metrics only; pass it to exporters or aggregators.
        self.registry = CollectorRegistry()
        self.node = node
        self.zone = zone
        self.origin_country = origin_country
        self._lock = threading.Lock()

        self._gpu_info = Gauge(
            "sovereign_gpu_info",
            "Identity and placement of a GPU (always 1); join on uuid and node.",
            GPU_INFO_LABELS,
            registry=self.registry,
        )
        self._info_labels: dict[str, tuple[str, ...]] = {}  # uuid -> labels of its series

        self._telemetry = _TelemetryCollector(node)
        self.registry.register(self._telemetry)

        self._sweep = Histogram(
            "sovereign_agent_sweep_duration_seconds",
            "Time to read telemetry from every GPU of the node once.",
            buckets=SWEEP_BUCKETS,
            registry=self.registry,
        )
        self._spool_depth = Gauge(
            "sovereign_agent_spool_depth",
            "Heartbeats waiting on disk to be sent to the control plane.",
            registry=self.registry,
        )
        self._spool_dropped = Counter(
            "sovereign_agent_spool_dropped",
            "Heartbeats dropped because the spool was full.",
            registry=self.registry,
        )
        self._heartbeats = Counter(
            "sovereign_agent_heartbeats",
            "Heartbeats by outcome: sent, spooled (kept for later), duplicate (already "
            "received by the control plane) or failed (neither sent nor spooled).",
            ("outcome",),
            registry=self.registry,
        )
        # Every series from the start, so rate() works; the children are kept because
        # labels() costs more than the increment itself.
        self._heartbeat_counts = {
            outcome: self._heartbeats.labels(outcome) for outcome in HEARTBEAT_OUTCOMES
        }
        self._agent_info = Gauge(
            "sovereign_agent_info",
            "Version of the agent and the GPU backend it reads from (always 1).",
            ("version", "backend"),
            registry=self.registry,
        )

    def set_inventory(
        self,
        statics: list[GpuInventory],
        *,
        component_origins: dict[str, str],
        zone: str | None = None,
        origin_country: str | None = None,
    ) -> None:
        """Publish one ``sovereign_gpu_info`` series per GPU; drop those of GPUs now gone.

        ``zone`` and ``origin_country`` replace the node's (given at construction) where not
        ``None``; ``None`` keeps the node's. ``gpu_origin_country`` is
        ``component_origins["gpu"]``. A GPU that left the inventory also loses its telemetry.
        """
        with self._lock:
            if zone is not None:
                self.zone = zone
            if origin_country is not None:
                self.origin_country = origin_country
            wanted: dict[str, tuple[str, ...]] = {}
            for gpu in statics:
                wanted[gpu.uuid] = (
                    gpu.uuid,
                    _label(gpu.serial),
                    gpu.model,
                    str(gpu.index),
                    self.node,
                    _label(self.zone),
                    _label(self.origin_country),
                    _label(component_origins.get("gpu")),
                    _label(gpu.driver_version),
                    _label(gpu.mig_mode),
                )
            for uuid, labels in list(self._info_labels.items()):
                if wanted.get(uuid) != labels:
                    self._gpu_info.remove(*labels)
                    del self._info_labels[uuid]
                if uuid not in wanted:
                    self._forget_telemetry({uuid})
            for uuid, labels in wanted.items():
                if uuid not in self._info_labels:
                    self._gpu_info.labels(*labels).set(1)
                    self._info_labels[uuid] = labels

    def observe(self, readings: list[GpuTelemetry]) -> None:
        """Record one sweep's readings; ``readings`` is every GPU present.

        A value that is ``None`` (or not finite) removes that GPU's sample from the metric;
        a GPU missing from ``readings`` loses all its telemetry series. The readings are
        kept as they are and turned into samples at the next scrape.
        """
        self._telemetry.readings = tuple(readings)

    def _forget_telemetry(self, uuids: Iterable[str]) -> None:
        """Remove every telemetry series of these GPUs (caller holds the lock)."""
        gone = set(uuids)
        self._telemetry.readings = tuple(r for r in self._telemetry.readings if r.uuid not in gone)

    def observe_sweep(self, seconds: float) -> None:
        """Record how long one telemetry sweep took, in seconds."""
        self._sweep.observe(seconds)

    def set_spool_depth(self, n: int) -> None:
        """Set how many heartbeats are waiting on disk."""
        self._spool_depth.set(n)

    def count_dropped(self, n: int = 1) -> None:
        """Count heartbeats dropped because the spool was full."""
        self._spool_dropped.inc(n)

    def count_heartbeat(self, outcome: HeartbeatOutcome) -> None:
        """Count one heartbeat by outcome; an unknown outcome is a ``ValueError``.

        The outcomes are a fixed set so the label's cardinality stays bounded.
        """
        counter = self._heartbeat_counts.get(outcome)
        if counter is None:
            raise ValueError(f"unknown heartbeat outcome {outcome!r}")
        counter.inc()

    def set_agent_info(self, version: str, backend: str) -> None:
        """Publish the agent's version and GPU backend, replacing any earlier values."""
        with self._lock:
            self._agent_info.clear()
            self._agent_info.labels(version, backend).set(1)

    def render(self) -> bytes:
        """The registry in Prometheus text exposition format, as a scrape would get it."""
        return generate_latest(self.registry)

    def serve(self, host: str, port: int = DEFAULT_METRICS_PORT) -> MetricsServer:
        """Serve ``/metrics`` over HTTP on ``host:port`` from a daemon thread.

        Raises ``OSError`` when the address cannot be bound (port in use). Call ``close()``
        on the result to stop.
        """
        return MetricsServer(host, port, self.registry)
