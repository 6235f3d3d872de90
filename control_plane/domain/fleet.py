"""The words for GPU servers: lifecycle, provenance, drift, and the component classes.

Inventory stores them, the policy engine filters on them, placement, compliance and the
metrics read them.
"""

from enum import StrEnum


class NodeStatus(StrEnum):
    """Lifecycle of a GPU server; only ``active`` nodes are eligible for placement."""

    PLANNED = "planned"
    ACTIVE = "active"
    MAINTENANCE = "maintenance"
    OFFLINE = "offline"
    QUARANTINED = "quarantined"
    DECOMMISSIONED = "decommissioned"


class ProvenanceStatus(StrEnum):
    """How far a node's country of origin is to be believed.

    ``declared``: someone stated it; ``verified``: it matches a bill of materials checked
    against what the agent reads; ``mismatch``: the two disagree; ``unknown``: nothing stated.
    """

    DECLARED = "declared"
    VERIFIED = "verified"
    MISMATCH = "mismatch"
    UNKNOWN = "unknown"


class DriftStatus(StrEnum):
    """Whether the hardware an agent reports is still the identity an admin accepted.

    ``drifted`` nodes are quarantined until an admin acknowledges the new identity.
    """

    NONE = "none"
    DRIFTED = "drifted"


class LocationVia(StrEnum):
    """Who confirmed where a node stands.

    ``admin``: an admin registered the node or set its zone; ``scoped-token``: it
    registered with a bootstrap token scoped to that zone (and site); ``upgrade``: it was
    registered before locations were confirmed (migration 0021) and kept its place.
    """

    ADMIN = "admin"
    SCOPED_TOKEN = "scoped-token"  # noqa: S105 - a word, not a secret
    UPGRADE = "upgrade"


class ComponentClass(StrEnum):
    """Component classes whose country of origin procurement asks about."""

    GPU = "gpu"
    CPU = "cpu"
    BOARD = "board"
    NIC = "nic"


def placeable(status: NodeStatus, drift_status: DriftStatus) -> bool:
    """Whether anything may be placed on a node at all: active, and not drifted.

    A drifted node is quarantined, so ``active`` alone says it; both are checked so the
    rule holds even if a drifted node were somehow made active again. The booking
    statement (``scheduling/queries.sql``, ``book``) checks the same in SQL.
    """
    return status is NodeStatus.ACTIVE and drift_status is DriftStatus.NONE
