"""HTTP routes for zones, sites, nodes and the agent endpoints. Thin: parse, authorize, call."""

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Response, status

from control_plane.access.http import SecuredRoute, require
from control_plane.access.models import Permission, Principal
from control_plane.core.errors import PermissionDeniedError
from control_plane.core.http import Conn, Limit, Offset, RequestId, SettingsDep
from control_plane.core.openapi import error_responses
from control_plane.domain.types import Lookup
from control_plane.inventory import agents, drift, nodes, zones
from control_plane.inventory.models import (
    DriftAcknowledge,
    Heartbeat,
    HeartbeatAck,
    NodeDetail,
    NodeFilters,
    NodePage,
    NodeRegister,
    NodeRegistered,
    NodeUpdate,
    ReplacementApproval,
    ReplacementApprove,
    SiteCreate,
    SitePublic,
    ZoneCreate,
    ZonePublic,
    ZoneUpdate,
)

Reader = Annotated[Principal, Depends(require(Permission.INVENTORY_READ))]
Admin = Annotated[Principal, Depends(require(Permission.INVENTORY_WRITE))]
Registrar = Annotated[Principal, Depends(require(Permission.AGENT_REGISTER))]
Agent = Annotated[Principal, Depends(require(Permission.AGENT_HEARTBEAT))]

router = APIRouter(prefix="/v1", route_class=SecuredRoute)


@router.post("/zones", status_code=status.HTTP_201_CREATED, tags=["zones"])
def create_zone(zone: ZoneCreate, conn: Conn, who: Admin, request_id: RequestId) -> ZonePublic:
    """Create a residency zone (optionally inside a parent zone)."""
    return zones.create_zone(conn, who.audit_context(request_id), zone)


@router.get("/zones", tags=["zones"])
def list_zones(conn: Conn, _: Reader) -> list[ZonePublic]:
    """List every residency zone."""
    return zones.list_zones(conn)


@router.get("/zones/{slug}", tags=["zones"])
def get_zone(slug: Lookup, conn: Conn, _: Reader) -> ZonePublic:
    """Show one residency zone."""
    return zones.get_zone(conn, slug)


@router.patch("/zones/{slug}", tags=["zones"])
def update_zone(
    slug: Lookup, change: ZoneUpdate, conn: Conn, who: Admin, request_id: RequestId
) -> ZonePublic:
    """Change a zone's name, country, parent or description."""
    return zones.update_zone(conn, who.audit_context(request_id), slug, change)


@router.delete("/zones/{slug}", status_code=status.HTTP_204_NO_CONTENT, tags=["zones"])
def delete_zone(slug: Lookup, conn: Conn, who: Admin, request_id: RequestId) -> Response:
    """Delete a zone that nothing uses."""
    zones.delete_zone(conn, who.audit_context(request_id), slug)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/sites", status_code=status.HTTP_201_CREATED, tags=["sites"])
def create_site(site: SiteCreate, conn: Conn, who: Admin, request_id: RequestId) -> SitePublic:
    """Create a site (a data center or room) inside a zone."""
    return zones.create_site(conn, who.audit_context(request_id), site)


@router.get("/sites", tags=["sites"])
def list_sites(conn: Conn, _: Reader) -> list[SitePublic]:
    """List every site."""
    return zones.list_sites(conn)


@router.get("/nodes", tags=["nodes"])
def list_nodes(
    conn: Conn,
    _: Reader,
    filters: Annotated[NodeFilters, Query()],
    limit: Limit = 100,
    offset: Offset = 0,
) -> NodePage:
    """List GPU servers, filtered and paginated."""
    return nodes.list_nodes(conn, filters, limit, offset)


# A hostname two nodes share names neither: 409 (the path's 404 is documented for all).
@router.get("/nodes/{node}", tags=["nodes"], responses=error_responses(409))
def get_node(node: Lookup, conn: Conn, _: Reader) -> NodeDetail:
    """Show one GPU server (by id or hostname) with its GPUs."""
    return nodes.get_node(conn, nodes.resolve_node_id(conn, node))


@router.patch("/nodes/{node}", tags=["nodes"])
def update_node(
    node: Lookup, change: NodeUpdate, conn: Conn, who: Admin, request_id: RequestId
) -> NodeDetail:
    """Change a node's zone, site, status, labels or declared provenance."""
    node_id = nodes.resolve_node_id(conn, node)
    return nodes.update_node(conn, who.audit_context(request_id), node_id, change)


@router.post("/nodes/{node}/drift/acknowledge", tags=["nodes"])
def acknowledge_drift(
    node: Lookup,
    conn: Conn,
    who: Admin,
    request_id: RequestId,
    ack: DriftAcknowledge | None = None,
) -> NodeDetail:
    """Accept a drifted node's reported hardware identity as its baseline; end the quarantine."""
    node_id = nodes.resolve_node_id(conn, node)
    return drift.acknowledge_drift(
        conn, who.audit_context(request_id), node_id, ack or DriftAcknowledge()
    )


@router.post("/nodes/{node}/replacement", status_code=status.HTTP_201_CREATED, tags=["nodes"])
def approve_replacement(
    node: Lookup,
    conn: Conn,
    who: Admin,
    request_id: RequestId,
    approval: ReplacementApprove | None = None,
) -> ReplacementApproval:
    """Allow one bootstrap-token registration of a known node (one that lost its credential)."""
    node_id = nodes.resolve_node_id(conn, node)
    return agents.approve_replacement(
        conn, who.audit_context(request_id), node_id, approval or ReplacementApprove()
    )


@router.post("/agents/register", status_code=status.HTTP_201_CREATED, tags=["agents"])
def register_agent(
    registration: NodeRegister,
    conn: Conn,
    who: Registrar,
    settings: SettingsDep,
    request_id: RequestId,
) -> NodeRegistered:
    """Register a node (a known one: as that node, or approved); its own credential once."""
    return agents.register_node(
        conn,
        who.audit_context(request_id),
        registration,
        caller=who,
        secret_key=settings.secret_key.get_secret_value(),
        heartbeat_interval_seconds=settings.heartbeat_interval_seconds,
    )


@router.post("/nodes/{node_id}/heartbeat", tags=["agents"])
def heartbeat(
    node_id: UUID,
    beat: Heartbeat,
    conn: Conn,
    who: Agent,
    settings: SettingsDep,
    request_id: RequestId,
) -> HeartbeatAck:
    """Report telemetry (and changed inventory) for the caller's own node."""
    if who.node_id is not None and who.node_id != node_id:
        raise PermissionDeniedError("an agent may only send heartbeats for its own node")
    return agents.record_heartbeat(
        conn,
        who.audit_context(request_id),
        node_id,
        beat,
        heartbeat_interval_seconds=settings.heartbeat_interval_seconds,
    )
