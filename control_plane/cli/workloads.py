"""``sovctl workloads create|list|show|release|renew``: workload admission, via the API.

``main.py`` adds this sub-app to ``sovctl``. ``create`` exits 0 when the workload is
admitted and 1 when it is denied (the reasons are printed), as ``sovctl policies test``
does, so scripts can branch on the verdict. An admitted workload holds its GPUs for its
lease; ``renew`` restarts the lease and ``release`` ends the workload.
"""

from typing import Annotated, Any

import typer

from control_plane.cli.client import api
from control_plane.cli.options import Labels, Limit, Offset, parse_labels
from control_plane.cli.output import Output, OutputFormat, emit, emit_page, table
from control_plane.facts.workloads import MAX_GPUS_PER_WORKLOAD
from control_plane.scheduling.models import (
    DEFAULT_LEASE_SECONDS,
    MAX_LEASE_SECONDS,
    MIN_LEASE_SECONDS,
    PlacementStrategy,
    WorkloadStatus,
)

app = typer.Typer(
    no_args_is_help=True, help="Workloads: admission and GPU placement (via the API)."
)

WorkloadId = Annotated[str, typer.Argument(help="Workload id.")]

_GIB = 1024**3
_SUMMARY = [
    "id",
    "tenant",
    "status",
    "outcome",
    "hostname",
    "zone",
    "gpu_uuids",
    "mig_slices",
    "lease_expires_at",
    "policy_set",
]
_LIST_COLUMNS = ["id", "tenant", "status", "hostname", "gpu_uuids", "lease_expires_at"]
_REASON_COLUMNS = ["action", "policy", "rule", "message"]


def _summary(workload: dict[str, Any]) -> dict[str, Any]:
    version, digest = workload["policy_set_version"], workload["policy_set_hash"]
    slices = ", ".join(
        f"{s['profile']} {s['uuid']} on {s['gpu_uuid']}" for s in workload.get("mig_slices", [])
    )
    return {**workload, "policy_set": f"version {version}, sha256 {digest}", "mig_slices": slices}


def _print(workload: dict[str, Any], output: OutputFormat) -> None:
    """A workload: the API's JSON, or its summary and a table of the decision's reasons.

    What applied only to the other eligible nodes follows under its own heading, so it is
    not read as a finding about the node the workload runs on.
    """
    if output is OutputFormat.JSON:
        emit(workload, output)
        return
    emit(_summary(workload), output, _SUMMARY)
    if workload["reasons"]:
        typer.echo("")
        typer.echo(table(workload["reasons"], _REASON_COLUMNS))
    other = workload.get("other_nodes")
    if other and other["reasons"]:
        typer.echo("")
        typer.echo(f"other eligible nodes ({other['eligible']}), not used by this workload:")
        typer.echo(table(other["reasons"], _REASON_COLUMNS))
    revocation = workload.get("revocation")
    if revocation:
        typer.echo("")
        typer.echo(
            f"revoked at {revocation['revoked_at']} by compliance evaluation"
            f" {revocation['evaluation_id']} (policies: {', '.join(revocation['policies'])}):"
        )
        typer.echo(table(revocation["reasons"], _REASON_COLUMNS))


@app.command("create")
def workloads_create(
    tenant: Annotated[str, typer.Option(help="Tenant slug.")],
    gpus: Annotated[
        int, typer.Option(min=1, max=MAX_GPUS_PER_WORKLOAD, help="GPUs on one node.")
    ] = 1,
    dataset: Annotated[
        list[str] | None, typer.Option("--dataset", help="Dataset name; repeat for more.")
    ] = None,
    model: Annotated[
        list[str] | None, typer.Option("--model", help="Model name; repeat for more.")
    ] = None,
    destination: Annotated[
        str | None, typer.Option("--destination", help="Artifact destination for the results.")
    ] = None,
    gpu_model: Annotated[
        str | None, typer.Option(help="Substring of the GPU model, any case (H100).")
    ] = None,
    min_memory_gib: Annotated[
        float | None, typer.Option(min=0, help="Minimum memory per GPU, GiB.")
    ] = None,
    mig_profile: Annotated[
        str | None, typer.Option(help="MIG profile, e.g. 1g.10gb (MIG-enabled GPUs).")
    ] = None,
    strategy: Annotated[
        PlacementStrategy, typer.Option(help="binpack (keep whole nodes free) or spread.")
    ] = PlacementStrategy.BINPACK,
    lease_seconds: Annotated[
        int,
        typer.Option(
            min=MIN_LEASE_SECONDS, max=MAX_LEASE_SECONDS, help="Lease; renew before it passes."
        ),
    ] = DEFAULT_LEASE_SECONDS,
    label: Labels = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Ask for GPUs: prints the decision and placement; exits 1 when denied."""
    body: dict[str, Any] = {
        "tenant": tenant,
        "datasets": dataset or [],
        "models": model or [],
        "output": destination,
        "gpu_count": gpus,
        "gpu_model": gpu_model,
        "min_gpu_memory_bytes": None if min_memory_gib is None else int(min_memory_gib * _GIB),
        "mig_profile": mig_profile,
        "labels": parse_labels(label),
        "strategy": strategy.value,
        "lease_seconds": lease_seconds,
    }
    workload = api("POST", "/v1/workloads", json=body)
    _print(workload, output)
    if workload["status"] == WorkloadStatus.DENIED:
        raise typer.Exit(1)


@app.command("list")
def workloads_list(
    tenant: Annotated[str | None, typer.Option(help="Tenant slug.")] = None,
    status: Annotated[WorkloadStatus | None, typer.Option(help="Workload status.")] = None,
    limit: Limit = 100,
    offset: Offset = 0,
    output: Output = OutputFormat.TABLE,
) -> None:
    """List workloads, newest first."""
    params = {"tenant": tenant, "status": status, "limit": limit, "offset": offset}
    emit_page(api("GET", "/v1/workloads", params=params), output, _LIST_COLUMNS)


@app.command("show")
def workloads_show(workload_id: WorkloadId, output: Output = OutputFormat.TABLE) -> None:
    """Show a workload: its decision, the reasons and, when admitted, where it runs."""
    _print(api("GET", f"/v1/workloads/{workload_id}"), output)


@app.command("release")
def workloads_release(workload_id: WorkloadId, output: Output = OutputFormat.TABLE) -> None:
    """End a workload and free its GPUs."""
    _print(api("POST", f"/v1/workloads/{workload_id}/release"), output)


@app.command("renew")
def workloads_renew(
    workload_id: WorkloadId,
    lease_seconds: Annotated[
        int | None,
        typer.Option(
            min=MIN_LEASE_SECONDS,
            max=MAX_LEASE_SECONDS,
            help="New lease length (default: the workload's own).",
        ),
    ] = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Restart an admitted workload's lease from now."""
    body = {"lease_seconds": lease_seconds}
    _print(api("POST", f"/v1/workloads/{workload_id}/renew", json=body), output)
