"""Prometheus gauges of compliance, read from the database at scrape time.

Always current, and no background loop to keep in step. Registered by the app on its own
registry.
"""

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from control_plane.compliance import repository
from control_plane.core.metrics import ProbeConnection


class ComplianceCollector(Collector):
    """The latest compliance evaluation's counts, and the requests still waiting, per scrape.

    Before the first evaluation only the pending requests are reported. Labels are policy
    and rule names, which a deployment has tens of, not workload or node ids.
    """

    def __init__(self, connection: ProbeConnection):
        self._connection = connection

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """Yield the compliance gauges; nothing when the database cannot be reached."""
        evaluated = GaugeMetricFamily(
            "sovereign_compliance_workloads_evaluated",
            "Running workloads the latest compliance evaluation judged.",
        )
        violating = GaugeMetricFamily(
            "sovereign_compliance_violating_workloads",
            "Running workloads a deny policy breaks, at the latest compliance evaluation.",
        )
        warned = GaugeMetricFamily(
            "sovereign_compliance_warned_workloads",
            "Running workloads admitted only with warnings, at the latest evaluation.",
        )
        by_rule = GaugeMetricFamily(
            "sovereign_compliance_violations",
            "Violating workloads per policy and rule at the latest evaluation "
            '(policy "" for reasons of no policy: node gone, registry entry gone).',
            labels=["policy", "rule"],
        )
        finished = GaugeMetricFamily(
            "sovereign_compliance_last_evaluation_timestamp_seconds",
            "When the latest compliance evaluation finished (Unix time).",
        )
        pending = GaugeMetricFamily(
            "sovereign_compliance_pending_requests",
            "Changes waiting for a compliance evaluation.",
        )
        try:
            with self._connection() as conn:
                latest = repository.latest_evaluation(conn)
                pending.add_metric([], repository.pending_count(conn))
        except Exception:
            return
        yield pending
        if latest is None:
            return
        evaluated.add_metric([], latest.workloads_evaluated)
        violating.add_metric([], latest.violating_workloads)
        warned.add_metric([], latest.warned_workloads)
        for count in latest.violations_by_rule:
            by_rule.add_metric([count.policy or "", count.rule], count.workloads)
        finished.add_metric([], latest.finished_at.timestamp())
        yield evaluated
        yield violating
        yield warned
        yield by_rule
        yield finished
