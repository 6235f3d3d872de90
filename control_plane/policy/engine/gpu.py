"""Which GPUs (or MIG slices) a workload can use: the one test capacity and placement share.

A workload asks for ``gpu_count`` units of one kind: whole GPUs (a model substring, a
minimum memory, MIG off), or, with a MIG profile, that many MIG slices of the profile on
MIG-enabled GPUs of the model and memory asked for. A node has capacity for it when it
holds that many units of the kind; placement (``scheduling.placement``) then picks the
GPUs or slices of a node with the same ``gpu_matches``, so the engine never offers a node
that placement would find too small. Nodes are grouped by *shape*, their GPUs counted by
kind (a MIG GPU's kind includes the profiles of its slices): fleets have few distinct
shapes, so capacity is worked out once per shape rather than once per node.
"""

from collections import Counter
from collections.abc import Mapping

from control_plane.policy.models import WorkloadView

#: A GPU as capacity sees it: model, memory in bytes (-1: unknown), MIG enabled, and the
#: profiles of its bookable MIG slices, sorted, one per slice (empty unless MIG is on).
GpuKind = tuple[str, int, bool, tuple[str, ...]]
#: A node's GPUs, grouped: (kind, how many), sorted.
Shape = tuple[tuple[GpuKind, int], ...]
#: A GPU as a node view reports it: model, memory in bytes (or None), MIG mode, and the
#: profiles of its bookable MIG slices.
RawGpu = tuple[str, int | None, str | None, tuple[str, ...]]
#: What a workload asks of each unit: a model substring (lower case), a minimum memory in
#: bytes of the GPU (0 for none; unknown memory never qualifies) and the MIG profile
#: (lower case) of the slices asked for, or None for whole GPUs with MIG off.
GpuRequest = tuple[str, int, str | None]


def mig_profile_key(profile: str) -> str:
    """A MIG profile as requests and slices are compared: ``"1G.10GB "`` is ``1g.10gb``."""
    return profile.strip().lower()


def gpu_request(workload: WorkloadView) -> GpuRequest:
    """The kind of GPU (or slice) ``workload`` asks for, as a hashable key."""
    profile = workload.mig_profile
    return (
        (workload.gpu_model or "").lower(),
        workload.min_gpu_memory_bytes or 0,
        None if profile is None else mig_profile_key(profile),
    )


def mig_enabled(mig_mode: str | None) -> bool:
    """Whether a GPU's reported MIG mode (``Enabled``, ``Disabled``, ``N/A``...) is on."""
    return (mig_mode or "").strip().lower() == "enabled"


def gpu_matches(model: str, memory: int | None, mig: bool, wanted: GpuRequest) -> bool:
    """Whether a GPU (model, memory in bytes or None, MIG on) is of the kind ``wanted``.

    The model contains the wanted model ignoring case, the memory is known and at least
    the minimum, and MIG is enabled exactly when a MIG profile is asked for (then the
    workload takes the GPU's slices of that profile, never the GPU). Capacity here and
    placement (``scheduling.placement``) both count GPUs with this one test.
    """
    model_part, minimum, profile = wanted
    return (
        model_part in model.lower()
        and memory is not None
        and memory >= minimum
        and mig == (profile is not None)
    )


def units_of(kind: GpuKind, wanted: GpuRequest) -> int:
    """The units ``wanted`` one GPU of ``kind`` offers: 1 or 0, or its slices of the profile."""
    model, memory, mig, profiles = kind
    if not gpu_matches(model, None if memory < 0 else memory, mig, wanted):
        return 0
    profile = wanted[2]
    return 1 if profile is None else profiles.count(profile)


def shape_of(gpus: tuple[RawGpu, ...]) -> Shape:
    """A node's GPUs counted by kind, in a canonical order, so equal shapes compare equal."""
    kinds: Counter[GpuKind] = Counter()
    for model, memory, mig_mode, profiles in gpus:
        mig = mig_enabled(mig_mode)
        slices = tuple(sorted(mig_profile_key(p) for p in profiles)) if mig else ()
        kinds[(model, memory if memory is not None else -1, mig, slices)] += 1
    return tuple(sorted(kinds.items()))


def fitting(by_shape: Mapping[Shape, int], count: int, wanted: GpuRequest) -> int:
    """The nodes (``by_shape`` maps a shape to its nodes' bits) with ``count`` units ``wanted``."""
    result = 0
    for shape, mask in by_shape.items():
        if sum(n * units_of(kind, wanted) for kind, n in shape) >= count:
            result |= mask
    return result
