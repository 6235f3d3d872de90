"""HTTP routes for reading and verifying the audit chain, and for its signed checkpoints.

Reading events, checkpoints and the public keys needs ``audit:read`` (auditors and
admins); signing a checkpoint on demand needs ``audit:sign`` (admins).
"""

from typing import Annotated

from fastapi import APIRouter, Depends, Query, status

from control_plane.access.http import SecuredRoute, require
from control_plane.access.models import Permission, Principal
from control_plane.audit import checkpoints, service
from control_plane.audit.keys import load_signing_key
from control_plane.audit.models import (
    AuditEventPage,
    AuditFilters,
    ChainVerification,
    CheckpointPage,
    CheckpointPublic,
    EventOrder,
    PublicKeys,
)
from control_plane.core.errors import ConflictError, InvalidInputError
from control_plane.core.http import Conn, RequestId, SettingsDep
from control_plane.domain.types import BIGINT_END

AuditReader = Annotated[Principal, Depends(require(Permission.AUDIT_READ))]
AuditSigner = Annotated[Principal, Depends(require(Permission.AUDIT_SIGN))]
#: A page's cursor: the seq (or checkpoint number) the previous page stopped at.
Cursor = Annotated[
    int | None,
    Query(ge=1, lt=BIGINT_END, description="The previous page's `next_cursor`."),
]

router = APIRouter(prefix="/v1/audit", tags=["audit"], route_class=SecuredRoute)


@router.get("/events")
def list_events(
    conn: Conn,
    _: AuditReader,
    filters: Annotated[AuditFilters, Query()],
    order: EventOrder = EventOrder.DESC,
    cursor: Cursor = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[str | None, Query(include_in_schema=False)] = None,
) -> AuditEventPage:
    """List audit events, newest first unless `order=asc`, a page at a time by `cursor`."""
    if offset is not None:
        # Clients of the offset pages: refused by name rather than served page one forever.
        raise InvalidInputError.for_field(
            "query.offset",
            "audit events are paged by `cursor` (the previous page's `next_cursor`), not offset",
            offset,
        )
    return service.list_events(
        conn,
        object_type=filters.object_type,
        object_id=filters.object_id,
        action=[action.value for action in filters.action],
        since=filters.since,
        until=filters.until,
        order=order,
        cursor=cursor,
        limit=limit,
    )


@router.get("/verify")
def verify(conn: Conn, _: AuditReader) -> ChainVerification:
    """Walk the whole chain and every checkpoint; report the first problem, if any."""
    return service.verify_chain(conn)


@router.post("/checkpoints", status_code=status.HTTP_201_CREATED)
def take_checkpoint(
    conn: Conn, who: AuditSigner, request_id: RequestId, settings: SettingsDep
) -> CheckpointPublic:
    """Sign a checkpoint of the chain's head now (409 while the chain is empty)."""
    key = load_signing_key(settings)
    checkpoint = checkpoints.take_checkpoint(conn, key, who.audit_context(request_id))
    if checkpoint is None:
        raise ConflictError("the audit chain is empty: there is no head to sign yet")
    return checkpoint


@router.get("/checkpoints")
def list_checkpoints(
    conn: Conn,
    _: AuditReader,
    cursor: Cursor = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> CheckpointPage:
    """List signed checkpoints, newest first, a page at a time by `cursor`."""
    return checkpoints.list_checkpoints(conn, limit=limit, cursor=cursor)


@router.get("/public-key")
def public_key(conn: Conn, _: AuditReader, settings: SettingsDep) -> PublicKeys:
    """The key that signs checkpoints now, with its fingerprint, and every earlier one."""
    return checkpoints.public_keys(conn, checkpoints.current_key(settings))
