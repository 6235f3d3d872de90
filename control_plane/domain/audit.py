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
    WORKLOAD_REVOKED = "workload.revoked"
    COMPLIANCE_EVALUATED = "compliance.evaluated"

    @property
    def object_type(self) -> str:
        """The kind of object the event is about (the event's ``object_type``)."""
        return AUDIT_ACTIONS[self].object_type


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What one side (``before`` or ``after``) of an action's events holds.

    ``models`` are the class names of the snapshots ``core.audit_log`` accepts on that
    side (``None`` in it: the side may be null); the helper refuses any other, so this
    table, and docs/audit.md made from it, say what the log really holds.
    """

    text: str
    models: tuple[str | None, ...]

    def describe(self) -> str:
        """The side in words, with its model names, as docs/audit.md shows it."""
        named = [f"`{model}`" for model in self.models if model is not None]
        if not named:
            return "null"
        suffix = ", or null" if None in self.models else ""
        return f"{self.text} ({' or '.join(named)}){suffix}"


#: A side of an event that is always null.
NOTHING = Snapshot("", (None,))


@dataclass(frozen=True, slots=True)
class ActionRecord:
    """What one action's events are about and hold (docs/audit.md shows these)."""

    object_type: str
    #: Who records it and when.
    when: str
    before: Snapshot
    after: Snapshot


def _side(text: str, *models: str | None) -> Snapshot:
    return Snapshot(text, models)


_NODE = _side("the node with its GPUs", "NodeDetail")
_IDENTITY = "`identity` (system serial, GPU UUID/serial pairs), `status`, `drift_status`"
_HOLDING = _side(
    "what it held: `status`, `node_id`, `gpu_uuids`, `lease_expires_at`", "WorkloadHolding"
)

#: Every action, in the order of ``AuditAction``.
AUDIT_ACTIONS: Mapping[AuditAction, ActionRecord] = {
    AuditAction.TOKEN_CREATED: ActionRecord(
        "token",
        "a token is created (an agent's too, at registration)",
        NOTHING,
        _side("the token without its secret", "TokenPublic"),
    ),
    AuditAction.TOKEN_REVOKED: ActionRecord(
        "token",
        "a token is revoked",
        _side("the token", "TokenPublic"),
        _side("the token with `revoked_at`", "TokenPublic"),
    ),
    AuditAction.ZONE_CREATED: ActionRecord(
        "zone", "a zone is created", NOTHING, _side("the zone", "ZonePublic")
    ),
    AuditAction.ZONE_UPDATED: ActionRecord(
        "zone",
        "a zone is changed",
        _side("the zone", "ZonePublic"),
        _side("the zone", "ZonePublic"),
    ),
    AuditAction.ZONE_DELETED: ActionRecord(
        "zone", "a zone is deleted", _side("the zone", "ZonePublic"), NOTHING
    ),
    AuditAction.SITE_CREATED: ActionRecord(
        "site", "a site is created", NOTHING, _side("the site", "SitePublic")
    ),
    AuditAction.NODE_REGISTERED: ActionRecord(
        "node", "an agent registers a machine id not seen before", NOTHING, _NODE
    ),
    AuditAction.NODE_REREGISTERED: ActionRecord(
        "node", "an agent registers a machine id already known", _NODE, _NODE
    ),
    AuditAction.NODE_UPDATED: ActionRecord(
        "node",
        "an admin changes zone, site, status, labels or declared provenance",
        _side("the node", "NodePublic"),
        _side("the node", "NodePublic"),
    ),
    AuditAction.NODE_INVENTORY_CHANGED: ActionRecord(
        "node", "a heartbeat carries an inventory that differs from the stored one", _NODE, _NODE
    ),
    AuditAction.NODE_DRIFT_DETECTED: ActionRecord(
        "node",
        "a report's hardware identity differs from the node's baseline",
        _side(f"the baseline: {_IDENTITY}", "IdentitySnapshot"),
        _side(f"the reported {_IDENTITY} and `differences` in words", "DriftDetected"),
    ),
    AuditAction.NODE_DRIFT_ACKNOWLEDGED: ActionRecord(
        "node",
        "an admin accepts a drifted node's reported identity",
        _side(f"{_IDENTITY} and `drift_evidence`", "DriftEvidenceSnapshot"),
        _side(f"the accepted {_IDENTITY} and the admin's `note`", "DriftAcknowledged"),
    ),
    AuditAction.NODE_ONLINE: ActionRecord(
        "node",
        "an offline node heartbeats again",
        _side("`status`", "NodeStatusSnapshot"),
        _side("`status`", "NodeStatusSnapshot"),
    ),
    AuditAction.NODE_OFFLINE: ActionRecord(
        "node",
        "the offline sweep finds a node silent for three heartbeat intervals",
        _side("`status`, `last_heartbeat_at`", "NodeLastSeen"),
        _side("`status`, `reason`", "NodeOffline"),
    ),
    AuditAction.NODE_PROVENANCE_CHECKED: ActionRecord(
        "node",
        "a BOM import verifies a node or finds a mismatch",
        _side("the node's provenance", "Provenance"),
        _side("the node's provenance with the import's evidence", "Provenance"),
    ),
    AuditAction.TENANT_CREATED: ActionRecord(
        "tenant", "a tenant is created", NOTHING, _side("the tenant", "TenantPublic")
    ),
    AuditAction.TENANT_DELETED: ActionRecord(
        "tenant",
        "a tenant is deleted",
        _side("the tenant with its quotas", "TenantPublic"),
        NOTHING,
    ),
    AuditAction.TENANT_QUOTA_SET: ActionRecord(
        "tenant",
        "a tenant's quota in a zone is set",
        _side("the quota it replaces", "QuotaPublic", None),
        _side("the quota", "QuotaPublic"),
    ),
    AuditAction.TENANT_QUOTA_REMOVED: ActionRecord(
        "tenant",
        "a tenant's quota in a zone is removed",
        _side("the quota", "QuotaPublic"),
        NOTHING,
    ),
    AuditAction.DATASET_REGISTERED: ActionRecord(
        "dataset", "a dataset is registered", NOTHING, _side("the dataset", "DatasetPublic")
    ),
    AuditAction.DATASET_UPDATED: ActionRecord(
        "dataset",
        "a dataset is changed",
        _side("the dataset", "DatasetPublic"),
        _side("the dataset", "DatasetPublic"),
    ),
    AuditAction.DATASET_DELETED: ActionRecord(
        "dataset", "a dataset is deleted", _side("the dataset", "DatasetPublic"), NOTHING
    ),
    AuditAction.MODEL_REGISTERED: ActionRecord(
        "model", "a model is registered", NOTHING, _side("the model", "ModelPublic")
    ),
    AuditAction.MODEL_UPDATED: ActionRecord(
        "model",
        "a model is changed",
        _side("the model", "ModelPublic"),
        _side("the model", "ModelPublic"),
    ),
    AuditAction.MODEL_DELETED: ActionRecord(
        "model", "a model is deleted", _side("the model", "ModelPublic"), NOTHING
    ),
    AuditAction.DESTINATION_CREATED: ActionRecord(
        "destination",
        "an artifact destination is created",
        NOTHING,
        _side("the destination", "DestinationPublic"),
    ),
    AuditAction.DESTINATION_DELETED: ActionRecord(
        "destination",
        "an artifact destination is deleted",
        _side("the destination", "DestinationPublic"),
        NOTHING,
    ),
    AuditAction.POLICY_APPLIED: ActionRecord(
        "policy",
        "a policy document is stored as a new version",
        _side("the previous version's `name`, `version`, `content_hash`", "PolicyVersionRef", None),
        _side(
            "`name`, `version`, `content_hash`, the validated `document` and the"
            " `active_policy_set` still enforced",
            "PolicyApplied",
        ),
    ),
    AuditAction.POLICY_SET_ACTIVATED: ActionRecord(
        "policy_set",
        "a policy set is made active",
        _side("the set it replaces: `version`, `content_hash`, `members`", "PolicySetMembers"),
        _side(
            "the new set: `version`, `content_hash`, `members`, `note`, `restores_version`",
            "PolicySetActivated",
        ),
    ),
    AuditAction.POLICY_SET_ROLLED_BACK: ActionRecord(
        "policy_set",
        "an earlier set's members are made active again, as a new set",
        _side("the set it replaces", "PolicySetMembers"),
        _side("the new set, `restores_version` naming the earlier one", "PolicySetActivated"),
    ),
    AuditAction.WORKLOAD_ADMITTED: ActionRecord(
        "workload",
        "a workload is admitted and its GPUs reserved",
        NOTHING,
        _side(
            "the workload with its decision and placement, and the enforcement `point`",
            "WorkloadDecided",
        ),
    ),
    AuditAction.WORKLOAD_DENIED: ActionRecord(
        "workload",
        "a workload is denied (by policy, capacity or quota)",
        NOTHING,
        _side(
            "the workload with its decision and reasons, and the enforcement `point`",
            "WorkloadDecided",
        ),
    ),
    AuditAction.WORKLOAD_RELEASED: ActionRecord(
        "workload",
        "a running workload is released",
        _HOLDING,
        _side("`status`, `ended_at`, `freed_gpu_uuids`", "WorkloadReleased"),
    ),
    AuditAction.WORKLOAD_EXPIRED: ActionRecord(
        "workload",
        "the lease sweep ends a workload whose lease was not renewed",
        _HOLDING,
        _side("`status`, `ended_at`, `reason`", "WorkloadExpired"),
    ),
    AuditAction.WORKLOAD_REVOKED: ActionRecord(
        "workload",
        "a compliance evaluation ends a running workload that violates a policy with"
        " `on_violation: revoke`",
        _side("what it held: `status`, `node_id`, `gpu_uuids`, `lease_expires_at`", "WorkloadHeld"),
        _side(
            "`status`, `ended_at`, `freed_gpu_uuids` and the `revocation` (`evaluation_id`,"
            " `policies`, `reasons`)",
            "WorkloadRevoked",
        ),
    ),
    AuditAction.COMPLIANCE_EVALUATED: ActionRecord(
        "compliance_evaluation",
        "a compliance evaluation of the running workloads is stored",
        NOTHING,
        _side(
            "the `policy_set` and `fleet_generation` judged under, the exact counts, the"
            " `sampled_workload_ids`, the `triggers` by reason, and what it did:"
            " `revoked_workload_ids` and `notifications`",
            "EvaluationRecorded",
        ),
    ),
}


def check_snapshot(action: AuditAction, side: str, model_name: str | None) -> None:
    """Refuse a snapshot the table does not document for this action and side.

    ``model_name`` is the snapshot's class name (``None`` for no snapshot). A mismatch is
    a bug in the caller, so it raises rather than record something docs/audit.md denies.
    """
    record = AUDIT_ACTIONS[action]
    allowed = (record.before if side == "before" else record.after).models
    if model_name not in allowed:
        raise TypeError(
            f"{action}: {side} must be {' or '.join(map(str, allowed))}, not {model_name}"
        )


def actions_table() -> str:
    """The Markdown table of every action, as docs/audit.md shows it."""
    lines = [
        "| action | object type | recorded when | `before` | `after` |",
        "| --- | --- | --- | --- | --- |",
    ]
    lines += [
        f"| `{action.value}` | `{record.object_type}` | {record.when}"
        f" | {record.before.describe()} | {record.after.describe()} |"
        for action, record in AUDIT_ACTIONS.items()
    ]
    return "\n".join(lines)
