"""The node index: every node numbered once, and the nodes per attribute as bitmasks.

``NodeIndex.build`` keeps, for each zone (with the zones it lies in), country, origin,
component origin, status, provenance, drift state, label set and GPU shape, the set of
nodes that have it, as the bits of one Python integer. A requirement over the fleet is
then a few dictionary look-ups and ``|``/``&`` on integers, whatever the number of nodes.

The index is built once per inventory snapshot and never changes afterwards: it is a
frozen dataclass, its tables are typed read-only, and it remembers nothing. What
decisions work out from it (per policy, per GPU request, per node condition) is kept in
the caller's ``DecisionCache``, so one index can be shared by every thread and every
cache without anything to guard.
"""

import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import compress
from typing import Any

from control_plane.core.errors import NotFoundError
from control_plane.domain.fleet import ComponentClass, DriftStatus, NodeStatus, placeable
from control_plane.policy.engine.gpu import RawGpu, Shape, fitting, gpu_request, shape_of
from control_plane.policy.models import NodeView, WorkloadView, ZoneView

_BIT_FLAGS = bytes.maketrans(b"01", b"\x00\x01")
_COMPONENTS = tuple(c.value for c in ComponentClass)


def _mask(positions: Sequence[int]) -> int:
    """The integer whose set bits are ``positions`` (ascending)."""
    if not positions:
        return 0
    bits = bytearray(positions[-1] // 8 + 1)
    for position in positions:
        bits[position >> 3] |= 1 << (position & 7)
    return int.from_bytes(bits, "little")


def _path(zone: str, zones: Mapping[str, ZoneView]) -> tuple[str, ...]:
    """``zone`` and every zone it lies in, innermost first."""
    path: list[str] = []
    current: str | None = zone
    # The zone tree comes from the database, which refuses cycles; stop on one anyway.
    while current is not None and current not in path:
        path.append(current)
        found = zones.get(current)
        current = found.parent if found is not None else None
    return tuple(path)


def _enclosing(zone: str | None, ancestry: Mapping[str, tuple[str, ...]]) -> tuple[str, ...]:
    """``zone`` and the zones it lies in, from ``ancestry``; just ``zone`` if not in the tree."""
    if zone is None:
        return ()
    found = ancestry.get(zone)
    return found if found is not None else (zone,)


@dataclass(frozen=True, slots=True, eq=False)
class NodeIndex:
    """Nodes numbered once, with the sets of nodes per attribute as integer bitmasks.

    Build one per inventory snapshot with ``NodeIndex.build`` and reuse it for every
    decision taken on that snapshot: admission, the re-evaluation sweep and what-if all
    answer from the same index. Bit ``i`` of every mask is ``nodes[i]``. Equality is
    identity (``eq=False``): a ``DecisionCache`` keeps what it works out per index object.
    """

    nodes: tuple[NodeView, ...]
    #: The zone tree, slug to zone, as it was when the index was built.
    zones: Mapping[str, ZoneView]
    ids: tuple[str, ...]
    #: Every node.
    all: int
    #: Nodes by their own zone (``None``: no zone).
    by_zone: Mapping[str | None, int]
    #: Nodes by every zone they lie in, their own included.
    within_zone: Mapping[str, int]
    by_country: Mapping[str | None, int]
    by_origin: Mapping[str | None, int]
    #: Nodes by (component class, its origin or ``None``).
    by_component: Mapping[tuple[str, str | None], int]
    #: Nodes by their whole component-origin map (sorted items), for CEL profiles.
    by_components: Mapping[tuple[tuple[str, str], ...], int]
    by_status: Mapping[str, int]
    by_provenance: Mapping[str, int]
    by_drift: Mapping[str, int]
    #: Nodes by their whole label set (sorted items), for CEL profiles.
    by_labels: Mapping[tuple[tuple[str, str], ...], int]
    by_shape: Mapping[Shape, int]
    #: The bit number of each node id (the first node, for an id given twice).
    positions: Mapping[str, int]
    #: Each zone of the tree with the zones it lies in, innermost first.
    ancestry: Mapping[str, tuple[str, ...]]

    @classmethod
    def build(cls, nodes: Iterable[NodeView], zones: Mapping[str, ZoneView]) -> "NodeIndex":
        """Index ``nodes``; ``zones`` is the zone tree (slug to zone) they and policies use."""
        indexed = tuple(nodes)
        tree = dict(zones)
        by_zone: dict[Any, list[int]] = {}
        by_origin: dict[Any, list[int]] = {}
        by_component: dict[Any, list[int]] = {}
        by_components: dict[Any, list[int]] = {}
        by_status: dict[Any, list[int]] = {}
        by_provenance: dict[Any, list[int]] = {}
        by_drift: dict[Any, list[int]] = {}
        by_labels: dict[Any, list[int]] = {}
        by_shape: dict[Any, list[int]] = {}
        shapes: dict[tuple[RawGpu, ...], Shape] = {}
        positions: dict[str, int] = {}
        for position, node in enumerate(indexed):
            positions.setdefault(node.id, position)
            by_zone.setdefault(node.zone, []).append(position)
            by_origin.setdefault(node.origin_country, []).append(position)
            origins = node.component_origins
            for component in _COMPONENTS:
                by_component.setdefault((component, origins.get(component)), []).append(position)
            frozen = tuple(sorted((str(k), v) for k, v in origins.items()))
            by_components.setdefault(frozen, []).append(position)
            by_status.setdefault(node.status, []).append(position)
            by_provenance.setdefault(node.provenance_status, []).append(position)
            by_drift.setdefault(node.drift_status, []).append(position)
            by_labels.setdefault(tuple(sorted(node.labels.items())), []).append(position)
            raw = tuple(
                (
                    g.model,
                    g.memory_total_bytes,
                    g.mig_mode,
                    tuple(s.profile for s in g.mig_slices) if g.mig_slices else (),
                )
                for g in node.gpus
            )
            shape = shapes.get(raw)
            if shape is None:
                shape = shapes[raw] = shape_of(raw)
            by_shape.setdefault(shape, []).append(position)
        ancestry = {slug: _path(slug, tree) for slug in tree}
        zone_masks = {k: _mask(v) for k, v in by_zone.items()}
        # Zones, their enclosing zones and countries come from the (few) distinct zones.
        within_zone: dict[str, int] = {}
        by_country: dict[str | None, int] = {}
        for zone, mask in zone_masks.items():
            for enclosing in _enclosing(zone, ancestry):
                within_zone[enclosing] = within_zone.get(enclosing, 0) | mask
            found = tree.get(zone) if zone is not None else None
            country = found.country if found is not None else None
            by_country[country] = by_country.get(country, 0) | mask
        return cls(
            nodes=indexed,
            zones=tree,
            ids=tuple(node.id for node in indexed),
            all=(1 << len(indexed)) - 1,
            by_zone=zone_masks,
            within_zone=within_zone,
            by_country=by_country,
            by_origin={k: _mask(v) for k, v in by_origin.items()},
            by_component={k: _mask(v) for k, v in by_component.items()},
            by_components={k: _mask(v) for k, v in by_components.items()},
            by_status={k: _mask(v) for k, v in by_status.items()},
            by_provenance={k: _mask(v) for k, v in by_provenance.items()},
            by_drift={k: _mask(v) for k, v in by_drift.items()},
            by_labels={k: _mask(v) for k, v in by_labels.items()},
            by_shape={k: _mask(v) for k, v in by_shape.items()},
            positions=positions,
            ancestry=ancestry,
        )

    def __len__(self) -> int:
        """The number of nodes indexed."""
        return len(self.nodes)

    def ancestors(self, zone: str | None) -> tuple[str, ...]:
        """``zone`` and every zone it lies in, innermost first (just ``zone`` if unknown)."""
        return _enclosing(zone, self.ancestry)

    def country_of(self, zone: str | None) -> str | None:
        """The country of ``zone``; ``None`` for no zone or one missing from the tree."""
        found = self.zones.get(zone) if zone is not None else None
        return found.country if found is not None else None

    def position(self, node_id: str) -> int:
        """The node's bit number; ``NotFoundError`` when the index has no such node."""
        try:
            return self.positions[node_id]
        except KeyError:
            raise NotFoundError(f"node {node_id} is not in the node index") from None

    def node(self, node_id: str) -> NodeView:
        """The node with id ``node_id``."""
        return self.nodes[self.position(node_id)]

    def ids_of(self, mask: int) -> list[str]:
        """The ids of the nodes whose bits are set in ``mask``, in index order."""
        ids = self.ids
        # Two ways, fitted to measurements: few bits set, walk the set bits of each 64-bit
        # word; many, let C select over every node with bin() read backwards as flags.
        if mask.bit_count() * 14 < len(ids):
            words = (len(ids) + 63) // 64
            found = []
            for number, word in enumerate(
                struct.unpack(f"<{words}Q", mask.to_bytes(words * 8, "little"))
            ):
                base = number << 6
                while word:
                    lowest = word & -word
                    found.append(ids[base + lowest.bit_length() - 1])
                    word ^= lowest
            return found
        return list(compress(ids, bin(mask)[:1:-1].encode("ascii").translate(_BIT_FLAGS)))

    def active(self) -> int:
        """Nodes in status ``active``: the only ones placement may use."""
        return self.by_status.get(NodeStatus.ACTIVE, 0)

    def placeable(self) -> int:
        """Nodes anything may be placed on at all, by ``domain.fleet.placeable``.

        The one rule (active, and not drifted), applied to each (status, drift) group of
        the index rather than written again as masks.
        """
        found = 0
        for status, with_status in self.by_status.items():
            for drift, with_drift in self.by_drift.items():
                if placeable(NodeStatus(status), DriftStatus(drift)):
                    found |= with_status & with_drift
        return found

    def capacity(self, workload: WorkloadView) -> int:
        """Nodes with at least ``gpu_count`` GPUs (or MIG slices) of the kind asked for.

        Counted over the GPUs in the node views: admission passes every GPU of a node and
        checks which are booked itself (``scheduling.fleet``); other callers may pass only
        the free ones.
        """
        if workload.gpu_count <= 0:
            return self.all
        return fitting(self.by_shape, workload.gpu_count, gpu_request(workload))
