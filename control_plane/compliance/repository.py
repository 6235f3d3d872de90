"""SQL access for compliance requests and evaluations. Functions take the caller's connection.

Requests are an outbox: inserted in the transaction of the change that calls for an
evaluation, claimed ``FOR UPDATE SKIP LOCKED`` by the evaluation, marked with the
evaluation that handled them, and deleted by a later evaluation once the retention has
passed. Evaluations are only ever inserted.
"""

from collections.abc import Sequence
from typing import Any, LiteralString
from uuid import UUID

from psycopg.types.json import Jsonb

from control_plane.compliance.models import (
    ComplianceRequestPublic,
    EvaluationPublic,
    EvaluationSummary,
    RunningRow,
)
from control_plane.core.db import (
    DbConnection,
    fetch_all_as,
    fetch_one,
    fetch_one_as,
    fetch_page_as,
    fetch_returning_as,
    load_queries,
)
from control_plane.core.outbox import EvaluationRequest

#: The evaluation columns that hold JSON.
_JSON_COLUMNS = ("triggers", "violations_by_rule", "violations_by_tenant", "sample")


def _q(name: str) -> LiteralString:
    return load_queries("control_plane.compliance")[name]


def claim_pending(conn: DbConnection) -> list[EvaluationRequest]:
    """Lock every pending request no other transaction holds, oldest first."""
    return fetch_all_as(conn, EvaluationRequest, _q("claim_pending"), {})


def mark_handled(conn: DbConnection, ids: Sequence[int], evaluation_id: UUID) -> None:
    """Record which evaluation handled the requests."""
    conn.execute(_q("mark_handled"), {"ids": list(ids), "evaluation_id": evaluation_id})


def get_request(conn: DbConnection, request_id: int) -> ComplianceRequestPublic | None:
    """One request, pending or handled, or None (never made, or pruned)."""
    return fetch_one_as(conn, ComplianceRequestPublic, _q("get_request"), {"id": request_id})


def prune_handled(conn: DbConnection, retention_days: int) -> None:
    """Delete the requests handled more than ``retention_days`` ago; pending ones stay."""
    conn.execute(_q("prune_handled"), {"retention_days": retention_days})


def pending_count(conn: DbConnection) -> int:
    """How many requests wait for an evaluation."""
    row = fetch_one(conn, _q("pending_count"), {})
    assert row is not None
    return int(row["pending"])


def running_workloads(conn: DbConnection) -> list[RunningRow]:
    """Every admitted workload by id, with its request and its node's hostname and status."""
    return fetch_all_as(conn, RunningRow, _q("running_workloads"), {})


def consistent_read(conn: DbConnection) -> None:
    """Make the open transaction read one snapshot, and nothing but read."""
    conn.execute(_q("consistent_read"))


def insert_evaluation(conn: DbConnection, values: dict[str, Any]) -> EvaluationPublic:
    """Store an evaluation; the JSON columns are given as plain values."""
    params = {**values, **{name: Jsonb(values[name]) for name in _JSON_COLUMNS}}
    return fetch_returning_as(conn, EvaluationPublic, _q("insert_evaluation"), params)


def get_evaluation(conn: DbConnection, evaluation_id: UUID) -> EvaluationPublic | None:
    """One evaluation with its sample, or None."""
    return fetch_one_as(conn, EvaluationPublic, _q("get_evaluation"), {"id": evaluation_id})


def latest_evaluation(conn: DbConnection) -> EvaluationPublic | None:
    """The evaluation that finished last, with its sample, or None."""
    return fetch_one_as(conn, EvaluationPublic, _q("latest_evaluation"), {})


def list_evaluations(
    conn: DbConnection, limit: int, offset: int
) -> tuple[list[EvaluationSummary], int]:
    """A page of evaluations without samples, newest first, and how many there are."""
    return fetch_page_as(
        conn,
        EvaluationSummary,
        _q("list_evaluations"),
        _q("count_evaluations"),
        {},
        limit,
        offset,
    )
