"""Placement order and GPU fit: pure code, no services."""

from control_plane.inventory.models import DriftStatus, NodeStatus
from control_plane.policy.models import GpuView, NodeView, WorkloadView
from control_plane.scheduling.models import PlacementStrategy
from control_plane.scheduling.placement import candidate_order, fitting_gpus, gpu_fits

H100 = "NVIDIA H100 80GB HBM3"
MEMORY = 85_520_809_984


def node(
    hostname: str,
    free: int,
    status: NodeStatus = NodeStatus.ACTIVE,
    drift_status: DriftStatus = DriftStatus.NONE,
) -> NodeView:
    gpus = tuple(GpuView(f"GPU-{hostname}-{i}", H100, MEMORY, "Disabled") for i in range(free))
    return NodeView(hostname, hostname, "jp", status, drift_status, gpus=gpus)


def order(nodes: list[NodeView], strategy: PlacementStrategy, gpu_count: int = 1) -> list[str]:
    workload = WorkloadView(tenant="research", gpu_count=gpu_count)
    ids = [n.id for n in nodes]
    return [n.hostname for n in candidate_order(nodes, ids, workload, strategy)]


def test_binpack_prefers_the_fullest_node_that_fits_and_spread_the_emptiest() -> None:
    nodes = [node("b", 8), node("a", 2), node("c", 2), node("d", 1)]
    assert order(nodes, PlacementStrategy.BINPACK) == ["d", "a", "c", "b"]
    assert order(nodes, PlacementStrategy.SPREAD) == ["b", "a", "c", "d"]
    assert order(nodes, PlacementStrategy.BINPACK, gpu_count=2) == ["a", "c", "b"]


def test_only_eligible_active_undrifted_nodes_are_candidates() -> None:
    nodes = [
        node("a", 2),
        node("b", 2, status=NodeStatus.OFFLINE),
        node("c", 2, drift_status=DriftStatus.DRIFTED),
        node("d", 2),
    ]
    workload = WorkloadView(tenant="research")
    found = candidate_order(nodes, ["a", "b", "c"], workload, PlacementStrategy.BINPACK)
    assert [n.id for n in found] == ["a"]


def test_gpu_fit_mirrors_the_engine() -> None:
    gpu = GpuView("GPU-1", H100, MEMORY, "Disabled")
    assert gpu_fits(gpu, WorkloadView(tenant="t", gpu_model="h100"))
    assert not gpu_fits(gpu, WorkloadView(tenant="t", gpu_model="A100"))
    assert not gpu_fits(gpu, WorkloadView(tenant="t", min_gpu_memory_bytes=MEMORY + 1))
    assert not gpu_fits(gpu, WorkloadView(tenant="t", mig_profile="1g.10gb"))
    mig = GpuView("GPU-2", H100, MEMORY, "Enabled")
    assert gpu_fits(mig, WorkloadView(tenant="t", mig_profile="1g.10gb"))
    assert not gpu_fits(mig, WorkloadView(tenant="t"))
    # Unknown memory never counts, as in the engine's capacity check.
    assert not gpu_fits(GpuView("GPU-3", H100, None, None), WorkloadView(tenant="t"))
    assert fitting_gpus(node("a", 2), WorkloadView(tenant="t")) == ["GPU-a-0", "GPU-a-1"]
