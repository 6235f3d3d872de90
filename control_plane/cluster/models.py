"""The node label scheme and what one label sync reports.

Every label the sync writes starts with ``sovereign.io/`` (``LABEL_PREFIX``), the prefix
the node-protection webhook keeps for the label sync's user alone, so no one else can
move a node into a zone. The scheme (docs/kubernetes.md, "Node label sync"):

- ``sovereign.io/node-id``: the inventory node id, what the mutating webhook's injected
  affinity selects on (``admission.pods.NODE_ID_LABEL``);
- ``sovereign.io/zone``, ``sovereign.io/country``, ``sovereign.io/origin-country``,
  ``sovereign.io/provenance``: the node's residency zone, that zone's country, the
  hardware's country of origin and how far that is believed (``admission.pods.NODE_LABELS``);
- ``sovereign.io/zone.<slug>: "true"`` for the node's zone and every zone enclosing it, so
  a pod's own affinity on ``sovereign.io/zone.jp Exists`` covers ``jp-east`` too. A label
  name is at most 63 characters, so a zone slug longer than 58 gets no such label.
"""

from dataclasses import dataclass, field

#: Every label of the sync's own starts with this; no other label is ever touched.
LABEL_PREFIX = "sovereign.io/"
NODE_ID_LABEL = "sovereign.io/node-id"
ZONE_LABEL = "sovereign.io/zone"
COUNTRY_LABEL = "sovereign.io/country"
ORIGIN_COUNTRY_LABEL = "sovereign.io/origin-country"
PROVENANCE_LABEL = "sovereign.io/provenance"
#: ``sovereign.io/zone.<slug>``: the node stands in that zone or one inside it.
IN_ZONE_PREFIX = "sovereign.io/zone."
IN_ZONE_VALUE = "true"
#: The longest name part (after the prefix's ``/``) a Kubernetes label key may have.
MAX_LABEL_NAME = 63

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
