"""SQL access for compliance requests and evaluations. Functions take the caller's connection.

Requests are an outbox: inserted in the transaction of the change that calls for an
evaluation, claimed ``FOR UPDATE SKIP LOCKED`` by the evaluation, marked with the
evaluation that handled them, and deleted by a later evaluation once the retention has
passed. Evaluations are only ever inserted.
"""

from collections.abc import Mapping, Sequence
from typing import Any, LiteralString
from uuid import UUID

from psycopg.rows import DictRow
from psycopg.types.json import Jsonb

from control_plane.core.db import (
    DbConnection,
    fetch_all,
    fetch_one,
    fetch_page,
    fetch_returning,
    load_queries,
)

#: The evaluation columns that hold JSON.
_JSON_COLUMNS = ("triggers", "violations_by_rule", "violations_by_tenant", "sample")


def _q(name: str) -> LiteralString:
    return load_queries("control_plane.compliance")[name]


def insert_request(conn: DbConnection, reason: str, subject: Mapping[str, Any]) -> DictRow:
    """Store a pending evaluation request."""
    return fetch_returning(
        conn, _q("insert_request"), {"reason": reason, "subject": Jsonb(dict(subject))}
    )


def claim_pending(conn: DbConnection) -> list[DictRow]:
    """Lock every pending request no other transaction holds, oldest first."""
    return fetch_all(conn, _q("claim_pending"), {})


def mark_handled(conn: DbConnection, ids: Sequence[int], evaluation_id: UUID) -> None:
    """Record which evaluation handled the requests."""
    conn.execute(_q("mark_handled"), {"ids": list(ids), "evaluation_id": evaluation_id})


def get_request(conn: DbConnection, request_id: int) -> DictRow | None:
    """One request, pending or handled, or None (never made, or pruned)."""
    return fetch_one(conn, _q("get_request"), {"id": request_id})


def prune_handled(conn: DbConnection, retention_days: int) -> None:
    """Delete the requests handled more than ``retention_days`` ago; pending ones stay."""
    conn.execute(_q("prune_handled"), {"retention_days": retention_days})


def pending_count(conn: DbConnection) -> int:
    """How many requests wait for an evaluation."""
    row = fetch_one(conn, _q("pending_count"), {})
    assert row is not None
    return int(row["pending"])


def running_workloads(conn: DbConnection) -> list[DictRow]:
    """Every admitted workload by id, with its request and its node's hostname and status."""
    return fetch_all(conn, _q("running_workloads"), {})


def consistent_read(conn: DbConnection) -> None:
    """Make the open transaction read one snapshot, and nothing but read."""
    conn.execute(_q("consistent_read"))


def insert_evaluation(conn: DbConnection, values: dict[str, Any]) -> DictRow:
    """Store an evaluation; the JSON columns are given as plain values."""
    params = {**values, **{name: Jsonb(values[name]) for name in _JSON_COLUMNS}}
    return fetch_returning(conn, _q("insert_evaluation"), params)


def get_evaluation(conn: DbConnection, evaluation_id: UUID) -> DictRow | None:
    """One evaluation with its sample, or None."""
    return fetch_one(conn, _q("get_evaluation"), {"id": evaluation_id})


def latest_evaluation(conn: DbConnection) -> DictRow | None:
    """The evaluation that finished last, with its sample, or None."""
    return fetch_one(conn, _q("latest_evaluation"), {})


def list_evaluations(conn: DbConnection, limit: int, offset: int) -> tuple[list[DictRow], int]:
    """A page of evaluations without samples, newest first, and how many there are."""
    return fetch_page(conn, _q("list_evaluations"), _q("count_evaluations"), {}, limit, offset)
