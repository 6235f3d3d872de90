"""``sovctl tenant|dataset|model|destination``: the registry, through the HTTP API.

``main.py`` adds these sub-apps to ``sovctl``; the commands call the API with the URL and
token given to ``sovctl`` (``--url``/``--token``, ``SOVCTL_*`` or the config file).
"""

from typing import Annotated, Any

import typer

from control_plane.cli.client import api
from control_plane.cli.output import Output, OutputFormat, emit, emit_page
from control_plane.domain.classification import Classification
from control_plane.registry.models import QuotaPeriod

tenant_app = typer.Typer(no_args_is_help=True, help="Tenants and their GPU quotas (via the API).")
dataset_app = typer.Typer(no_args_is_help=True, help="Datasets (via the API).")
model_app = typer.Typer(no_args_is_help=True, help="Models (via the API).")
destination_app = typer.Typer(no_args_is_help=True, help="Artifact destinations (via the API).")

Zones = Annotated[
    str, typer.Option("--zones", help="Storage zones, comma-separated, e.g. jp-east,jp-west.")
]
Labels = Annotated[
    list[str] | None, typer.Option("--label", help="key=value; repeat for more labels.")
]
TenantOption = Annotated[str, typer.Option("--tenant", help="Owning tenant's slug.")]
ClassificationOption = Annotated[
    Classification, typer.Option(help="public, internal, confidential or restricted.")
]
Description = Annotated[str, typer.Option(help="Free text.")]
TenantFilter = Annotated[str | None, typer.Option("--tenant", help="Owning tenant's slug.")]
ClassificationFilter = Annotated[Classification | None, typer.Option("--classification")]
ZoneFilter = Annotated[str | None, typer.Option("--zone", help="Storage zone (nested zones too).")]
Limit = Annotated[int, typer.Option(min=1, max=500)]
Offset = Annotated[int, typer.Option(min=0)]

_TENANT_COLUMNS = ["slug", "name", "quotas", "description"]
_QUOTA_COLUMNS = ["tenant", "zone", "max_gpus", "gpu_hours_per_period", "period"]
_DATASET_COLUMNS = ["name", "tenant", "classification", "zones", "labels"]
_MODEL_COLUMNS = [*_DATASET_COLUMNS[:4], "supplier", "origin_country", "license", "labels"]
_DESTINATION_COLUMNS = ["name", "zone", "description"]


def _zones(text: str) -> list[str]:
    return [zone.strip() for zone in text.split(",") if zone.strip()]


def parse_labels(items: list[str] | None) -> dict[str, str]:
    """``--label key=value`` options as a dict (a bad one is a usage error)."""
    labels: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{item!r}: use key=value", param_hint="--label")
        labels[key] = value
    return labels


def _asset_body(
    name: str,
    tenant: str,
    classification: Classification,
    zones: str,
    label: list[str] | None,
    description: str,
) -> dict[str, Any]:
    """What datasets and models have in common in a registration request."""
    return {
        "name": name,
        "tenant": tenant,
        "classification": classification.value,
        "zones": _zones(zones),
        "labels": parse_labels(label),
        "description": description,
    }


def _tenant_row(tenant: dict[str, Any]) -> dict[str, Any]:
    quotas = {q["zone"]: q["max_gpus"] for q in tenant["quotas"]}
    return {**tenant, "quotas": quotas}


# -- tenants ---------------------------------------------------------------------------


@tenant_app.command("create")
def tenant_create(
    slug: Annotated[str, typer.Argument(help="Short id, e.g. research.")],
    name: Annotated[str, typer.Option(help="Display name.")],
    description: Description = "",
    output: Output = OutputFormat.TABLE,
) -> None:
    """Create a tenant (a department or project)."""
    body = {"slug": slug, "name": name, "description": description}
    emit(_tenant_row(api("POST", "/v1/tenants", json=body)), output, _TENANT_COLUMNS)


@tenant_app.command("list")
def tenant_list(output: Output = OutputFormat.TABLE) -> None:
    """List tenants with their GPU quotas (zone=GPUs at once)."""
    tenants = api("GET", "/v1/tenants")
    if output is OutputFormat.JSON:
        emit(tenants, output)
        return
    emit([_tenant_row(t) for t in tenants], output, _TENANT_COLUMNS)


@tenant_app.command("quota")
def tenant_quota(
    tenant: Annotated[str, typer.Argument(help="Tenant slug.")],
    zone: Annotated[str, typer.Argument(help="Zone slug.")],
    max_gpus: Annotated[
        int | None, typer.Option(min=0, help="GPUs the tenant may hold at once in the zone.")
    ] = None,
    gpu_hours: Annotated[
        float | None, typer.Option(min=0, help="GPU-hours per period (default: no limit).")
    ] = None,
    period: Annotated[QuotaPeriod, typer.Option(help="day, week or month.")] = QuotaPeriod.MONTH,
    remove: Annotated[bool, typer.Option("--remove", help="Remove the quota instead.")] = False,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Set a tenant's GPU quota in a zone (replacing the old one), or --remove it."""
    path = f"/v1/tenants/{tenant}/quotas/{zone}"
    if remove:
        if max_gpus is not None or gpu_hours is not None:
            raise typer.BadParameter("--remove takes no quota values", param_hint="--remove")
        api("DELETE", path)
        typer.echo(f"removed the quota of {tenant} in {zone}")
        return
    if max_gpus is None:
        raise typer.BadParameter("give --max-gpus, or --remove", param_hint="--max-gpus")
    body = {"max_gpus": max_gpus, "gpu_hours_per_period": gpu_hours, "period": period.value}
    emit(api("PUT", path, json=body), output, _QUOTA_COLUMNS)


# -- datasets and models ---------------------------------------------------------------


@dataset_app.command("register")
def dataset_register(
    name: Annotated[str, typer.Argument(help="Short id, e.g. support-tickets.")],
    tenant: TenantOption,
    classification: ClassificationOption,
    zones: Zones,
    label: Labels = None,
    description: Description = "",
    output: Output = OutputFormat.TABLE,
) -> None:
    """Register a dataset: owner, classification, storage zones and labels."""
    body = _asset_body(name, tenant, classification, zones, label, description)
    emit(api("POST", "/v1/datasets", json=body), output, _DATASET_COLUMNS)


@dataset_app.command("list")
def dataset_list(
    tenant: TenantFilter = None,
    classification: ClassificationFilter = None,
    zone: ZoneFilter = None,
    limit: Limit = 100,
    offset: Offset = 0,
    output: Output = OutputFormat.TABLE,
) -> None:
    """List datasets."""
    params = {
        "tenant": tenant,
        "classification": classification,
        "zone": zone,
        "limit": limit,
        "offset": offset,
    }
    emit_page(api("GET", "/v1/datasets", params=params), output, _DATASET_COLUMNS)


@model_app.command("register")
def model_register(
    name: Annotated[str, typer.Argument(help="Short id, e.g. llama-3-8b.")],
    tenant: TenantOption,
    classification: ClassificationOption,
    zones: Zones,
    supplier: Annotated[str, typer.Option(help="Who supplied the weights.")],
    origin_country: Annotated[
        str, typer.Option("--origin", help="Supplier's country, ISO alpha-2.")
    ],
    license_: Annotated[str, typer.Option("--license", help="E.g. apache-2.0.")],
    label: Labels = None,
    description: Description = "",
    output: Output = OutputFormat.TABLE,
) -> None:
    """Register a model with its provenance (supplier, country of origin) and license."""
    body = {
        **_asset_body(name, tenant, classification, zones, label, description),
        "supplier": supplier,
        "origin_country": origin_country,
        "license": license_,
    }
    emit(api("POST", "/v1/models", json=body), output, _MODEL_COLUMNS)


@model_app.command("list")
def model_list(
    tenant: TenantFilter = None,
    classification: ClassificationFilter = None,
    zone: ZoneFilter = None,
    origin_country: Annotated[
        str | None, typer.Option("--origin", help="Country of origin.")
    ] = None,
    limit: Limit = 100,
    offset: Offset = 0,
    output: Output = OutputFormat.TABLE,
) -> None:
    """List models."""
    params = {
        "tenant": tenant,
        "classification": classification,
        "zone": zone,
        "origin_country": origin_country,
        "limit": limit,
        "offset": offset,
    }
    emit_page(api("GET", "/v1/models", params=params), output, _MODEL_COLUMNS)


# -- artifact destinations -------------------------------------------------------------


@destination_app.command("create")
def destination_create(
    name: Annotated[str, typer.Argument(help="Short id, e.g. results-jp.")],
    zone: Annotated[str, typer.Option(help="Zone slug the outputs stay in.")],
    description: Description = "",
    output: Output = OutputFormat.TABLE,
) -> None:
    """Create an artifact destination (where workloads write outputs)."""
    body = {"name": name, "zone": zone, "description": description}
    emit(api("POST", "/v1/destinations", json=body), output, _DESTINATION_COLUMNS)


@destination_app.command("list")
def destination_list(output: Output = OutputFormat.TABLE) -> None:
    """List artifact destinations."""
    emit(api("GET", "/v1/destinations"), output, _DESTINATION_COLUMNS)
