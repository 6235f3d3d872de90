"""The fleet as the engine reads it: every node indexed, at one fleet generation.

Loading 5,000 nodes with 40,000 GPUs and indexing them takes a few hundred milliseconds;
callers that decide often (the API's admission) keep a snapshot per *generation*, a
counter the database bumps at commit whenever a node's zone, status, drift, provenance,
origins or labels change, a GPU comes or goes, or the zone tree changes (migration 0007).
"""

from dataclasses import dataclass
from typing import Protocol

from control_plane.core.db import DbConnection
from control_plane.facts import repository
from control_plane.policy.engine import NodeIndex
from control_plane.policy.models import NodeView


@dataclass(frozen=True, slots=True)
class FleetSnapshot:
    """Every node that is not decommissioned, with all its GPUs, indexed for the engine.

    ``generation`` is the fleet generation it was read at (or later: it is read first).
    The index never changes; share it freely between threads.
    """

    generation: int
    index: NodeIndex

    @property
    def nodes(self) -> tuple[NodeView, ...]:
        """The nodes, by hostname then id (the index's order)."""
        return self.index.nodes


def fleet_generation(conn: DbConnection) -> int:
    """The fleet's current generation (one row): did anything the snapshot shows change."""
    return repository.fleet_generation(conn)


def load_snapshot(conn: DbConnection) -> FleetSnapshot:
    """Read the fleet and index it (a few hundred milliseconds at 5,000 nodes)."""
    generation = repository.fleet_generation(conn)
    nodes = repository.fleet(conn)
    return FleetSnapshot(generation, NodeIndex.build(nodes, repository.zones(conn)))


class SnapshotSource(Protocol):
    """Where a caller that decides often gets the snapshot of the fleet's current generation.

    The API's one ``scheduling.fleet.FleetCache`` is one: the admission webhooks decide on
    the very snapshot (and so the very index, whose ``DecisionCache`` memo they share)
    that ``POST /v1/workloads`` decides on.
    """

    def snapshot(self, conn: DbConnection) -> FleetSnapshot:
        """The snapshot of the fleet's current generation, rebuilt only when it moved."""
        ...
