"""HTTP routes for provenance checks (admins only). Thin: parse, authorize, call."""

from typing import Annotated

from fastapi import APIRouter, Depends

from control_plane.access.http import SecuredRoute, require
from control_plane.access.models import Permission, Principal
from control_plane.core.bodies import BOM_BODY_BYTES, MAX_BODY_KEY
from control_plane.core.http import Conn, RequestId
from control_plane.provenance import service
from control_plane.provenance.models import BomImport, ImportResult

Admin = Annotated[Principal, Depends(require(Permission.INVENTORY_WRITE))]

router = APIRouter(prefix="/v1/provenance", tags=["provenance"], route_class=SecuredRoute)


@router.post("/imports", openapi_extra={MAX_BODY_KEY: BOM_BODY_BYTES})
def import_bom(bom: BomImport, conn: Conn, who: Admin, request_id: RequestId) -> ImportResult:
    """Check a hardware bill of materials against what the agents read; record the verdicts."""
    return service.import_bom(conn, who.audit_context(request_id), bom)
