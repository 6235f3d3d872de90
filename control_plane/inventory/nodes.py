"""GPU servers as admins see them: listing, showing and changing nodes.

An admin's change (zone, site, status, labels, declared provenance) runs through
``core.audit_log.audited``. A change the policy engine can see (a node's zone, provenance,
status or labels) also asks for a compliance evaluation in the same transaction.
"""

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from control_plane.core.audit_log import AuditContext, audited
from control_plane.core.db import DbConnection
from control_plane.core.errors import ConflictError, NotFoundError
from control_plane.core.filters import check_references
from control_plane.core.labels import merge_labels
from control_plane.core.outbox import request_evaluation
from control_plane.domain.audit import AuditAction
from control_plane.domain.compliance import EvaluationTrigger
from control_plane.domain.fleet import DriftStatus, NodeStatus, ProvenanceStatus
from control_plane.inventory import repository
from control_plane.inventory.models import (
    DeclaredProvenance,
    NodeDetail,
    NodeFilters,
    NodePage,
    NodeRow,
    NodeUpdate,
)
from control_plane.inventory.zones import check_site_in_zone

#: The node fields of its provenance that policies read (a BOM import changes them too).
PROVENANCE_POLICY_FIELDS = ("provenance_status", "origin_country", "component_origins")

#: What the policy engine reads about a node, by the compliance trigger a change raises:
#: (trigger, ((row field, name in the request's subject), ...)).
_COMPLIANCE_FIELDS: tuple[tuple[EvaluationTrigger, tuple[tuple[str, str], ...]], ...] = (
    (EvaluationTrigger.NODE_ZONE_CHANGED, (("zone_slug", "zone"),)),
    (
        EvaluationTrigger.NODE_PROVENANCE_CHANGED,
        tuple((name, name) for name in PROVENANCE_POLICY_FIELDS),
    ),
    (EvaluationTrigger.NODE_STATUS_CHANGED, (("status", "status"),)),
    (EvaluationTrigger.NODE_LABELS_CHANGED, (("labels", "labels"),)),
)


def node_detail(conn: DbConnection, row: NodeRow) -> NodeDetail:
    """The node with its GPUs, as ``GET /v1/nodes/{node}`` shows it."""
    return NodeDetail(**row.public().model_dump(), gpus=repository.node_gpus(conn, row.id))


def existing_node(conn: DbConnection, node_id: UUID, *, for_update: bool = False) -> NodeRow:
    """The node, optionally locked for the rest of the transaction, or 404."""
    row = repository.get_node(conn, node_id, for_update=for_update)
    if row is None:
        raise NotFoundError(f"node {node_id} does not exist")
    return row


def list_nodes(conn: DbConnection, filters: NodeFilters, limit: int, offset: int) -> NodePage:
    """A page of nodes matching ``filters`` (a zone includes its nested zones).

    A zone or site that does not exist is a 422, not an empty page.
    """
    check_references(conn, filters)
    rows, total = repository.search_nodes(conn, filters.model_dump(mode="json"), limit, offset)
    return NodePage(items=[row.public() for row in rows], total=total, limit=limit, offset=offset)


def resolve_node_id(conn: DbConnection, ref: str) -> UUID:
    """Accept a node's id or its hostname (when unambiguous)."""
    try:
        return UUID(ref)
    except ValueError:
        pass
    ids = repository.find_node_ids_by_hostname(conn, ref)
    if not ids:
        raise NotFoundError(f"no node with id or hostname {ref!r}")
    if len(ids) > 1:
        raise ConflictError(
            f"{len(ids)} nodes are named {ref!r}; use the node id",
            details={"ids": [str(i) for i in ids]},
        )
    return ids[0]


def get_node(conn: DbConnection, node_id: UUID) -> NodeDetail:
    """One node with its GPUs, or 404."""
    return node_detail(conn, existing_node(conn, node_id))


def declared_provenance(
    declared: DeclaredProvenance, source: str, ctx: AuditContext
) -> dict[str, Any]:
    """Columns for a declared origin; the evidence says who declared it, how and when."""
    status = ProvenanceStatus.DECLARED if declared.origin_country else ProvenanceStatus.UNKNOWN
    return {
        "origin_country": declared.origin_country,
        "component_origins": {k.value: v for k, v in declared.component_origins.items()},
        "provenance_status": status.value,
        "provenance_evidence": {
            "source": source,
            "declared_by": ctx.actor_name,
            "declared_at": datetime.now(UTC).isoformat(),
            "request_id": ctx.request_id,
        },
    }


def _request_compliance(conn: DbConnection, before: NodeRow, after: NodeRow) -> None:
    """Ask for a compliance evaluation for each kind of change the policy engine can see.

    A node's zone, provenance, status (quarantine, decommissioning) and labels (node CEL
    rules) decide whether the workloads running on it still comply.
    """
    old_values = before.model_dump(mode="json")
    new_values = after.model_dump(mode="json")
    for trigger, fields in _COMPLIANCE_FIELDS:
        old = {name: old_values[field] for field, name in fields}
        new = {name: new_values[field] for field, name in fields}
        if old != new:
            request_evaluation(
                conn,
                trigger,
                {
                    "node_id": str(after.id),
                    "hostname": after.hostname,
                    "before": old,
                    "after": new,
                },
            )


def update_node(
    conn: DbConnection, ctx: AuditContext, node_id: UUID, change: NodeUpdate
) -> NodeDetail:
    """Apply an admin's change (zone, site, status, labels, declared provenance); audit it.

    Setting ``zone`` (to the same zone, too) is the admin confirming where the node stands:
    the node's location is then confirmed by them. A node whose location nobody confirmed
    cannot be made ``active`` (409 naming ``status``) unless the same change sets its zone.
    """
    with audited(conn, ctx, AuditAction.NODE_UPDATED, str(node_id)) as event:
        row = existing_node(conn, node_id, for_update=True)
        event.before = row.public()
        if row.drift_status is DriftStatus.DRIFTED and change.status == NodeStatus.ACTIVE:
            raise ConflictError(
                "status: the node's hardware identity has drifted; acknowledge the drift "
                "before making the node active",
                details={"field": "status", "drift_status": row.drift_status.value},
            )
        fields = change.model_fields_set
        confirms = "zone" in fields
        unconfirmed = row.location_confirmed_at is None and not confirms
        if change.status == NodeStatus.ACTIVE and unconfirmed:
            raise ConflictError(
                "status: nobody confirmed where this node stands (it registered with an"
                " unscoped bootstrap token); set its zone in the same change to confirm it"
                f" (sovctl nodes confirm-location {node_id} --zone ZONE)",
                details={"field": "status", "reason": "location_unconfirmed"},
            )
        values: dict[str, Any] = {
            "id": node_id,
            "confirmed_by": ctx.actor_name if confirms else None,
            "zone": change.zone if "zone" in fields else row.zone_slug,
            "site": change.site if "site" in fields else row.site_slug,
            "status": change.status or row.status,
            "labels": merge_labels(row.labels, change.labels),
            "origin_country": row.origin_country,
            "component_origins": row.component_origins,
            "asset_tag": row.asset_tag,
            "provenance_status": row.provenance_status,
            "provenance_evidence": row.provenance_evidence,
        }
        check_site_in_zone(conn, values["site"], values["zone"])
        if change.provenance is not None:
            values.update(declared_provenance(change.provenance, "admin", ctx))
            if "asset_tag" in change.provenance.model_fields_set:
                values["asset_tag"] = change.provenance.asset_tag
        repository.update_node_admin(conn, values)
        after = existing_node(conn, node_id)
        event.after = after.public()
        _request_compliance(conn, row, after)
        return node_detail(conn, after)
