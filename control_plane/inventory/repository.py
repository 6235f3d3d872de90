"""SQL access for zones, sites, nodes and GPUs. Functions take the caller's connection.

Constraint violations become domain errors here, named after the API field they concern.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, LiteralString
from uuid import UUID

from psycopg.types.json import Jsonb

from control_plane.core.db import (
    DbConnection,
    ErrorFactory,
    fetch_all,
    fetch_all_as,
    fetch_one,
    fetch_one_as,
    fetch_page_as,
    fetch_returning,
    fetch_returning_as,
    in_use,
    load_queries,
    references,
    refused,
    translate_integrity_errors,
    unique,
)
from control_plane.domain.fleet import NodeStatus, ProvenanceStatus
from control_plane.inventory.models import (
    GpuPublic,
    NodeRow,
    ReplacementApproval,
    SitePublic,
    StaleNode,
    ZonePublic,
)

_ZONE_WRITE: dict[str, ErrorFactory] = {
    "residency_zone_pkey": unique("slug", "a zone with this slug already exists"),
    "residency_zone_parent_fkey": references("parent", "unknown zone"),
    "residency_zone_not_own_parent": refused("parent", "a zone cannot be its own parent"),
}


def _zone_in_use(users: str) -> ErrorFactory:
    return in_use(f"zone is still used by {users}; move them first")


#: What may still refer to a zone being deleted, by foreign key.
_ZONE_DELETE: dict[str, ErrorFactory] = {
    "residency_zone_parent_fkey": _zone_in_use("child zones"),
    "site_zone_fkey": _zone_in_use("sites"),
    "node_zone_fkey": _zone_in_use("nodes"),
    "tenant_quota_zone_fkey": _zone_in_use("tenant quotas"),
    "dataset_storage_zone_zone_fkey": _zone_in_use("datasets stored in it"),
    "model_storage_zone_zone_fkey": _zone_in_use("models stored in it"),
    "artifact_destination_zone_fkey": _zone_in_use("artifact destinations"),
}
_SITE_WRITE: dict[str, ErrorFactory] = {
    "site_pkey": unique("slug", "a site with this slug already exists"),
    "site_zone_fkey": references("zone", "unknown zone"),
}
_NODE_WRITE: dict[str, ErrorFactory] = {
    "node_zone_fkey": references("zone", "unknown zone"),
    "node_site_fkey": references("site", "unknown site"),
    "node_machine_id_key": unique("machine_id", "another node has this machine id"),
    # The services never try it; the table refuses it whatever path writes the row.
    "node_active_needs_confirmed_location": refused(
        "status", "a node whose location nobody confirmed cannot be active"
    ),
}
_GPU_WRITE: dict[str, ErrorFactory] = {
    "gpu_node_index_key": unique("gpus.index", "two GPUs of one node share an index"),
}
_JSON_COLUMNS = (
    "labels",
    "component_origins",
    "provenance_evidence",
    "identity_baseline",
    "drift_evidence",
)


def _q(name: str) -> LiteralString:
    return load_queries("control_plane.inventory")[name]


def _with_json(values: dict[str, Any]) -> dict[str, Any]:
    return {k: Jsonb(v) if k in _JSON_COLUMNS else v for k, v in values.items()}


# -- zones and sites -------------------------------------------------------------------


def insert_zone(conn: DbConnection, values: dict[str, Any]) -> ZonePublic:
    """Store a new zone."""
    return fetch_returning_as(conn, ZonePublic, _q("insert_zone"), values, _ZONE_WRITE)


def list_zones(conn: DbConnection) -> list[ZonePublic]:
    """Every zone, by slug."""
    return fetch_all_as(conn, ZonePublic, _q("list_zones"), {})


def get_zone(conn: DbConnection, slug: str, *, for_update: bool = False) -> ZonePublic | None:
    """One zone, optionally locked for the rest of the transaction."""
    query = _q("lock_zone" if for_update else "get_zone")
    return fetch_one_as(conn, ZonePublic, query, {"slug": slug})


def share_zone(conn: DbConnection, slug: str) -> ZonePublic | None:
    """One zone, share-locked: its country stays as it is until the transaction ends."""
    return fetch_one_as(conn, ZonePublic, _q("share_zone"), {"slug": slug})


def zone_children(conn: DbConnection, slug: str) -> list[ZonePublic]:
    """The zones directly inside ``slug``, by slug."""
    return fetch_all_as(conn, ZonePublic, _q("zone_children"), {"slug": slug})


def zone_ancestors(conn: DbConnection, slug: str) -> list[str]:
    """The zone and every zone above it, nearest first."""
    return [r["slug"] for r in fetch_all(conn, _q("zone_ancestors"), {"slug": slug})]


def update_zone(conn: DbConnection, values: dict[str, Any]) -> ZonePublic:
    """Overwrite a zone's editable fields."""
    return fetch_returning_as(conn, ZonePublic, _q("update_zone"), values, _ZONE_WRITE)


def delete_zone(conn: DbConnection, slug: str) -> bool:
    """Delete an unused zone; False if it did not exist."""
    with translate_integrity_errors(_ZONE_DELETE):
        return fetch_one(conn, _q("delete_zone"), {"slug": slug}) is not None


def insert_site(conn: DbConnection, values: dict[str, Any]) -> SitePublic:
    """Store a new site."""
    return fetch_returning_as(conn, SitePublic, _q("insert_site"), values, _SITE_WRITE)


def list_sites(conn: DbConnection) -> list[SitePublic]:
    """Every site, by slug."""
    return fetch_all_as(conn, SitePublic, _q("list_sites"), {})


def get_site(conn: DbConnection, slug: str) -> SitePublic | None:
    """One site, or None."""
    return fetch_one_as(conn, SitePublic, _q("get_site"), {"slug": slug})


# -- nodes -----------------------------------------------------------------------------


def search_nodes(
    conn: DbConnection, filters: dict[str, Any], limit: int, offset: int
) -> tuple[list[NodeRow], int]:
    """One page of nodes matching ``filters`` and the number that match in all."""
    return fetch_page_as(
        conn, NodeRow, _q("search_nodes"), _q("count_nodes"), filters, limit, offset
    )


def get_node(conn: DbConnection, node_id: UUID, *, for_update: bool = False) -> NodeRow | None:
    """One node (with ``gpu_count``), optionally locked for the rest of the transaction."""
    query = _q("lock_node" if for_update else "get_node")
    return fetch_one_as(conn, NodeRow, query, {"id": node_id})


def find_node_ids_by_hostname(conn: DbConnection, hostname: str) -> list[UUID]:
    """Ids of nodes with this hostname (hostnames are not unique)."""
    return [r["id"] for r in fetch_all(conn, _q("find_nodes_by_hostname"), {"hostname": hostname})]


def lock_node_by_machine_id(conn: DbConnection, machine_id: str) -> NodeRow | None:
    """The node with this machine id, locked, or None."""
    return fetch_one_as(conn, NodeRow, _q("lock_node_by_machine_id"), {"machine_id": machine_id})


def insert_node(conn: DbConnection, values: dict[str, Any]) -> UUID:
    """Store a newly registered node; return its id."""
    row = fetch_returning(conn, _q("insert_node"), _with_json(values), _NODE_WRITE)
    node_id: UUID = row["id"]
    return node_id


def update_host_facts(conn: DbConnection, values: dict[str, Any]) -> None:
    """Overwrite what the agent reads about its host."""
    conn.execute(_q("update_host_facts"), values)


def refresh_registration(
    conn: DbConnection, node_id: UUID, kubernetes_node_name: str | None
) -> None:
    """Restart a re-registered node's heartbeat sequence and count it as alive.

    Stores the Kubernetes node name its agent reports now (none: it reports none).
    """
    conn.execute(
        _q("refresh_registration"),
        {"id": node_id, "kubernetes_node_name": kubernetes_node_name},
    )


def update_node_admin(conn: DbConnection, values: dict[str, Any]) -> None:
    """Overwrite the admin-owned fields of a node."""
    with translate_integrity_errors(_NODE_WRITE):
        conn.execute(_q("update_node_admin"), _with_json(values))


def record_heartbeat(conn: DbConnection, node_id: UUID, seq: int) -> NodeStatus:
    """Stamp a heartbeat; an offline node comes back active. Returns the new status."""
    row = fetch_returning(conn, _q("record_heartbeat"), {"id": node_id, "seq": seq})
    return NodeStatus(row["status"])


def mark_drifted(conn: DbConnection, node_id: UUID, evidence: dict[str, Any]) -> None:
    """Mark a node drifted with its evidence and quarantine it."""
    conn.execute(_q("mark_drifted"), _with_json({"id": node_id, "drift_evidence": evidence}))


def acknowledge_drift(conn: DbConnection, node_id: UUID, baseline: dict[str, Any]) -> None:
    """Adopt ``baseline`` as the node's identity, clear its drift and end the quarantine."""
    conn.execute(
        _q("acknowledge_drift"), _with_json({"id": node_id, "identity_baseline": baseline})
    )


def set_provenance_status(
    conn: DbConnection, node_id: UUID, status: ProvenanceStatus, evidence: dict[str, Any]
) -> None:
    """Set a node's provenance status and evidence, leaving its origins as they are."""
    conn.execute(
        _q("set_provenance_status"),
        _with_json(
            {"id": node_id, "provenance_status": status.value, "provenance_evidence": evidence}
        ),
    )


def mark_stale_nodes_offline(
    conn: DbConnection, threshold_seconds: float, limit: int
) -> list[StaleNode]:
    """Mark up to ``limit`` active nodes silent for ``threshold_seconds`` offline."""
    return fetch_all_as(
        conn,
        StaleNode,
        _q("mark_stale_nodes_offline"),
        {"threshold_seconds": threshold_seconds, "limit": limit},
    )


# -- replacement approvals -------------------------------------------------------------


def get_replacement_approval(conn: DbConnection, node_id: UUID) -> ReplacementApproval | None:
    """The node's stored approval of a replacement (expired or not), or None."""
    return fetch_one_as(
        conn, ReplacementApproval, _q("get_replacement_approval"), {"node_id": node_id}
    )


def approve_replacement(conn: DbConnection, values: dict[str, Any]) -> ReplacementApproval:
    """Store an approval of a replacement, replacing the node's earlier one."""
    return fetch_returning_as(conn, ReplacementApproval, _q("approve_replacement"), values)


def use_replacement_approval(conn: DbConnection, node_id: UUID) -> ReplacementApproval | None:
    """Delete and return the node's unexpired approval; None when it has none."""
    return fetch_one_as(
        conn, ReplacementApproval, _q("use_replacement_approval"), {"node_id": node_id}
    )


# -- GPUs ------------------------------------------------------------------------------


def node_gpus(conn: DbConnection, node_id: UUID) -> list[GpuPublic]:
    """A node's GPUs by index."""
    return fetch_all_as(conn, GpuPublic, _q("node_gpus"), {"node_id": node_id})


def upsert_gpu(conn: DbConnection, values: dict[str, Any]) -> bool:
    """Insert or update a GPU of a node; False when another node owns that UUID."""
    with translate_integrity_errors(_GPU_WRITE):
        return fetch_one(conn, _q("upsert_gpu"), _with_json(values)) is not None


def gpu_missing_elsewhere(conn: DbConnection, uuid: str, node_id: UUID) -> bool:
    """Whether the GPU another node than ``node_id`` owns is one that node stopped reporting."""
    row = fetch_one(conn, _q("gpu_missing_elsewhere"), {"uuid": uuid, "node_id": node_id})
    return row is not None and bool(row["missing"])


def retire_gpus_not_in(conn: DbConnection, node_id: UUID, uuids: Sequence[str]) -> None:
    """Retire a node's GPUs that are no longer reported.

    A GPU without a reservation is deleted. A booked one is kept, stamped
    ``missing_since``, so its workload still holds it and nothing else can book it; it is
    deleted when that workload ends (``delete_missing_gpus``). The caller holds the node
    locked ``FOR UPDATE``.
    """
    params = {"node_id": node_id, "uuids": list(uuids)}
    conn.execute(_q("mark_gpus_missing"), params)
    conn.execute(_q("delete_unbooked_gpus_not_in"), params)


def delete_missing_gpus(
    conn: DbConnection, node_ids: Sequence[UUID], uuids: Sequence[str]
) -> list[str]:
    """Delete the missing GPUs and MIG devices among ``uuids`` no reservation holds now.

    For the end of a workload, after its reservations are deleted; ``uuids`` are what it
    held (GPUs, or MIG devices). A freed MIG device is deleted if it or its GPU is
    missing, and then its GPU too if that is missing and holds no other booking. Returns
    the UUIDs deleted. The nodes (those the GPUs were booked on) are share-locked first,
    so an inventory report being applied to them either commits before (and its marks are
    seen here) or starts after (and sees the reservations gone, so it deletes instead of
    marking).
    """
    conn.execute(_q("share_lock_nodes"), {"ids": sorted(set(node_ids))})
    slices = fetch_all(conn, _q("delete_missing_mig_devices"), {"uuids": list(uuids)})
    parents = sorted({row["gpu_uuid"] for row in slices})
    rows = fetch_all(conn, _q("delete_missing_gpus"), {"uuids": list(uuids), "gpu_uuids": parents})
    return sorted([row["uuid"] for row in slices] + [row["uuid"] for row in rows])


@dataclass(frozen=True, slots=True)
class ReportedMigDevice:
    """One MIG device of an inventory report, with the UUID of the GPU it was read on."""

    gpu_uuid: str
    index: int
    uuid: str | None
    profile: str | None
    gpu_instance_id: int | None
    compute_instance_id: int | None
    memory_total_bytes: int | None


def sync_mig_devices(
    conn: DbConnection, node_id: UUID, devices: Sequence[ReportedMigDevice]
) -> list[str]:
    """Make the node's MIG device rows match the report (its GPUs are stored already).

    A device left out is deleted, unless a workload holds it: then it is kept as missing
    (``missing_since``), still booked, like a booked GPU (migration 0022). Returns the
    reported UUIDs that another GPU holds (the report is then refused by the caller). The
    caller holds the node locked ``FOR UPDATE``.
    """
    named = [device.uuid for device in devices if device.uuid is not None]
    params = {"node_id": node_id, "uuids": named}
    conn.execute(_q("mark_mig_devices_missing"), params)
    conn.execute(_q("delete_unbooked_mig_devices_not_in"), params)
    if not devices:
        return []
    columns = {
        "gpu_uuids": [d.gpu_uuid for d in devices],
        "indexes": [d.index for d in devices],
        "uuids": [d.uuid for d in devices],
        "profiles": [d.profile for d in devices],
        "gpu_instance_ids": [d.gpu_instance_id for d in devices],
        "compute_instance_ids": [d.compute_instance_id for d in devices],
        "memory_total_bytes": [d.memory_total_bytes for d in devices],
    }
    stored = {row["uuid"] for row in fetch_all(conn, _q("upsert_mig_devices"), columns)}
    return [uuid for uuid in named if uuid not in stored]


def update_gpu_telemetry(
    conn: DbConnection, node_id: UUID, columns: dict[str, list[Any]]
) -> set[str]:
    """Overwrite the latest telemetry of a node's GPUs in one statement; return UUIDs hit."""
    rows = fetch_all(conn, _q("update_gpu_telemetry"), {"node_id": node_id, **columns})
    return {r["uuid"] for r in rows}


# -- fleet gauges ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NodeCount:
    """Nodes in one zone, status and origin country ("" for none), for the fleet gauges."""

    zone: str
    status: str
    origin_country: str
    nodes: int


@dataclass(frozen=True, slots=True)
class GpuCount:
    """GPUs of one model in one zone ("" for none), for the fleet gauges."""

    zone: str
    model: str
    gpus: int


@dataclass(frozen=True, slots=True)
class MigSliceCount:
    """Bookable MIG slices of one profile on GPUs of one model in one zone, and the free ones."""

    zone: str
    model: str
    profile: str
    slices: int
    free: int


def fleet_node_counts(conn: DbConnection) -> list[NodeCount]:
    """Nodes by zone, status and origin country, for metrics."""
    return fetch_all_as(conn, NodeCount, _q("fleet_node_counts"), {})


def fleet_gpu_counts(conn: DbConnection) -> list[GpuCount]:
    """GPUs by zone and model, for metrics."""
    return fetch_all_as(conn, GpuCount, _q("fleet_gpu_counts"), {})


def fleet_mig_slice_counts(conn: DbConnection) -> list[MigSliceCount]:
    """Bookable MIG slices by zone, GPU model and profile (total and free), for metrics."""
    return fetch_all_as(conn, MigSliceCount, _q("fleet_mig_slice_counts"), {})
