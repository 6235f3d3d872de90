"""HTTP routes for evidence reports: ask for one, follow it, list them, download it.

Thin: parse, authorize, call. Reports are evidence, so every route needs ``audit:read``
(auditors and admins); asking for a report and downloading one are audited. The download
streams the stored chunks and carries the report's signature and covered checkpoint in
its headers (docs/reports.md).
"""

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Request, status
from fastapi.responses import StreamingResponse

from control_plane.access.http import SecuredRoute, require
from control_plane.access.models import Permission, Principal
from control_plane.core.http import Conn, Limit, Offset, RequestId
from control_plane.core.openapi import error_responses
from control_plane.reports import service
from control_plane.reports.models import ReportCreate, ReportJobPage, ReportJobPublic

Reader = Annotated[Principal, Depends(require(Permission.AUDIT_READ))]

router = APIRouter(prefix="/v1/reports", tags=["reports"], route_class=SecuredRoute)

_DOWNLOAD: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The signed report file.",
        "content": {
            "application/json": {},
            "application/zip": {},
            "application/pdf": {},
        },
        "headers": {
            "X-Sovereign-Signature": {
                "description": "Ed25519 (base64) over the file's SHA-256 as 64 hex digits.",
                "schema": {"type": "string"},
            },
            "X-Sovereign-Checkpoint": {
                "description": "The audit checkpoint number the report covers, or `none`.",
                "schema": {"type": "string"},
            },
            "X-Sovereign-Content-SHA256": {
                "description": "The report's content digest, the same in every format.",
                "schema": {"type": "string"},
            },
        },
    }
}


@router.post("", status_code=status.HTTP_202_ACCEPTED)
def create_report(
    body: ReportCreate, conn: Conn, who: Reader, request_id: RequestId
) -> ReportJobPublic:
    """Ask for a report; the stored one when the same was asked over the same checkpoint."""
    return service.request_report(conn, who.audit_context(request_id), body)


@router.get("")
def list_reports(conn: Conn, _: Reader, limit: Limit = 100, offset: Offset = 0) -> ReportJobPage:
    """List report jobs, newest first."""
    return service.list_jobs(conn, limit, offset)


@router.get("/{report_id}")
def get_report(report_id: UUID, conn: Conn, _: Reader) -> ReportJobPublic:
    """Show one report job: its status, percent done and current step."""
    return service.get_job(conn, report_id)


@router.get(
    "/{report_id}/download",
    response_class=StreamingResponse,
    responses={**_DOWNLOAD, **error_responses(409)},
)
def download_report(
    report_id: UUID, request: Request, conn: Conn, who: Reader, request_id: RequestId
) -> StreamingResponse:
    """Download a finished report (409 while it is being built)."""
    job = service.start_download(conn, who.audit_context(request_id), report_id)
    headers = {
        "Content-Disposition": f'attachment; filename="{service.file_name(job)}"',
        "Content-Length": str(job.size_bytes),
        "X-Sovereign-Signature": job.signature or "",
        "X-Sovereign-Checkpoint": "none" if job.checkpoint is None else str(job.checkpoint),
        "X-Sovereign-Content-SHA256": job.content_sha256 or "",
        "X-Sovereign-Key-Fingerprint": job.key_fingerprint or "",
        "X-Sovereign-SHA256": job.sha256 or "",
    }
    return StreamingResponse(
        service.iter_file(request.app.state.pool, job.id),
        media_type=job.format.media_type,
        headers=headers,
    )
