"""SQL access for the fleet as the engine sees it. Functions take the caller's connection.

Rows become the engine's own frozen views here (``NodeView``, ``ZoneView``): 5,000 nodes
are read per snapshot, and a dataclass costs a fraction of a validated model to build.
"""

from typing import Any, LiteralString

from control_plane.core.db import DbConnection, fetch_all, fetch_one, load_queries
from control_plane.domain.fleet import DriftStatus, NodeStatus, ProvenanceStatus
from control_plane.policy.engine import mig_profile_key
from control_plane.policy.models import GpuView, MigSliceView, NodeView, ZoneView


def _q(name: str) -> LiteralString:
    return load_queries("control_plane.facts")[name]


def zones(conn: DbConnection) -> dict[str, ZoneView]:
    """The zone tree, slug to zone, as the engine wants it."""
    return {
        row["slug"]: ZoneView(row["slug"], row["parent_slug"], row["country"])
        for row in fetch_all(conn, _q("zones"), {})
    }


def fleet_generation(conn: DbConnection) -> int:
    """The fleet's generation: it goes up with every committed change ``fleet`` would show."""
    row = fetch_one(conn, _q("fleet_generation"), {})
    assert row is not None
    return int(row["generation"])


def _node_view(row: dict[str, Any]) -> NodeView:
    return NodeView(
        id=str(row["id"]),
        hostname=row["hostname"],
        zone=row["zone"],
        status=NodeStatus(row["status"]),
        drift_status=DriftStatus(row["drift_status"]),
        origin_country=row["origin_country"],
        component_origins=row["component_origins"],
        provenance_status=ProvenanceStatus(row["provenance_status"]),
        labels=row["labels"],
        gpus=tuple(
            GpuView(
                g["uuid"],
                g["model"],
                g["memory_total_bytes"],
                g["mig_mode"],
                _slices(g["mig_slices"]) if g["mig_slices"] else (),
            )
            for g in row["gpus"]
        ),
    )


def _slices(pairs: list[list[str]]) -> tuple[MigSliceView, ...]:
    """A GPU's bookable MIG slices from ``[uuid, profile]`` pairs, profiles as compared."""
    return tuple(MigSliceView(uuid, mig_profile_key(profile)) for uuid, profile in pairs)


def fleet(conn: DbConnection) -> list[NodeView]:
    """Every node that is not decommissioned, with all its GPUs, by hostname then id."""
    return [_node_view(row) for row in fetch_all(conn, _q("fleet"), {})]


def kubernetes_node_names(conn: DbConnection) -> dict[str, str]:
    """Node id to the Kubernetes node name its agent reported, for nodes not decommissioned."""
    return {
        row["node_id"]: row["kubernetes_node_name"]
        for row in fetch_all(conn, _q("kubernetes_node_names"), {})
    }
