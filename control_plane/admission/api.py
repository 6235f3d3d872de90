"""HTTP routes of the Kubernetes admission webhooks: mutate, validate, validate-node.

Called by the kube-apiserver, not by API clients: served only by the webhook listener
(``app.create_webhook_app``, ``sovctl serve-webhooks``), never on the API's port; no bearer
token, so not under ``/v1`` and not behind ``access.http.SecuredRoute``. Who may call is
the TLS client certificate's to say (``admission.trust``), checked before the body is read.
The body still goes through the API's one body mechanism (``core.routes.JsonBodyRoute``):
bounded in size, parsed strictly, and a malformed AdmissionReview is a 422 naming the
field. Thin: parse, call the service, answer the review.
"""

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool

from control_plane.admission import service
from control_plane.admission.models import (
    AdmissionReview,
    AdmissionReviewResponse,
    WebhookCaller,
)
from control_plane.admission.trust import webhook_caller
from control_plane.core.bodies import ADMISSION_BODY_BYTES, MAX_BODY_KEY
from control_plane.core.http import Conn, RequestId, SettingsDep
from control_plane.core.openapi import exact_errors
from control_plane.core.routes import JsonBodyRoute
from control_plane.core.settings import Settings
from control_plane.facts.fleet import SnapshotSource
from control_plane.policy.api import Decisions, PolicySets


async def get_snapshots(request: Request) -> SnapshotSource:
    """The app's fleet snapshots: the very ones ``POST /v1/workloads`` decides on."""
    fleet: SnapshotSource = request.app.state.fleet
    return fleet


Snapshots = Annotated[SnapshotSource, Depends(get_snapshots)]


class WebhookRoute(JsonBodyRoute):
    """The API's body rules, behind the caller check: who called, before a byte is read."""

    async def before_body(self, request: Request) -> None:
        """Refuse a caller without the required client certificate; keep the one verified."""
        settings: Settings = request.app.state.settings
        request.state.webhook_caller = webhook_caller(request.scope, settings.admission)


async def get_caller(request: Request) -> WebhookCaller:
    """The caller ``WebhookRoute`` verified for this request."""
    caller: WebhookCaller = request.state.webhook_caller
    return caller


Caller = Annotated[WebhookCaller, Depends(get_caller)]


router = APIRouter(prefix="/k8s", route_class=WebhookRoute, tags=["kubernetes"])

_ROUTE = {
    # What they answer besides the review: a caller without the required certificate
    # (403), a body too large (413), a malformed review (422), the database down (503).
    # Never 409: nothing they store can conflict.
    "openapi_extra": {MAX_BODY_KEY: ADMISSION_BODY_BYTES, **exact_errors(403, 413, 422, 503)},
    "response_model_exclude_none": True,
}


async def get_deps(
    settings: SettingsDep, policy_sets: PolicySets, fleet: Snapshots, decisions: Decisions
) -> service.Deps:
    """What a workload review decides with: the same sets, snapshots and cache as the API."""
    return service.Deps(
        settings.admission, policy_sets, fleet, decisions, settings.default_deny_unselected
    )


WebhookDeps = Annotated[service.Deps, Depends(get_deps)]


async def _review(
    webhook: service.Webhook,
    review: AdmissionReview,
    conn: Conn,
    request_id: RequestId,
    deps: service.Deps,
    caller: WebhookCaller,
) -> AdmissionReviewResponse:
    answer = await run_in_threadpool(
        service.review_workload,
        conn,
        service.audit_context(review.request, request_id),
        review.request,
        webhook,
        deps,
        caller,
    )
    return AdmissionReviewResponse(response=answer)


@router.post("/mutate", **_ROUTE)  # type: ignore[arg-type]
async def mutate(
    review: AdmissionReview,
    conn: Conn,
    request_id: RequestId,
    deps: WebhookDeps,
    caller: Caller,
) -> AdmissionReviewResponse:
    """Mutating webhook: decide a GPU pod and restrict it to the eligible nodes."""
    return await _review("mutate", review, conn, request_id, deps, caller)


@router.post("/validate", **_ROUTE)  # type: ignore[arg-type]
async def validate(
    review: AdmissionReview,
    conn: Conn,
    request_id: RequestId,
    deps: WebhookDeps,
    caller: Caller,
) -> AdmissionReviewResponse:
    """Validating webhook: deny undeclared or disallowed GPU pods; warnings for warn policies."""
    return await _review("validate", review, conn, request_id, deps, caller)


@router.post("/validate-node", **_ROUTE)  # type: ignore[arg-type]
async def validate_node(
    review: AdmissionReview,
    conn: Conn,
    request_id: RequestId,
    settings: SettingsDep,
    caller: Caller,
) -> AdmissionReviewResponse:
    """Node protection: only the control plane may change a Node's sovereign.io/* labels."""
    answer = await run_in_threadpool(
        service.review_node,
        conn,
        service.audit_context(review.request, request_id),
        review.request,
        settings.admission,
        caller,
    )
    return AdmissionReviewResponse(response=answer)
