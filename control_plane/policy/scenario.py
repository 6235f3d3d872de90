"""Scenario files: a workload, the nodes and the zone tree, for testing policies offline.

``sovctl policies test`` and the engine's tests read them; policy authors and CI pipelines
write them to check what a policy does without a server or a database. The format is in
docs/policy.md, with an example in examples/policy/scenario.yaml. Parsing is strict
(unknown fields are errors) and every zone a node, dataset, model or output names must be
one of the scenario's zones, so a typo cannot quietly turn into "outside every zone".
"""

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import Field, ValidationError

from control_plane.core.bodies import parse_yaml
from control_plane.core.errors import InvalidInputError
from control_plane.domain.classification import Classification
from control_plane.domain.countries import CountryCode
from control_plane.domain.fleet import ComponentClass, DriftStatus, NodeStatus, ProvenanceStatus
from control_plane.domain.types import (
    MAX_GRANTEES,
    BigCount,
    Input,
    Labels,
    ShortText,
    Slug,
)
from control_plane.policy.documents import Problem, invalid, validation_problems
from control_plane.policy.engine import mig_profile_key
from control_plane.policy.models import (
    DataAssetView,
    DestinationView,
    GpuView,
    MigSliceView,
    ModelView,
    NodeView,
    WorkloadView,
    ZoneView,
)

Name = Annotated[ShortText, Field(min_length=1)]


class ScenarioZone(Input):
    """A residency zone: slug, country, and the zone it lies in."""

    slug: Slug
    country: CountryCode
    parent: Slug | None = None


class ScenarioDataset(Input):
    """A dataset the workload reads."""

    name: Name
    classification: Classification
    storage_zones: list[Slug] = Field(default_factory=list)
    labels: Labels = Field(default_factory=dict)
    tenant: Slug | None = Field(default=None, description="The owner; the workload's tenant.")
    granted_to: list[Slug] = Field(default_factory=list, max_length=MAX_GRANTEES)


class ScenarioModel(Input):
    """A model the workload loads."""

    name: Name
    classification: Classification
    storage_zones: list[Slug] = Field(default_factory=list)
    labels: Labels = Field(default_factory=dict)
    supplier: ShortText | None = None
    origin_country: CountryCode | None = None
    license: ShortText | None = None
    tenant: Slug | None = Field(default=None, description="The owner; the workload's tenant.")
    granted_to: list[Slug] = Field(default_factory=list, max_length=MAX_GRANTEES)


class ScenarioOutput(Input):
    """Where the workload writes its results."""

    name: Name
    zone: Slug | None = None


class ScenarioWorkload(Input):
    """The workload asking to run."""

    tenant: Slug
    datasets: list[ScenarioDataset] = Field(default_factory=list)
    models: list[ScenarioModel] = Field(default_factory=list)
    output: ScenarioOutput | None = None
    gpu_count: int = Field(default=1, ge=0, le=4096)
    gpu_model: ShortText | None = None
    min_gpu_memory_bytes: BigCount | None = None
    mig_profile: ShortText | None = None
    labels: Labels = Field(default_factory=dict)


class ScenarioGpu(Input):
    """Free GPUs of one kind on a node; ``count`` repeats it (UUIDs are made up if absent)."""

    model: Name
    memory_total_bytes: BigCount | None = None
    mig_mode: ShortText | None = None
    mig_slices: list[ShortText] = Field(
        default_factory=list,
        max_length=64,
        description='Profiles of its free MIG slices, one per slice ("1g.10gb"); counted'
        " while MIG is enabled.",
    )
    uuid: ShortText | None = None
    count: int = Field(default=1, ge=1, le=64)


class ScenarioNode(Input):
    """A GPU server; ``id`` defaults to the hostname."""

    hostname: Name
    id: ShortText | None = None
    zone: Slug | None = None
    status: NodeStatus = NodeStatus.ACTIVE
    drift_status: DriftStatus = DriftStatus.NONE
    origin_country: CountryCode | None = None
    component_origins: dict[ComponentClass, CountryCode] = Field(default_factory=dict)
    provenance_status: ProvenanceStatus = ProvenanceStatus.UNKNOWN
    labels: Labels = Field(default_factory=dict)
    gpus: list[ScenarioGpu] = Field(default_factory=list)

    @property
    def node_id(self) -> str:
        """The id decisions name this node by."""
        return self.id or self.hostname


class Scenario(Input):
    """A whole scenario: zones, one workload, and the nodes it could run on."""

    zones: list[ScenarioZone] = Field(default_factory=list)
    workload: ScenarioWorkload
    nodes: list[ScenarioNode] = Field(default_factory=list)

    def zone_views(self) -> dict[str, ZoneView]:
        """The zone tree as the engine takes it."""
        return {z.slug: ZoneView(z.slug, z.parent, z.country) for z in self.zones}

    def workload_view(self) -> WorkloadView:
        """The workload as the engine takes it."""
        w = self.workload
        return WorkloadView(
            tenant=w.tenant,
            datasets=[
                DataAssetView(
                    d.name,
                    d.classification,
                    tuple(d.storage_zones),
                    d.labels,
                    tenant=d.tenant or w.tenant,
                    granted_to=tuple(sorted(set(d.granted_to))),
                )
                for d in w.datasets
            ],
            models=[
                ModelView(
                    m.name,
                    m.classification,
                    tuple(m.storage_zones),
                    m.labels,
                    m.supplier,
                    m.origin_country,
                    m.license,
                    tenant=m.tenant or w.tenant,
                    granted_to=tuple(sorted(set(m.granted_to))),
                )
                for m in w.models
            ],
            output=None if w.output is None else DestinationView(w.output.name, w.output.zone),
            gpu_count=w.gpu_count,
            gpu_model=w.gpu_model,
            min_gpu_memory_bytes=w.min_gpu_memory_bytes,
            mig_profile=w.mig_profile,
            labels=w.labels,
        )

    def node_views(self) -> list[NodeView]:
        """The nodes as the engine takes them, with every ``count`` expanded."""
        views = []
        for node in self.nodes:
            gpus: list[GpuView] = []
            for kind in node.gpus:
                for _ in range(kind.count):
                    uuid = kind.uuid if kind.uuid and kind.count == 1 else None
                    gpu_uuid = uuid or f"{node.node_id}-gpu{len(gpus)}"
                    gpus.append(
                        GpuView(
                            gpu_uuid,
                            kind.model,
                            kind.memory_total_bytes,
                            kind.mig_mode,
                            tuple(
                                MigSliceView(f"{gpu_uuid}-mig{n}", mig_profile_key(profile))
                                for n, profile in enumerate(kind.mig_slices)
                            ),
                        )
                    )
            views.append(
                NodeView(
                    id=node.node_id,
                    hostname=node.hostname,
                    zone=node.zone,
                    status=node.status,
                    drift_status=node.drift_status,
                    origin_country=node.origin_country,
                    component_origins={str(k): v for k, v in node.component_origins.items()},
                    provenance_status=node.provenance_status,
                    labels=node.labels,
                    gpus=tuple(gpus),
                )
            )
        return views


def _check_references(scenario: Scenario) -> list[Problem]:
    known = {z.slug for z in scenario.zones}
    problems: list[Problem] = []

    def check(field: str, zone: str | None) -> None:
        if zone is not None and zone not in known:
            problems.append((field, f"unknown zone {zone!r}", zone))

    for i, z in enumerate(scenario.zones):
        check(f"zones[{i}].parent", z.parent)
    w = scenario.workload
    stored: list[tuple[str, list[str]]] = [
        *((f"workload.datasets[{i}]", d.storage_zones) for i, d in enumerate(w.datasets)),
        *((f"workload.models[{i}]", m.storage_zones) for i, m in enumerate(w.models)),
    ]
    for where, zones in stored:
        for j, zone in enumerate(zones):
            check(f"{where}.storage_zones[{j}]", zone)
    if w.output is not None:
        check("workload.output.zone", w.output.zone)
    seen: dict[str, int] = {}
    for i, node in enumerate(scenario.nodes):
        check(f"nodes[{i}].zone", node.zone)
        if node.node_id in seen:
            problems.append(
                (
                    f"nodes[{i}].id",
                    f"duplicate node id (also nodes[{seen[node.node_id]}])",
                    node.node_id,
                )
            )
        seen.setdefault(node.node_id, i)
    return problems


def parse_scenario(data: Mapping[str, Any]) -> Scenario:
    """Validate a parsed scenario; ``InvalidInputError`` names every bad field."""
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as exc:
        raise invalid(validation_problems(exc)) from None
    problems = _check_references(scenario)
    if problems:
        raise invalid(problems)
    return scenario


def load_scenario(text: str, *, source: str | None = None) -> Scenario:
    """Parse a scenario from YAML or JSON text; ``source`` (a file name) leads errors."""
    lead = f"{source}: " if source else ""
    documents = parse_yaml(text, source=source)
    data = documents[0] if len(documents) == 1 else None
    if not isinstance(data, Mapping):
        raise InvalidInputError(f"{lead}must be a mapping with workload, nodes and zones")
    try:
        return parse_scenario(data)
    except InvalidInputError as exc:
        raise InvalidInputError(f"{lead}{exc.message}", details=exc.details) from None
