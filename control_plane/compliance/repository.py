"""SQL access for compliance requests and evaluations. Functions take the caller's connection.

Requests are an outbox: inserted in the transaction of the change that calls for an
evaluation, claimed ``FOR UPDATE SKIP LOCKED`` by the evaluation, marked with the
evaluation that handled them, and deleted by a later evaluation once the retention has
passed. Evaluations are only ever inserted. Violation deliveries are an outbox too, the
other way: inserted by the evaluation, claimed one attempt at a time by the sender.
"""

from collections.abc import Mapping, Sequence
from typing import Any, LiteralString
from uuid import UUID

from psycopg.types.json import Jsonb

from control_plane.compliance.models import (
    ComplianceRequestPublic,
    DeliveryPublic,
    DueDelivery,
    EvaluationPublic,
    EvaluationSummary,
    PodDecisionRow,
    RevokedRow,
    RunningRow,
)
from control_plane.core.db import (
    DbConnection,
    fetch_all,
    fetch_all_as,
    fetch_one,
    fetch_one_as,
    fetch_page_as,
    fetch_returning,
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


# -- acting on violations ----------------------------------------------------------------


def revoke_workloads(
    conn: DbConnection, revocations: Mapping[UUID, dict[str, Any]]
) -> list[RevokedRow]:
    """End the workloads still running among ``revocations`` (id -> revocation JSON)."""
    ids = list(revocations)
    params = {"ids": ids, "revocations": [Jsonb(revocations[i]) for i in ids]}
    return fetch_all_as(conn, RevokedRow, _q("revoke_workloads"), params)


def free_reservations(conn: DbConnection, workload_ids: Sequence[UUID]) -> dict[UUID, list[str]]:
    """Delete the workloads' GPU reservations; the freed GPU UUIDs per workload."""
    freed: dict[UUID, list[str]] = {}
    for row in fetch_all(conn, _q("free_reservations"), {"ids": list(workload_ids)}):
        freed.setdefault(row["workload_id"], []).append(row["gpu_uuid"])
    return freed


def announced(conn: DbConnection, workload_ids: Sequence[UUID]) -> set[tuple[UUID, str]]:
    """The (workload, policy) pairs among ``workload_ids`` that have a delivery already."""
    rows = fetch_all(conn, _q("announced"), {"ids": list(workload_ids)})
    return {(row["workload_id"], row["policy"]) for row in rows}


def insert_deliveries(
    conn: DbConnection, evaluation_id: UUID, deliveries: Sequence[Mapping[str, Any]]
) -> int:
    """Queue deliveries (``id``, ``workload_id``, ``policy``, ``action``, ``body``); how many."""
    params = {
        "evaluation_id": evaluation_id,
        "ids": [delivery["id"] for delivery in deliveries],
        "workload_ids": [delivery["workload_id"] for delivery in deliveries],
        "policies": [delivery["policy"] for delivery in deliveries],
        "actions": [delivery["action"] for delivery in deliveries],
        "bodies": [delivery["body"] for delivery in deliveries],
    }
    return len(fetch_all(conn, _q("insert_deliveries"), params))


def claim_due_deliveries(conn: DbConnection, limit: int, claim_seconds: float) -> list[DueDelivery]:
    """Claim up to ``limit`` due deliveries for one attempt each (the attempt is counted)."""
    params = {"limit": limit, "claim_seconds": claim_seconds}
    return fetch_all_as(conn, DueDelivery, _q("claim_due_deliveries"), params)


def delivery_succeeded(conn: DbConnection, delivery_id: UUID, status: int) -> None:
    """Mark a delivery delivered, with the receiver's status."""
    conn.execute(_q("delivery_succeeded"), {"id": delivery_id, "status": status})


def delivery_failed(
    conn: DbConnection,
    delivery_id: UUID,
    *,
    status: int | None,
    error: str,
    max_attempts: int,
    delay: float,
) -> None:
    """Record a failed attempt: retry after ``delay`` seconds, or give up after the last."""
    conn.execute(
        _q("delivery_failed"),
        {
            "id": delivery_id,
            "status": status,
            "error": error,
            "max_attempts": max_attempts,
            "delay": delay,
        },
    )


def next_due_in(conn: DbConnection) -> float | None:
    """Seconds until the next pending delivery is due (negative when overdue), or None."""
    row = fetch_one(conn, _q("next_due_in"), {})
    return None if row is None or row["seconds"] is None else float(row["seconds"])


def list_deliveries(
    conn: DbConnection, filters: Mapping[str, Any], limit: int, offset: int
) -> tuple[list[DeliveryPublic], int]:
    """A page of deliveries, newest first, and how many match ``filters``."""
    return fetch_page_as(
        conn,
        DeliveryPublic,
        _q("list_deliveries"),
        _q("count_deliveries"),
        filters,
        limit,
        offset,
    )


# -- the pod sweep ---------------------------------------------------------------------


def pod_decisions(conn: DbConnection, ids: Sequence[UUID]) -> dict[UUID, PodDecisionRow]:
    """The stored webhook decisions with these ids, by id (ids unknown are absent)."""
    rows = fetch_all_as(conn, PodDecisionRow, _q("pod_decisions"), {"ids": list(ids)})
    return {row.id: row for row in rows}


def note_eviction_refused(conn: DbConnection, values: Mapping[str, Any]) -> list[str] | None:
    """Record a refused eviction (``values`` by the query's names); the policies before.

    None when the pod had no refusal on record, so the caller audits it as new.
    """
    row = fetch_returning(conn, _q("note_eviction_refused"), values)
    previous = row["previous_policies"]
    return None if previous is None else list(previous)


def forget_eviction_blocks(conn: DbConnection, still_blocked: Sequence[str]) -> None:
    """Drop the refusals on record of every pod (by uid) not in ``still_blocked``."""
    conn.execute(_q("forget_eviction_blocks"), {"still_blocked": list(still_blocked)})


def try_pod_sweep_lock(conn: DbConnection, key: int) -> bool:
    """Take the pod sweep's session lock if no other session holds it; whether it did."""
    row = fetch_one(conn, _q("try_pod_sweep_lock"), {"key": key})
    assert row is not None
    return bool(row["locked"])


def pod_sweep_unlock(conn: DbConnection, key: int) -> None:
    """Give the pod sweep's session lock back."""
    fetch_one(conn, _q("pod_sweep_unlock"), {"key": key})
