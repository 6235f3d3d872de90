"""SQL access for workloads and GPU reservations. Functions take the caller's connection.

The locking that makes placement safe lives in the queries: quota rows ``FOR UPDATE`` in
zone order, the node ``FOR SHARE``, free GPUs ``FOR UPDATE SKIP LOCKED``, and reservations
inserted ``ON CONFLICT DO NOTHING`` under the GPU-UUID primary key. The service decides
what to do when a step comes back short.
"""

from collections.abc import Sequence
from typing import Any, LiteralString
from uuid import UUID

from psycopg.types.json import Jsonb

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
from control_plane.scheduling.models import (
    Booking,
    ExpiredWorkload,
    LockedWorkload,
    OriginQuota,
    WorkloadPublic,
    ZoneQuota,
)


def _q(name: str) -> LiteralString:
    return load_queries("control_plane.scheduling")[name]


def reserved_gpu_uuids(conn: DbConnection) -> set[str]:
    """The UUIDs of every GPU booked now."""
    return {row["gpu_uuid"] for row in fetch_all(conn, _q("reserved_gpu_uuids"), {})}


def lock_quotas(conn: DbConnection, tenant: str, zones: Sequence[str]) -> dict[str, ZoneQuota]:
    """Lock the tenant's quota rows in ``zones`` until commit; by zone."""
    params = {"tenant": tenant, "zones": list(zones)}
    return {row.zone: row for row in fetch_all_as(conn, ZoneQuota, _q("lock_quotas"), params)}


def reserved_gpus(conn: DbConnection, tenant: str, zone: str) -> int:
    """How many GPUs the tenant holds now in ``zone``."""
    row = fetch_one(conn, _q("reserved_gpus"), {"tenant": tenant, "zone": zone})
    assert row is not None
    return int(row["reserved"])


def lock_origin_quotas(
    conn: DbConnection, tenant: str, origins: Sequence[str]
) -> dict[str, OriginQuota]:
    """Lock the tenant's GPU-hour quotas on servers of ``origins`` until commit; by country."""
    params = {"tenant": tenant, "origins": list(origins)}
    rows = fetch_all_as(conn, OriginQuota, _q("lock_origin_quotas"), params)
    return {row.origin_country: row for row in rows}


def book(conn: DbConnection, values: dict[str, Any]) -> Booking:
    """Book ``count`` of ``uuids`` on one node and store the workload, in one statement.

    ``uuids`` are GPUs, or with ``mig_profile`` set MIG slices (MIG device UUIDs, booked
    by ``book_slices``).

    The booking holds the stored workload and ``booked`` (reservations inserted; short of
    ``count`` when another transaction committed one of them meanwhile); or, when the
    node is no longer active, undrifted and in ``zone`` or has fewer than ``count`` of
    them free, no workload and ``lockable``: the ones that were free.
    """
    params = {
        **values,
        "request": Jsonb(values["request"]),
        "reasons": Jsonb(values["reasons"]),
        "other_nodes": Jsonb(values["other_nodes"]),
        "explanation": Jsonb(values["explanation"]),
        "uuids": list(values["uuids"]),
        "claimed": list(values["claimed"]),
    }
    query = _q("book") if values.get("mig_profile") is None else _q("book_slices")
    row = fetch_returning(conn, query, params)
    booked, lockable = row.pop("booked"), tuple(row.pop("lockable"))
    workload = None if row["id"] is None else WorkloadPublic.model_validate(row)
    return Booking(workload, booked, lockable)


def insert_denied(conn: DbConnection, values: dict[str, Any]) -> WorkloadPublic:
    """Store a denied workload; returns it as ``get_workload`` would."""
    params = {
        **values,
        "request": Jsonb(values["request"]),
        "reasons": Jsonb(values["reasons"]),
        "explanation": Jsonb(values["explanation"]),
    }
    return fetch_returning_as(conn, WorkloadPublic, _q("insert_denied"), params)


def get_workload(conn: DbConnection, workload_id: UUID) -> WorkloadPublic | None:
    """One workload with its node's hostname, or None."""
    return fetch_one_as(conn, WorkloadPublic, _q("get_workload"), {"id": workload_id})


def lock_workload(conn: DbConnection, workload_id: UUID) -> LockedWorkload | None:
    """One workload, locked until commit, with ``lease_expired``; or None."""
    return fetch_one_as(conn, LockedWorkload, _q("lock_workload"), {"id": workload_id})


def list_workloads(
    conn: DbConnection, filters: dict[str, Any], limit: int, offset: int
) -> tuple[list[WorkloadPublic], int]:
    """A page of workloads, newest first, and how many match ``filters`` in all."""
    return fetch_page_as(
        conn, WorkloadPublic, _q("list_workloads"), _q("count_workloads"), filters, limit, offset
    )


def end_workload(conn: DbConnection, workload_id: UUID, status: str) -> None:
    """Mark a running workload released or expired (the caller has locked it)."""
    conn.execute(_q("end_workload"), {"id": workload_id, "status": status})


def renew_lease(conn: DbConnection, workload_id: UUID, lease_seconds: int) -> None:
    """Restart a running workload's lease from now (the caller has locked it)."""
    conn.execute(_q("renew_lease"), {"id": workload_id, "lease_seconds": lease_seconds})


def expire_due(conn: DbConnection, limit: int) -> list[ExpiredWorkload]:
    """Mark up to ``limit`` running workloads whose lease has passed expired; return them."""
    return fetch_all_as(conn, ExpiredWorkload, _q("expire_due"), {"limit": limit})


def delete_reservations(conn: DbConnection, workload_ids: Sequence[UUID]) -> list[str]:
    """Free the GPUs the workloads hold; returns their UUIDs."""
    rows = fetch_all(conn, _q("delete_reservations"), {"ids": list(workload_ids)})
    return [row["gpu_uuid"] for row in rows]
