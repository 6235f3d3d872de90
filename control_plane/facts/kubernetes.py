"""Which inventory node a Kubernetes Node is: one rule for the label sync and the pod sweep.

A Node is the inventory node whose agent reported it as its Kubernetes node name
(``SOVEREIGN_AGENT_KUBERNETES_NODE_NAME``, the DaemonSet's ``spec.nodeName``), or, for a
node whose agent reported none, whose hostname is its name (compared lower-cased, as
Kubernetes names nodes). A name that two inventory nodes answer to is no match at all: the
label sync gives that Node no labels and the pod sweep judges no pod on it, rather than
pick one of the two. Both read the same rule here, so the node whose ``sovereign.io/*``
labels kube-scheduler placed a pod by is the node the sweep judges it on.
"""

from collections.abc import Iterable, Mapping

from control_plane.core.db import DbConnection
from control_plane.facts import repository
from control_plane.policy.models import NodeView


def kubernetes_node_names(conn: DbConnection) -> dict[str, str]:
    """Node id to the Kubernetes node name its agent reported (nodes not decommissioned)."""
    return repository.kubernetes_node_names(conn)


def by_kubernetes_name(
    nodes: Iterable[NodeView], reported: Mapping[str, str]
) -> dict[str, list[NodeView]]:
    """Lower-cased Kubernetes node name to the inventory nodes that answer to it.

    ``reported``: node id to the name its agent reported (``kubernetes_node_names``). A
    list longer than one is an ambiguous name; callers treat it as unknown.
    """
    found: dict[str, list[NodeView]] = {}
    for node in nodes:
        found.setdefault((reported.get(node.id) or node.hostname).lower(), []).append(node)
    return found
