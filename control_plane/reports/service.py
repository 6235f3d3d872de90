"""Report jobs: asking for one, building it, reading it back (docs/reports.md).

Asking (``request_report``) stores a queued job, or returns the stored one when the same
kind, period and format were asked for over the same covered checkpoint; either way the
request is audited (``report.requested``). Beat's dispatcher (``dispatch``) sends queued
jobs, and running ones whose builder went silent, to the worker, which ``build``s them:
under a session lock on the job, it reads the period in one snapshot, renders the chosen
format into 1 MiB chunks as it goes, signs, and marks the job done. A worker killed
mid-report leaves the job running with its lock gone; the next delivery starts it over.
Downloads are audited too (``report.downloaded``).
"""

import hashlib
import io
import logging
import time
from collections.abc import Callable, Iterator
from typing import IO, Any
from uuid import UUID, uuid4

from psycopg_pool import ConnectionPool
from typing_extensions import Buffer

from control_plane.core.audit_log import AuditContext, audited
from control_plane.core.db import DbConnection, connect
from control_plane.core.errors import ConflictError, NotFoundError
from control_plane.core.settings import ReportSettings
from control_plane.domain.audit import AuditAction
from control_plane.reports import compliance, gpu_hours, repository, sovereignty
from control_plane.reports.content import Seal
from control_plane.reports.models import (
    Period,
    Report,
    ReportCreate,
    ReportFormat,
    ReportJobPage,
    ReportJobPublic,
    ReportKind,
    ReportStatus,
)
from control_plane.reports.render_csv import render_csv
from control_plane.reports.render_json import render_json
from control_plane.reports.render_pdf import render_pdf
from control_plane.reports.signing import Signer, statement

#: Bytes per stored chunk: one row of ``report_chunk``, and what a download holds at once.
CHUNK_BYTES = 1024 * 1024
#: Jobs sent to the queue per dispatcher run; the rest wait for the next run.
DISPATCH_BATCH = 100

log = logging.getLogger(__name__)

_RENDERERS: dict[ReportFormat, Callable[[Report, IO[bytes], Callable[[str], Seal]], str]] = {
    ReportFormat.JSON: render_json,
    ReportFormat.CSV: render_csv,
    ReportFormat.PDF: render_pdf,
}


def request_report(conn: DbConnection, ctx: AuditContext, body: ReportCreate) -> ReportJobPublic:
    """A job for this report: a new queued one, or the stored one (a failed one requeued)."""
    with audited(conn, ctx, AuditAction.REPORT_REQUESTED) as change:
        checkpoint = repository.covered_checkpoint(conn, body.period_to)
        values: dict[str, Any] = {
            "kind": body.kind.value,
            "period_from": body.period_from,
            "period_to": body.period_to,
            "format": body.format.value,
            "checkpoint": None if checkpoint is None else checkpoint.number,
        }
        job = repository.insert_job(
            conn, {**values, "id": uuid4(), "requested_by": ctx.actor_name}
        ) or repository.find_job(conn, values)
        assert job is not None, "the job exists: inserted now or found by its key"
        if job.status is ReportStatus.FAILED:
            job = repository.requeue_failed(conn, job.id) or job
        change.object_id = str(job.id)
        change.after = job
    return job


def get_job(conn: DbConnection, job_id: UUID) -> ReportJobPublic:
    """One job with its progress; ``NotFoundError`` if there is none."""
    job = repository.get_job(conn, job_id)
    if job is None:
        raise NotFoundError(f"report {job_id} not found")
    return job


def list_jobs(conn: DbConnection, limit: int, offset: int) -> ReportJobPage:
    """A page of jobs, newest first."""
    jobs, total = repository.list_jobs(conn, limit, offset)
    return ReportJobPage(items=jobs, total=total, limit=limit, offset=offset)


def start_download(conn: DbConnection, ctx: AuditContext, job_id: UUID) -> ReportJobPublic:
    """Record the download of a finished report (audited); ``ConflictError`` if not done."""
    with audited(conn, ctx, AuditAction.REPORT_DOWNLOADED, str(job_id)) as change:
        job = get_job(conn, job_id)
        if job.status is not ReportStatus.DONE:
            raise ConflictError(
                f"report {job_id} is {job.status.value} ({job.percent}%: {job.step}); "
                "download it once it is done",
                details={"status": job.status.value},
            )
        change.after = job
    return job


def iter_file(pool: ConnectionPool[DbConnection], job_id: UUID) -> Iterator[bytes]:
    """The stored file, a chunk at a time, each read on a connection lent for that read."""
    with pool.connection() as conn:
        seqs = repository.chunk_seqs(conn, job_id)
    for seq in seqs:
        with pool.connection() as conn:
            chunk = repository.get_chunk(conn, job_id, seq)
        yield chunk


def file_name(job: ReportJobPublic) -> str:
    """The download's file name: kind, period and checkpoint, as a person files it."""
    start = job.period_from.strftime("%Y%m%dT%H%M%SZ")
    end = job.period_to.strftime("%Y%m%dT%H%M%SZ")
    checkpoint = "none" if job.checkpoint is None else str(job.checkpoint)
    return f"sovereign-{job.kind.value}-{start}-{end}-cp{checkpoint}.{job.format.extension}"


def dispatch(conn: DbConnection, lease_seconds: float) -> list[UUID]:
    """The jobs to send to the worker now: queued ones, and those whose builder died."""
    with conn.transaction():
        return repository.dispatch_due(conn, lease_seconds, DISPATCH_BATCH)


class ChunkWriter(io.RawIOBase):
    """A write-only binary stream into ``report_chunk``: 1 MiB rows, committed as they fill.

    It keeps the file's SHA-256 and size as it goes, so neither the file nor its digest
    ever needs the whole report in memory. Not seekable (``zipfile`` then writes data
    descriptors); ``tell`` is the bytes written, which ``zipfile`` asks for.
    """

    def __init__(self, conn: DbConnection, job_id: UUID) -> None:
        super().__init__()
        self._conn = conn
        self._job_id = job_id
        self._buffer = bytearray()
        self._seq = 0
        self.size = 0
        self.sha256 = hashlib.sha256()

    def writable(self) -> bool:
        """Yes: it is written to, never read."""
        return True

    def write(self, data: Buffer) -> int:
        """Append ``data``; a full chunk is stored at once."""
        view = memoryview(data).cast("B")
        self._buffer += view
        self.size += len(view)
        self.sha256.update(view)
        while len(self._buffer) >= CHUNK_BYTES:
            self._store(bytes(self._buffer[:CHUNK_BYTES]))
            del self._buffer[:CHUNK_BYTES]
        return len(view)

    def tell(self) -> int:
        """Bytes written so far."""
        return self.size

    def close(self) -> None:
        """Store what is left."""
        if not self.closed and self._buffer:
            self._store(bytes(self._buffer))
            self._buffer.clear()
        super().close()

    def _store(self, data: bytes) -> None:
        with self._conn.transaction():
            repository.insert_chunk(self._conn, self._job_id, self._seq, data)
        self._seq += 1


def _sealer(signer: Signer, header: dict[str, Any]) -> Callable[[str], Seal]:
    def seal(content_sha256: str) -> Seal:
        text = statement(header, content_sha256, signer.fingerprint)
        return Seal(content_sha256, text, signer.sign(text.encode("utf-8")), signer.fingerprint)

    return seal


def build(
    database_url: str,
    job_id: UUID,
    signer: Signer,
    settings: ReportSettings,
    step_hook: Callable[[int, str], None] | None = None,
) -> ReportJobPublic | None:
    """Build one job's report; the finished job, or None when there was nothing to do.

    Nothing to do: another builder holds the job, or it is done or failed already, so a
    second delivery of the task is harmless. ``step_hook`` runs after each progress
    update (tests slow a build down with it, to kill its worker mid-report).
    """
    with connect(database_url) as lock_conn:
        lock_conn.autocommit = True
        if not repository.try_build_lock(lock_conn, job_id):
            log.info("report %s is being built by another worker", job_id)
            return None
        try:
            return _build_locked(database_url, job_id, signer, settings, step_hook)
        finally:
            repository.release_build_lock(lock_conn, job_id)


def _build_locked(
    database_url: str,
    job_id: UUID,
    signer: Signer,
    settings: ReportSettings,
    step_hook: Callable[[int, str], None] | None,
) -> ReportJobPublic | None:
    with connect(database_url) as conn, connect(database_url) as snapshot:
        with conn.transaction():
            job = repository.claim_job(conn, job_id)
            if job is None:
                return None
            repository.delete_chunks(conn, job_id)

        def progress(percent: int, step: str) -> None:
            with conn.transaction():
                repository.set_progress(conn, job_id, percent, step)
            if settings.step_delay_seconds:
                time.sleep(settings.step_delay_seconds)
            if step_hook is not None:
                step_hook(percent, step)

        try:
            # One snapshot for every measure, so the tables agree with each other.
            with snapshot.transaction():
                repository.consistent_read(snapshot)
                period = Period(job.period_from, job.period_to)
                checkpoint = (
                    None
                    if job.checkpoint is None
                    else repository.get_checkpoint(snapshot, job.checkpoint)
                )
                if job.kind is ReportKind.SOVEREIGNTY:
                    report = sovereignty.build(
                        snapshot,
                        period,
                        checkpoint,
                        settings.home_countries,
                        progress,
                        gpu_hours=gpu_hours.metered,
                    )
                else:
                    report = compliance.build(snapshot, period, checkpoint, progress)
                progress(80, f"rendering {job.format.value}")
                out = ChunkWriter(conn, job_id)
                with io.BufferedWriter(out, CHUNK_BYTES) as stream:
                    seal = _sealer(signer, report.header())
                    content = _RENDERERS[job.format](report, stream, seal)
        except Exception as exc:
            log.exception("report %s failed", job_id)
            with conn.transaction():
                repository.fail_job(conn, job_id, f"{type(exc).__name__}: {exc}"[:500])
            raise
        file_sha256 = out.sha256.hexdigest()
        with conn.transaction():
            return repository.finish_job(
                conn,
                job_id,
                {
                    "size_bytes": out.size,
                    "sha256": file_sha256,
                    "content_sha256": content,
                    # The download's signature: over the file's SHA-256 (hex, ASCII), so
                    # signing never needs the whole file in memory (docs/reports.md).
                    "signature": signer.sign(file_sha256.encode("ascii")),
                    "key_fingerprint": signer.fingerprint,
                },
            )
