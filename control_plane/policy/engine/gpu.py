"""Which GPUs a workload can use: the one test that capacity and placement share.

A workload asks for ``gpu_count`` GPUs of one kind (a model substring, a minimum memory,
MIG on or off). A node has capacity for it when it holds that many GPUs of the kind;
placement (``scheduling.placement``) then picks the GPUs of a node with the same
``gpu_matches``, so the engine never offers a node that placement would find too small.
Nodes are grouped by *shape*, their GPUs counted by kind: fleets have few distinct
shapes, so capacity is worked out once per shape rather than once per node.
"""

from collections import Counter
from collections.abc import Mapping

from control_plane.policy.models import WorkloadView

#: A GPU as capacity sees it: model, memory in bytes (-1: unknown), MIG enabled.
GpuKind = tuple[str, int, bool]
#: A node's GPUs, grouped: (kind, how many), sorted.
Shape = tuple[tuple[GpuKind, int], ...]
#: A GPU as a node view reports it: model, memory in bytes (or None), MIG mode.
RawGpu = tuple[str, int | None, str | None]
#: What a workload asks of each GPU: a model substring (lower case), a minimum memory in
#: bytes (0 for none; unknown memory never qualifies) and whether MIG must be enabled.
GpuRequest = tuple[str, int, bool]


def gpu_request(workload: WorkloadView) -> GpuRequest:
    """The kind of GPU ``workload`` asks for, as a hashable key."""
    return (
        (workload.gpu_model or "").lower(),
        workload.min_gpu_memory_bytes or 0,
        workload.mig_profile is not None,
    )


def mig_enabled(mig_mode: str | None) -> bool:
    """Whether a GPU's reported MIG mode (``Enabled``, ``Disabled``, ``N/A``...) is on."""
    return (mig_mode or "").strip().lower() == "enabled"


def gpu_matches(model: str, memory: int | None, mig: bool, wanted: GpuRequest) -> bool:
    """Whether a GPU (model, memory in bytes or None, MIG on) is of the kind ``wanted``.

    The model contains the wanted model ignoring case, the memory is known and at least
    the minimum, and MIG is enabled exactly when a MIG profile is asked for. Capacity here
    and placement (``scheduling.placement``) both count GPUs with this one test.
    """
    model_part, minimum, mig_wanted = wanted
    return (
        model_part in model.lower()
        and memory is not None
        and memory >= minimum
        and mig == mig_wanted
    )


def shape_of(gpus: tuple[RawGpu, ...]) -> Shape:
    """A node's GPUs counted by kind, in a canonical order, so equal shapes compare equal."""
    kinds = Counter(
        (model, memory if memory is not None else -1, mig_enabled(mig_mode))
        for model, memory, mig_mode in gpus
    )
    return tuple(sorted(kinds.items()))


def fitting(by_shape: Mapping[Shape, int], count: int, wanted: GpuRequest) -> int:
    """The nodes (``by_shape`` maps a shape to its nodes' bits) with ``count`` GPUs ``wanted``."""
    result = 0
    for shape, mask in by_shape.items():
        matching = sum(
            n
            for (gpu_model, gpu_memory, gpu_mig), n in shape
            if gpu_matches(gpu_model, None if gpu_memory < 0 else gpu_memory, gpu_mig, wanted)
        )
        if matching >= count:
            result |= mask
    return result
