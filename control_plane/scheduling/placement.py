"""Which GPUs fit a request, and which nodes may take work at all: pure code, no I/O.

The policy engine says which nodes a workload may use; ``fleet.Occupancy`` orders them by
the placement strategy using these tests, and the service books GPUs on them in order.
"""

from control_plane.domain import fleet
from control_plane.policy.engine import GpuRequest, gpu_matches, mig_enabled
from control_plane.policy.models import GpuView, NodeView


def gpu_fits(gpu: GpuView, wanted: GpuRequest) -> bool:
    """Whether ``gpu`` is of the kind asked for: the engine's own test (``gpu_matches``)."""
    return gpu_matches(gpu.model, gpu.memory_total_bytes, mig_enabled(gpu.mig_mode), wanted)


def fitting_gpus(node: NodeView, wanted: GpuRequest) -> tuple[str, ...]:
    """The UUIDs of ``node``'s GPUs of the kind ``wanted``, in the node's order, booked or not."""
    return tuple(gpu.uuid for gpu in node.gpus if gpu_fits(gpu, wanted))


def placeable(node: NodeView) -> bool:
    """Whether anything may be placed on ``node`` at all (``domain.fleet.placeable``).

    The engine's baseline already admits only ``active`` nodes; this is the last check
    before a booking, on the node as the snapshot has it.
    """
    return fleet.placeable(node.status, node.drift_status)
