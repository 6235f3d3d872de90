"""Every action the audit log records, with what its ``before`` and ``after`` hold.

One enumeration, so no event is written with a free-string action and an auditor (or the
evidence reports) can count events by a closed list. ``AUDIT_ACTIONS`` documents each
action; docs/audit.md carries the same table (a test keeps the two in step), and
``core.audit_log`` is the one helper that records them.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum


class AuditAction(StrEnum):
    """What happened, as ``object.verb``; the audit event's ``action``."""

    TOKEN_CREATED = "token.created"  # noqa: S105 - an action, not a secret
    TOKEN_REVOKED = "token.revoked"  # noqa: S105 - an action, not a secret
    ZONE_CREATED = "zone.created"
    ZONE_UPDATED = "zone.updated"
    ZONE_DELETED = "zone.deleted"
    SITE_CREATED = "site.created"
    NODE_REGISTERED = "node.registered"
    NODE_REREGISTERED = "node.reregistered"
    NODE_UPDATED = "node.updated"
    NODE_INVENTORY_CHANGED = "node.inventory_changed"
    NODE_DRIFT_DETECTED = "node.drift_detected"
    NODE_DRIFT_ACKNOWLEDGED = "node.drift_acknowledged"
    NODE_ONLINE = "node.online"
    NODE_OFFLINE = "node.offline"
    NODE_PROVENANCE_CHECKED = "node.provenance_checked"
    TENANT_CREATED = "tenant.created"
    TENANT_DELETED = "tenant.deleted"
    TENANT_QUOTA_SET = "tenant.quota_set"
    TENANT_QUOTA_REMOVED = "tenant.quota_removed"
    DATASET_REGISTERED = "dataset.registered"
    DATASET_UPDATED = "dataset.updated"
    DATASET_DELETED = "dataset.deleted"
    MODEL_REGISTERED = "model.registered"
    MODEL_UPDATED = "model.updated"
    MODEL_DELETED = "model.deleted"
    DESTINATION_CREATED = "destination.created"
    DESTINATION_DELETED = "destination.deleted"
    POLICY_APPLIED = "policy.applied"
    POLICY_SET_ACTIVATED = "policy_set.activated"
    POLICY_SET_ROLLED_BACK = "policy_set.rolled_back"
    WORKLOAD_ADMITTED = "workload.admitted"
    WORKLOAD_DENIED = "workload.denied"
    WORKLOAD_RELEASED = "workload.released"
    WORKLOAD_EXPIRED = "workload.expired"
    COMPLIANCE_EVALUATED = "compliance.evaluated"

    @property
    def object_type(self) -> str:
        """The kind of object the event is about (the event's ``object_type``)."""
        return AUDIT_ACTIONS[self].object_type


@dataclass(frozen=True, slots=True)
class ActionRecord:
    """What one action's events are about and hold, in words (docs/audit.md shows these)."""

    object_type: str
    #: Who records it and when.
    when: str
    #: What ``before`` holds (``null`` where there was nothing before).
    before: str
    #: What ``after`` holds (``null`` where nothing is left after).
    after: str


def _record(object_type: str, when: str, before: str, after: str) -> ActionRecord:
    return ActionRecord(object_type, when, before, after)


_NODE = "the node with its GPUs (`NodeDetail`)"
_IDENTITY = "`identity` (system serial and GPU UUID/serial pairs), `status`, `drift_status`"
_HOLDING = "`status`, `node_id`, `gpu_uuids`, `lease_expires_at` (`WorkloadHolding`)"

#: Every action, in the order of ``AuditAction``.
AUDIT_ACTIONS: Mapping[AuditAction, ActionRecord] = {
    AuditAction.TOKEN_CREATED: _record(
        "token",
        "a token is created (also an agent's, at registration)",
        "null",
        "the token without its secret (`TokenPublic`)",
    ),
    AuditAction.TOKEN_REVOKED: _record(
        "token",
        "a token is revoked",
        "the token (`TokenPublic`)",
        "the token with `revoked_at` (`TokenPublic`)",
    ),
    AuditAction.ZONE_CREATED: _record(
        "zone", "a zone is created", "null", "the zone (`ZonePublic`)"
    ),
    AuditAction.ZONE_UPDATED: _record(
        "zone", "a zone is changed", "the zone (`ZonePublic`)", "the zone (`ZonePublic`)"
    ),
    AuditAction.ZONE_DELETED: _record(
        "zone", "a zone is deleted", "the zone (`ZonePublic`)", "null"
    ),
    AuditAction.SITE_CREATED: _record(
        "site", "a site is created", "null", "the site (`SitePublic`)"
    ),
    AuditAction.NODE_REGISTERED: _record(
        "node", "an agent registers a new machine id", "null", _NODE
    ),
    AuditAction.NODE_REREGISTERED: _record(
        "node", "an agent registers a machine id already known", _NODE, _NODE
    ),
    AuditAction.NODE_UPDATED: _record(
        "node",
        "an admin changes zone, site, status, labels or declared provenance",
        "the node (`NodePublic`)",
        "the node (`NodePublic`)",
    ),
    AuditAction.NODE_INVENTORY_CHANGED: _record(
        "node",
        "a heartbeat carries an inventory that differs from the stored one",
        _NODE,
        _NODE,
    ),
    AuditAction.NODE_DRIFT_DETECTED: _record(
        "node",
        "a report's hardware identity differs from the node's baseline",
        f"{_IDENTITY} (`IdentitySnapshot`)",
        f"{_IDENTITY}, and `differences` in words (`DriftDetected`)",
    ),
    AuditAction.NODE_DRIFT_ACKNOWLEDGED: _record(
        "node",
        "an admin accepts a drifted node's reported identity",
        f"{_IDENTITY}, `drift_evidence` (`DriftEvidenceSnapshot`)",
        f"{_IDENTITY}, the admin's `note` (`DriftAcknowledged`)",
    ),
    AuditAction.NODE_ONLINE: _record(
        "node",
        "an offline node heartbeats again",
        "`status` (`NodeStatusSnapshot`)",
        "`status` (`NodeStatusSnapshot`)",
    ),
    AuditAction.NODE_OFFLINE: _record(
        "node",
        "the offline sweep finds a node silent for three heartbeat intervals",
        "`status`, `last_heartbeat_at` (`NodeLastSeen`)",
        "`status`, `reason` (`NodeOffline`)",
    ),
    AuditAction.NODE_PROVENANCE_CHECKED: _record(
        "node",
        "a BOM import verifies a node or finds a mismatch",
        "the node's provenance (`Provenance`)",
        "the node's provenance with its evidence",
    ),
    AuditAction.TENANT_CREATED: _record(
        "tenant", "a tenant is created", "null", "the tenant with its quotas (`TenantPublic`)"
    ),
    AuditAction.TENANT_DELETED: _record(
        "tenant", "a tenant is deleted", "the tenant with its quotas (`TenantPublic`)", "null"
    ),
    AuditAction.TENANT_QUOTA_SET: _record(
        "tenant",
        "a tenant's quota in a zone is set",
        "the quota it replaces (`QuotaPublic`), or null",
        "the quota (`QuotaPublic`)",
    ),
    AuditAction.TENANT_QUOTA_REMOVED: _record(
        "tenant", "a tenant's quota in a zone is removed", "the quota (`QuotaPublic`)", "null"
    ),
    AuditAction.DATASET_REGISTERED: _record(
        "dataset", "a dataset is registered", "null", "the dataset (`DatasetPublic`)"
    ),
    AuditAction.DATASET_UPDATED: _record(
        "dataset",
        "a dataset is changed",
        "the dataset (`DatasetPublic`)",
        "the dataset (`DatasetPublic`)",
    ),
    AuditAction.DATASET_DELETED: _record(
        "dataset", "a dataset is deleted", "the dataset (`DatasetPublic`)", "null"
    ),
    AuditAction.MODEL_REGISTERED: _record(
        "model", "a model is registered", "null", "the model (`ModelPublic`)"
    ),
    AuditAction.MODEL_UPDATED: _record(
        "model", "a model is changed", "the model (`ModelPublic`)", "the model (`ModelPublic`)"
    ),
    AuditAction.MODEL_DELETED: _record(
        "model", "a model is deleted", "the model (`ModelPublic`)", "null"
    ),
    AuditAction.DESTINATION_CREATED: _record(
        "destination",
        "an artifact destination is created",
        "null",
        "the destination (`DestinationPublic`)",
    ),
    AuditAction.DESTINATION_DELETED: _record(
        "destination",
        "an artifact destination is deleted",
        "the destination (`DestinationPublic`)",
        "null",
    ),
    AuditAction.POLICY_APPLIED: _record(
        "policy",
        "a policy document is stored as a new version",
        "the previous version's `name`, `version`, `content_hash` (`PolicyVersionRef`), or null",
        "`name`, `version`, `content_hash`, the validated `document` and the"
        " `active_policy_set` still enforced (`PolicyApplied`)",
    ),
    AuditAction.POLICY_SET_ACTIVATED: _record(
        "policy_set",
        "a policy set is made active",
        "the set it replaces: `version`, `content_hash`, `members` (`PolicySetRef`)",
        "the new set: `version`, `content_hash`, `members`, `note`, `restores_version`"
        " (`PolicySetActivated`)",
    ),
    AuditAction.POLICY_SET_ROLLED_BACK: _record(
        "policy_set",
        "an earlier set's members are made active again, as a new set",
        "the set it replaces (`PolicySetRef`)",
        "the new set, `restores_version` naming the earlier one (`PolicySetActivated`)",
    ),
    AuditAction.WORKLOAD_ADMITTED: _record(
        "workload",
        "a workload is admitted and its GPUs reserved",
        "null",
        "the workload with its decision and placement, and the enforcement `point`"
        " (`WorkloadDecided`)",
    ),
    AuditAction.WORKLOAD_DENIED: _record(
        "workload",
        "a workload is denied (by policy, capacity or quota)",
        "null",
        "the workload with its decision and reasons, and the enforcement `point`"
        " (`WorkloadDecided`)",
    ),
    AuditAction.WORKLOAD_RELEASED: _record(
        "workload",
        "a running workload is released",
        f"what it held: {_HOLDING}",
        "`status`, `ended_at`, `freed_gpu_uuids` (`WorkloadReleased`)",
    ),
    AuditAction.WORKLOAD_EXPIRED: _record(
        "workload",
        "the lease sweep ends a workload whose lease was not renewed",
        f"what it held: {_HOLDING}",
        "`status`, `ended_at`, `reason` (`WorkloadExpired`)",
    ),
    AuditAction.COMPLIANCE_EVALUATED: _record(
        "compliance_evaluation",
        "a compliance evaluation of the running workloads is stored",
        "null",
        "the `policy_set` and `fleet_generation` judged under, the exact counts, the"
        " `sampled_workload_ids` and the `triggers` by reason (`EvaluationRecorded`)",
    ),
}


def actions_table() -> str:
    """The Markdown table of every action, as docs/audit.md shows it."""
    lines = [
        "| action | object type | recorded when | `before` | `after` |",
        "| --- | --- | --- | --- | --- |",
    ]
    lines += [
        f"| `{action.value}` | `{record.object_type}` | {record.when} | {record.before}"
        f" | {record.after} |"
        for action, record in AUDIT_ACTIONS.items()
    ]
    return "\n".join(lines)
