"""HTTP routes for compliance evaluations and policy what-if.

Thin: parse, authorize, call. Evaluations are evidence: reading them, reading back a
request for one, and reading the delivery log of violation webhooks, needs ``audit:read``
(auditors and admins). Asking for one, and what-if,
need ``policy:write`` (admins), as applying and activating policies do.
"""

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, Path, Query, status

from control_plane.access.http import SecuredRoute, require
from control_plane.access.models import Permission, Principal
from control_plane.compliance import service
from control_plane.compliance.models import (
    ComplianceRequestPublic,
    DeliveryFilters,
    DeliveryPage,
    DeliveryStatus,
    EvaluationPage,
    EvaluationPublic,
    WhatIfResult,
)
from control_plane.core.bodies import MAX_BODY_KEY, POLICY_BODY_BYTES
from control_plane.core.http import Conn, Limit, Offset, RequestId, SettingsDep
from control_plane.core.openapi import error_responses
from control_plane.domain.types import BIGINT_END
from control_plane.policy.api import DOCUMENTS_BODY, Documents, PolicySets

Reader = Annotated[Principal, Depends(require(Permission.AUDIT_READ))]
Admin = Annotated[Principal, Depends(require(Permission.POLICY_WRITE))]

router = APIRouter(prefix="/v1", route_class=SecuredRoute)


@router.post(
    "/compliance/evaluations",
    status_code=status.HTTP_202_ACCEPTED,
    tags=["compliance"],
)
def request_evaluation(conn: Conn, who: Admin, request_id: RequestId) -> ComplianceRequestPublic:
    """Ask for every running workload to be re-evaluated; the worker runs it on its next beat."""
    return service.request_by_admin(conn, who.audit_context(request_id))


@router.get("/compliance/requests/{request_id}", tags=["compliance"])
def get_request(
    request_id: Annotated[int, Path(ge=1, lt=BIGINT_END)], conn: Conn, _: Reader
) -> ComplianceRequestPublic:
    """Show one evaluation request; ``evaluation_id`` is set once an evaluation handled it."""
    return service.get_request(conn, request_id)


@router.get("/compliance/evaluations", tags=["compliance"])
def list_evaluations(
    conn: Conn,
    _: Reader,
    limit: Limit = 100,
    offset: Offset = 0,
) -> EvaluationPage:
    """List compliance evaluations, newest first, without their samples."""
    return service.list_evaluations(conn, limit, offset)


@router.get("/compliance/evaluations/latest", tags=["compliance"], responses=error_responses(404))
def latest_evaluation(conn: Conn, _: Reader) -> EvaluationPublic:
    """Show the latest compliance evaluation with its sample of violating workloads."""
    return service.latest_evaluation(conn)


@router.get("/compliance/evaluations/{evaluation_id}", tags=["compliance"])
def get_evaluation(evaluation_id: UUID, conn: Conn, _: Reader) -> EvaluationPublic:
    """Show one compliance evaluation with its sample of violating workloads."""
    return service.get_evaluation(conn, evaluation_id)


@router.get("/compliance/deliveries", tags=["compliance"])
def list_deliveries(
    conn: Conn,
    _: Reader,
    status: DeliveryStatus | None = None,
    workload_id: Annotated[UUID | None, Query(description="Only this workload's.")] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> DeliveryPage:
    """List violation webhooks, newest first, with their attempts; filtered and paginated."""
    filters = DeliveryFilters(status=status, workload_id=workload_id)
    return service.list_deliveries(conn, filters, limit, offset)


@router.post(
    "/policies/whatif",
    tags=["policies", "compliance"],
    openapi_extra={
        "requestBody": {"required": True, "content": DOCUMENTS_BODY},
        MAX_BODY_KEY: POLICY_BODY_BYTES,
    },
)
def whatif(
    _: Admin,
    documents: Documents,
    conn: Conn,
    settings: SettingsDep,
    policy_sets: PolicySets,
) -> WhatIfResult:
    """Show what activating candidate policies would change, storing nothing (JSON or YAML)."""
    return service.whatif(
        conn,
        documents,
        sample_size=settings.compliance_sample_size,
        policy_sets=policy_sets,
        deny_unselected=settings.default_deny_unselected,
    )
