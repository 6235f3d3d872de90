"""Which GPUs fit a request, and which nodes may take work at all: pure code, no I/O.

The policy engine says which nodes a workload may use; ``fleet.Occupancy`` orders them by
the placement strategy using these tests, and the service books GPUs on them in order.
A request with a MIG profile books MIG slices instead: its units are the slices of that
profile on the node's fitting GPUs, named by their MIG device UUIDs.
"""

from control_plane.domain import fleet
from control_plane.policy.engine import GpuRequest, gpu_matches, mig_enabled
from control_plane.policy.models import GpuView, NodeView


def gpu_fits(gpu: GpuView, wanted: GpuRequest) -> bool:
    """Whether ``gpu`` is of the kind asked for: the engine's own test (``gpu_matches``)."""
    return gpu_matches(gpu.model, gpu.memory_total_bytes, mig_enabled(gpu.mig_mode), wanted)


def fitting_gpus(node: NodeView, wanted: GpuRequest) -> tuple[str, ...]:
    """The units of ``node`` of the kind ``wanted``, in the node's order, booked or not.

    Whole GPUs (their UUIDs) for a request without a MIG profile; for one with a profile,
    the MIG device UUIDs of the slices of that profile on the fitting GPUs, by GPU.
    """
    profile = wanted[2]
    if profile is None:
        return tuple(gpu.uuid for gpu in node.gpus if gpu_fits(gpu, wanted))
    return tuple(
        piece.uuid
        for gpu in node.gpus
        if gpu.mig_slices and gpu_fits(gpu, wanted)
        for piece in gpu.mig_slices
        if piece.profile == profile
    )


def placeable(node: NodeView) -> bool:
    """Whether anything may be placed on ``node`` at all (``domain.fleet.placeable``).

    The engine's baseline already admits only ``active`` nodes; this is the last check
    before a booking, on the node as the snapshot has it.
    """
    return fleet.placeable(node.status, node.drift_status)
