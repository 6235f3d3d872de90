"""Inventory API models, the agent protocol's request bodies, and a node as stored.

Modelled on NetBox: residency zones nest (jp → jp-east → tokyo-dc1) like regions, sites sit
in a zone, nodes sit at a site and in a zone. A GPU's model is its type; the GPU with its
UUID and serial is the instance.
"""

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from pydantic import AfterValidator, BaseModel, Field, StringConstraints, field_validator

from control_plane.domain.countries import CountryCode
from control_plane.domain.fleet import (
    ComponentClass,
    DriftStatus,
    LocationVia,
    NodeStatus,
    ProvenanceStatus,
)
from control_plane.domain.types import (
    BigCount,
    Change,
    Description,
    Input,
    KubernetesNodeName,
    LabelPatch,
    Labels,
    Lookup,
    ShortText,
    SiteFilter,
    Slug,
    SmallCount,
    ZoneFilter,
    storable_text,
)

# -- residency zones and sites ---------------------------------------------------------


class ZoneCreate(Input):
    """A new residency zone."""

    slug: Slug
    name: ShortText = Field(min_length=1)
    country: CountryCode
    parent: Slug | None = Field(default=None, description="Slug of the enclosing zone.")
    description: Description = ""


class ZoneUpdate(Input):
    """Changes to a zone; omitted fields stay as they are, ``parent: null`` detaches it."""

    name: Change[ShortText] = Field(default=None, min_length=1)
    country: Change[CountryCode] = None
    parent: Slug | None = None
    description: Change[Description] = None


class ZonePublic(BaseModel):
    """A residency zone as stored."""

    slug: str
    name: str
    country: str
    parent: str | None
    description: str
    created_at: datetime
    updated_at: datetime


class SiteCreate(Input):
    """A new site (a data center or room) inside a residency zone."""

    slug: Slug
    name: ShortText = Field(min_length=1)
    zone: Slug
    description: Description = ""


class SitePublic(BaseModel):
    """A site as stored."""

    slug: str
    name: str
    zone: str
    description: str
    created_at: datetime


# -- what the agent reports ------------------------------------------------------------
# The agent's side of these bodies is agents/protocol.py (standard library only). These
# models must match it field for field (tests/unit/test_agent_contract.py checks), adding
# what only the server enforces: limits, NUL refusal, ISO country codes.


class HostFacts(Input):
    """Host identity and facts the agent reads (DMI fields are null on many VMs)."""

    hostname: ShortText = Field(min_length=1)
    machine_id: ShortText = Field(min_length=1, description="/etc/machine-id or a derived id.")
    agent_version: ShortText | None = None
    os_name: ShortText | None = None
    kernel_version: ShortText | None = None
    cpu_model: ShortText | None = None
    cpu_count: SmallCount | None = Field(default=None, ge=1)
    memory_bytes: BigCount | None = None
    system_manufacturer: ShortText | None = None
    system_model: ShortText | None = None
    system_serial: ShortText | None = None
    board_vendor: ShortText | None = None
    board_name: ShortText | None = None
    asset_tag: ShortText | None = None


class MigDevice(Input):
    """One MIG device of a GPU (a compute instance in a GPU instance), as the agent read it.

    Part of what a GPU offers, not of its identity: a changed MIG layout changes the
    inventory, never the hardware identity that drift detection compares.
    """

    index: SmallCount
    uuid: ShortText | None = None
    profile: ShortText | None = Field(default=None, description='e.g. "1g.10gb".')
    gpu_instance_id: SmallCount | None = None
    compute_instance_id: SmallCount | None = None
    memory_total_bytes: BigCount | None = None


class GpuInventory(Input):
    """Static facts of one GPU, read once at agent start."""

    uuid: Annotated[
        str,
        StringConstraints(strip_whitespace=True, min_length=4, max_length=128),
        AfterValidator(storable_text),
    ]
    index: SmallCount
    model: ShortText = Field(min_length=1)
    serial: ShortText | None = None
    board_part_number: ShortText | None = None
    vbios_version: ShortText | None = None
    pci_bus_id: ShortText | None = None
    memory_total_bytes: BigCount | None = None
    mig_mode: ShortText | None = None
    # NVML allows 7 MIG devices per GPU today; the limit leaves room for larger boards.
    mig_devices: list[MigDevice] = Field(default_factory=list, max_length=64)
    driver_version: ShortText | None = None
    cuda_version: ShortText | None = None
    ecc_mode: ShortText | None = None
    compute_capability: ShortText | None = Field(default=None, description='e.g. "9.0".')
    power_limit_w: float | None = Field(default=None, ge=0, le=100_000)
    confidential_compute: ShortText | None = Field(
        default=None, description='"on" or "off": the system\'s confidential-computing mode.'
    )
    health: ShortText = "unknown"


class GpuTelemetry(Input):
    """One GPU's latest readings; null where the board does not report it."""

    uuid: ShortText
    utilization_pct: float | None = Field(default=None, ge=0, le=100)
    memory_used_bytes: BigCount | None = None
    temperature_c: float | None = Field(default=None, ge=-50, le=200)
    power_w: float | None = Field(default=None, ge=0, le=100_000)
    ecc_uncorrected_errors: BigCount | None = None
    process_count: SmallCount | None = None
    fan_speed_pct: float | None = Field(default=None, ge=0, le=100)


class Inventory(Input):
    """Everything static the agent knows about its host."""

    host: HostFacts
    gpus: list[GpuInventory] = Field(default_factory=list, max_length=64)


class DeclaredProvenance(Input):
    """What the operator declares (agent config, or an admin): origin and placement."""

    origin_country: CountryCode | None = Field(
        default=None, description="Country of final assembly of the server."
    )
    component_origins: dict[ComponentClass, CountryCode] = Field(default_factory=dict)
    asset_tag: ShortText | None = None


class NodeRegister(Input):
    """An agent's first contact, authenticated with a bootstrap token.

    ``zone`` and ``site`` are a claim: a scoped bootstrap token refuses another place and
    fills in its own; with an unscoped one the node waits ``planned`` for an admin.
    """

    inventory: Inventory
    zone: Slug | None = None
    site: Slug | None = None
    labels: Labels = Field(default_factory=dict)
    provenance: DeclaredProvenance = Field(default_factory=DeclaredProvenance)
    kubernetes_node_name: KubernetesNodeName | None = Field(
        default=None,
        description="The Kubernetes Node this server is (the DaemonSet's spec.nodeName); the"
        " node label sync matches Nodes by it, else by hostname.",
    )


class NodeRegistered(BaseModel):
    """The node's id and its own credential (shown once; the agent stores it 0600)."""

    node_id: UUID
    token: str
    heartbeat_interval_seconds: int
    status: NodeStatus = Field(
        description="``planned`` while nobody confirmed where the node stands (it registered"
        " with an unscoped bootstrap token): out of placement until an admin sets its zone."
    )


class Heartbeat(Input):
    """Periodic report: telemetry always, the full inventory only when it changed."""

    seq: BigCount = Field(ge=1, description="Strictly increasing per node; repeats are dropped.")
    telemetry: list[GpuTelemetry] = Field(default_factory=list, max_length=64)
    inventory: Inventory | None = None


class HeartbeatAck(BaseModel):
    """What the control plane did with a heartbeat."""

    accepted: bool
    duplicate: bool
    last_seq: int
    status: NodeStatus
    heartbeat_interval_seconds: int
    inventory_changed: bool = False
    unknown_gpus: list[str] = Field(default_factory=list)


# -- hardware identity -----------------------------------------------------------------


class GpuIdentity(BaseModel):
    """One GPU as the identity of a node knows it: what NVML reads and cannot be set."""

    uuid: str
    serial: str | None


class NodeIdentity(BaseModel):
    """A node's hardware identity: its system serial and its GPUs' (UUID, serial) pairs.

    GPUs are kept sorted by UUID, so two identities are equal exactly when the same GPUs
    with the same serials sit in a chassis with the same serial.
    """

    system_serial: str | None
    gpus: list[GpuIdentity]

    @field_validator("gpus")
    @classmethod
    def _by_uuid(cls, gpus: list[GpuIdentity]) -> list[GpuIdentity]:
        return sorted(gpus, key=lambda gpu: gpu.uuid)


class Drift(BaseModel):
    """Whether the node's reported identity left its baseline, since when, and the evidence.

    ``evidence`` holds ``before`` (the baseline), ``after`` (what was reported) and
    ``differences`` (the change in words); it is empty when there is no drift.
    """

    status: DriftStatus
    detected_at: datetime | None
    evidence: dict[str, Any]


class Location(BaseModel):
    """Whether the node's zone and site were confirmed, when, by whom, and how.

    An unconfirmed node is never ``active``: it waits ``planned`` until an admin sets its
    zone (``PATCH /v1/nodes/{node}`` with ``zone``), so it is never eligible before.
    """

    confirmed: bool
    confirmed_at: datetime | None
    confirmed_by: str | None
    via: LocationVia | None


class DriftAcknowledge(Input):
    """An admin accepting a drifted node's reported identity as its new baseline."""

    note: Description | None = Field(
        default=None, description="Why the change is expected, e.g. a ticket for a GPU swap."
    )


#: How long an admin's approval of a node's replacement lasts unless the admin says.
REPLACEMENT_APPROVAL_SECONDS = 3600
#: The longest one may last: a replacement is a planned visit, not a standing open door.
MAX_REPLACEMENT_APPROVAL_SECONDS = 24 * 3600


class ReplacementApprove(Input):
    """An admin allowing one bootstrap-token registration of a node already known.

    For an agent that lost its credential (a wiped disk, a reinstalled host): without
    this, only the node's own credential or an admin token may register its machine id.
    """

    reason: ShortText | None = Field(
        default=None, description="Why the node is replaced, e.g. a ticket for a disk swap."
    )
    expires_in_seconds: int = Field(
        default=REPLACEMENT_APPROVAL_SECONDS,
        ge=60,
        le=MAX_REPLACEMENT_APPROVAL_SECONDS,
        description="How long the approval may be used (seconds; it is used once).",
    )


class ReplacementApproval(BaseModel):
    """An admin's approval of one bootstrap-token registration for a known node."""

    node_id: UUID
    approved_by: str
    approved_at: datetime
    expires_at: datetime
    reason: str | None


# -- nodes as the API shows them -------------------------------------------------------


class Provenance(BaseModel):
    """Where a server and its parts come from, and how well that is established."""

    system_manufacturer: str | None
    system_model: str | None
    system_serial: str | None
    board_vendor: str | None
    board_name: str | None
    asset_tag: str | None
    origin_country: str | None
    component_origins: dict[str, str]
    status: ProvenanceStatus
    evidence: dict[str, Any]


class MigDevicePublic(BaseModel):
    """One MIG device of a GPU as stored (table ``mig_device``), booked or not.

    A device with a UUID and a profile is a slice placement can book for a workload that
    asks for that profile; one the agent could not name (nvidia-smi gives neither) is
    shown and never booked.
    """

    index: int
    uuid: str | None
    profile: str | None = Field(description='e.g. "1g.10gb".')
    gpu_instance_id: int | None
    compute_instance_id: int | None
    memory_total_bytes: int | None
    booked: bool = Field(description="A workload holds this slice now.")
    missing_since: datetime | None = Field(
        description="Set when the node stopped reporting this device while a workload held"
        " it: kept, out of placement and counts, until that workload ends."
    )


class MigSliceCount(BaseModel):
    """A node's bookable MIG slices of one profile: how many it reports, how many are free.

    Free: not booked, on a GPU not booked whole; missing slices are not counted.
    """

    profile: str
    total: int
    free: int


class GpuPublic(BaseModel):
    """One GPU with its static facts and latest telemetry."""

    uuid: str
    index: int
    model: str
    serial: str | None
    board_part_number: str | None
    vbios_version: str | None
    pci_bus_id: str | None
    memory_total_bytes: int | None
    mig_mode: str | None
    mig_devices: list[MigDevicePublic]
    driver_version: str | None
    cuda_version: str | None
    ecc_mode: str | None
    compute_capability: str | None
    power_limit_w: float | None
    confidential_compute: str | None
    health: str
    utilization_pct: float | None
    memory_used_bytes: int | None
    temperature_c: float | None
    power_w: float | None
    ecc_uncorrected_errors: int | None
    process_count: int | None
    fan_speed_pct: float | None
    telemetry_at: datetime | None
    missing_since: datetime | None = Field(
        description="Set when the node stopped reporting this GPU while a workload held it:"
        " the first report without it. A missing GPU is out of placement and counts but"
        " stays booked; reported again, it is back (and still booked); it is deleted when"
        " its workload ends."
    )


class NodePublic(BaseModel):
    """A GPU server as listed."""

    id: UUID
    hostname: str
    machine_id: str
    site: str | None
    zone: str | None
    status: NodeStatus
    labels: dict[str, str]
    last_heartbeat_at: datetime | None
    last_heartbeat_seq: int
    heartbeats_received: int = Field(description="Heartbeats accepted (repeats not counted).")
    agent_version: str | None
    os_name: str | None
    kernel_version: str | None
    cpu_model: str | None
    cpu_count: int | None
    memory_bytes: int | None
    kubernetes_node_name: str | None = Field(
        description=(
            "The Kubernetes Node name its agent reports (the node label sync matches Nodes by"
            " it, else by hostname); the agent's claim, not checked against the kubelet."
        )
    )
    gpu_count: int = Field(description="GPUs the node reports (missing GPUs not counted).")
    location: Location
    mig_slices: list[MigSliceCount] = Field(
        description="Bookable MIG slices by profile (total and free), on MIG-enabled GPUs."
    )
    provenance: Provenance
    drift: Drift
    registered_at: datetime
    updated_at: datetime


class NodeDetail(NodePublic):
    """A GPU server with its GPUs."""

    gpus: list[GpuPublic]


class NodePage(BaseModel):
    """A page of nodes and how many match in all."""

    items: list[NodePublic]
    total: int
    limit: int
    offset: int


class NodeFilters(BaseModel):
    """The query parameters of ``GET /v1/nodes``; a zone includes the zones nested inside it.

    Their types refuse a value of the wrong format (a country code that is not one, a
    status no node has); ``core.filters.check_references`` refuses a zone or site that
    does not exist. Either is a 422 naming the parameter, never an empty page.
    """

    zone: ZoneFilter = Field(default=None, description="Zone slug; nested zones included.")
    site: SiteFilter = Field(default=None, description="Site slug.")
    origin_country: CountryCode | None = Field(
        default=None, description="Declared country of origin (final assembly)."
    )
    status: NodeStatus | None = None
    gpu_model: Lookup | None = Field(default=None, description="Substring, any case.")
    provenance_status: ProvenanceStatus | None = None
    drift_status: DriftStatus | None = None


class NodeUpdate(Input):
    """An admin's change to a node; omitted fields stay as they are.

    ``labels`` is a merge patch: a key set to null is removed. ``zone``/``site`` set to
    null detach the node. ``provenance`` replaces the declared origin and marks it declared.
    """

    zone: Slug | None = None
    site: Slug | None = None
    status: NodeStatus | None = None
    labels: LabelPatch | None = None
    provenance: DeclaredProvenance | None = None


# -- what audit events of nodes hold (docs/audit.md) -----------------------------------


class IdentitySnapshot(BaseModel):
    """A node's hardware identity and the states drift changes, as drift events record them."""

    identity: NodeIdentity
    status: NodeStatus
    drift_status: DriftStatus


class DriftDetected(IdentitySnapshot):
    """After a drift is detected: the reported identity, the quarantine, the differences."""

    differences: list[str]


class DriftEvidenceSnapshot(IdentitySnapshot):
    """Before a drift is acknowledged: the baseline and the evidence of the drift."""

    drift_evidence: dict[str, Any]


class DriftAcknowledged(IdentitySnapshot):
    """After a drift is acknowledged: the accepted identity and the admin's note."""

    note: str | None


class NodeStatusSnapshot(BaseModel):
    """A node's lifecycle status, for events that change nothing else."""

    status: NodeStatus


class NodeLastSeen(NodeStatusSnapshot):
    """A node's status and its last heartbeat, before the offline sweep marks it."""

    last_heartbeat_at: datetime


class NodeOffline(NodeStatusSnapshot):
    """A node marked offline, and why."""

    reason: str


# -- a node as stored (what the repository hands the services) ------------------------


class NodeRow(BaseModel):
    """A ``node`` row with its GPU count, checked as it leaves the database.

    Every column, by its name in the table; a column added by a migration must be added
    here too, or reading a node fails at the repository boundary rather than later.
    """

    id: UUID
    hostname: str
    machine_id: str
    site_slug: str | None
    zone_slug: str | None
    status: NodeStatus
    labels: dict[str, str]
    last_heartbeat_at: datetime | None
    last_heartbeat_seq: int
    heartbeats_received: int
    agent_version: str | None
    os_name: str | None
    kernel_version: str | None
    cpu_model: str | None
    cpu_count: int | None
    memory_bytes: int | None
    kubernetes_node_name: str | None
    system_manufacturer: str | None
    system_model: str | None
    system_serial: str | None
    board_vendor: str | None
    board_name: str | None
    asset_tag: str | None
    origin_country: str | None
    component_origins: dict[str, str]
    provenance_status: ProvenanceStatus
    provenance_evidence: dict[str, Any]
    inventory_hash: str | None
    identity_baseline: NodeIdentity
    drift_status: DriftStatus
    drift_detected_at: datetime | None
    drift_evidence: dict[str, Any]
    registered_at: datetime
    updated_at: datetime
    location_confirmed_at: datetime | None
    location_confirmed_by: str | None
    location_confirmed_via: LocationVia | None
    gpu_count: int
    mig_slices: list[MigSliceCount]

    @property
    def location(self) -> Location:
        """Whether and how the node's zone was confirmed, as the API shows it."""
        return Location(
            confirmed=self.location_confirmed_at is not None,
            confirmed_at=self.location_confirmed_at,
            confirmed_by=self.location_confirmed_by,
            via=self.location_confirmed_via,
        )

    @property
    def provenance(self) -> Provenance:
        """The node's provenance as the API shows it (also what provenance events hold)."""
        return Provenance(
            system_manufacturer=self.system_manufacturer,
            system_model=self.system_model,
            system_serial=self.system_serial,
            board_vendor=self.board_vendor,
            board_name=self.board_name,
            asset_tag=self.asset_tag,
            origin_country=self.origin_country,
            component_origins=self.component_origins,
            status=self.provenance_status,
            evidence=self.provenance_evidence,
        )

    def public(self) -> NodePublic:
        """The node as the API lists it."""
        return NodePublic(
            id=self.id,
            hostname=self.hostname,
            machine_id=self.machine_id,
            site=self.site_slug,
            zone=self.zone_slug,
            status=self.status,
            labels=self.labels,
            last_heartbeat_at=self.last_heartbeat_at,
            last_heartbeat_seq=self.last_heartbeat_seq,
            heartbeats_received=self.heartbeats_received,
            agent_version=self.agent_version,
            os_name=self.os_name,
            kernel_version=self.kernel_version,
            cpu_model=self.cpu_model,
            cpu_count=self.cpu_count,
            memory_bytes=self.memory_bytes,
            kubernetes_node_name=self.kubernetes_node_name,
            gpu_count=self.gpu_count,
            location=self.location,
            mig_slices=self.mig_slices,
            provenance=self.provenance,
            drift=Drift(
                status=self.drift_status,
                detected_at=self.drift_detected_at,
                evidence=self.drift_evidence,
            ),
            registered_at=self.registered_at,
            updated_at=self.updated_at,
        )

    def identity_snapshot(self) -> IdentitySnapshot:
        """The baseline and the states drift changes, as drift events record them."""
        return IdentitySnapshot(
            identity=self.identity_baseline, status=self.status, drift_status=self.drift_status
        )


class StaleNode(BaseModel):
    """A node the offline sweep marked offline: when it was last heard from."""

    id: UUID
    hostname: str
    last_heartbeat_at: datetime
