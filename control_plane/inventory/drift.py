"""Hardware identity drift: detecting it in an agent's report, and an admin acknowledging it.

A node's baseline is its accepted identity (system serial and GPU UUID/serial pairs,
``identity.py``). A report that differs quarantines the node as drifted, with the
differences as evidence, and asks for a compliance evaluation; the node stays out of
placement until an admin acknowledges the reported identity as the new baseline. While it
is drifted the node keeps its provenance (it is out of placement anyway, and hardware put
back as it was is still what the BOM verified); the acknowledgement decides: new hardware
no BOM has checked is not ``verified``.
"""

from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

from control_plane.core.audit_log import AuditContext, audited, record_change, transaction
from control_plane.core.db import DbConnection
from control_plane.core.errors import ConflictError
from control_plane.core.outbox import request_evaluation
from control_plane.domain.audit import AuditAction
from control_plane.domain.compliance import EvaluationTrigger
from control_plane.domain.fleet import DriftStatus, NodeStatus, ProvenanceStatus
from control_plane.inventory import repository
from control_plane.inventory.identity import (
    CHECKED_IDENTITY,
    checked_identity,
    identity_differences,
    reported_identity,
)
from control_plane.inventory.models import (
    DriftAcknowledge,
    DriftAcknowledged,
    DriftDetected,
    DriftEvidenceSnapshot,
    IdentitySnapshot,
    Inventory,
    NodeDetail,
    NodeIdentity,
    NodeRow,
)
from control_plane.inventory.nodes import existing_node, node_detail

#: What ``provenance_evidence.source`` says when an acknowledged hardware change ended a
#: verification.
IDENTITY_CHANGE_SOURCE = "identity-change"

#: The drift evidence when a drifted node reports its old baseline again: the hardware
#: went away and came back, which an admin should still look at.
BASELINE_AGAIN = "the reported identity matches the baseline again; acknowledge to clear it"


@dataclass(frozen=True, slots=True)
class DriftFound:
    """A drift ``check_identity`` found and stored, for its caller to record."""

    node_id: UUID
    before: IdentitySnapshot
    after: DriftDetected


def check_identity(
    conn: DbConnection, ctx: AuditContext, row: NodeRow, inventory: Inventory, source: str
) -> DriftFound | None:
    """Compare a report with the node's baseline; mark the node drifted if they differ.

    A drifted node that keeps reporting the identity already in its evidence is left as
    it is, so repeated reports write no new event. The caller records what is returned
    with ``record_drift``, after the event of the report itself (registration, inventory
    change), so the log reads in the order things happened.
    """
    reported = reported_identity(inventory)
    baseline = row.identity_baseline
    if row.drift_status is DriftStatus.DRIFTED:
        if NodeIdentity.model_validate(row.drift_evidence["after"]) == reported:
            return None
    elif reported == baseline:
        return None
    differences = identity_differences(baseline, reported) or [BASELINE_AGAIN]
    evidence = {
        "before": baseline.model_dump(mode="json"),
        "after": reported.model_dump(mode="json"),
        "differences": differences,
        "source": source,
        "request_id": ctx.request_id,
    }
    repository.mark_drifted(conn, row.id, evidence)
    request_evaluation(
        conn,
        EvaluationTrigger.NODE_DRIFT_DETECTED,
        {"node_id": str(row.id), "hostname": row.hostname, "source": source},
    )
    return DriftFound(
        row.id,
        row.identity_snapshot(),
        DriftDetected(
            identity=reported,
            status=NodeStatus.QUARANTINED,
            drift_status=DriftStatus.DRIFTED,
            differences=differences,
        ),
    )


def record_drift(conn: DbConnection, ctx: AuditContext, found: DriftFound | None) -> None:
    """Record a drift ``check_identity`` found (as ``node.drift_detected``), if it found one."""
    if found is not None:
        record_change(
            conn,
            ctx,
            AuditAction.NODE_DRIFT_DETECTED,
            str(found.node_id),
            before=found.before,
            after=found.after,
        )


def acknowledge_drift(
    conn: DbConnection, ctx: AuditContext, node_id: UUID, ack: DriftAcknowledge
) -> NodeDetail:
    """Accept a drifted node's reported identity as its baseline and end its quarantine.

    409 when the node has not drifted. The identity accepted is the one in the evidence,
    i.e. what the agent reported last. A ``verified`` node whose accepted identity is not
    the one its BOM was checked on is verified no more (``_lapse_verification``).
    """
    with transaction(conn):
        with audited(conn, ctx, AuditAction.NODE_DRIFT_ACKNOWLEDGED, str(node_id)) as change:
            row = existing_node(conn, node_id, for_update=True)
            if row.drift_status is not DriftStatus.DRIFTED:
                raise ConflictError(
                    f"node {node_id} has no identity drift to acknowledge",
                    details={"drift_status": row.drift_status.value},
                )
            change.before = DriftEvidenceSnapshot(
                **row.identity_snapshot().model_dump(), drift_evidence=row.drift_evidence
            )
            accepted = NodeIdentity.model_validate(row.drift_evidence["after"])
            repository.acknowledge_drift(conn, node_id, accepted.model_dump(mode="json"))
            lapsed = _lapse_verification(conn, ctx, row, accepted)
            after = existing_node(conn, node_id)
            request_evaluation(
                conn,
                EvaluationTrigger.NODE_DRIFT_ACKNOWLEDGED,
                {"node_id": str(node_id), "hostname": after.hostname, "status": after.status.value},
            )
            change.after = DriftAcknowledged(
                **after.identity_snapshot().model_dump(), note=ack.note
            )
        if lapsed:
            # After the acknowledgement's event: the log reads in the order things happened.
            record_change(
                conn,
                ctx,
                AuditAction.NODE_PROVENANCE_DOWNGRADED,
                str(node_id),
                before=row.provenance,
                after=after.provenance,
            )
        return node_detail(conn, after)


def _lapse_verification(
    conn: DbConnection, ctx: AuditContext, row: NodeRow, accepted: NodeIdentity
) -> bool:
    """Drop a verified node to declared when its hardware is no longer what a BOM verified.

    ``verified`` means that what the agent reads matches a checked BOM. A BOM verdict
    records the identity it was checked on; when the accepted identity is another (a
    swapped GPU, a new chassis), no BOM has vouched for the new parts, so the node is
    ``declared`` (``unknown`` without a declared origin) until an import verifies them.
    The old verdict stays in the new evidence, under ``previous``, as history. Whether it
    dropped: the caller records ``node.provenance_downgraded``. A ``mismatch`` is kept:
    a finding an admin must look at is not cleared by new hardware.
    """
    if row.provenance_status is not ProvenanceStatus.VERIFIED:
        return False
    verified_on = checked_identity(row.provenance_evidence, row.identity_baseline)
    if verified_on == accepted:
        return False
    status = ProvenanceStatus.DECLARED if row.origin_country else ProvenanceStatus.UNKNOWN
    evidence = {
        "source": IDENTITY_CHANGE_SOURCE,
        "reason": "the hardware identity accepted is not the one a BOM verified; import a "
        "BOM of the new parts to verify it",
        CHECKED_IDENTITY: accepted.model_dump(mode="json"),
        "verified_identity": verified_on.model_dump(mode="json"),
        "differences": identity_differences(verified_on, accepted),
        "changed_at": datetime.now(UTC).isoformat(),
        "acknowledged_by": ctx.actor_name,
        "request_id": ctx.request_id,
        "previous": {"status": row.provenance_status.value, "evidence": row.provenance_evidence},
    }
    repository.set_provenance_status(conn, row.id, status, evidence)
    request_evaluation(
        conn,
        EvaluationTrigger.NODE_PROVENANCE_CHANGED,
        {
            "node_id": str(row.id),
            "hostname": row.hostname,
            "provenance_status": status.value,
            "source": IDENTITY_CHANGE_SOURCE,
        },
    )
    return True
