"""HTTP route for metering: GPU-hours used and available, from the rollups.

Thin: parse, authorize, call. Reading usage needs ``audit:read`` (auditors and admins):
it tells who ran what where.
"""

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from control_plane.access.http import SecuredRoute, require
from control_plane.access.models import Permission, Principal
from control_plane.core.http import Conn
from control_plane.metering import service
from control_plane.metering.models import UsageQuery, UsageReport

Auditor = Annotated[Principal, Depends(require(Permission.AUDIT_READ))]

router = APIRouter(prefix="/v1", route_class=SecuredRoute)


@router.get("/usage", tags=["usage"])
def get_usage(conn: Conn, _: Auditor, query: Annotated[UsageQuery, Query()]) -> UsageReport:
    """GPU-hours used (or the fleet's capacity) over a period, grouped by any dimension."""
    return service.usage(conn, query)
