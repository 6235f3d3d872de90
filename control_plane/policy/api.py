"""HTTP routes for the policy store: policy versions and the policy sets made active.

Thin: parse, authorize, call. Reading needs ``inventory:read``; applying, activating and
rolling back need ``policy:write`` (admins only).
"""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request, Response, status
from starlette.concurrency import run_in_threadpool

from control_plane.access.http import SecuredRoute, require
from control_plane.access.models import Permission, Principal
from control_plane.core.bodies import MAX_BODY_KEY, POLICY_BODY_BYTES, decode, parse_json
from control_plane.core.errors import InvalidInputError
from control_plane.core.http import Conn, Limit, Offset, RequestId
from control_plane.domain.types import Lookup
from control_plane.policy import service
from control_plane.policy.documents import load_documents, split_documents
from control_plane.policy.engine import DecisionCache
from control_plane.policy.service import CompiledPolicySets
from control_plane.policy.store_models import (
    AppliedPolicy,
    PolicySetActivate,
    PolicySetPage,
    PolicySetPublic,
    PolicySetRollback,
    PolicySummary,
    PolicyVersionPublic,
)

Reader = Annotated[Principal, Depends(require(Permission.INVENTORY_READ))]
Admin = Annotated[Principal, Depends(require(Permission.POLICY_WRITE))]


async def get_policy_sets(request: Request) -> CompiledPolicySets:
    """The app's compiled policy sets, so each active set is compiled once per process."""
    policy_sets: CompiledPolicySets = request.app.state.policy_sets
    return policy_sets


PolicySets = Annotated[CompiledPolicySets, Depends(get_policy_sets)]


async def get_decision_cache(request: Request) -> DecisionCache:
    """The app's decision cache, so admissions share what the engine has worked out."""
    decisions: DecisionCache = request.app.state.decisions
    return decisions


Decisions = Annotated[DecisionCache, Depends(get_decision_cache)]

_YAML_TYPES = {"application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml"}
#: The body in OpenAPI: the document format is on ``PolicyVersionPublic.document``.
DOCUMENTS_BODY = {
    "application/json": {
        "schema": {
            "type": ["object", "array"],
            "description": 'A policy document, a list of them, or {"policies": [...]}.',
        }
    },
    "application/yaml": {
        "schema": {
            "type": "string",
            "description": "Policy documents as a file holds them; several may be split by ---.",
        }
    },
}

router = APIRouter(prefix="/v1", route_class=SecuredRoute)


def _documents(body: bytes, media_type: str) -> list[dict[str, Any]]:
    if media_type in _YAML_TYPES:
        return load_documents(decode(body))
    if media_type not in {"application/json", ""}:
        raise InvalidInputError.for_field(
            "body", f"content type {media_type!r}: send application/json or application/yaml"
        )
    return split_documents([parse_json(body)])


async def policy_documents(request: Request, _: Admin) -> list[dict[str, Any]]:
    """The documents of a JSON or YAML body: one policy, a list, or ``{"policies": [...]}``.

    Only for an admin (the permission is checked before the body is read), and parsed in a
    worker thread by ``core.bodies``' rules, so a large or hostile YAML file stalls no
    other request. The body's size is bounded by the route (``POLICY_BODY_BYTES``).
    """
    body = await request.body()
    media_type = request.headers.get("content-type", "application/json").split(";")[0]
    return await run_in_threadpool(_documents, body, media_type.strip().lower())


Documents = Annotated[list[dict[str, Any]], Depends(policy_documents)]


@router.post(
    "/policies",
    status_code=status.HTTP_201_CREATED,
    tags=["policies"],
    openapi_extra={
        "requestBody": {"required": True, "content": DOCUMENTS_BODY},
        MAX_BODY_KEY: POLICY_BODY_BYTES,
    },
)
def apply_policies(
    documents: Documents, conn: Conn, who: Admin, request_id: RequestId, response: Response
) -> list[AppliedPolicy]:
    """Store new versions of policies (JSON or YAML); what is enforced does not change."""
    applied = service.apply_policies(conn, who.audit_context(request_id), documents)
    if not any(policy.created for policy in applied):
        response.status_code = status.HTTP_200_OK
    return applied


@router.get("/policies", tags=["policies"])
def list_policies(conn: Conn, _: Reader) -> list[PolicySummary]:
    """List every policy's latest version, with the version the active set enforces."""
    return service.list_policies(conn)


@router.get("/policies/{name}", tags=["policies"])
def policy_history(name: Lookup, conn: Conn, _: Reader) -> list[PolicyVersionPublic]:
    """Show every version of one policy, oldest first."""
    return service.policy_history(conn, name)


@router.get("/policies/{name}/versions/{version}", tags=["policies"])
def get_policy_version(
    name: Lookup, version: Annotated[int, Path(ge=1, le=2**31 - 1)], conn: Conn, _: Reader
) -> PolicyVersionPublic:
    """Show one version of a policy."""
    return service.get_policy_version(conn, name, version)


@router.get("/policy-sets/active", tags=["policies"])
def get_active_set(conn: Conn, _: Reader) -> PolicySetPublic:
    """Show the active policy set (version 0 and empty before any activation)."""
    return service.get_active_set(conn)


@router.get("/policy-sets", tags=["policies"])
def list_sets(
    conn: Conn,
    _: Reader,
    limit: Limit = 100,
    offset: Offset = 0,
) -> PolicySetPage:
    """List every policy set activated, newest (the active one) first."""
    return service.list_sets(conn, limit, offset)


@router.post("/policy-sets/activate", tags=["policies"])
def activate(
    choice: PolicySetActivate, conn: Conn, who: Admin, request_id: RequestId
) -> PolicySetPublic:
    """Activate a new policy set: by default the latest version of every policy."""
    return service.activate(conn, who.audit_context(request_id), choice)


@router.post("/policy-sets/rollback", tags=["policies"])
def rollback(
    choice: PolicySetRollback, conn: Conn, who: Admin, request_id: RequestId
) -> PolicySetPublic:
    """Activate an earlier set's members again (by default the previous set's), as a new set."""
    return service.rollback(conn, who.audit_context(request_id), choice)
