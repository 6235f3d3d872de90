"""The fleet as admission places on it: one snapshot per generation, and which GPUs are free.

Loading 5,000 nodes with 40,000 GPUs and indexing them takes a few hundred milliseconds
(``facts.fleet.load_snapshot``); an admission must take a few. So each API process keeps a
``FleetCache``: the snapshot for the fleet's current *generation*. An admission reads the
generation (one row) and reuses the snapshot when it has not moved.

Which GPUs are booked changes with every admission, so it is not part of the snapshot.
(Here a "GPU" is a unit placement books: a whole GPU, or a MIG slice by its MIG device
UUID for a request with a MIG profile; the belief tracks both the same way.)
The cache also keeps an ``Occupancy``: this process's belief about which GPUs are free,
per node, with the nodes bucketed by how many free GPUs of a kind they have, so bin-pack
and spread find their first candidate with a few integer operations instead of counting
40,000 GPUs. The belief is only a hint for the order in which nodes are tried: the
booking itself locks the GPUs in the database and checks their reservations there, and a
booking that comes back short says which of the node's GPUs were still free, which the
belief takes over (``FleetCache.missed``). The belief is
reloaded from the database when it is older than ``resync_seconds`` and before placement
says "no capacity", so a denial never rests on a stale view.
"""

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from control_plane.core.db import DbConnection
from control_plane.facts.fleet import FleetSnapshot, fleet_generation, load_snapshot
from control_plane.policy.engine import GpuRequest, gpu_request
from control_plane.policy.models import NodeView, WorkloadView
from control_plane.scheduling import repository
from control_plane.scheduling.models import PlacementStrategy
from control_plane.scheduling.placement import fitting_gpus


class Occupancy:
    """One process's belief about which GPUs of one snapshot are free, by node.

    For each GPU kind asked for, nodes are bucketed by how many free GPUs of that kind
    they have (a bitmask over the index per count), kept up to date as GPUs are booked and
    freed. Not thread-safe by itself: ``FleetCache`` serializes access.
    """

    def __init__(self, snapshot: FleetSnapshot, reserved: Iterable[str], loaded_at: float):
        """Start from the set of GPU UUIDs the database says are booked."""
        self.snapshot = snapshot
        self.loaded_at = loaded_at
        booked = set(reserved)
        self._free: list[set[str]] = [
            {gpu.uuid for gpu in node.gpus if gpu.uuid not in booked} for node in snapshot.nodes
        ]
        self._position = {
            gpu.uuid: position for position, node in enumerate(snapshot.nodes) for gpu in node.gpus
        }
        # MIG slices are units of their own, by MIG device UUID (few nodes have any).
        for position, node in enumerate(snapshot.nodes):
            for gpu in node.gpus:
                if gpu.mig_slices:
                    for piece in gpu.mig_slices:
                        self._position[piece.uuid] = position
                        if piece.uuid not in booked:
                            self._free[position].add(piece.uuid)
        #: Per kind: each node's GPUs of that kind (static), its count of free ones, and
        #: the nodes by that count.
        self._fitting: dict[GpuRequest, list[tuple[str, ...]]] = {}
        self._counts: dict[GpuRequest, list[int]] = {}
        self._buckets: dict[GpuRequest, list[int]] = {}

    def _track(self, kind: GpuRequest) -> None:
        if kind in self._buckets:
            return
        fitting = [fitting_gpus(node, kind) for node in self.snapshot.nodes]
        counts = [
            sum(1 for uuid in uuids if uuid in free)
            for uuids, free in zip(fitting, self._free, strict=True)
        ]
        buckets = [0] * (max(counts, default=0) + 1)
        for position, count in enumerate(counts):
            buckets[count] |= 1 << position
        self._fitting[kind] = fitting
        self._counts[kind] = counts
        self._buckets[kind] = buckets

    def _recount(self, position: int) -> None:
        bit = 1 << position
        free = self._free[position]
        for kind, counts in self._counts.items():
            count = sum(1 for uuid in self._fitting[kind][position] if uuid in free)
            old = counts[position]
            if count == old:
                continue
            buckets = self._buckets[kind]
            buckets[old] &= ~bit
            while len(buckets) <= count:
                buckets.append(0)
            buckets[count] |= bit
            counts[position] = count

    def fitting(self, position: int, workload: WorkloadView) -> tuple[str, ...]:
        """The UUIDs of the node's GPUs of the kind ``workload`` asks for, free or not."""
        kind = gpu_request(workload)
        self._track(kind)
        return self._fitting[kind][position]

    def candidates(
        self,
        eligible: int,
        workload: WorkloadView,
        strategy: PlacementStrategy,
        limit: int,
    ) -> list[int]:
        """Up to ``limit`` node positions among ``eligible`` to try, best first.

        ``binpack``: fewest free GPUs of the kind (at least ``gpu_count``) first, so
        partly used nodes fill up and whole nodes stay free; ``spread``: most first. Ties
        go by the index's order (hostname, then id), the same for every caller.
        """
        kind = gpu_request(workload)
        self._track(kind)
        buckets = self._buckets[kind]
        counts = range(max(workload.gpu_count, 1), len(buckets))
        if strategy is PlacementStrategy.SPREAD:
            counts = counts[::-1]
        found: list[int] = []
        for count in counts:
            mask = eligible & buckets[count]
            while mask and len(found) < limit:
                lowest = mask & -mask
                found.append(lowest.bit_length() - 1)
                mask ^= lowest
            if len(found) >= limit:
                break
        return found

    def claim(self, position: int, workload: WorkloadView) -> list[str]:
        """Mark ``gpu_count`` of the node's free GPUs of the kind as booked; return them.

        Made while a request books the node, so this process's other requests pick other
        GPUs (or nodes) instead of colliding; the caller gives back what it did not book.
        """
        free = self._free[position]
        claimed = [uuid for uuid in self.fitting(position, workload) if uuid in free]
        claimed = claimed[: workload.gpu_count]
        self.booked(claimed)
        return claimed

    def booked(self, uuids: Iterable[str]) -> None:
        """GPUs this process has just booked."""
        self._change(uuids, free=False)

    def freed(self, uuids: Iterable[str]) -> None:
        """GPUs this process has just freed (release, lease expiry)."""
        self._change(uuids, free=True)

    def _change(self, uuids: Iterable[str], *, free: bool) -> None:
        """Mark GPUs of this snapshot free or booked (others are ignored); recount their nodes."""
        touched = set()
        for uuid in uuids:
            position = self._position.get(uuid)
            if position is not None:
                if free:
                    self._free[position].add(uuid)
                else:
                    self._free[position].discard(uuid)
                touched.add(position)
        for position in touched:
            self._recount(position)

    def mark(self, position: int, busy: Iterable[str], free: Iterable[str]) -> None:
        """Correct one node's GPUs: ``busy`` are booked, ``free`` are free (claims win)."""
        node_units = {gpu.uuid for gpu in self.snapshot.nodes[position].gpus}
        for gpu in self.snapshot.nodes[position].gpus:
            node_units.update(piece.uuid for piece in gpu.mig_slices)
        current = self._free[position]
        current.update(node_units.intersection(free))
        current.difference_update(busy)
        self._recount(position)


@dataclass(frozen=True, slots=True)
class Pick:
    """A candidate node chosen for one request, with the GPUs claimed on it meanwhile."""

    position: int
    node: NodeView
    #: The node's GPUs of the kind asked for, booked or not (what the booking may lock).
    fitting: tuple[str, ...]
    #: The free ones this request claimed in the belief (what it will try to lock first).
    claimed: tuple[str, ...]


class FleetCache:
    """One per API process: the current fleet snapshot and the occupancy belief over it.

    Thread-safe: the snapshot is rebuilt by one thread while the others wait (a decision
    must not be taken on a fleet older than the generation it read), and the occupancy is
    read and changed under a lock.

    Claims: a request that picks a node claims the GPUs it means to book, so the process's
    other requests pick other GPUs or nodes instead of colliding on the same rows. Until
    the request settles, its claims count as booked in every belief, including one reloaded
    from the database meanwhile (where they are not booked yet).
    """

    def __init__(
        self, resync_seconds: float = 5.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        """``resync_seconds``: how old the occupancy belief may get before it is reloaded."""
        self._resync_seconds = resync_seconds
        self.clock = clock
        self._rebuild = threading.Lock()
        self._lock = threading.Lock()
        self._occupancy: Occupancy | None = None
        self._claimed: set[str] = set()

    def current(self, conn: DbConnection) -> Occupancy:
        """The occupancy over the snapshot of the fleet's current generation.

        Reads the generation (one row); rebuilds the snapshot when it moved, and reloads
        the reservations when the belief is older than ``resync_seconds``.
        """
        occupancy = self._of_generation(conn, fleet_generation(conn))
        if self.clock() - occupancy.loaded_at > self._resync_seconds:
            occupancy = self.resync(conn, occupancy)
        return occupancy

    def snapshot(self, conn: DbConnection) -> FleetSnapshot:
        """The snapshot of the fleet's current generation (``facts.fleet.SnapshotSource``).

        Its callers (the admission webhooks, compliance, what-if) book nothing, so the
        bookings are not reloaded for them: a webhook review never waits for that read.
        """
        return self._of_generation(conn, fleet_generation(conn)).snapshot

    def _of_generation(self, conn: DbConnection, generation: int) -> Occupancy:
        """The occupancy, over a snapshot rebuilt first if ``generation`` is newer."""
        occupancy = self._occupancy
        if occupancy is None or occupancy.snapshot.generation < generation:
            with self._rebuild:
                occupancy = self._occupancy
                if occupancy is None or occupancy.snapshot.generation < generation:
                    snapshot = load_snapshot(conn)
                    reserved = repository.reserved_gpu_uuids(conn)
                    with self._lock:
                        occupancy = Occupancy(snapshot, reserved | self._claimed, self.clock())
                        self._occupancy = occupancy
        return occupancy

    def resync(self, conn: DbConnection, occupancy: Occupancy) -> Occupancy:
        """Reload which GPUs are booked from the database; the snapshot stays."""
        reserved = repository.reserved_gpu_uuids(conn)
        with self._lock:
            current = self._occupancy
            if current is not occupancy:
                return current or occupancy
            fresh = Occupancy(occupancy.snapshot, reserved | self._claimed, self.clock())
            self._occupancy = fresh
            return fresh

    def pick(
        self,
        occupancy: Occupancy,
        eligible: int,
        workload: WorkloadView,
        strategy: PlacementStrategy,
    ) -> Pick | None:
        """The best of the ``eligible`` nodes (bitmask) by ``strategy``, with a claim on it."""
        with self._lock:
            found = occupancy.candidates(eligible, workload, strategy, 1)
            if not found:
                return None
            position = found[0]
            claimed = tuple(occupancy.claim(position, workload))
            self._claimed.update(claimed)
            return Pick(
                position,
                occupancy.snapshot.nodes[position],
                occupancy.fitting(position, workload),
                claimed,
            )

    def missed(self, occupancy: Occupancy, pick: Pick, lockable: Iterable[str]) -> None:
        """A booking on the picked node came back short: only ``lockable`` GPUs were free.

        Of the node's GPUs of the kind, the others are booked or being booked by another
        transaction (perhaps in another process). The request's claims there close without
        freeing anything: what it claimed is what someone else is booking. Other requests'
        open claims stay claimed.
        """
        with self._lock:
            self._claimed.difference_update(pick.claimed)
            busy = set(pick.fitting).difference(lockable) | self._claimed
            occupancy.mark(pick.position, busy, lockable)

    def settle(self, claimed: Iterable[str], booked: Iterable[str]) -> None:
        """A request ended: its claims close; the claimed GPUs it did not book are free."""
        claims = set(claimed)
        with self._lock:
            self._claimed -= claims
            if self._occupancy is not None:
                self._occupancy.freed(claims - set(booked))

    def freed(self, uuids: Iterable[str]) -> None:
        """Tell the belief about GPUs this process freed (after commit)."""
        with self._lock:
            if self._occupancy is not None:
                self._occupancy.freed(uuids)
