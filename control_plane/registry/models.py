"""Registry API models and rows: what AI workloads touch.

Tenants (departments or projects) hold GPU quotas per residency zone. Datasets and models
belong to a tenant, carry a classification and labels, and are stored in one or more zones;
models also carry their provenance (supplier, country of origin) and license. Another
tenant uses a dataset or model only through a grant (``GrantCreate``). Artifact
destinations are where workloads write their outputs, each in one zone.
"""

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Annotated
from uuid import UUID

from pydantic import AfterValidator, AwareDatetime, BaseModel, Field

from control_plane.domain.classification import Classification
from control_plane.domain.countries import CountryCode
from control_plane.domain.types import (
    Change,
    Description,
    Input,
    LabelPatch,
    Labels,
    ShortText,
    Slug,
    SmallCount,
    TenantFilter,
    ZoneFilter,
)


class QuotaPeriod(StrEnum):
    """The period a tenant's GPU-hours are counted over."""

    DAY = "day"
    WEEK = "week"
    MONTH = "month"


class AssetKind(StrEnum):
    """What the registry holds that workloads read; also the audit ``object_type``."""

    DATASET = "dataset"
    MODEL = "model"


def _distinct(zones: list[str]) -> list[str]:
    seen: set[str] = set()
    for zone in zones:
        if zone in seen:
            raise ValueError(f"zone {zone!r} is listed twice")
        seen.add(zone)
    return zones


#: The residency zones an asset is stored in: at least one, each once.
StorageZones = Annotated[list[Slug], Field(min_length=1, max_length=64), AfterValidator(_distinct)]
GpuHours = Annotated[float, Field(ge=0, le=1e12, allow_inf_nan=False)]


# -- tenants and quotas ----------------------------------------------------------------


class TenantCreate(Input):
    """A new tenant: a department or project that owns assets and holds GPU quotas."""

    slug: Slug
    name: ShortText = Field(min_length=1)
    description: Description = ""


class QuotaSet(Input):
    """A tenant's quota in one zone; replaces whatever quota it had there."""

    max_gpus: SmallCount = Field(description="GPUs the tenant may hold at once in the zone.")
    gpu_hours_per_period: GpuHours | None = Field(
        default=None, description="GPU-hours per period; null means no limit on hours."
    )
    period: QuotaPeriod = QuotaPeriod.MONTH


class QuotaPublic(BaseModel):
    """A tenant's quota in one zone, as stored."""

    tenant: str
    zone: str
    max_gpus: int
    gpu_hours_per_period: float | None
    period: QuotaPeriod
    updated_at: datetime


class OriginQuotaSet(Input):
    """A tenant's GPU-hour quota on servers of one origin country; replaces the one it had.

    Counted over the tenant's usage on nodes whose origin country (at the time of use)
    is that country, in every zone; see docs/metering.md.
    """

    gpu_hours_per_period: GpuHours = Field(description="GPU-hours per period.")
    period: QuotaPeriod = QuotaPeriod.MONTH


class OriginQuotaPublic(BaseModel):
    """A tenant's GPU-hour quota on servers of one origin country, as stored."""

    tenant: str
    origin_country: str
    gpu_hours_per_period: float
    period: QuotaPeriod
    updated_at: datetime


class TenantRow(BaseModel):
    """A tenant as its table holds it (the quotas are rows of their own)."""

    slug: str
    name: str
    description: str
    created_at: datetime


class TenantPublic(TenantRow):
    """A tenant with its quotas (by zone, and GPU-hour quotas by server origin)."""

    quotas: list[QuotaPublic]
    origin_quotas: list[OriginQuotaPublic] = Field(default_factory=list)


# -- datasets and models ---------------------------------------------------------------


class _AssetCreate(Input):
    """What datasets and models have in common when registered."""

    name: Slug
    tenant: Slug = Field(description="Slug of the owning tenant.")
    classification: Classification
    zones: StorageZones = Field(description="Slugs of the residency zones it is stored in.")
    labels: Labels = Field(default_factory=dict)
    description: Description = ""


class DatasetCreate(_AssetCreate):
    """A dataset to register."""


class ModelCreate(_AssetCreate):
    """A model to register, with the provenance and license of its weights."""

    supplier: ShortText = Field(min_length=1, description="Who supplied the weights.")
    origin_country: CountryCode = Field(description="The supplier's country, ISO alpha-2.")
    license: ShortText = Field(min_length=1, description="E.g. an SPDX id or 'proprietary'.")


class _AssetUpdate(Input):
    """Changes to a dataset or model; omitted fields stay as they are.

    ``labels`` is a merge patch (a key set to null is removed); ``zones`` replaces the list.
    """

    tenant: Change[Slug] = None
    classification: Change[Classification] = None
    zones: Change[StorageZones] = None
    labels: LabelPatch | None = None
    description: Change[Description] = None


class DatasetUpdate(_AssetUpdate):
    """Changes to a dataset."""


class ModelUpdate(_AssetUpdate):
    """Changes to a model, its provenance and its license included."""

    supplier: Change[ShortText] = Field(default=None, min_length=1)
    origin_country: Change[CountryCode] = None
    license: Change[ShortText] = Field(default=None, min_length=1)


class AssetPublic(BaseModel):
    """What datasets and models have in common as stored."""

    name: str
    tenant: str
    classification: Classification
    zones: list[str] = Field(description="Storage zones, by slug.")
    labels: dict[str, str]
    description: str
    created_at: datetime
    updated_at: datetime


class DatasetPublic(AssetPublic):
    """A registered dataset."""


class ModelPublic(AssetPublic):
    """A registered model with its provenance and license."""

    supplier: str
    origin_country: str
    license: str


class DatasetPage(BaseModel):
    """A page of datasets and how many match in all."""

    items: list[DatasetPublic]
    total: int
    limit: int
    offset: int


class ModelPage(BaseModel):
    """A page of models and how many match in all."""

    items: list[ModelPublic]
    total: int
    limit: int
    offset: int


class AssetFilters(BaseModel):
    """The query parameters of ``GET /v1/datasets``; a zone includes the zones nested in it.

    Checked as ``inventory.models.NodeFilters`` is: format by type, the tenant and zone
    to exist by ``core.filters.check_references``.
    """

    tenant: TenantFilter = Field(default=None, description="Owning tenant's slug.")
    classification: Classification | None = None
    zone: ZoneFilter = Field(default=None, description="Storage zone slug; nested zones included.")


class ModelFilters(AssetFilters):
    """The query parameters of ``GET /v1/models``: those of datasets, and the origin."""

    origin_country: CountryCode | None = Field(default=None, description="The supplier's country.")


# -- grants: another tenant's use of a dataset or model -----------------------------------


def _storable_moment(moment: datetime) -> datetime:
    """Refuse a moment PostgreSQL would store but Python could not read back (year 10000).

    Whether it lies in the future is the database's to say (its clock decides what is in
    force); a year outside these is never in the future, or never readable.
    """
    if not 1970 <= moment.year <= 9998:
        raise ValueError("must lie in the future, before the year 9999")
    return moment


#: The end of a grant: a moment with a time zone.
GrantExpiry = Annotated[AwareDatetime, AfterValidator(_storable_moment)]


class GrantCreate(Input):
    """A grant of a dataset or model to a tenant other than its owner: who, why, until when."""

    tenant: Slug = Field(description="Slug of the tenant granted use (not the owner).")
    reason: ShortText = Field(
        min_length=1, description="Why the tenant may use it, e.g. a ticket or an agreement."
    )
    expires_at: GrantExpiry | None = Field(
        default=None,
        description="When the grant ends by itself (with a time zone, in the future); null:"
        " until revoked.",
    )


class GrantPublic(BaseModel):
    """A grant as stored: revoked grants are kept, with who revoked them and when.

    ``in_force`` is whether it lets ``tenant`` use the asset now: not revoked and not past
    ``expires_at``. ``owner`` is the asset's owner when the grant was made.
    """

    id: UUID
    kind: AssetKind
    asset: str
    owner: str
    tenant: str
    reason: str
    granted_by: str = Field(description="Name of the actor who granted it.")
    granted_by_id: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    revoked_by: str | None
    revoked_by_id: str | None
    in_force: bool


# -- artifact destinations -------------------------------------------------------------


class DestinationCreate(Input):
    """A place workloads write outputs to (a bucket, a share), in one residency zone."""

    name: Slug
    zone: Slug
    description: Description = ""


class DestinationPublic(BaseModel):
    """An artifact destination as stored."""

    name: str
    zone: str
    description: str
    created_at: datetime


# -- what a workload request names, as the registry has it -----------------------------


@dataclass(frozen=True, slots=True)
class DatasetFacts:
    """What the policy engine reads of a dataset: sensitivity, labels, storage zones, owner.

    ``granted_to`` are the tenants holding a grant in force when it was read, sorted.
    """

    name: str
    classification: Classification
    labels: dict[str, str]
    zones: tuple[str, ...]
    tenant: str
    granted_to: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ModelFacts:
    """What the policy engine reads of a model: a dataset's facts plus its provenance."""

    name: str
    classification: Classification
    labels: dict[str, str]
    zones: tuple[str, ...]
    supplier: str | None
    origin_country: str | None
    license: str | None
    tenant: str
    granted_to: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class DestinationFacts:
    """Where a workload's output goes: the destination and its zone."""

    name: str
    zone: str | None


@dataclass(frozen=True, slots=True)
class Lookup:
    """What a workload request names, as the registry has it; absent names are missing."""

    tenant_exists: bool
    datasets: dict[str, DatasetFacts]
    models: dict[str, ModelFacts]
    destination: DestinationFacts | None
