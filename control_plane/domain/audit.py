"""Every action the audit log records, with what its ``before`` and ``after`` hold.

One enumeration, so no event is written with a free-string action and an auditor (or the
evidence reports) can count events by a closed list. ``AUDIT_ACTIONS`` documents each
action; docs/audit.md carries the same table (a test keeps the two in step), and
``core.audit_log`` is the one helper that records them.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum


class AuditObjectType(StrEnum):
    """What kind of object an event is about; the audit event's ``object_type``."""

    TOKEN = "token"  # noqa: S105 - an object type, not a secret
    ZONE = "zone"
    SITE = "site"
    NODE = "node"
    TENANT = "tenant"
    DATASET = "dataset"
    MODEL = "model"
    DESTINATION = "destination"
    ASSET_GRANT = "asset_grant"
    POLICY = "policy"
    POLICY_SET = "policy_set"
    WORKLOAD = "workload"
    POD = "pod"
    #: A Kubernetes Node, by its name (not an inventory ``node``, whose id is a UUID).
    KUBERNETES_NODE = "kubernetes_node"
    COMPLIANCE_EVALUATION = "compliance_evaluation"
    #: The key that signs the audit chain's checkpoints, by its fingerprint.
    AUDIT_SIGNING_KEY = "audit_signing_key"
    REPORT = "report"


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
    NODE_REPLACEMENT_APPROVED = "node.replacement_approved"
    NODE_REPLACEMENT_USED = "node.replacement_used"
    NODE_UPDATED = "node.updated"
    NODE_INVENTORY_CHANGED = "node.inventory_changed"
    NODE_DRIFT_DETECTED = "node.drift_detected"
    NODE_DRIFT_ACKNOWLEDGED = "node.drift_acknowledged"
    NODE_ONLINE = "node.online"
    NODE_OFFLINE = "node.offline"
    NODE_PROVENANCE_CHECKED = "node.provenance_checked"
    NODE_PROVENANCE_DOWNGRADED = "node.provenance_downgraded"
    TENANT_CREATED = "tenant.created"
    TENANT_DELETED = "tenant.deleted"
    TENANT_QUOTA_SET = "tenant.quota_set"
    TENANT_QUOTA_REMOVED = "tenant.quota_removed"
    TENANT_ORIGIN_QUOTA_SET = "tenant.origin_quota_set"
    TENANT_ORIGIN_QUOTA_REMOVED = "tenant.origin_quota_removed"
    DATASET_REGISTERED = "dataset.registered"
    DATASET_UPDATED = "dataset.updated"
    DATASET_DELETED = "dataset.deleted"
    MODEL_REGISTERED = "model.registered"
    MODEL_UPDATED = "model.updated"
    MODEL_DELETED = "model.deleted"
    ASSET_GRANT_CREATED = "asset_grant.created"
    ASSET_GRANT_REVOKED = "asset_grant.revoked"
    ASSET_GRANT_EXPIRED = "asset_grant.expired"
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
    POD_ADMITTED = "pod.admitted"
    POD_DENIED = "pod.denied"
    POD_EVICTED = "pod.evicted"
    POD_EVICTION_BLOCKED = "pod.eviction_blocked"
    KUBERNETES_NODE_LABEL_CHANGE_DENIED = "kubernetes_node.label_change_denied"
    KUBERNETES_NODE_LABELS_SYNCED = "kubernetes_node.labels_synced"
    COMPLIANCE_EVALUATED = "compliance.evaluated"
    AUDIT_SIGNING_KEY_ROTATED = "audit.signing_key_rotated"
    REPORT_REQUESTED = "report.requested"
    REPORT_DOWNLOADED = "report.downloaded"

    @property
    def object_type(self) -> AuditObjectType:
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

    object_type: AuditObjectType
    #: Who records it and when.
    when: str
    before: Snapshot
    after: Snapshot


def _side(text: str, *models: str | None) -> Snapshot:
    return Snapshot(text, models)


_NODE = _side("the node with its GPUs", "NodeDetail")
_IDENTITY = "`identity` (system serial, GPU UUID/serial pairs), `status`, `drift_status`"
_APPROVAL = _side(
    "the approval: `approved_by`, `approved_at`, `expires_at`, `reason`", "ReplacementApproval"
)
_HOLDING = _side(
    "what it held: `status`, `node_id`, `gpu_uuids`, `lease_expires_at`", "WorkloadHolding"
)

#: Every action, in the order of ``AuditAction``.
AUDIT_ACTIONS: Mapping[AuditAction, ActionRecord] = {
    AuditAction.TOKEN_CREATED: ActionRecord(
        AuditObjectType.TOKEN,
        "a token is created (an agent's too, at registration)",
        NOTHING,
        _side("the token without its secret", "TokenPublic"),
    ),
    AuditAction.TOKEN_REVOKED: ActionRecord(
        AuditObjectType.TOKEN,
        "a token is revoked",
        _side("the token", "TokenPublic"),
        _side("the token with `revoked_at`", "TokenPublic"),
    ),
    AuditAction.ZONE_CREATED: ActionRecord(
        AuditObjectType.ZONE, "a zone is created", NOTHING, _side("the zone", "ZonePublic")
    ),
    AuditAction.ZONE_UPDATED: ActionRecord(
        AuditObjectType.ZONE,
        "a zone is changed",
        _side("the zone", "ZonePublic"),
        _side("the zone", "ZonePublic"),
    ),
    AuditAction.ZONE_DELETED: ActionRecord(
        AuditObjectType.ZONE, "a zone is deleted", _side("the zone", "ZonePublic"), NOTHING
    ),
    AuditAction.SITE_CREATED: ActionRecord(
        AuditObjectType.SITE, "a site is created", NOTHING, _side("the site", "SitePublic")
    ),
    AuditAction.NODE_REGISTERED: ActionRecord(
        AuditObjectType.NODE, "an agent registers a machine id not seen before", NOTHING, _NODE
    ),
    AuditAction.NODE_REREGISTERED: ActionRecord(
        AuditObjectType.NODE,
        "a known machine id is registered again: by the node's own agent, an admin, or a"
        " bootstrap token with an admin's approval",
        _NODE,
        _NODE,
    ),
    AuditAction.NODE_REPLACEMENT_APPROVED: ActionRecord(
        AuditObjectType.NODE,
        "an admin approves one bootstrap-token registration of a known node (a replacement)",
        _side("the approval it replaces, expired or not", "ReplacementApproval", None),
        _APPROVAL,
    ),
    AuditAction.NODE_REPLACEMENT_USED: ActionRecord(
        AuditObjectType.NODE,
        "a bootstrap-token registration uses up the node's approval (before its"
        " `node.reregistered`)",
        _APPROVAL,
        NOTHING,
    ),
    AuditAction.NODE_UPDATED: ActionRecord(
        AuditObjectType.NODE,
        "an admin changes zone, site, status, labels or declared provenance",
        _side("the node", "NodePublic"),
        _side("the node", "NodePublic"),
    ),
    AuditAction.NODE_INVENTORY_CHANGED: ActionRecord(
        AuditObjectType.NODE,
        "a heartbeat carries an inventory that differs from the stored one",
        _NODE,
        _side(
            "the node with its GPUs (a booked GPU or MIG slice the report left out is kept,"
            " with `missing_since` set)",
            "NodeDetail",
        ),
    ),
    AuditAction.NODE_DRIFT_DETECTED: ActionRecord(
        AuditObjectType.NODE,
        "a report's hardware identity differs from the node's baseline",
        _side(f"the baseline: {_IDENTITY}", "IdentitySnapshot"),
        _side(f"the reported {_IDENTITY} and `differences` in words", "DriftDetected"),
    ),
    AuditAction.NODE_DRIFT_ACKNOWLEDGED: ActionRecord(
        AuditObjectType.NODE,
        "an admin accepts a drifted node's reported identity",
        _side(f"{_IDENTITY} and `drift_evidence`", "DriftEvidenceSnapshot"),
        _side(f"the accepted {_IDENTITY} and the admin's `note`", "DriftAcknowledged"),
    ),
    AuditAction.NODE_ONLINE: ActionRecord(
        AuditObjectType.NODE,
        "an offline node heartbeats again",
        _side("`status`", "NodeStatusSnapshot"),
        _side("`status`", "NodeStatusSnapshot"),
    ),
    AuditAction.NODE_OFFLINE: ActionRecord(
        AuditObjectType.NODE,
        "the offline sweep finds a node silent for three heartbeat intervals",
        _side("`status`, `last_heartbeat_at`", "NodeLastSeen"),
        _side("`status`, `reason`", "NodeOffline"),
    ),
    AuditAction.NODE_PROVENANCE_CHECKED: ActionRecord(
        AuditObjectType.NODE,
        "a BOM import verifies a node or finds a mismatch",
        _side("the node's provenance", "Provenance"),
        _side("the node's provenance with the import's evidence", "Provenance"),
    ),
    AuditAction.NODE_PROVENANCE_DOWNGRADED: ActionRecord(
        AuditObjectType.NODE,
        "an acknowledged drift leaves a verified node on hardware no BOM verified",
        _side("the node's provenance with the BOM verdict", "Provenance"),
        _side(
            "the node's provenance, `declared` or `unknown`, with the superseded verdict"
            " under `evidence.previous`",
            "Provenance",
        ),
    ),
    AuditAction.TENANT_CREATED: ActionRecord(
        AuditObjectType.TENANT, "a tenant is created", NOTHING, _side("the tenant", "TenantPublic")
    ),
    AuditAction.TENANT_DELETED: ActionRecord(
        AuditObjectType.TENANT,
        "a tenant is deleted",
        _side("the tenant with its quotas", "TenantPublic"),
        NOTHING,
    ),
    AuditAction.TENANT_QUOTA_SET: ActionRecord(
        AuditObjectType.TENANT,
        "a tenant's quota in a zone is set",
        _side("the quota it replaces", "QuotaPublic", None),
        _side("the quota", "QuotaPublic"),
    ),
    AuditAction.TENANT_QUOTA_REMOVED: ActionRecord(
        AuditObjectType.TENANT,
        "a tenant's quota in a zone is removed",
        _side("the quota", "QuotaPublic"),
        NOTHING,
    ),
    AuditAction.TENANT_ORIGIN_QUOTA_SET: ActionRecord(
        AuditObjectType.TENANT,
        "a tenant's GPU-hour quota on servers of an origin country is set",
        _side("the quota it replaces", "OriginQuotaPublic", None),
        _side("the quota", "OriginQuotaPublic"),
    ),
    AuditAction.TENANT_ORIGIN_QUOTA_REMOVED: ActionRecord(
        AuditObjectType.TENANT,
        "a tenant's GPU-hour quota on servers of an origin country is removed",
        _side("the quota", "OriginQuotaPublic"),
        NOTHING,
    ),
    AuditAction.DATASET_REGISTERED: ActionRecord(
        AuditObjectType.DATASET,
        "a dataset is registered",
        NOTHING,
        _side("the dataset", "DatasetPublic"),
    ),
    AuditAction.DATASET_UPDATED: ActionRecord(
        AuditObjectType.DATASET,
        "a dataset is changed",
        _side("the dataset", "DatasetPublic"),
        _side("the dataset", "DatasetPublic"),
    ),
    AuditAction.DATASET_DELETED: ActionRecord(
        AuditObjectType.DATASET,
        "a dataset is deleted",
        _side("the dataset", "DatasetPublic"),
        NOTHING,
    ),
    AuditAction.MODEL_REGISTERED: ActionRecord(
        AuditObjectType.MODEL, "a model is registered", NOTHING, _side("the model", "ModelPublic")
    ),
    AuditAction.MODEL_UPDATED: ActionRecord(
        AuditObjectType.MODEL,
        "a model is changed",
        _side("the model", "ModelPublic"),
        _side("the model", "ModelPublic"),
    ),
    AuditAction.MODEL_DELETED: ActionRecord(
        AuditObjectType.MODEL, "a model is deleted", _side("the model", "ModelPublic"), NOTHING
    ),
    AuditAction.ASSET_GRANT_CREATED: ActionRecord(
        AuditObjectType.ASSET_GRANT,
        "a tenant is granted the use of another tenant's dataset or model",
        NOTHING,
        _side("the grant", "GrantPublic"),
    ),
    AuditAction.ASSET_GRANT_REVOKED: ActionRecord(
        AuditObjectType.ASSET_GRANT,
        "a grant is revoked (the row is kept)",
        _side("the grant", "GrantPublic"),
        _side("the grant with `revoked_at` and `revoked_by`", "GrantPublic"),
    ),
    AuditAction.ASSET_GRANT_EXPIRED: ActionRecord(
        AuditObjectType.ASSET_GRANT,
        "the compliance task notices that a grant reached its `expires_at` (actor"
        " `system:compliance`)",
        NOTHING,
        _side("the expired grant", "GrantPublic"),
    ),
    AuditAction.DESTINATION_CREATED: ActionRecord(
        AuditObjectType.DESTINATION,
        "an artifact destination is created",
        NOTHING,
        _side("the destination", "DestinationPublic"),
    ),
    AuditAction.DESTINATION_DELETED: ActionRecord(
        AuditObjectType.DESTINATION,
        "an artifact destination is deleted",
        _side("the destination", "DestinationPublic"),
        NOTHING,
    ),
    AuditAction.POLICY_APPLIED: ActionRecord(
        AuditObjectType.POLICY,
        "a policy document is stored as a new version",
        _side("the previous version's `name`, `version`, `content_hash`", "PolicyVersionRef", None),
        _side(
            "`name`, `version`, `content_hash`, the validated `document` and the"
            " `active_policy_set` still enforced",
            "PolicyApplied",
        ),
    ),
    AuditAction.POLICY_SET_ACTIVATED: ActionRecord(
        AuditObjectType.POLICY_SET,
        "a policy set is made active",
        _side("the set it replaces: `version`, `content_hash`, `members`", "PolicySetMembers"),
        _side(
            "the new set: `version`, `content_hash`, `members`, `note`, `restores_version`",
            "PolicySetActivated",
        ),
    ),
    AuditAction.POLICY_SET_ROLLED_BACK: ActionRecord(
        AuditObjectType.POLICY_SET,
        "an earlier set's members are made active again, as a new set",
        _side("the set it replaces", "PolicySetMembers"),
        _side("the new set, `restores_version` naming the earlier one", "PolicySetActivated"),
    ),
    AuditAction.WORKLOAD_ADMITTED: ActionRecord(
        AuditObjectType.WORKLOAD,
        "a workload is admitted and its GPUs reserved",
        NOTHING,
        _side(
            "the workload with its decision (reasons, `other_nodes` and `explanation`: the"
            " policies selected with each rule's result, and those not selected and why) and"
            " placement (for a MIG request, `mig_slices`: the MIG devices booked), and the"
            " enforcement `point`",
            "WorkloadDecided",
        ),
    ),
    AuditAction.WORKLOAD_DENIED: ActionRecord(
        AuditObjectType.WORKLOAD,
        "a workload is denied (by policy, capacity or quota)",
        NOTHING,
        _side(
            "the workload with its decision, reasons and `explanation`, and the enforcement"
            " `point`",
            "WorkloadDecided",
        ),
    ),
    AuditAction.WORKLOAD_RELEASED: ActionRecord(
        AuditObjectType.WORKLOAD,
        "a running workload is released",
        _HOLDING,
        _side(
            "`status`, `ended_at`, `freed_gpu_uuids` (MIG device UUIDs for MIG slices),"
            " `removed_gpu_uuids` (GPUs and MIG devices its node had stopped reporting,"
            " deleted with the reservations)",
            "WorkloadReleased",
        ),
    ),
    AuditAction.WORKLOAD_EXPIRED: ActionRecord(
        AuditObjectType.WORKLOAD,
        "the lease sweep ends a workload whose lease was not renewed",
        _HOLDING,
        _side(
            "`status`, `ended_at`, `reason`, `removed_gpu_uuids` (as for a release)",
            "WorkloadExpired",
        ),
    ),
    AuditAction.WORKLOAD_REVOKED: ActionRecord(
        AuditObjectType.WORKLOAD,
        "a compliance evaluation ends a running workload that violates a policy with"
        " `on_violation: revoke`",
        _side("what it held: `status`, `node_id`, `gpu_uuids`, `lease_expires_at`", "WorkloadHeld"),
        _side(
            "`status`, `ended_at`, `freed_gpu_uuids`, `removed_gpu_uuids` (as for a release)"
            " and the `revocation` (`evaluation_id`, `policies`, `reasons`)",
            "WorkloadRevoked",
        ),
    ),
    AuditAction.POD_ADMITTED: ActionRecord(
        AuditObjectType.POD,
        "an admission webhook admits a GPU pod (or a Job's or CronJob's pod template) and"
        " restricts it to the eligible nodes; nothing is booked, kube-scheduler places it",
        NOTHING,
        _side(
            "the pod decision: namespace, kind, name, the declaration as `request`, outcome,"
            " reasons, `explanation`, `eligible_nodes`, `fleet_generation`, the policy set,"
            " the review's uid and user, and the enforcement `point` (`webhook`)",
            "PodDecided",
        ),
    ),
    AuditAction.POD_DENIED: ActionRecord(
        AuditObjectType.POD,
        "an admission webhook denies a GPU pod (by policy, capacity, or its own node"
        " selection leaving no eligible node)",
        NOTHING,
        _side("the pod decision, as for `pod.admitted`", "PodDecided"),
    ),
    AuditAction.POD_EVICTED: ActionRecord(
        AuditObjectType.POD,
        "the pod sweep evicts a running pod (through the Eviction API) whose stored"
        " declaration now violates, on the node it runs on, a deny policy with"
        " `on_violation: revoke`; the object id is the pod's decision id",
        NOTHING,
        _side(
            "the pod (`namespace`, `name`, `uid`), its `node` (Kubernetes name, `node_id`,"
            " `hostname`, `zone`), the `decision_id`, the `policy_set` judged under, the"
            " revoking `policies` and every `reasons`",
            "PodEvicted",
        ),
    ),
    AuditAction.POD_EVICTION_BLOCKED: ActionRecord(
        AuditObjectType.POD,
        "the API server refuses such an eviction because a PodDisruptionBudget allows no"
        " disruption now (429); recorded once per pod and set of revoking policies, while"
        " the sweep keeps asking on every run",
        NOTHING,
        _side(
            "as for `pod.evicted`, and the API server's `refusal` message",
            "PodEvictionBlocked",
        ),
    ),
    AuditAction.KUBERNETES_NODE_LABEL_CHANGE_DENIED: ActionRecord(
        AuditObjectType.KUBERNETES_NODE,
        "the node-protection webhook refuses a change to a Kubernetes Node's `sovereign.io/*`"
        " labels by anyone but the label sync (not for a dry run); the object id is the"
        " Node's name, the actor the Kubernetes user",
        NOTHING,
        _side(
            "the attempt: `node`, `operation`, `username`, the review's uid and each protected"
            " label's `key`, `old` and `new` value (null: absent)",
            "NodeLabelChangeDenied",
        ),
    ),
    AuditAction.KUBERNETES_NODE_LABELS_SYNCED: ActionRecord(
        AuditObjectType.KUBERNETES_NODE,
        "the node label sync changed a Kubernetes Node's `sovereign.io/*` labels (recorded"
        " after the patch succeeded, with the run's report); the object id is the Node's"
        " name",
        NOTHING,
        _side(
            "the `node`, the inventory `node_id` it was matched to (null for a Node the"
            " inventory does not know, whose labels were removed) and each label's `key`,"
            " `old` and `new` value (null: absent)",
            "NodeLabelsSynced",
        ),
    ),
    AuditAction.COMPLIANCE_EVALUATED: ActionRecord(
        AuditObjectType.COMPLIANCE_EVALUATION,
        "a compliance evaluation of the running workloads is stored",
        NOTHING,
        _side(
            "the `policy_set` and `fleet_generation` judged under, the exact counts, the"
            " `sampled_workload_ids`, the `triggers` by reason, and what it did:"
            " `revoked_workload_ids` and `notifications`",
            "EvaluationRecorded",
        ),
    ),
    AuditAction.AUDIT_SIGNING_KEY_ROTATED: ActionRecord(
        AuditObjectType.AUDIT_SIGNING_KEY,
        "a checkpoint is about to be signed with another key than the newest checkpoint's"
        " (the signing key file changed); the object id is the new key's fingerprint, and"
        " the checkpoint that follows names the old one as `previous_key_fingerprint`",
        _side("the old key: `fingerprint`, `public_key` (PEM)", "SigningKeyPublic"),
        _side("the new key: `fingerprint`, `public_key` (PEM)", "SigningKeyPublic"),
    ),
    AuditAction.REPORT_REQUESTED: ActionRecord(
        AuditObjectType.REPORT,
        "an auditor or admin asks for a report (also when the stored one is returned)",
        NOTHING,
        _side(
            "the job: `kind`, the period, `format`, the covered `checkpoint`, `status`",
            "ReportJobPublic",
        ),
    ),
    AuditAction.REPORT_DOWNLOADED: ActionRecord(
        AuditObjectType.REPORT,
        "an auditor or admin downloads a finished report",
        NOTHING,
        _side("the job with the file's `sha256` and `signature`", "ReportJobPublic"),
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
