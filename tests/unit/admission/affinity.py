"""Which nodes a required node affinity selects, by the Kubernetes rules, on given labels.

Written from the Kubernetes API reference (NodeSelectorTerm, NodeSelectorRequirement),
not from the webhook's own judging (``pods.selects`` takes unknown keys as possibly met):
the terms are ORed, a term's expressions ANDed, a term without expressions matches no
node. Used to check that the injected affinity selects exactly the engine's eligible
nodes on the labels the sync writes (``cluster.service.desired_labels``).
"""

from collections.abc import Iterable, Mapping
from typing import Any

from control_plane.cluster.service import desired_labels
from control_plane.domain.kubernetes import LABEL_PREFIX
from control_plane.policy.engine import NodeIndex


def meets(requirement: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    value = labels.get(requirement["key"])
    values = requirement.get("values") or []
    match requirement["operator"]:
        case "In":
            return value is not None and value in values
        case "NotIn":
            return value is None or value not in values
        case "Exists":
            return value is not None
        case "DoesNotExist":
            return value is None
    raise AssertionError(f"operator {requirement['operator']} is not used on our labels")


def matches(terms: Iterable[Mapping[str, Any]], labels: Mapping[str, str]) -> bool:
    return any(
        term.get("matchExpressions")
        and all(meets(requirement, labels) for requirement in term["matchExpressions"])
        for term in terms
    )


def ours(terms: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Each term with only its ``sovereign.io/*`` expressions: what Sovereign injected."""
    return [
        {
            "matchExpressions": [
                e for e in term["matchExpressions"] if e["key"].startswith(LABEL_PREFIX)
            ]
        }
        for term in terms
    ]


def synced_labels(index: NodeIndex) -> dict[str, dict[str, str]]:
    """Each node's labels as the label sync writes them from ``index``."""
    return {node.id: desired_labels(node, index) for node in index.nodes}


def selected(terms: Iterable[Mapping[str, Any]], index: NodeIndex) -> set[str]:
    """The nodes of ``index`` the terms select, on the labels the sync writes from it."""
    found = list(terms)
    return {node_id for node_id, labels in synced_labels(index).items() if matches(found, labels)}
