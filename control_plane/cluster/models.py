"""What one label sync reports.

The label scheme itself (names, values, which zones) is ``domain.kubernetes``, shared with
the admission webhooks that select on it.
"""

from dataclasses import dataclass, field

#: How many unknown Kubernetes node names a report lists; ``unknown_count`` is exact.
UNKNOWN_SAMPLE = 100


@dataclass(slots=True)
class SyncReport:
    """What one label sync found and did.

    ``unknown`` names (a sample of at most ``UNKNOWN_SAMPLE``) the Kubernetes Nodes the
    inventory has no node for, or more than one node with that hostname: they get no
    labels of ours. ``patched`` counts Nodes whose labels were changed, ``unchanged`` those
    already right (no request sent).
    """

    nodes_seen: int = 0
    patched: int = 0
    unchanged: int = 0
    unknown_count: int = 0
    unknown: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        """The report as JSON-safe values (the Celery task's result)."""
        return {
            "nodes_seen": self.nodes_seen,
            "patched": self.patched,
            "unchanged": self.unchanged,
            "unknown_count": self.unknown_count,
            "unknown": list(self.unknown),
        }
