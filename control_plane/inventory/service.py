"""Inventory use cases: zones, sites, node registration, heartbeats and admin changes.

Each mutating function opens the transaction, makes the change and writes its audit event
inside it, so a change without evidence (or evidence without a change) cannot be stored.
A change that can make a running workload break a policy (a node's zone, provenance,
status or labels, drift, a zone moved) also asks for a compliance evaluation in that
transaction (``compliance.outbox``).
"""

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from psycopg.rows import DictRow

from agents import protocol
from control_plane.access import repository as access_repository
from control_plane.access import service as access
from control_plane.access.models import Role
from control_plane.audit import service as audit
from control_plane.audit.models import AuditContext
from control_plane.compliance.models import EvaluationTrigger
from control_plane.compliance.outbox import request_evaluation
from control_plane.core.db import DbConnection
from control_plane.core.errors import ConflictError, InvalidInputError, NotFoundError
from control_plane.core.labels import merge_labels
from control_plane.inventory import repository
from control_plane.inventory.identity import identity_differences, reported_identity
from control_plane.inventory.models import (
    DeclaredProvenance,
    Drift,
    DriftAcknowledge,
    DriftStatus,
    GpuPublic,
    Heartbeat,
    HeartbeatAck,
    Inventory,
    NodeDetail,
    NodeFilters,
    NodeIdentity,
    NodePage,
    NodePublic,
    NodeRegister,
    NodeRegistered,
    NodeStatus,
    NodeUpdate,
    Provenance,
    ProvenanceStatus,
    SiteCreate,
    SitePublic,
    ZoneCreate,
    ZonePublic,
    ZoneUpdate,
)

#: A node that misses this many heartbeat intervals is marked offline.
MISSED_HEARTBEATS_OFFLINE = 3

#: The drift evidence when a drifted node reports its old baseline again: the hardware
#: went away and came back, which an admin should still look at.
BASELINE_AGAIN = "the reported identity matches the baseline again; acknowledge to clear it"

#: The before and after of a ``node.drift_detected`` event.
DriftEvent = tuple[dict[str, Any], dict[str, Any]]

#: The node columns of its provenance that policies read (a BOM import changes them too).
PROVENANCE_POLICY_COLUMNS = ("provenance_status", "origin_country", "component_origins")

#: What the policy engine reads about a node, by the compliance trigger a change raises:
#: (trigger, ((column, name in the request's subject), ...)).
_COMPLIANCE_FIELDS: tuple[tuple[EvaluationTrigger, tuple[tuple[str, str], ...]], ...] = (
    (EvaluationTrigger.NODE_ZONE_CHANGED, (("zone_slug", "zone"),)),
    (
        EvaluationTrigger.NODE_PROVENANCE_CHANGED,
        tuple((column, column) for column in PROVENANCE_POLICY_COLUMNS),
    ),
    (EvaluationTrigger.NODE_STATUS_CHANGED, (("status", "status"),)),
    (EvaluationTrigger.NODE_LABELS_CHANGED, (("labels", "labels"),)),
)

# -- zones -----------------------------------------------------------------------------


def create_zone(conn: DbConnection, ctx: AuditContext, zone: ZoneCreate) -> ZonePublic:
    """Store a residency zone (its parent must exist) and audit it."""
    with conn.transaction():
        created = ZonePublic.model_validate(repository.insert_zone(conn, zone.model_dump()))
        audit.record(
            conn,
            ctx,
            action="zone.created",
            object_type="zone",
            object_id=created.slug,
            after=created.model_dump(mode="json"),
        )
    return created


def list_zones(conn: DbConnection) -> list[ZonePublic]:
    """Every residency zone."""
    return [ZonePublic.model_validate(r) for r in repository.list_zones(conn)]


def get_zone(conn: DbConnection, slug: str) -> ZonePublic:
    """One residency zone, or 404."""
    row = repository.get_zone(conn, slug)
    if row is None:
        raise NotFoundError(f"zone {slug!r} does not exist")
    return ZonePublic.model_validate(row)


def update_zone(conn: DbConnection, ctx: AuditContext, slug: str, change: ZoneUpdate) -> ZonePublic:
    """Change a zone; refuse a parent that would put the zone inside itself."""
    with conn.transaction():
        row = repository.get_zone(conn, slug, for_update=True)
        if row is None:
            raise NotFoundError(f"zone {slug!r} does not exist")
        before = ZonePublic.model_validate(row)
        values = before.model_dump(include={"slug", "name", "country", "parent", "description"})
        values.update(change.model_dump(exclude_unset=True))
        parent = values["parent"]
        if parent is not None and slug in repository.zone_ancestors(conn, parent):
            raise InvalidInputError.for_field(
                "parent", f"zone {parent!r} is inside {slug!r}; that would make a cycle", parent
            )
        after = ZonePublic.model_validate(repository.update_zone(conn, values))
        placement = {"parent", "country"}
        if before.model_dump(include=placement) != after.model_dump(include=placement):
            # Every node in the zone (or inside it) now lies in other places.
            request_evaluation(
                conn,
                EvaluationTrigger.ZONE_CHANGED,
                {
                    "zone": slug,
                    "before": before.model_dump(mode="json", include=placement),
                    "after": after.model_dump(mode="json", include=placement),
                },
            )
        audit.record(
            conn,
            ctx,
            action="zone.updated",
            object_type="zone",
            object_id=slug,
            before=before.model_dump(mode="json"),
            after=after.model_dump(mode="json"),
        )
    return after


def delete_zone(conn: DbConnection, ctx: AuditContext, slug: str) -> None:
    """Delete a zone that no node, site or child zone uses (else 409)."""
    with conn.transaction():
        row = repository.get_zone(conn, slug, for_update=True)
        if row is None:
            raise NotFoundError(f"zone {slug!r} does not exist")
        repository.delete_zone(conn, slug)
        audit.record(
            conn,
            ctx,
            action="zone.deleted",
            object_type="zone",
            object_id=slug,
            before=ZonePublic.model_validate(row).model_dump(mode="json"),
        )


def create_site(conn: DbConnection, ctx: AuditContext, site: SiteCreate) -> SitePublic:
    """Store a site inside an existing zone and audit it."""
    with conn.transaction():
        created = SitePublic.model_validate(repository.insert_site(conn, site.model_dump()))
        audit.record(
            conn,
            ctx,
            action="site.created",
            object_type="site",
            object_id=created.slug,
            after=created.model_dump(mode="json"),
        )
    return created


def list_sites(conn: DbConnection) -> list[SitePublic]:
    """Every site."""
    return [SitePublic.model_validate(r) for r in repository.list_sites(conn)]


# -- nodes -----------------------------------------------------------------------------


def node_provenance(row: DictRow) -> Provenance:
    """A node row's provenance as the API shows it (also what provenance audit events hold)."""
    return Provenance(
        system_manufacturer=row["system_manufacturer"],
        system_model=row["system_model"],
        system_serial=row["system_serial"],
        board_vendor=row["board_vendor"],
        board_name=row["board_name"],
        asset_tag=row["asset_tag"],
        origin_country=row["origin_country"],
        component_origins=row["component_origins"],
        status=row["provenance_status"],
        evidence=row["provenance_evidence"],
    )


def _node_public(row: DictRow) -> NodePublic:
    return NodePublic(
        **{
            k: row[k]
            for k in NodePublic.model_fields
            if k in row and k not in {"provenance", "drift"}
        },
        site=row["site_slug"],
        zone=row["zone_slug"],
        provenance=node_provenance(row),
        drift=Drift(
            status=row["drift_status"],
            detected_at=row["drift_detected_at"],
            evidence=row["drift_evidence"],
        ),
    )


def _node_detail(conn: DbConnection, row: DictRow) -> NodeDetail:
    gpus = [GpuPublic.model_validate(g) for g in repository.node_gpus(conn, row["id"])]
    return NodeDetail(**_node_public(row).model_dump(), gpus=gpus)


def list_nodes(conn: DbConnection, filters: NodeFilters, limit: int, offset: int) -> NodePage:
    """A page of nodes matching ``filters`` (a zone includes its nested zones)."""
    rows, total = repository.search_nodes(conn, filters.model_dump(mode="json"), limit, offset)
    return NodePage(items=[_node_public(r) for r in rows], total=total, limit=limit, offset=offset)


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
    row = repository.get_node(conn, node_id)
    if row is None:
        raise NotFoundError(f"node {node_id} does not exist")
    return _node_detail(conn, row)


def _check_site_in_zone(conn: DbConnection, site: str | None, zone: str | None) -> None:
    """A node's site and zone must not contradict: one zone must enclose the other.

    An unknown site or zone is left to the foreign keys, which name the field.
    """
    if site is None or zone is None:
        return
    row = repository.get_site(conn, site)
    if row is None or row["zone"] == zone:
        return
    if zone in repository.zone_ancestors(conn, row["zone"]) or row["zone"] in (
        repository.zone_ancestors(conn, zone)
    ):
        return
    raise InvalidInputError.for_field(
        "site",
        f"site {site!r} is in zone {row['zone']!r}, which neither encloses nor lies "
        f"inside zone {zone!r}",
        site,
    )


def _declared_provenance(
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


def _request_compliance(conn: DbConnection, before: DictRow, after: DictRow) -> None:
    """Ask for a compliance evaluation for each kind of change the policy engine can see.

    A node's zone, provenance, status (quarantine, decommissioning) and labels (node CEL
    rules) decide whether the workloads running on it still comply.
    """
    for trigger, fields in _COMPLIANCE_FIELDS:
        old = {name: before[column] for column, name in fields}
        new = {name: after[column] for column, name in fields}
        if old != new:
            request_evaluation(
                conn,
                trigger,
                {
                    "node_id": str(after["id"]),
                    "hostname": after["hostname"],
                    "before": old,
                    "after": new,
                },
            )


def update_node(
    conn: DbConnection, ctx: AuditContext, node_id: UUID, change: NodeUpdate
) -> NodeDetail:
    """Apply an admin's change (zone, site, status, labels, declared provenance); audit it."""
    with conn.transaction():
        row = repository.get_node(conn, node_id, for_update=True)
        if row is None:
            raise NotFoundError(f"node {node_id} does not exist")
        before = _node_public(row)
        if row["drift_status"] == DriftStatus.DRIFTED and change.status == NodeStatus.ACTIVE:
            raise ConflictError(
                "status: the node's hardware identity has drifted; acknowledge the drift "
                "before making the node active",
                details={"field": "status", "drift_status": row["drift_status"]},
            )
        fields = change.model_fields_set
        labels = merge_labels(row["labels"], change.labels)
        values: dict[str, Any] = {
            "id": node_id,
            "zone": change.zone if "zone" in fields else row["zone_slug"],
            "site": change.site if "site" in fields else row["site_slug"],
            "status": (change.status or row["status"]),
            "labels": labels,
            "origin_country": row["origin_country"],
            "component_origins": row["component_origins"],
            "asset_tag": row["asset_tag"],
            "provenance_status": row["provenance_status"],
            "provenance_evidence": row["provenance_evidence"],
        }
        _check_site_in_zone(conn, values["site"], values["zone"])
        if change.provenance is not None:
            values.update(_declared_provenance(change.provenance, "admin", ctx))
            if "asset_tag" in change.provenance.model_fields_set:
                values["asset_tag"] = change.provenance.asset_tag
        repository.update_node_admin(conn, values)
        after_row = repository.get_node(conn, node_id)
        assert after_row is not None
        after = _node_public(after_row)
        _request_compliance(conn, row, after_row)
        audit.record(
            conn,
            ctx,
            action="node.updated",
            object_type="node",
            object_id=str(node_id),
            before=before.model_dump(mode="json"),
            after=after.model_dump(mode="json"),
        )
        return _node_detail(conn, after_row)


def _check_identity(
    conn: DbConnection, ctx: AuditContext, row: DictRow, inventory: Inventory, source: str
) -> DriftEvent | None:
    """Compare a report with the node's baseline; mark the node drifted if they differ.

    A drifted node that keeps reporting the identity already in its evidence is left as
    it is, so repeated reports write no new event. Returns the ``node.drift_detected``
    event's before and after, or None when there is nothing new to record.
    """
    reported = reported_identity(inventory)
    baseline = NodeIdentity.model_validate(row["identity_baseline"])
    if row["drift_status"] == DriftStatus.DRIFTED:
        if NodeIdentity.model_validate(row["drift_evidence"]["after"]) == reported:
            return None
    elif reported == baseline:
        return None
    evidence = {
        "before": baseline.model_dump(mode="json"),
        "after": reported.model_dump(mode="json"),
        "differences": identity_differences(baseline, reported) or [BASELINE_AGAIN],
        "source": source,
        "request_id": ctx.request_id,
    }
    repository.mark_drifted(conn, row["id"], evidence)
    request_evaluation(
        conn,
        EvaluationTrigger.NODE_DRIFT_DETECTED,
        {"node_id": str(row["id"]), "hostname": row["hostname"], "source": source},
    )
    before = {
        "identity": evidence["before"],
        "status": row["status"],
        "drift_status": row["drift_status"],
    }
    after = {
        "identity": evidence["after"],
        "status": NodeStatus.QUARANTINED.value,
        "drift_status": DriftStatus.DRIFTED.value,
        "differences": evidence["differences"],
    }
    return before, after


def _record_drift(
    conn: DbConnection,
    ctx: AuditContext,
    node_id: UUID,
    drift: DriftEvent | None,
) -> None:
    """Audit a drift ``_check_identity`` found, if it found one."""
    if drift is not None:
        audit.record(
            conn,
            ctx,
            action="node.drift_detected",
            object_type="node",
            object_id=str(node_id),
            before=drift[0],
            after=drift[1],
        )


def acknowledge_drift(
    conn: DbConnection, ctx: AuditContext, node_id: UUID, ack: DriftAcknowledge
) -> NodeDetail:
    """Accept a drifted node's reported identity as its baseline and end its quarantine.

    409 when the node has not drifted. The identity accepted is the one in the evidence,
    i.e. what the agent reported last.
    """
    with conn.transaction():
        row = repository.get_node(conn, node_id, for_update=True)
        if row is None:
            raise NotFoundError(f"node {node_id} does not exist")
        if row["drift_status"] != DriftStatus.DRIFTED:
            raise ConflictError(
                f"node {node_id} has no identity drift to acknowledge",
                details={"drift_status": row["drift_status"]},
            )
        accepted = NodeIdentity.model_validate(row["drift_evidence"]["after"])
        repository.acknowledge_drift(conn, node_id, accepted.model_dump(mode="json"))
        after_row = repository.get_node(conn, node_id)
        assert after_row is not None
        request_evaluation(
            conn,
            EvaluationTrigger.NODE_DRIFT_ACKNOWLEDGED,
            {
                "node_id": str(node_id),
                "hostname": after_row["hostname"],
                "status": after_row["status"],
            },
        )
        audit.record(
            conn,
            ctx,
            action="node.drift_acknowledged",
            object_type="node",
            object_id=str(node_id),
            before={
                "identity": row["identity_baseline"],
                "status": row["status"],
                "drift_status": row["drift_status"],
                "drift_evidence": row["drift_evidence"],
            },
            after={
                "identity": after_row["identity_baseline"],
                "status": after_row["status"],
                "drift_status": after_row["drift_status"],
                "note": ack.note,
            },
        )
        return _node_detail(conn, after_row)


def inventory_hash(inventory: Inventory) -> str:
    """A stable digest of an inventory report, to tell whether anything changed.

    The agent protocol's one digest, over what was validated: the agent computes the same
    one over the body it sends, to tell whether a heartbeat must carry the inventory.
    """
    return protocol.inventory_hash(inventory.model_dump(mode="json"))


def _apply_gpus(conn: DbConnection, node_id: UUID, inventory: Inventory) -> None:
    """Make the node's GPU rows match the report: upsert those reported, delete the rest."""
    seen: set[str] = set()
    indexes: set[int] = set()
    for position, gpu in enumerate(inventory.gpus):
        if gpu.uuid in seen:
            raise InvalidInputError.for_field(
                f"inventory.gpus.{position}.uuid", "reported twice", gpu.uuid
            )
        if gpu.index in indexes:
            raise InvalidInputError.for_field(
                f"inventory.gpus.{position}.index", "two GPUs share this index", gpu.index
            )
        seen.add(gpu.uuid)
        indexes.add(gpu.index)
        if not repository.upsert_gpu(conn, {**gpu.model_dump(), "node_id": node_id}):
            raise ConflictError(
                f"inventory.gpus.{position}.uuid: GPU {gpu.uuid} is registered to another node",
                details={"field": f"inventory.gpus.{position}.uuid", "uuid": gpu.uuid},
            )
    repository.delete_gpus_not_in(conn, node_id, sorted(seen))


def _host_values(inventory: Inventory) -> dict[str, Any]:
    return {**inventory.host.model_dump(), "inventory_hash": inventory_hash(inventory)}


def register_node(
    conn: DbConnection,
    ctx: AuditContext,
    registration: NodeRegister,
    *,
    secret_key: str,
    heartbeat_interval_seconds: int,
) -> NodeRegistered:
    """Register an agent's node (or re-register it by machine id) and issue its credential.

    On re-registration the agent's readings are refreshed and its old credentials revoked;
    zone, site, labels and declared provenance stay as the admin left them, and a hardware
    identity other than the baseline quarantines the node as drifted.
    """
    host = registration.inventory.host
    drift: DriftEvent | None = None
    with conn.transaction():
        existing = repository.lock_node_by_machine_id(conn, host.machine_id)
        if existing is None:
            _check_site_in_zone(conn, registration.site, registration.zone)
            declared = registration.provenance
            node_id = repository.insert_node(
                conn,
                {
                    **_host_values(registration.inventory),
                    "site": registration.site,
                    "zone": registration.zone,
                    "labels": registration.labels,
                    **_declared_provenance(declared, "agent-config", ctx),
                    "asset_tag": declared.asset_tag or host.asset_tag,
                    "identity_baseline": reported_identity(registration.inventory).model_dump(
                        mode="json"
                    ),
                },
            )
            before = None
            action = "node.registered"
        else:
            node_id = existing["id"]
            before = _node_detail(conn, existing).model_dump(mode="json")
            repository.update_host_facts(
                conn, {**_host_values(registration.inventory), "id": node_id}
            )
            repository.refresh_registration(conn, node_id)
            access_repository.revoke_node_tokens(conn, node_id)
            drift = _check_identity(conn, ctx, existing, registration.inventory, "registration")
            action = "node.reregistered"
        _apply_gpus(conn, node_id, registration.inventory)
        row = repository.get_node(conn, node_id)
        assert row is not None
        audit.record(
            conn,
            ctx,
            action=action,
            object_type="node",
            object_id=str(node_id),
            before=before,
            after=_node_detail(conn, row).model_dump(mode="json"),
        )
        _record_drift(conn, ctx, node_id, drift)
        issued = access.issue_token(
            conn,
            ctx,
            name=f"node:{host.hostname}",
            role=Role.AGENT,
            secret_key=secret_key,
            node_id=node_id,
        )
    return NodeRegistered(
        node_id=node_id, token=issued.token, heartbeat_interval_seconds=heartbeat_interval_seconds
    )


def _telemetry_columns(heartbeat: Heartbeat) -> dict[str, list[Any]]:
    readings = heartbeat.telemetry
    return {
        "uuids": [t.uuid for t in readings],
        "utilization_pct": [t.utilization_pct for t in readings],
        "memory_used_bytes": [t.memory_used_bytes for t in readings],
        "temperature_c": [t.temperature_c for t in readings],
        "power_w": [t.power_w for t in readings],
        "ecc_uncorrected_errors": [t.ecc_uncorrected_errors for t in readings],
        "process_count": [t.process_count for t in readings],
        "fan_speed_pct": [t.fan_speed_pct for t in readings],
    }


def record_heartbeat(
    conn: DbConnection,
    ctx: AuditContext,
    node_id: UUID,
    heartbeat: Heartbeat,
    *,
    heartbeat_interval_seconds: int,
) -> HeartbeatAck:
    """Take one heartbeat and return what was done with it.

    Repeats (by sequence number) are dropped; telemetry overwrites the current state; a
    changed inventory is applied; a hardware identity other than the baseline quarantines
    the node as drifted; an offline node comes back. Only real changes are audited.
    """
    with conn.transaction():
        row = repository.get_node(conn, node_id, for_update=True)
        if row is None:
            raise NotFoundError(f"node {node_id} does not exist")
        if heartbeat.seq <= row["last_heartbeat_seq"]:
            return HeartbeatAck(
                accepted=False,
                duplicate=True,
                last_seq=row["last_heartbeat_seq"],
                status=row["status"],
                heartbeat_interval_seconds=heartbeat_interval_seconds,
            )
        before: NodeDetail | None = None
        drift: DriftEvent | None = None
        inventory = heartbeat.inventory
        if inventory is not None:
            if inventory.host.machine_id != row["machine_id"]:
                raise InvalidInputError.for_field(
                    "inventory.host.machine_id",
                    "differs from the registered node's machine id",
                    inventory.host.machine_id,
                )
            if inventory_hash(inventory) != row["inventory_hash"]:
                before = _node_detail(conn, row)
                repository.update_host_facts(conn, {**_host_values(inventory), "id": node_id})
                _apply_gpus(conn, node_id, inventory)
            drift = _check_identity(conn, ctx, row, inventory, "heartbeat")
        status = repository.record_heartbeat(conn, node_id, heartbeat.seq)
        updated = repository.update_gpu_telemetry(conn, node_id, _telemetry_columns(heartbeat))
        unknown = sorted({t.uuid for t in heartbeat.telemetry} - updated)
        if before is not None:
            after_row = repository.get_node(conn, node_id)
            assert after_row is not None
            audit.record(
                conn,
                ctx,
                action="node.inventory_changed",
                object_type="node",
                object_id=str(node_id),
                before=before.model_dump(mode="json"),
                after=_node_detail(conn, after_row).model_dump(mode="json"),
            )
        _record_drift(conn, ctx, node_id, drift)
        # A drifted node comes back quarantined rather than active; it is online all the same.
        if row["status"] == NodeStatus.OFFLINE and status != NodeStatus.OFFLINE:
            audit.record(
                conn,
                ctx,
                action="node.online",
                object_type="node",
                object_id=str(node_id),
                before={"status": row["status"]},
                after={"status": status},
            )
    return HeartbeatAck(
        accepted=True,
        duplicate=False,
        last_seq=heartbeat.seq,
        status=NodeStatus(status),
        heartbeat_interval_seconds=heartbeat_interval_seconds,
        inventory_changed=before is not None,
        unknown_gpus=unknown,
    )


def mark_stale_nodes_offline(
    conn: DbConnection, ctx: AuditContext, *, heartbeat_interval_seconds: int, batch_size: int
) -> int:
    """Mark active nodes that missed three heartbeats offline, one audited batch at a time.

    Returns how many were marked; a caller with a larger backlog calls again.
    """
    threshold = MISSED_HEARTBEATS_OFFLINE * heartbeat_interval_seconds
    with conn.transaction():
        stale = repository.mark_stale_nodes_offline(conn, threshold, batch_size)
        for node in stale:
            audit.record(
                conn,
                ctx,
                action="node.offline",
                object_type="node",
                object_id=str(node["id"]),
                before={
                    "status": NodeStatus.ACTIVE.value,
                    "last_heartbeat_at": node["last_heartbeat_at"].isoformat(),
                },
                after={
                    "status": NodeStatus.OFFLINE.value,
                    "reason": f"missed {MISSED_HEARTBEATS_OFFLINE} heartbeats "
                    f"({threshold} s without one)",
                },
            )
    return len(stale)
