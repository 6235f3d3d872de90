"""Prometheus gauges of the fleet, read from the database at scrape time.

Always current, and no background loop to keep in step. Registered by the app on its own
registry.
"""

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from control_plane.core.metrics import ProbeConnection
from control_plane.inventory import repository


class FleetCollector(Collector):
    """Node, GPU and MIG slice counts by zone, status, origin country, model and profile."""

    def __init__(self, connection: ProbeConnection):
        self._connection = connection

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """Yield the fleet gauges; nothing when the database cannot be reached."""
        nodes = GaugeMetricFamily(
            "sovereign_fleet_nodes",
            "GPU servers by residency zone, lifecycle status and country of origin.",
            labels=["zone", "status", "origin_country"],
        )
        gpus = GaugeMetricFamily(
            "sovereign_fleet_gpus",
            "GPUs on servers that are not decommissioned, by residency zone and model.",
            labels=["zone", "model"],
        )
        slices = GaugeMetricFamily(
            "sovereign_fleet_mig_slices",
            "Bookable MIG slices on MIG-enabled GPUs of servers that are not decommissioned,"
            " by residency zone, GPU model and MIG profile.",
            labels=["zone", "model", "profile"],
        )
        free_slices = GaugeMetricFamily(
            "sovereign_fleet_mig_slices_free",
            "MIG slices no workload holds (on GPUs not booked whole), by residency zone, GPU"
            " model and MIG profile.",
            labels=["zone", "model", "profile"],
        )
        try:
            with self._connection() as conn:
                for count in repository.fleet_node_counts(conn):
                    nodes.add_metric([count.zone, count.status, count.origin_country], count.nodes)
                for gpu_count in repository.fleet_gpu_counts(conn):
                    gpus.add_metric([gpu_count.zone, gpu_count.model], gpu_count.gpus)
                for mig in repository.fleet_mig_slice_counts(conn):
                    labels = [mig.zone, mig.model, mig.profile]
                    slices.add_metric(labels, mig.slices)
                    free_slices.add_metric(labels, mig.free)
        except Exception:
            return
        yield nodes
        yield gpus
        yield slices
        yield free_slices
