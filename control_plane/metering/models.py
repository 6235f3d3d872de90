"""Pydantic models for metering: a usage query's parameters, its rows and its answer.

Rows come from the rollups (``usage_daily``, ``usage_hourly``, ``capacity_hourly``),
never from reservations: see docs/metering.md for what each number means.
"""

from datetime import datetime
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, Field

from control_plane.domain.countries import CountryCode
from control_plane.domain.fleet import ProvenanceStatus
from control_plane.domain.metering import UsageDimension, UsageGranularity, UsageMeasure
from control_plane.domain.types import TenantFilter, ZoneFilter

#: Rows one usage answer may hold at most; a larger one says ``truncated``.
MAX_USAGE_ROWS = 10_000
#: The longest period one query may cover (days): a year and a bit.
MAX_USAGE_DAYS = 400


class UsageQuery(BaseModel):
    """The query parameters of ``GET /v1/usage``.

    ``since`` and ``until`` default to the start of the current UTC month and the start
    of the next hour; both must be whole UTC hours. The tenant and zone must exist.
    """

    since: AwareDatetime | None = Field(default=None, description="Start (inclusive), UTC hour.")
    until: AwareDatetime | None = Field(default=None, description="End (exclusive), UTC hour.")
    measure: UsageMeasure = UsageMeasure.USAGE
    group_by: list[UsageDimension] = Field(default_factory=list, max_length=10)
    granularity: UsageGranularity = UsageGranularity.TOTAL
    tenant: TenantFilter = Field(default=None, description="Tenant slug.")
    zone: ZoneFilter = Field(default=None, description="Zone slug (that zone only).")
    node_id: UUID | None = None
    workload_id: UUID | None = None
    origin_country: CountryCode | None = None
    provenance_status: ProvenanceStatus | None = None
    limit: int = Field(default=1000, ge=1, le=MAX_USAGE_ROWS)


class UsageRow(BaseModel):
    """One group's GPU-hours; a dimension the query did not group by is null."""

    period_start: datetime | None
    workload_id: UUID | None
    tenant: str | None
    node_id: UUID | None
    zone: str | None
    zone_country: str | None
    origin_country: str | None
    gpu_origin: str | None
    provenance_status: str | None
    node_status: str | None
    mig_profile: str | None
    gpu_hours: float = Field(description="GPU-equivalent hours: a MIG slice weighs its share.")
    mig_slice_hours: float = Field(description="MIG slice-hours, unweighted.")


class UsageReport(BaseModel):
    """The answer of ``GET /v1/usage``: the groups, their sums, and how fresh they are."""

    measure: UsageMeasure
    since: datetime
    until: datetime
    granularity: UsageGranularity
    group_by: list[UsageDimension]
    source: str = Field(description="The rollup the rows were read from.")
    metered_until: datetime = Field(
        description="Running workloads and capacity are in the rollups up to here."
    )
    rows: list[UsageRow]
    truncated: bool
    gpu_hours: float
    mig_slice_hours: float


class RollUp(BaseModel):
    """What one roll-up did: workloads metered, capacity buckets touched, up to when."""

    until: datetime
    workloads: int
    capacity_buckets: int
