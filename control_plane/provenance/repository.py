"""SQL access for provenance checks. Functions take the caller's connection.

The nodes and GPUs belong to the inventory; this feature reads what the agents reported
and writes only a node's origins and provenance status and evidence.
"""

from collections import defaultdict
from collections.abc import Sequence
from typing import Any, LiteralString
from uuid import UUID

from psycopg.types.json import Jsonb

from control_plane.core.db import (
    DbConnection,
    fetch_all,
    fetch_all_as,
    fetch_returning_as,
    load_queries,
)
from control_plane.inventory.models import GpuIdentity, NodeRow


def _q(name: str) -> LiteralString:
    return load_queries("control_plane.provenance")[name]


def lock_nodes_for_bom(
    conn: DbConnection, system_serials: Sequence[str], asset_tags: Sequence[str]
) -> list[NodeRow]:
    """Nodes with any of these system serials or asset tags, locked for the transaction."""
    return fetch_all_as(
        conn,
        NodeRow,
        _q("lock_nodes_for_bom"),
        {"system_serials": list(system_serials), "asset_tags": list(asset_tags)},
    )


def gpu_identities(conn: DbConnection, node_ids: Sequence[UUID]) -> dict[UUID, list[GpuIdentity]]:
    """The GPUs' UUIDs and serials the agents read, per node, by GPU index.

    Nodes without GPUs are absent.
    """
    gpus: dict[UUID, list[GpuIdentity]] = defaultdict(list)
    for row in fetch_all(conn, _q("gpu_identities"), {"node_ids": list(node_ids)}):
        gpus[row["node_id"]].append(GpuIdentity(uuid=row["uuid"], serial=row["serial"]))
    return dict(gpus)


def record_provenance_check(conn: DbConnection, values: dict[str, Any]) -> NodeRow:
    """Store a node's checked origins, provenance status and evidence; return the node."""
    return fetch_returning_as(
        conn,
        NodeRow,
        _q("record_provenance_check"),
        {
            **values,
            "component_origins": Jsonb(values["component_origins"]),
            "provenance_evidence": Jsonb(values["provenance_evidence"]),
        },
    )
