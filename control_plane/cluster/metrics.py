"""Prometheus gauges of the node label sync, read from its stored report at scrape time."""

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from control_plane.cluster import repository
from control_plane.core.metrics import ProbeConnection


class LabelSyncCollector(Collector):
    """The latest label sync's unknown Nodes and when it finished; nothing before one ran.

    ``sovereign_kubernetes_unknown_nodes`` above zero is worth an alert: those Nodes carry
    no ``sovereign.io/*`` labels, so the webhook's affinity keeps governed pods off them,
    and whatever they are is not in the inventory.
    """

    def __init__(self, connection: ProbeConnection):
        self._connection = connection

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """Yield the label sync gauges; nothing when the database cannot be reached."""
        try:
            with self._connection() as conn:
                latest = repository.last_report(conn)
        except Exception:
            return
        if latest is None:
            return
        gauges = {
            "sovereign_kubernetes_nodes_seen": (
                "Kubernetes Nodes the latest label sync listed.",
                latest.nodes_seen,
            ),
            "sovereign_kubernetes_unknown_nodes": (
                "Kubernetes Nodes no inventory node answers to (or two do), at the latest"
                " label sync: they get no sovereign.io labels.",
                latest.unknown_count,
            ),
            "sovereign_kubernetes_label_sync_last_run_timestamp_seconds": (
                "When the latest node label sync finished (Unix time).",
                latest.finished_at.timestamp(),
            ),
        }
        for name, (text, value) in gauges.items():
            gauge = GaugeMetricFamily(name, text)
            gauge.add_metric([], value)
            yield gauge
