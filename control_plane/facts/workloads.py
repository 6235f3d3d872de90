"""A workload as the engine sees it: the request, with what it names read from the registry.

``WorkloadRequest`` is the request as decisions use it and as it is stored on the workload
(``workload.request``). It is not the HTTP input model: the API's ``WorkloadCreate`` may
tighten its rules (a slug pattern, a new limit) while rows written under the old rules
must keep loading for the compliance sweep, so the stored shape is lenient (plain types,
unknown fields ignored, defaults for fields added later).

``workload_view`` is what admission (and the webhook) calls: the view, or a 422 naming the
first unknown name. ``RegistryViews`` is what the sweep and what-if call for thousands of
stored requests: each name is read once, and a name no longer in the registry is said in
words instead of raised.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, TypeVar
from uuid import UUID

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from control_plane.core.db import DbConnection
from control_plane.core.errors import InvalidInputError
from control_plane.domain.types import Slug
from control_plane.policy.models import (
    DataAssetView,
    DestinationView,
    ModelView,
    ReasonPublic,
    WorkloadView,
)
from control_plane.registry import repository as registry
from control_plane.registry.models import (
    DatasetFacts,
    DestinationFacts,
    Lookup,
    ModelFacts,
)

_T = TypeVar("_T")

# -- what a request may name, checked the same way wherever a workload is declared ------
# (``POST /v1/workloads`` and the Kubernetes admission webhooks' annotations).

#: Placement is on one node, and no server has more GPUs than this.
MAX_GPUS_PER_WORKLOAD = 64


def _distinct(names: list[str]) -> list[str]:
    if len(set(names)) != len(names):
        raise ValueError("a name is listed twice")
    return names


#: Datasets or models a workload names: slugs, at most 64, none twice.
AssetNames = Annotated[list[Slug], Field(max_length=64), AfterValidator(_distinct)]
#: A MIG profile as NVIDIA names them (``1g.10gb``).
MigProfile = Annotated[str, StringConstraints(pattern=r"^[0-9]+g\.[0-9]+gb$", max_length=32)]


class WorkloadRequest(BaseModel):
    """What a workload asks for, as decisions read it and as ``workload.request`` stores it.

    Lenient on purpose: see the module docstring. Placement options (strategy, lease) are
    not part of it: they say how to place, not what may run where.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    tenant: str
    datasets: list[str] = Field(default_factory=list)
    models: list[str] = Field(default_factory=list)
    output: str | None = None
    gpu_count: int = 1
    gpu_model: str | None = None
    min_gpu_memory_bytes: int | None = None
    mig_profile: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)


class WorkloadRevocation(BaseModel):
    """Why a running workload was revoked, as ``workload.revocation`` stores it.

    Written by continuous compliance (a policy with ``on_violation: revoke``), read by
    scheduling when the workload is shown, so its owner sees why it ended: the evaluation
    that revoked it, the policies whose ``revoke`` it broke, and every reason found.
    """

    revoked_at: datetime
    evaluation_id: UUID
    policies: list[str] = Field(description="The deny policies with on_violation: revoke.")
    reasons: list[ReasonPublic] = Field(description="Every reason the evaluation found.")


@dataclass(frozen=True, slots=True)
class UnknownName:
    """A name a workload request gives that the registry does not hold."""

    #: The request's field, e.g. ``datasets.1``.
    field: str
    #: ``tenant``, ``dataset``, ``model`` or ``artifact destination``.
    kind: str
    name: str


def unknown_names(request: WorkloadRequest, found: Lookup) -> list[UnknownName]:
    """What ``request`` names that ``found`` lacks, in field order; only the tenant if unknown."""
    if not found.tenant_exists:
        return [UnknownName("tenant", "tenant", request.tenant)]
    unknown = [
        UnknownName(f"datasets.{position}", "dataset", name)
        for position, name in enumerate(request.datasets)
        if name not in found.datasets
    ]
    unknown += [
        UnknownName(f"models.{position}", "model", name)
        for position, name in enumerate(request.models)
        if name not in found.models
    ]
    if request.output is not None and found.destination is None:
        unknown.append(UnknownName("output", "artifact destination", request.output))
    return unknown


def _dataset_view(dataset: DatasetFacts) -> DataAssetView:
    return DataAssetView(
        dataset.name,
        dataset.classification,
        dataset.zones,
        dataset.labels,
        tenant=dataset.tenant,
        granted_to=dataset.granted_to,
    )


def _model_view(model: ModelFacts) -> ModelView:
    return ModelView(
        model.name,
        model.classification,
        model.zones,
        model.labels,
        supplier=model.supplier,
        origin_country=model.origin_country,
        license=model.license,
        tenant=model.tenant,
        granted_to=model.granted_to,
    )


def view_of(request: WorkloadRequest, found: Lookup) -> WorkloadView:
    """The engine's view of ``request``, with what it names as ``found`` has it.

    Everything it names must be in ``found`` (``unknown_names`` is empty). Admission, the
    compliance sweep and what-if all build their views here, so they judge the same thing:
    each dataset and model with its owner and the tenants holding a grant in force when
    ``found`` was read, which the engine's ``ownership`` rule and CEL read.
    """
    output = None
    if request.output is not None and found.destination is not None:
        output = DestinationView(request.output, found.destination.zone)
    return WorkloadView(
        tenant=request.tenant,
        datasets=tuple(_dataset_view(found.datasets[name]) for name in request.datasets),
        models=tuple(_model_view(found.models[name]) for name in request.models),
        output=output,
        gpu_count=request.gpu_count,
        gpu_model=request.gpu_model,
        min_gpu_memory_bytes=request.min_gpu_memory_bytes,
        mig_profile=request.mig_profile,
        labels=request.labels,
    )


def lookup(conn: DbConnection, request: WorkloadRequest) -> Lookup:
    """What ``request`` names, read from the registry in one query."""
    return registry.lookup(conn, request.tenant, request.datasets, request.models, request.output)


def workload_view(conn: DbConnection, request: WorkloadRequest) -> WorkloadView:
    """The request with what it names loaded from the registry in one query (unknown: 422)."""
    found = lookup(conn, request)
    unknown = unknown_names(request, found)
    if unknown:
        first = unknown[0]
        raise InvalidInputError.for_field(
            first.field, f"unknown {first.kind} {first.name!r}", first.name
        )
    return view_of(request, found)


class RegistryViews:
    """Views of many stored requests, each name read from the registry once.

    Thousands of running workloads naming the same few datasets cost one lookup per
    request that names something not read yet, rather than one per request; the views
    are then built by ``view_of``, exactly as admission builds them. Lives for one
    evaluation (one consistent read), so it never serves a stale name.
    """

    def __init__(self, conn: DbConnection) -> None:
        """Read through ``conn``, inside the caller's transaction."""
        self._conn = conn
        self._tenants: dict[str, bool] = {}
        #: Name to what the registry holds, or None when it no longer has it.
        self._datasets: dict[str, DatasetFacts | None] = {}
        self._models: dict[str, ModelFacts | None] = {}
        self._destinations: dict[str, DestinationFacts | None] = {}

    def _read(self, request: WorkloadRequest) -> None:
        """Look up, in one query, what ``request`` names that has not been read yet."""
        datasets = [name for name in request.datasets if name not in self._datasets]
        models = [name for name in request.models if name not in self._models]
        output = request.output if request.output not in self._destinations else None
        if request.tenant in self._tenants and not datasets and not models and output is None:
            return
        found = registry.lookup(self._conn, request.tenant, datasets, models, output)
        self._tenants[request.tenant] = found.tenant_exists
        self._datasets.update({name: found.datasets.get(name) for name in datasets})
        self._models.update({name: found.models.get(name) for name in models})
        if output is not None:
            self._destinations[output] = found.destination

    def view(self, request: WorkloadRequest) -> WorkloadView | str:
        """The engine's view of ``request``, or why something it names is missing, in words."""
        self._read(request)
        found = Lookup(
            tenant_exists=self._tenants[request.tenant],
            datasets=_present(request.datasets, self._datasets),
            models=_present(request.models, self._models),
            destination=None if request.output is None else self._destinations[request.output],
        )
        unknown = unknown_names(request, found)
        if unknown:
            return "; ".join(
                f"{name.kind} {name.name!r} named by the workload is no longer in the registry"
                for name in unknown
            )
        return view_of(request, found)


def _present(names: Sequence[str], known: dict[str, _T | None]) -> dict[str, _T]:
    """The entries of ``known`` for ``names`` that the registry still holds."""
    return {name: facts for name in names if (facts := known[name]) is not None}
