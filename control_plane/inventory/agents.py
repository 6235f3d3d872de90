"""The control plane's side of the agent protocol: registration, heartbeats, liveness.

An agent registers with a bootstrap token and receives its node's own credential; then it
heartbeats: telemetry always, the full inventory when it changed. A report whose hardware
identity differs from the baseline quarantines the node (``drift.py``). Only real changes
are audited (a registration, a changed inventory, drift, a node coming back online or
going offline); telemetry is not, as it changes every few seconds and proves nothing.

Where a new node stands is never the agent's word alone: a bootstrap token scoped to a zone
(and site) confirms it, and refuses a registration claiming another; an admin's
registration confirms it; a node registered with an unscoped bootstrap token waits
``planned``, out of placement, until an admin sets its zone (``nodes.update_node``).

A machine id is no secret (every inventory reader sees it), so registering one already
known must prove it is that node: the caller is the node's own agent credential, an
admin, or a bootstrap token for which an admin approved a replacement (used once, within
its expiry). Anyone else is refused with nothing changed: the legitimate agent keeps its
credential, the node its GPUs and status.
"""

from typing import Any
from uuid import UUID

from agents import protocol
from control_plane.access import repository as access_repository
from control_plane.access import service as access
from control_plane.access.models import IssuedToken, Principal, Role
from control_plane.core.audit_log import (
    AuditContext,
    Change,
    audited,
    record_change,
    record_changes,
    transaction,
)
from control_plane.core.db import DbConnection
from control_plane.core.errors import ConflictError, InvalidInputError, PermissionDeniedError
from control_plane.domain.audit import AuditAction
from control_plane.domain.fleet import LocationVia, NodeStatus
from control_plane.inventory import repository
from control_plane.inventory.drift import DriftFound, check_identity, record_drift
from control_plane.inventory.identity import reported_identity
from control_plane.inventory.models import (
    GpuInventory,
    Heartbeat,
    HeartbeatAck,
    Inventory,
    NodeDetail,
    NodeLastSeen,
    NodeOffline,
    NodeRegister,
    NodeRegistered,
    NodeRow,
    NodeStatusSnapshot,
    ReplacementApproval,
    ReplacementApprove,
)
from control_plane.inventory.nodes import declared_provenance, existing_node, node_detail
from control_plane.inventory.zones import check_site_in_zone

#: A node that misses this many heartbeat intervals is marked offline.
MISSED_HEARTBEATS_OFFLINE = 3


def inventory_hash(inventory: Inventory) -> str:
    """A stable digest of an inventory report, to tell whether anything changed.

    The agent protocol's one digest, over what was validated: the agent computes the same
    one over the body it sends, to tell whether a heartbeat must carry the inventory.
    """
    return protocol.inventory_hash(inventory.model_dump(mode="json"))


def _apply_gpus(conn: DbConnection, node_id: UUID, inventory: Inventory) -> None:
    """Make the node's GPU rows match the report: upsert those reported, retire the rest.

    A GPU left out is deleted, unless a workload holds it: then it is kept as missing
    (``missing_since``), out of placement and counts but still booked, so that reporting
    it again cannot free it for a second workload. It is deleted when the workload ends.
    MIG devices are rows of their own (the slices placement books) and are kept the
    same way: a booked one left out stays booked, as missing, and so does its GPU.
    The change shows in the GPUs of the audited node snapshot. The caller holds the node
    locked ``FOR UPDATE``.
    """
    seen: set[str] = set()
    indexes: set[int] = set()
    slices: list[repository.ReportedMigDevice] = []
    slice_fields: dict[str, str] = {}
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
        slices.extend(_reported_mig_devices(position, gpu, slice_fields))
        stored = {**gpu.model_dump(exclude={"mig_devices"}), "node_id": node_id}
        if not repository.upsert_gpu(conn, stored):
            field = f"inventory.gpus.{position}.uuid"
            held = (
                "; that node stopped reporting it, but a workload there still holds it"
                " until it is released or its lease expires"
                if repository.gpu_missing_elsewhere(conn, gpu.uuid, node_id)
                else ""
            )
            raise ConflictError(
                f"{field}: GPU {gpu.uuid} is registered to another node{held}",
                details={"field": field, "uuid": gpu.uuid},
            )
    taken = repository.sync_mig_devices(conn, node_id, slices)
    if taken:
        field = slice_fields[taken[0]]
        raise ConflictError(
            f"{field}: MIG device {taken[0]} is registered under another GPU",
            details={"field": field, "uuid": taken[0]},
        )
    repository.retire_gpus_not_in(conn, node_id, sorted(seen))


def _reported_mig_devices(
    position: int, gpu: GpuInventory, fields: dict[str, str]
) -> list[repository.ReportedMigDevice]:
    """The MIG devices of one reported GPU as rows; a UUID reported twice is a 422.

    ``fields`` collects each device UUID's field path over the whole report (a UUID is
    its primary key for booking: it may appear once per node).
    """
    devices = []
    for number, device in enumerate(gpu.mig_devices):
        if device.uuid is not None:
            field = f"inventory.gpus.{position}.mig_devices.{number}.uuid"
            if device.uuid in fields:
                raise InvalidInputError.for_field(field, "reported twice", device.uuid)
            fields[device.uuid] = field
        devices.append(
            repository.ReportedMigDevice(
                gpu_uuid=gpu.uuid,
                index=device.index,
                uuid=device.uuid,
                profile=device.profile,
                gpu_instance_id=device.gpu_instance_id,
                compute_instance_id=device.compute_instance_id,
                memory_total_bytes=device.memory_total_bytes,
            )
        )
    return devices


def _host_values(inventory: Inventory) -> dict[str, Any]:
    return {**inventory.host.model_dump(), "inventory_hash": inventory_hash(inventory)}


def _check_registrant(
    conn: DbConnection, caller: Principal, existing: NodeRow | None
) -> ReplacementApproval | None:
    """Refuse a caller who may not register this machine id; the approval it uses, if any.

    A new machine id: any registrar but an agent (whose token is bound to a node already).
    A known one: that node's own agent, an admin, or a bootstrap token with an unexpired
    approval of a replacement, which is used up (deleted) here, in the caller's transaction.
    """
    if caller.role is Role.AGENT:
        if existing is None or existing.id != caller.node_id:
            raise PermissionDeniedError(
                "an agent may only re-register its own node",
                details={"role": caller.role.value, "node_id": str(caller.node_id)},
            )
        return None
    if existing is None or caller.role is Role.ADMIN:
        return None
    approval = repository.use_replacement_approval(conn, existing.id)
    if approval is None:
        raise ConflictError(
            f"inventory.host.machine_id: node {existing.id} is already registered with this"
            " machine id; re-register with that node's own agent credential, or have an"
            f" admin approve a replacement (sovctl nodes approve-replacement {existing.id})",
            details={
                "field": "inventory.host.machine_id",
                "node_id": str(existing.id),
                "reason": "machine_id_registered",
            },
        )
    return approval


def _scoped_place(caller: Principal, registration: NodeRegister) -> tuple[str | None, str | None]:
    """The zone and site a registration stands in, or 403 if it claims a place outside scope.

    A scoped bootstrap token's zone (and site) is where its nodes stand: a registration
    that claims another is refused naming the field, one that claims none takes the
    token's. Other callers' registrations stand where they say (confirmed or not, below).
    """
    if caller.role is not Role.BOOTSTRAP:
        return registration.zone, registration.site
    for field, scope, claimed in (
        ("zone", caller.zone, registration.zone),
        ("site", caller.site, registration.site),
    ):
        if scope is not None and claimed is not None and claimed != scope:
            raise PermissionDeniedError(
                f"{field}: this bootstrap token registers nodes in {field} {scope!r} only,"
                f" not {claimed!r}",
                details={"field": field, "scope": scope, "claimed": claimed},
            )
    return caller.zone or registration.zone, caller.site or registration.site


def _confirmation(caller: Principal) -> tuple[str | None, LocationVia | None]:
    """Who confirms a new node's location by registering it, and how; (None, None): nobody."""
    if caller.role is Role.ADMIN:
        return caller.name, LocationVia.ADMIN
    if caller.role is Role.BOOTSTRAP and caller.zone is not None:
        return caller.name, LocationVia.SCOPED_TOKEN
    return None, None


def create_bootstrap_token(
    conn: DbConnection,
    ctx: AuditContext,
    *,
    name: str,
    secret_key: str,
    zone: str | None = None,
    site: str | None = None,
) -> IssuedToken:
    """Create a bootstrap token, scoped to a zone (and a site within it) if given.

    The scope is where every node the token registers stands, confirmed: give a rack's
    installer a token for that rack's zone. A site needs its zone (a scope names the zone
    first), and the two must agree; either unknown is a 422 naming it.
    """
    if site is not None and zone is None:
        raise InvalidInputError.for_field("site", "a site scope needs its zone (--zone)", site)
    with transaction(conn):
        check_site_in_zone(conn, site, zone)
        return access.issue_token(
            conn, ctx, name=name, role=Role.BOOTSTRAP, secret_key=secret_key, zone=zone, site=site
        )


def register_node(
    conn: DbConnection,
    ctx: AuditContext,
    registration: NodeRegister,
    *,
    caller: Principal,
    secret_key: str,
    heartbeat_interval_seconds: int,
) -> NodeRegistered:
    """Register an agent's node (or re-register it by machine id) and issue its credential.

    Re-registering needs proof that the caller is that node (``_check_registrant``); a
    refused attempt changes nothing. On re-registration the agent's readings are refreshed
    and its old credentials revoked; zone, site, labels and declared provenance stay as
    the admin left them, and a hardware identity other than the baseline quarantines the
    node as drifted. One transaction: the approval's use, the node's event, any drift, and
    the new credential's event commit together.
    """
    host = registration.inventory.host
    drift: DriftFound | None = None
    zone, site = _scoped_place(caller, registration)
    with transaction(conn):
        existing = repository.lock_node_by_machine_id(conn, host.machine_id)
        approval = _check_registrant(conn, caller, existing)
        if existing is not None and approval is not None:
            record_change(
                conn, ctx, AuditAction.NODE_REPLACEMENT_USED, str(existing.id), before=approval
            )
        action = AuditAction.NODE_REGISTERED if existing is None else AuditAction.NODE_REREGISTERED
        with audited(conn, ctx, action) as change:
            if existing is None:
                check_site_in_zone(conn, site, zone)
                declared = registration.provenance
                confirmed_by, confirmed_via = _confirmation(caller)
                node_id = repository.insert_node(
                    conn,
                    {
                        **_host_values(registration.inventory),
                        "site": site,
                        "zone": zone,
                        "confirmed_by": confirmed_by,
                        "confirmed_via": confirmed_via,
                        "labels": registration.labels,
                        "kubernetes_node_name": registration.kubernetes_node_name,
                        **declared_provenance(declared, "agent-config", ctx),
                        "asset_tag": declared.asset_tag or host.asset_tag,
                        "identity_baseline": reported_identity(registration.inventory).model_dump(
                            mode="json"
                        ),
                    },
                )
            else:
                node_id = existing.id
                change.before = node_detail(conn, existing)
                repository.update_host_facts(
                    conn, {**_host_values(registration.inventory), "id": node_id}
                )
                repository.refresh_registration(conn, node_id, registration.kubernetes_node_name)
                access_repository.revoke_node_tokens(conn, node_id)
                drift = check_identity(conn, ctx, existing, registration.inventory, "registration")
            _apply_gpus(conn, node_id, registration.inventory)
            change.object_id = str(node_id)
            registered = existing_node(conn, node_id)
            change.after = node_detail(conn, registered)
        record_drift(conn, ctx, drift)
        issued = access.issue_token(
            conn,
            ctx,
            name=f"node:{host.hostname}",
            role=Role.AGENT,
            secret_key=secret_key,
            node_id=node_id,
        )
    return NodeRegistered(
        node_id=node_id,
        token=issued.token,
        heartbeat_interval_seconds=heartbeat_interval_seconds,
        status=registered.status,
    )


def approve_replacement(
    conn: DbConnection, ctx: AuditContext, node_id: UUID, approval: ReplacementApprove
) -> ReplacementApproval:
    """Allow one bootstrap-token registration of this node's machine id, for a while.

    For an agent that lost its credential (a wiped disk): it registers again with the
    bootstrap token and gets a new credential, and the old one is revoked then. Approving
    again replaces the node's earlier approval (expired or not).
    """
    with audited(conn, ctx, AuditAction.NODE_REPLACEMENT_APPROVED, str(node_id)) as change:
        existing_node(conn, node_id, for_update=True)
        change.before = repository.get_replacement_approval(conn, node_id)
        stored = repository.approve_replacement(
            conn,
            {
                "node_id": node_id,
                "approved_by": ctx.actor_name,
                "expires_in_seconds": approval.expires_in_seconds,
                "reason": approval.reason,
            },
        )
        change.after = stored
    return stored


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
    with transaction(conn):
        row = existing_node(conn, node_id, for_update=True)
        if heartbeat.seq - row.last_heartbeat_seq > protocol.MAX_SEQ_STEP:
            raise InvalidInputError.for_field(
                "seq",
                f"more than {protocol.MAX_SEQ_STEP} ahead of the last accepted "
                f"({row.last_heartbeat_seq})",
                heartbeat.seq,
            )
        if heartbeat.seq <= row.last_heartbeat_seq:
            return HeartbeatAck(
                accepted=False,
                duplicate=True,
                last_seq=row.last_heartbeat_seq,
                status=row.status,
                heartbeat_interval_seconds=heartbeat_interval_seconds,
            )
        before: NodeDetail | None = None
        drift: DriftFound | None = None
        inventory = heartbeat.inventory
        if inventory is not None:
            if inventory.host.machine_id != row.machine_id:
                raise InvalidInputError.for_field(
                    "inventory.host.machine_id",
                    "differs from the registered node's machine id",
                    inventory.host.machine_id,
                )
            if inventory_hash(inventory) != row.inventory_hash:
                before = node_detail(conn, row)
                repository.update_host_facts(conn, {**_host_values(inventory), "id": node_id})
                _apply_gpus(conn, node_id, inventory)
            drift = check_identity(conn, ctx, row, inventory, "heartbeat")
        status = repository.record_heartbeat(conn, node_id, heartbeat.seq)
        updated = repository.update_gpu_telemetry(conn, node_id, _telemetry_columns(heartbeat))
        unknown = sorted({t.uuid for t in heartbeat.telemetry} - updated)
        if before is not None:
            record_change(
                conn,
                ctx,
                AuditAction.NODE_INVENTORY_CHANGED,
                str(node_id),
                before=before,
                after=node_detail(conn, existing_node(conn, node_id)),
            )
        record_drift(conn, ctx, drift)
        # A drifted node comes back quarantined rather than active; it is online all the same.
        if row.status is NodeStatus.OFFLINE and status is not NodeStatus.OFFLINE:
            record_change(
                conn,
                ctx,
                AuditAction.NODE_ONLINE,
                str(node_id),
                before=NodeStatusSnapshot(status=row.status),
                after=NodeStatusSnapshot(status=status),
            )
    return HeartbeatAck(
        accepted=True,
        duplicate=False,
        last_seq=heartbeat.seq,
        status=status,
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
    reason = f"missed {MISSED_HEARTBEATS_OFFLINE} heartbeats ({threshold} s without one)"
    with transaction(conn):
        stale = repository.mark_stale_nodes_offline(conn, threshold, batch_size)
        # One batch for the sweep: one COPY instead of a statement per event.
        record_changes(
            conn,
            ctx,
            [
                Change(
                    AuditAction.NODE_OFFLINE,
                    str(node.id),
                    before=NodeLastSeen(
                        status=NodeStatus.ACTIVE, last_heartbeat_at=node.last_heartbeat_at
                    ),
                    after=NodeOffline(status=NodeStatus.OFFLINE, reason=reason),
                )
                for node in stale
            ],
        )
    return len(stale)
