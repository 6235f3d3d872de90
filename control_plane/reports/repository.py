"""SQL access for reports: jobs, their file chunks, the covered checkpoint, the measures.

Functions take the caller's connection; the caller owns the transaction. Measures return
typed rows grouped in SQL, except ``denials_and_warnings``, which may be millions of rows
and is read through a server-side cursor, a batch at a time.
"""

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, LiteralString
from uuid import UUID

from psycopg.rows import tuple_row

from control_plane.core.db import (
    DbConnection,
    fetch_all,
    fetch_all_as,
    fetch_one,
    fetch_one_as,
    fetch_page_as,
    load_queries,
)
from control_plane.reports.models import CheckpointRef, Period, ReportJobPublic

#: Rows fetched per round trip from the server-side cursor of the large listings: a few
#: hundred kilobytes each, so memory stays flat however long the period.
CURSOR_BATCH = 5_000


def _q(name: str) -> LiteralString:
    return load_queries("control_plane.reports")[name]


def _period(period: Period) -> dict[str, Any]:
    return {"start": period.start, "end": period.end}


# -- jobs --------------------------------------------------------------------------------


def insert_job(conn: DbConnection, values: dict[str, Any]) -> ReportJobPublic | None:
    """A new queued job, or None when the same report over the same checkpoint exists."""
    return fetch_one_as(conn, ReportJobPublic, _q("insert_job"), values)


def find_job(conn: DbConnection, values: dict[str, Any]) -> ReportJobPublic | None:
    """The job of this kind, period, format and checkpoint, or None."""
    return fetch_one_as(conn, ReportJobPublic, _q("find_job"), values)


def get_job(conn: DbConnection, job_id: UUID) -> ReportJobPublic | None:
    """One job, or None."""
    return fetch_one_as(conn, ReportJobPublic, _q("get_job"), {"id": job_id})


def list_jobs(conn: DbConnection, limit: int, offset: int) -> tuple[list[ReportJobPublic], int]:
    """A page of jobs, newest first, and how many there are."""
    return fetch_page_as(
        conn, ReportJobPublic, _q("list_jobs"), _q("count_jobs"), {}, limit, offset
    )


def requeue_failed(conn: DbConnection, job_id: UUID) -> ReportJobPublic | None:
    """Put a failed job back in the queue; None if it was not failed."""
    return fetch_one_as(conn, ReportJobPublic, _q("requeue_failed"), {"id": job_id})


def try_build_lock(conn: DbConnection, job_id: UUID) -> bool:
    """Take the builder's session lock on the job; False if another builder holds it."""
    row = fetch_one(conn, _q("try_build_lock"), {"id": job_id})
    return bool(row and row["locked"])


def release_build_lock(conn: DbConnection, job_id: UUID) -> None:
    """Give the builder's lock back."""
    conn.execute(_q("release_build_lock"), {"id": job_id})


def dispatch_due(conn: DbConnection, lease_seconds: float, limit: int) -> list[UUID]:
    """Mark and return the jobs to send to the queue (new ones, and orphans)."""
    rows = fetch_all(conn, _q("dispatch_due"), {"lease_seconds": lease_seconds, "limit": limit})
    return [row["id"] for row in rows]


def claim_job(conn: DbConnection, job_id: UUID) -> ReportJobPublic | None:
    """Start an attempt at a queued (or orphaned running) job; None if done or failed."""
    return fetch_one_as(conn, ReportJobPublic, _q("claim_job"), {"id": job_id})


def delete_chunks(conn: DbConnection, job_id: UUID) -> None:
    """Forget what an earlier attempt wrote."""
    conn.execute(_q("delete_chunks"), {"id": job_id})


def set_progress(conn: DbConnection, job_id: UUID, percent: int, step: str) -> None:
    """Record how far the job is, for its status."""
    conn.execute(_q("set_progress"), {"id": job_id, "percent": percent, "step": step})


def insert_chunk(conn: DbConnection, job_id: UUID, seq: int, data: bytes) -> None:
    """Store one piece of the file."""
    conn.execute(_q("insert_chunk"), {"id": job_id, "seq": seq, "data": data})


def finish_job(conn: DbConnection, job_id: UUID, values: dict[str, Any]) -> ReportJobPublic:
    """Mark the job done with its file's digests and signature."""
    row = fetch_one_as(conn, ReportJobPublic, _q("finish_job"), {**values, "id": job_id})
    assert row is not None
    return row


def fail_job(conn: DbConnection, job_id: UUID, error: str) -> None:
    """Mark the job failed with a one-line reason."""
    conn.execute(_q("fail_job"), {"id": job_id, "error": error})


def chunk_seqs(conn: DbConnection, job_id: UUID) -> list[int]:
    """The numbers of the file's chunks, in order."""
    return [int(row["seq"]) for row in fetch_all(conn, _q("chunk_seqs"), {"id": job_id})]


def get_chunk(conn: DbConnection, job_id: UUID, seq: int) -> bytes:
    """One chunk's bytes."""
    row = fetch_one(conn, _q("get_chunk"), {"id": job_id, "seq": seq})
    assert row is not None
    return bytes(row["data"])


def consistent_read(conn: DbConnection) -> None:
    """Make the open transaction read one snapshot, nothing but read, without JIT."""
    conn.execute(_q("consistent_read"))
    conn.execute(_q("no_jit"))


# -- the covered checkpoint ----------------------------------------------------------------


def covered_checkpoint(conn: DbConnection, end: datetime) -> CheckpointRef | None:
    """The newest audit checkpoint if signed at or after ``end``; None otherwise."""
    return fetch_one_as(conn, CheckpointRef, _q("covered_checkpoint"), {"end": end})


def get_checkpoint(conn: DbConnection, number: int) -> CheckpointRef | None:
    """The checkpoint of this number, or None."""
    return fetch_one_as(conn, CheckpointRef, _q("get_checkpoint"), {"number": number})


# -- sovereignty measures ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CapacityRow:
    """Servers, GPUs and GPU memory of one group of the fleet at one moment."""

    zone: str | None
    zone_country: str | None
    own: bool
    origin_country: str
    gpu_origin: str
    cpu_origin: str
    board_origin: str
    nic_origin: str
    provenance_status: str
    servers: int
    gpus: int
    gpu_memory_bytes: int


def capacity_at(
    conn: DbConnection, at: datetime, home_countries: Sequence[str]
) -> list[CapacityRow]:
    """The fleet's capacity at ``at``, grouped by zone, origins and provenance."""
    return fetch_all_as(
        conn,
        CapacityRow,
        _q("capacity_at"),
        {"at": at, "home_countries": list(home_countries)},
    )


@dataclass(frozen=True, slots=True)
class NodeEventRow:
    """One audited event about a node."""

    occurred_at: datetime
    action: str
    node_id: str
    hostname: str | None
    zone: str | None
    actor_name: str


def node_events(conn: DbConnection, period: Period, actions: Sequence[str]) -> list[NodeEventRow]:
    """The period's audited node events of ``actions``, oldest first."""
    return fetch_all_as(
        conn, NodeEventRow, _q("node_events"), {**_period(period), "actions": list(actions)}
    )


# -- compliance measures -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PolicySetRow:
    """A policy set that was active at some moment of the period."""

    version: int
    content_hash: str
    activated_by: str
    activated_at: datetime
    note: str
    restores_version: int | None
    replaced_at: datetime | None


def policy_sets_in_force(conn: DbConnection, period: Period) -> list[PolicySetRow]:
    """Every policy set in force during the period, oldest first."""
    return fetch_all_as(conn, PolicySetRow, _q("policy_sets_in_force"), _period(period))


@dataclass(frozen=True, slots=True)
class DecisionGroupRow:
    """How many decisions of one source, outcome, tenant and policy set."""

    source: str
    outcome: str
    tenant: str
    policy_set_version: int
    decisions: int


def decisions_grouped(conn: DbConnection, period: Period) -> list[DecisionGroupRow]:
    """The period's admission decisions grouped by source, outcome, tenant, policy set."""
    return fetch_all_as(conn, DecisionGroupRow, _q("decisions_grouped"), _period(period))


@dataclass(frozen=True, slots=True)
class PolicyFindingRow:
    """How many decisions carry a finding of one policy with one action."""

    policy: str
    action: str
    decisions: int


def decisions_by_policy(conn: DbConnection, period: Period) -> list[PolicyFindingRow]:
    """The period's decisions counted by the policies their reasons name."""
    return fetch_all_as(conn, PolicyFindingRow, _q("decisions_by_policy"), _period(period))


def denials_and_warnings(conn: DbConnection, period: Period) -> Iterator[tuple[Any, ...]]:
    """Every denial and warning of the period as tuples in column order, streamed.

    A named (server-side) cursor: rows come ``CURSOR_BATCH`` at a time, so the caller
    holds one batch, never the whole period. Needs an open transaction on ``conn``.
    """
    with conn.cursor(name="report_denials", row_factory=tuple_row) as cursor:
        cursor.itersize = CURSOR_BATCH
        cursor.execute(_q("denials_and_warnings"), _period(period))
        yield from cursor


@dataclass(frozen=True, slots=True)
class EvaluationRow:
    """A compliance evaluation of the period with its exact counts."""

    id: UUID
    finished_at: datetime
    policy_set_version: int
    workloads_evaluated: int
    violating_workloads: int
    warned_workloads: int
    revoked_workloads: int
    notifications: int


def evaluations(conn: DbConnection, period: Period) -> list[EvaluationRow]:
    """The period's compliance evaluations, oldest first."""
    return fetch_all_as(conn, EvaluationRow, _q("evaluations"), _period(period))


@dataclass(frozen=True, slots=True)
class ViolationRow:
    """A workload found violating a policy, what was done and how it ended."""

    found_at: datetime
    workload_id: str
    tenant: str
    policy: str
    action: str
    delivery_status: str | None
    workload_status: str | None
    ended_at: datetime | None
    revocation_reason: str | None


def violations(conn: DbConnection, period: Period) -> list[ViolationRow]:
    """The violations the period's evaluations found (their samples), first found first."""
    return fetch_all_as(conn, ViolationRow, _q("violations"), _period(period))


@dataclass(frozen=True, slots=True)
class AssetUseRow:
    """A dataset or model used by one tenant in one zone, and the grants that allowed it."""

    kind: str
    name: str
    owner: str | None
    tenant: str
    zone: str
    workloads: int
    grants: str


def assets_processed(conn: DbConnection, period: Period) -> list[AssetUseRow]:
    """Each dataset and model the period's admitted workloads used, where and by whom."""
    return fetch_all_as(conn, AssetUseRow, _q("assets_processed"), _period(period))
