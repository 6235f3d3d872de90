"""Choosing a node among the eligible ones: pure code, no I/O.

The policy engine says which nodes a workload may use; this module orders them by the
placement strategy and says which of a node's free GPUs fit the request. The service then
tries to lock GPUs on the nodes in that order.
"""

from collections.abc import Iterable, Sequence

from control_plane.inventory.models import DriftStatus, NodeStatus
from control_plane.policy.models import GpuView, NodeView, WorkloadView
from control_plane.scheduling.models import PlacementStrategy


def gpu_fits(gpu: GpuView, workload: WorkloadView) -> bool:
    """Whether ``gpu`` is of the kind ``workload`` asks for.

    The same test as the engine's capacity check (``NodeIndex.capacity``): the model
    contains ``gpu_model`` ignoring case, the memory is known and at least the minimum,
    and MIG is enabled exactly when a MIG profile is asked for.
    """
    wanted_model = (workload.gpu_model or "").lower()
    if wanted_model not in gpu.model.lower():
        return False
    if gpu.memory_total_bytes is None or gpu.memory_total_bytes < (
        workload.min_gpu_memory_bytes or 0
    ):
        return False
    mig_enabled = (gpu.mig_mode or "").strip().lower() == "enabled"
    return mig_enabled == (workload.mig_profile is not None)


def fitting_gpus(node: NodeView, workload: WorkloadView) -> list[str]:
    """The UUIDs of ``node``'s free GPUs that fit ``workload``, in the node's order."""
    return [gpu.uuid for gpu in node.gpus if gpu_fits(gpu, workload)]


def placeable(node: NodeView) -> bool:
    """Whether anything may be placed on ``node`` at all: active, and not drifted.

    The engine's baseline already admits only ``active`` nodes, and a drifted node is
    quarantined; this holds even if a drifted node were somehow active again.
    """
    return node.status is NodeStatus.ACTIVE and node.drift_status is DriftStatus.NONE


def candidate_order(
    nodes: Iterable[NodeView],
    eligible_ids: Sequence[str],
    workload: WorkloadView,
    strategy: PlacementStrategy,
) -> list[NodeView]:
    """The eligible nodes in the order to try them.

    ``binpack``: fewest fitting free GPUs first, so partly used nodes fill up and whole
    nodes stay free; ``spread``: most first. Ties go by hostname, then id, so the order
    is the same for every caller looking at the same inventory.
    """
    wanted = set(eligible_ids)
    scored = [
        (free, node)
        for node in nodes
        if node.id in wanted
        and placeable(node)
        and (free := len(fitting_gpus(node, workload))) >= workload.gpu_count
    ]
    sign = 1 if strategy is PlacementStrategy.BINPACK else -1
    scored.sort(key=lambda pair: (sign * pair[0], pair[1].hostname, pair[1].id))
    return [node for _, node in scored]
