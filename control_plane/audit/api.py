"""HTTP routes for reading and verifying the audit chain (auditors and admins)."""

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from control_plane.access.http import SecuredRoute, require
from control_plane.access.models import Permission, Principal
from control_plane.audit import service
from control_plane.audit.models import AuditEventPage, AuditFilters, ChainVerification
from control_plane.core.http import Conn, Offset

AuditReader = Annotated[Principal, Depends(require(Permission.AUDIT_READ))]

router = APIRouter(prefix="/v1/audit", tags=["audit"], route_class=SecuredRoute)


@router.get("/events")
def list_events(
    conn: Conn,
    _: AuditReader,
    filters: Annotated[AuditFilters, Query()],
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Offset = 0,
) -> AuditEventPage:
    """List audit events, oldest first."""
    return service.list_events(conn, **filters.model_dump(mode="json"), limit=limit, offset=offset)


@router.get("/verify")
def verify(conn: Conn, _: AuditReader) -> ChainVerification:
    """Walk the whole chain and report the first broken event, if any."""
    return service.verify_chain(conn)
