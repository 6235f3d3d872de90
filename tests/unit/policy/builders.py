"""Builders for policy-engine tests: a small zone tree, nodes, workloads and policies."""

from typing import Any

from control_plane.domain.classification import Classification
from control_plane.domain.fleet import DriftStatus, NodeStatus, ProvenanceStatus
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

H100 = "NVIDIA H100 80GB HBM3"
A100 = "NVIDIA A100-SXM4-40GB"
GIB = 1024**3

#: jp > jp-east, jp-west > tokyo-dc1 (inside jp-east); tw-north; us-west.
ZONES = {
    "jp": ZoneView("jp", None, "JP"),
    "jp-east": ZoneView("jp-east", "jp", "JP"),
    "jp-west": ZoneView("jp-west", "jp", "JP"),
    "tokyo-dc1": ZoneView("tokyo-dc1", "jp-east", "JP"),
    "tw-north": ZoneView("tw-north", None, "TW"),
    "us-west": ZoneView("us-west", None, "US"),
}


def node(
    name: str,
    zone: str | None = "jp-east",
    *,
    status: NodeStatus = NodeStatus.ACTIVE,
    drift: DriftStatus = DriftStatus.NONE,
    origin: str | None = "JP",
    components: dict[str, str] | None = None,
    provenance: ProvenanceStatus = ProvenanceStatus.VERIFIED,
    labels: dict[str, str] | None = None,
    gpus: int = 8,
    model: str = H100,
    memory: int | None = 80 * GIB,
    mig: str | None = "Disabled",
    slices: tuple[str, ...] = (),
) -> NodeView:
    """A node named ``name`` (id and hostname): by default a healthy 8-GPU H100 in jp-east.

    ``slices``: the profiles of the MIG slices each GPU has (``MIG-<gpu>-<n>``).
    """
    return NodeView(
        id=name,
        hostname=name,
        zone=zone,
        status=status,
        drift_status=drift,
        origin_country=origin,
        component_origins={"gpu": "TW"} if components is None else components,
        provenance_status=provenance,
        labels=labels or {},
        gpus=tuple(
            GpuView(
                f"GPU-{name}-{i}",
                model,
                memory,
                mig,
                tuple(MigSliceView(f"MIG-{name}-{i}-{n}", p) for n, p in enumerate(slices)),
            )
            for i in range(gpus)
        ),
    )


def dataset(
    name: str = "customer-pii",
    classification: Classification = Classification.RESTRICTED,
    zones: tuple[str, ...] = ("jp-east",),
    labels: dict[str, str] | None = None,
    tenant: str | None = None,
    granted_to: tuple[str, ...] = (),
) -> DataAssetView:
    """A dataset, by default restricted personal data stored in jp-east, owner unknown."""
    return DataAssetView(name, classification, zones, labels or {}, tenant, granted_to)


def model(
    name: str = "llama-ja",
    classification: Classification = Classification.INTERNAL,
    zones: tuple[str, ...] = ("jp-east",),
    labels: dict[str, str] | None = None,
    origin: str | None = "JP",
    supplier: str | None = "acme-research",
    license: str | None = "mit",
    tenant: str | None = None,
    granted_to: tuple[str, ...] = (),
) -> ModelView:
    """A model, by default internal MIT-licensed weights stored in jp-east, made in Japan."""
    return ModelView(
        name, classification, zones, labels or {}, supplier, origin, license, tenant, granted_to
    )


def workload(
    *,
    tenant: str = "acme",
    datasets: tuple[DataAssetView, ...] = (),
    models: tuple[ModelView, ...] = (),
    output: tuple[str, str | None] | None = None,
    gpu_count: int = 1,
    gpu_model: str | None = None,
    min_memory: int | None = None,
    mig_profile: str | None = None,
    labels: dict[str, str] | None = None,
) -> WorkloadView:
    """A workload of tenant acme asking for one GPU, with what the test gives it."""
    return WorkloadView(
        tenant=tenant,
        datasets=datasets,
        models=models,
        output=None if output is None else DestinationView(*output),
        gpu_count=gpu_count,
        gpu_model=gpu_model,
        min_gpu_memory_bytes=min_memory,
        mig_profile=mig_profile,
        labels=labels or {},
    )


def policy(
    name: str,
    action: str = "deny",
    selector: dict[str, Any] | None = None,
    **requirements: Any,
) -> dict[str, Any]:
    """A policy document as an author writes it."""
    return {
        "name": name,
        "enforcement_action": action,
        "selector": selector or {},
        "requirements": requirements,
    }


def cel(name: str, expression: str, message: str = "") -> dict[str, str]:
    """One CEL rule of a policy."""
    return {"name": name, "expression": expression, "message": message}
