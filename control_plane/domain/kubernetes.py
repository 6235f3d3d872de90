"""The ``sovereign.io/*`` names: Node labels (and the values a node carries), pod annotations.

Written once here because several features read them and may not import each other. The
label sync (``cluster``) writes the labels on every Node; the admission webhooks
(``admission``) judge a pod's node selection against them, inject an affinity that
selects on them and refuse anyone else's change to them, and read and set the pod
annotations; the pod sweep (``compliance``) reads those annotations again on running
pods. The label scheme (docs/kubernetes.md, "Node label sync"):

- ``sovereign.io/node-id``: the inventory node id;
- ``sovereign.io/zone``, ``sovereign.io/country``, ``sovereign.io/origin-country``,
  ``sovereign.io/provenance``: the node's residency zone, that zone's country, the
  hardware's country of origin and how far that is believed;
- ``sovereign.io/zone.<slug>: "true"`` for the node's zone and every zone enclosing it, so
  an affinity on ``sovereign.io/zone.jp Exists`` covers ``jp-east`` too. A label name is
  at most 63 characters, so a zone slug longer than 58 gets no such label.

Which nodes carry them at all (only those anything may be placed on) is the sync's rule.
The annotations are docs/kubernetes.md's "Declaring a workload's data and models".
"""

from pydantic import BaseModel

#: Every label of the control plane's own starts with this; only its user may change them.
LABEL_PREFIX = "sovereign.io/"
NODE_ID_LABEL = "sovereign.io/node-id"
ZONE_LABEL = "sovereign.io/zone"
COUNTRY_LABEL = "sovereign.io/country"
ORIGIN_COUNTRY_LABEL = "sovereign.io/origin-country"
PROVENANCE_LABEL = "sovereign.io/provenance"
#: The labels of one value each that every labelled node carries (those it has a value for).
NODE_LABELS = (NODE_ID_LABEL, ZONE_LABEL, COUNTRY_LABEL, ORIGIN_COUNTRY_LABEL, PROVENANCE_LABEL)
#: ``sovereign.io/zone.<slug>``: the node stands in that zone or one inside it.
IN_ZONE_PREFIX = "sovereign.io/zone."
IN_ZONE_VALUE = "true"
#: The longest name part (after the prefix's ``/``) a Kubernetes label key may have.
MAX_LABEL_NAME = 63


def node_labels(
    node_id: str,
    zone: str | None,
    country: str | None,
    origin_country: str | None,
    provenance: str,
) -> dict[str, str]:
    """The ``NODE_LABELS`` of a node with these facts; a label without a value is left out."""
    values = {
        NODE_ID_LABEL: node_id,
        ZONE_LABEL: zone,
        COUNTRY_LABEL: country,
        ORIGIN_COUNTRY_LABEL: origin_country,
        PROVENANCE_LABEL: provenance,
    }
    return {key: value for key, value in values.items() if value is not None}


def in_zone_label(zone: str) -> str | None:
    """The ``sovereign.io/zone.<slug>`` key for ``zone``; None when the slug is too long."""
    key = IN_ZONE_PREFIX + zone
    return key if len(key) - len(LABEL_PREFIX) <= MAX_LABEL_NAME else None


#: The annotations a pod declares itself with (comma-separated registry names; the tenant).
DATASETS = "sovereign.io/datasets"
MODELS = "sovereign.io/models"
OUTPUT = "sovereign.io/output"
TENANT = "sovereign.io/tenant"
#: How many GPUs (or MIG slices) a pod's DRA resource claims allocate, and of which profile.
GPUS = "sovereign.io/gpus"
MIG_PROFILE = "sovereign.io/mig-profile"
#: What the mutating webhook sets: the stored decision, and the policy set it was taken under.
DECISION_ID = "sovereign.io/decision-id"
POLICY_SET_VERSION = "sovereign.io/policy-set-version"


class NodeLabelChange(BaseModel):
    """One ``sovereign.io/*`` label of a Node, before and after a change (None: absent).

    The audit log's word for it, whether the label sync made the change or the node
    protection refused it.
    """

    key: str
    old: str | None
    new: str | None
