"""HTTP routes for workloads: submit (decide, place, reserve), list, show, release, renew.

Thin: parse, authorize, call. Reading needs ``inventory:read``; submitting, releasing and
renewing need ``workload:write`` (operators and admins).
"""

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request, status
from starlette.concurrency import run_in_threadpool

from control_plane.access.http import SecuredRoute, require
from control_plane.access.models import Permission, Principal
from control_plane.core.http import Conn, Limit, Offset, RequestId, SettingsDep
from control_plane.policy.api import Decisions, PolicySets
from control_plane.scheduling import service
from control_plane.scheduling.fleet import FleetCache
from control_plane.scheduling.models import (
    LeaseRenew,
    WorkloadCreate,
    WorkloadFilters,
    WorkloadPage,
    WorkloadPublic,
)

Reader = Annotated[Principal, Depends(require(Permission.INVENTORY_READ))]
Writer = Annotated[Principal, Depends(require(Permission.WORKLOAD_WRITE))]


async def get_fleet(request: Request) -> FleetCache:
    """The app's fleet cache: one fleet snapshot per generation, shared by its requests."""
    fleet: FleetCache = request.app.state.fleet
    return fleet


Fleet = Annotated[FleetCache, Depends(get_fleet)]

router = APIRouter(prefix="/v1", route_class=SecuredRoute)


@router.post("/workloads", status_code=status.HTTP_201_CREATED, tags=["workloads"])
async def submit_workload(
    workload: WorkloadCreate,
    conn: Conn,
    who: Writer,
    request_id: RequestId,
    policy_sets: PolicySets,
    fleet: Fleet,
    decisions: Decisions,
    settings: SettingsDep,
) -> WorkloadPublic:
    """Decide a workload and, when admitted, reserve GPUs on one node (a denial is 201 too)."""
    # The hot path: one hop to a worker thread for the blocking admission. As an async
    # route, FastAPI then checks the response on the event loop rather than in a second hop.
    return await run_in_threadpool(
        service.admit,
        conn,
        who.audit_context(request_id),
        workload,
        policy_sets,
        fleet,
        decisions,
        deny_unselected=settings.default_deny_unselected,
    )


@router.get("/workloads", tags=["workloads"])
def list_workloads(
    conn: Conn,
    _: Reader,
    filters: Annotated[WorkloadFilters, Query()],
    limit: Limit = 100,
    offset: Offset = 0,
) -> WorkloadPage:
    """List workloads, admitted and denied, newest first; filtered and paginated."""
    return service.list_workloads(conn, filters, limit, offset)


@router.get("/workloads/{workload_id}", tags=["workloads"])
def get_workload(workload_id: UUID, conn: Conn, _: Reader) -> WorkloadPublic:
    """Show one workload: its request, the decision and its placement."""
    return service.get_workload(conn, workload_id)


@router.post("/workloads/{workload_id}/release", tags=["workloads"])
def release_workload(
    workload_id: UUID, conn: Conn, who: Writer, request_id: RequestId, fleet: Fleet
) -> WorkloadPublic:
    """End an admitted workload and free its GPUs."""
    return service.release(conn, who.audit_context(request_id), workload_id, fleet)


@router.post("/workloads/{workload_id}/renew", tags=["workloads"])
def renew_lease(
    workload_id: UUID, conn: Conn, _: Writer, renewal: LeaseRenew | None = None
) -> WorkloadPublic:
    """Restart an admitted workload's lease from now."""
    return service.renew(conn, workload_id, renewal or LeaseRenew())
