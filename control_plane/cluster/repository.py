"""What the label sync reads of the inventory besides the fleet snapshot."""

from dataclasses import dataclass
from typing import LiteralString

from control_plane.core.db import DbConnection, fetch_all_as, load_queries


def _q(name: str) -> LiteralString:
    return load_queries("control_plane.cluster")[name]


@dataclass(frozen=True, slots=True)
class KubernetesNodeName:
    """A node (by id) and the Kubernetes node name its agent reported."""

    node_id: str
    kubernetes_node_name: str


def kubernetes_node_names(conn: DbConnection) -> list[KubernetesNodeName]:
    """Every agent-reported Kubernetes node name of a node that is not decommissioned."""
    return fetch_all_as(conn, KubernetesNodeName, _q("kubernetes_node_names"), {})
