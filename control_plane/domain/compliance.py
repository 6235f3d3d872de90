"""Why a compliance evaluation is asked for: the changes that can break a running workload.

Features that change what policies read (inventory, registry, the policy store,
provenance imports) name their change with one of these when they ask for an evaluation
(``core.outbox``); compliance, which consumes the requests, reads them back.
"""

from enum import StrEnum


class EvaluationTrigger(StrEnum):
    """Why an evaluation was asked for: a change that can turn a running workload non-compliant.

    Stored on each ``compliance_request`` (the database checks the same list). ``requested``
    is an admin asking through the API or ``sovctl compliance evaluate``.
    """

    POLICY_SET_ACTIVATED = "policy_set.activated"
    POLICY_SET_ROLLED_BACK = "policy_set.rolled_back"
    NODE_ZONE_CHANGED = "node.zone_changed"
    NODE_PROVENANCE_CHANGED = "node.provenance_changed"
    NODE_STATUS_CHANGED = "node.status_changed"
    NODE_LABELS_CHANGED = "node.labels_changed"
    NODE_DRIFT_DETECTED = "node.drift_detected"
    NODE_DRIFT_ACKNOWLEDGED = "node.drift_acknowledged"
    ZONE_CHANGED = "zone.changed"
    #: A dataset's or model's storage zones, classification, labels or provenance changed,
    #: or a dataset, model or destination a running workload may name was deleted.
    REGISTRY_CHANGED = "registry.changed"
    REQUESTED = "requested"
