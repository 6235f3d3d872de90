"""Which GPUs fit a request, and which nodes may take work at all: pure code, no I/O.

The policy engine says which nodes a workload may use; ``fleet.Occupancy`` orders them by
the placement strategy using these tests, and the service books GPUs on them in order.
"""

from control_plane.inventory.models import DriftStatus, NodeStatus
from control_plane.policy.models import GpuView, NodeView, WorkloadView

#: A GPU request's kind: model substring (lower case), minimum memory in bytes, MIG wanted.
GpuKind = tuple[str, int, bool]


def gpu_kind(workload: WorkloadView) -> GpuKind:
    """The kind of GPU ``workload`` asks for, as a hashable key."""
    return (
        (workload.gpu_model or "").lower(),
        workload.min_gpu_memory_bytes or 0,
        workload.mig_profile is not None,
    )


def gpu_fits(gpu: GpuView, kind: GpuKind) -> bool:
    """Whether ``gpu`` is of the kind asked for.

    The same test as the engine's capacity check (``NodeIndex.capacity``): the model
    contains the wanted model ignoring case, the memory is known and at least the minimum,
    and MIG is enabled exactly when a MIG profile is asked for.
    """
    model, memory, mig = kind
    if model not in gpu.model.lower():
        return False
    if gpu.memory_total_bytes is None or gpu.memory_total_bytes < memory:
        return False
    return ((gpu.mig_mode or "").strip().lower() == "enabled") == mig


def fitting_gpus(node: NodeView, kind: GpuKind) -> tuple[str, ...]:
    """The UUIDs of ``node``'s GPUs of ``kind``, in the node's order, booked or not."""
    return tuple(gpu.uuid for gpu in node.gpus if gpu_fits(gpu, kind))


def placeable(node: NodeView) -> bool:
    """Whether anything may be placed on ``node`` at all: active, and not drifted.

    The engine's baseline already admits only ``active`` nodes, and a drifted node is
    quarantined; this holds even if a drifted node were somehow active again.
    """
    return node.status is NodeStatus.ACTIVE and node.drift_status is DriftStatus.NONE
