"""Placement order, GPU fit and the occupancy belief: pure code, no services."""

from control_plane.domain.fleet import DriftStatus, NodeStatus
from control_plane.facts.fleet import FleetSnapshot
from control_plane.policy.engine import NodeIndex, gpu_request
from control_plane.policy.models import GpuView, MigSliceView, NodeView, WorkloadView
from control_plane.scheduling.fleet import Occupancy
from control_plane.scheduling.models import PlacementStrategy
from control_plane.scheduling.placement import fitting_gpus, gpu_fits, placeable

H100 = "NVIDIA H100 80GB HBM3"
A100 = "NVIDIA A100-SXM4-40GB"
MEMORY = 85_520_809_984
BINPACK, SPREAD = PlacementStrategy.BINPACK, PlacementStrategy.SPREAD


def node(
    hostname: str,
    gpus: int,
    status: NodeStatus = NodeStatus.ACTIVE,
    drift_status: DriftStatus = DriftStatus.NONE,
    model: str = H100,
) -> NodeView:
    views = tuple(GpuView(f"GPU-{hostname}-{i}", model, MEMORY, "Disabled") for i in range(gpus))
    return NodeView(hostname, hostname, "jp", status, drift_status, gpus=views)


def occupancy(nodes: list[NodeView], reserved: tuple[str, ...] = ()) -> Occupancy:
    # The index orders nodes as the fleet query does: by hostname.
    ordered = sorted(nodes, key=lambda n: (n.hostname, n.id))
    return Occupancy(FleetSnapshot(1, NodeIndex.build(ordered, {})), reserved, loaded_at=0.0)


def order(
    belief: Occupancy,
    strategy: PlacementStrategy,
    gpu_count: int = 1,
    eligible: int | None = None,
    gpu_model: str | None = None,
    limit: int = 100,
) -> list[str]:
    workload = WorkloadView(tenant="research", gpu_count=gpu_count, gpu_model=gpu_model)
    mask = belief.snapshot.index.all if eligible is None else eligible
    positions = belief.candidates(mask, workload, strategy, limit)
    return [belief.snapshot.nodes[p].hostname for p in positions]


def test_binpack_prefers_the_fullest_node_that_fits_and_spread_the_emptiest() -> None:
    # a and c have 2 free GPUs (c has 4, two booked), b has 8, d has 1.
    belief = occupancy(
        [node("b", 8), node("a", 2), node("c", 4), node("d", 1)],
        reserved=("GPU-c-0", "GPU-c-1"),
    )
    assert order(belief, BINPACK) == ["d", "a", "c", "b"]
    assert order(belief, SPREAD) == ["b", "a", "c", "d"]
    assert order(belief, BINPACK, gpu_count=2) == ["a", "c", "b"]
    assert order(belief, BINPACK, gpu_count=9) == []
    assert order(belief, BINPACK, limit=2) == ["d", "a"]


def test_only_eligible_nodes_are_candidates() -> None:
    belief = occupancy([node("a", 2), node("b", 2), node("c", 2)])
    index = belief.snapshot.index
    eligible = (1 << index.position("a")) | (1 << index.position("c"))
    assert order(belief, BINPACK, eligible=eligible) == ["a", "c"]
    assert order(belief, BINPACK, eligible=0) == []


def test_booking_and_freeing_move_a_node_between_buckets() -> None:
    belief = occupancy([node("a", 2), node("b", 3)])
    assert order(belief, BINPACK) == ["a", "b"]
    belief.booked(["GPU-a-0", "GPU-a-1"])
    assert order(belief, BINPACK) == ["b"]
    belief.booked(["GPU-b-0", "GPU-b-1"])
    assert order(belief, BINPACK) == ["b"]
    assert order(belief, BINPACK, gpu_count=2) == []
    belief.freed(["GPU-a-1", "GPU-unknown"])
    assert order(belief, BINPACK) == ["a", "b"]
    # What the database says wins over the belief, for one node (and only that node).
    position = belief.snapshot.index.position("b")
    belief.mark(position, busy=["GPU-b-2"], free=["GPU-b-0", "GPU-b-1", "GPU-a-0"])
    assert order(belief, SPREAD) == ["b", "a"]
    assert order(belief, BINPACK, gpu_count=2) == ["b"]


def test_each_gpu_kind_is_counted_on_its_own() -> None:
    belief = occupancy([node("a", 4, model=A100), node("h", 2)])
    assert order(belief, BINPACK, gpu_model="h100") == ["h"]
    assert order(belief, BINPACK, gpu_model="a100", gpu_count=3) == ["a"]
    assert order(belief, BINPACK) == ["h", "a"]
    belief.booked(["GPU-h-0"])
    assert order(belief, BINPACK, gpu_model="h100", gpu_count=2) == []
    assert order(belief, BINPACK, gpu_count=2) == ["a"]
    workload = WorkloadView(tenant="t", gpu_model="A100")
    assert belief.fitting(belief.snapshot.index.position("a"), workload) == (
        "GPU-a-0",
        "GPU-a-1",
        "GPU-a-2",
        "GPU-a-3",
    )


def test_only_active_undrifted_nodes_are_placeable() -> None:
    assert placeable(node("a", 1))
    assert not placeable(node("b", 1, status=NodeStatus.OFFLINE))
    assert not placeable(node("c", 1, drift_status=DriftStatus.DRIFTED))


def test_the_index_counts_placeable_nodes_by_the_same_rule() -> None:
    nodes = [
        node(f"n-{status}-{drift}", 1, status=status, drift_status=drift)
        for status in NodeStatus
        for drift in DriftStatus
    ]
    index = NodeIndex.build(nodes, {})
    expected = {n.id for n in nodes if placeable(n)}
    assert set(index.ids_of(index.placeable())) == expected == {"n-active-none"}


def test_gpu_fit_mirrors_the_engine() -> None:
    def fits(gpu: GpuView, **request: object) -> bool:
        workload = WorkloadView(tenant="t", **request)  # type: ignore[arg-type]
        single = NodeView("n", "n", "jp", gpus=(gpu,))
        fit = bool(fitting_gpus(single, gpu_request(workload)))
        if workload.mig_profile is None:
            assert gpu_fits(gpu, gpu_request(workload)) == fit
        # The engine's capacity check, on a node with just this GPU, agrees.
        index = NodeIndex.build([single], {})
        assert (index.capacity(workload) != 0) == fit
        return fit

    gpu = GpuView("GPU-1", H100, MEMORY, "Disabled")
    assert fits(gpu, gpu_model="h100")
    assert not fits(gpu, gpu_model="A100")
    assert not fits(gpu, min_gpu_memory_bytes=MEMORY + 1)
    assert not fits(gpu, mig_profile="1g.10gb")
    mig = GpuView("GPU-2", H100, MEMORY, "Enabled", (MigSliceView("MIG-2-0", "1g.10gb"),))
    assert fits(mig, mig_profile="1g.10gb")
    assert not fits(mig, mig_profile="3g.40gb")
    assert not fits(mig)
    # MIG enabled but no slice carved out: nothing to book, for either kind of request.
    bare = GpuView("GPU-4", H100, MEMORY, "Enabled")
    assert not fits(bare, mig_profile="1g.10gb")
    assert not fits(bare)
    # Slices of a GPU whose MIG mode is off are not offered.
    off = GpuView("GPU-5", H100, MEMORY, "Disabled", (MigSliceView("MIG-5-0", "1g.10gb"),))
    assert not fits(off, mig_profile="1g.10gb")
    assert fits(off)
    # Unknown memory never counts, as in the engine's capacity check.
    assert not fits(GpuView("GPU-3", H100, None, None))
    assert fitting_gpus(node("a", 2), gpu_request(WorkloadView(tenant="t"))) == (
        "GPU-a-0",
        "GPU-a-1",
    )


def mig_node(hostname: str, profiles_per_gpu: list[tuple[str, ...]]) -> NodeView:
    views = tuple(
        GpuView(
            f"GPU-{hostname}-{i}",
            A100,
            MEMORY,
            "Enabled",
            tuple(MigSliceView(f"MIG-{hostname}-{i}-{n}", p) for n, p in enumerate(profiles)),
        )
        for i, profiles in enumerate(profiles_per_gpu)
    )
    return NodeView(hostname, hostname, "jp", gpus=views)


def test_the_belief_counts_mig_slices_of_the_profile_as_units() -> None:
    # a: one GPU with 7 x 1g.10gb (2 booked); b: two GPUs with 1g.10gb + 3g.40gb each.
    belief = occupancy(
        [
            mig_node("a", [("1g.10gb",) * 7]),
            mig_node("b", [("1g.10gb", "3g.40gb"), ("1g.10gb", "3g.40gb")]),
            node("c", 8),
        ],
        reserved=("MIG-a-0-0", "MIG-a-0-1"),
    )
    small = WorkloadView(tenant="t", gpu_count=3, mig_profile="1g.10gb")
    index = belief.snapshot.index
    assert [
        belief.snapshot.nodes[p].hostname for p in belief.candidates(index.all, small, BINPACK, 9)
    ] == ["a"]
    pair = WorkloadView(tenant="t", gpu_count=2, mig_profile="1g.10gb")
    # Binpack: b has 2 free, a has 5.
    assert [
        belief.snapshot.nodes[p].hostname for p in belief.candidates(index.all, pair, BINPACK, 9)
    ] == ["b", "a"]
    claimed = belief.claim(0, small)
    assert claimed == ["MIG-a-0-2", "MIG-a-0-3", "MIG-a-0-4"]
    # Two left on a; the whole-GPU kind never sees the MIG nodes.
    assert [
        belief.snapshot.nodes[p].hostname for p in belief.candidates(index.all, small, BINPACK, 9)
    ] == []
    assert order(belief, BINPACK) == ["c"]
    belief.freed(["MIG-a-0-0"])
    assert [
        belief.snapshot.nodes[p].hostname for p in belief.candidates(index.all, small, BINPACK, 9)
    ] == ["a"]
