"""Metering vocabulary: what usage is grouped by, and what a MIG slice weighs.

Plain values shared by the metering feature, which reads and writes the rollups, and by
scheduling, whose GPU-hour quotas charge a MIG slice by the same weight the rollups use.
"""

import re
from enum import StrEnum

#: A GPU has seven compute slices on the A100, H100 and H200 (MIG's ``<g>g.<memory>``).
MIG_COMPUTE_SLICES = 7
_PROFILE = re.compile(r"^([1-7])g\.")


def mig_slice_weight(profile: str | None) -> float:
    """A MIG slice's share of its GPU, the weight GPU-hours charge it with.

    ``g/7`` for a profile ``<g>g.<memory>`` (``1g.10gb``: 1/7, ``3g.40gb``: 3/7,
    ``7g.80gb``: 1), and 1, a whole GPU, for None (no slice) or a profile of another
    shape, so what cannot be read is never charged less. The migration's SQL function
    ``mig_slice_weight`` is the same rule; the rollups use that one.
    """
    found = None if profile is None else _PROFILE.match(profile)
    if found is None:
        return 1.0
    return min(1.0, int(found.group(1)) / MIG_COMPUTE_SLICES)


class UsageDimension(StrEnum):
    """What usage can be grouped and filtered by; each is a column of the rollups.

    Zone, zone country, origins, provenance and node status are the node's at the time
    of use (``node_state_history``), not today's.
    """

    WORKLOAD = "workload"
    TENANT = "tenant"
    NODE = "node"
    ZONE = "zone"
    ZONE_COUNTRY = "zone_country"
    ORIGIN_COUNTRY = "origin_country"
    GPU_ORIGIN = "gpu_origin"
    PROVENANCE_STATUS = "provenance_status"
    NODE_STATUS = "node_status"
    MIG_PROFILE = "mig_profile"


#: The dimensions fleet capacity has (it belongs to no workload, tenant or slice).
CAPACITY_DIMENSIONS = frozenset(
    {
        UsageDimension.ZONE,
        UsageDimension.ZONE_COUNTRY,
        UsageDimension.ORIGIN_COUNTRY,
        UsageDimension.GPU_ORIGIN,
        UsageDimension.PROVENANCE_STATUS,
        UsageDimension.NODE_STATUS,
    }
)


class UsageMeasure(StrEnum):
    """What a usage query sums: GPU-hours used by workloads, or GPU-hours the fleet had."""

    USAGE = "usage"
    CAPACITY = "capacity"


class UsageGranularity(StrEnum):
    """One row per group over the whole period, or per group and UTC day or hour."""

    TOTAL = "total"
    DAY = "day"
    HOUR = "hour"
