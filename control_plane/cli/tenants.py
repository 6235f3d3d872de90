"""``sovctl tenants create|list|show|delete|quota|origin-quota``: tenants and GPU quotas."""

from typing import Annotated, Any

import typer

from control_plane.cli.client import api
from control_plane.cli.options import Description
from control_plane.cli.output import Output, OutputFormat, emit
from control_plane.registry.models import QuotaPeriod

app = typer.Typer(no_args_is_help=True, help="Tenants and their GPU quotas (via the API).")

Tenant = Annotated[str, typer.Argument(help="Tenant slug.")]

_COLUMNS = ["slug", "name", "quotas", "description"]
_QUOTA_COLUMNS = ["tenant", "zone", "max_gpus", "gpu_hours_per_period", "period"]


def _row(tenant: dict[str, Any]) -> dict[str, Any]:
    """A tenant for the table: its quotas as zone=GPUs."""
    quotas = {q["zone"]: q["max_gpus"] for q in tenant["quotas"]}
    return {**tenant, "quotas": quotas}


def _print(tenant: dict[str, Any], output: OutputFormat) -> None:
    """One tenant: the API's JSON, or a summary and a table of its quotas."""
    if output is OutputFormat.JSON:
        emit(tenant, output)
        return
    emit(_row(tenant), output, _COLUMNS)
    if tenant["quotas"]:
        typer.echo("")
        emit(tenant["quotas"], output, _QUOTA_COLUMNS)


@app.command("create")
def tenants_create(
    slug: Annotated[str, typer.Argument(help="Short id, e.g. research.")],
    name: Annotated[str, typer.Option(help="Display name.")],
    description: Description = "",
    output: Output = OutputFormat.TABLE,
) -> None:
    """Create a tenant (a department or project)."""
    body = {"slug": slug, "name": name, "description": description}
    emit(_row(api("POST", "/v1/tenants", json=body)), output, _COLUMNS)


@app.command("list")
def tenants_list(output: Output = OutputFormat.TABLE) -> None:
    """List tenants with their GPU quotas (zone=GPUs at once)."""
    tenants = api("GET", "/v1/tenants")
    if output is OutputFormat.JSON:
        emit(tenants, output)
        return
    emit([_row(t) for t in tenants], output, _COLUMNS)


@app.command("show")
def tenants_show(tenant: Tenant, output: Output = OutputFormat.TABLE) -> None:
    """Show a tenant with its GPU quotas."""
    _print(api("GET", f"/v1/tenants/{tenant}"), output)


@app.command("delete")
def tenants_delete(tenant: Tenant) -> None:
    """Delete a tenant that owns no dataset or model (else HTTP 409), with its quotas."""
    api("DELETE", f"/v1/tenants/{tenant}")
    typer.echo(f"deleted tenant {tenant}")


@app.command("quota")
def tenants_quota(
    tenant: Tenant,
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


_ORIGIN_QUOTA_COLUMNS = ["tenant", "origin_country", "gpu_hours_per_period", "period"]


@app.command("origin-quota")
def tenants_origin_quota(
    tenant: Tenant,
    country: Annotated[str, typer.Argument(help="Origin country of the servers, e.g. TW.")],
    gpu_hours: Annotated[
        float | None, typer.Option(min=0, help="GPU-hours per period on those servers.")
    ] = None,
    period: Annotated[QuotaPeriod, typer.Option(help="day, week or month.")] = QuotaPeriod.MONTH,
    remove: Annotated[bool, typer.Option("--remove", help="Remove the quota instead.")] = False,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Set a tenant's GPU-hour quota on servers made in a country, or --remove it."""
    path = f"/v1/tenants/{tenant}/origin-quotas/{country}"
    if remove:
        if gpu_hours is not None:
            raise typer.BadParameter("--remove takes no quota values", param_hint="--remove")
        api("DELETE", path)
        typer.echo(f"removed the quota of {tenant} on servers made in {country}")
        return
    if gpu_hours is None:
        raise typer.BadParameter("give --gpu-hours, or --remove", param_hint="--gpu-hours")
    body = {"gpu_hours_per_period": gpu_hours, "period": period.value}
    emit(api("PUT", path, json=body), output, _ORIGIN_QUOTA_COLUMNS)
