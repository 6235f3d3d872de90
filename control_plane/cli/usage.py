"""``sovctl usage``: GPU-hours used, or the fleet's capacity, from the metering rollups."""

from typing import Annotated, Any

import typer

from control_plane.cli.client import api
from control_plane.cli.output import Output, OutputFormat, emit
from control_plane.domain.metering import UsageDimension, UsageGranularity, UsageMeasure

_DIMENSION_COLUMNS = {
    UsageDimension.WORKLOAD: "workload_id",
    UsageDimension.TENANT: "tenant",
    UsageDimension.NODE: "node_id",
    UsageDimension.ZONE: "zone",
    UsageDimension.ZONE_COUNTRY: "zone_country",
    UsageDimension.ORIGIN_COUNTRY: "origin_country",
    UsageDimension.GPU_ORIGIN: "gpu_origin",
    UsageDimension.PROVENANCE_STATUS: "provenance_status",
    UsageDimension.NODE_STATUS: "node_status",
    UsageDimension.MIG_PROFILE: "mig_profile",
}


def usage_command(
    since: Annotated[
        str | None, typer.Option(help="Start, a whole UTC hour (default: this month's start).")
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="End (exclusive), a whole UTC hour (default: next hour).")
    ] = None,
    by: Annotated[
        list[UsageDimension] | None, typer.Option("--by", help="Group by this (repeatable).")
    ] = None,
    granularity: Annotated[
        UsageGranularity, typer.Option(help="total, day or hour.")
    ] = UsageGranularity.TOTAL,
    measure: Annotated[
        UsageMeasure, typer.Option(help="usage (by workloads) or capacity (of the fleet).")
    ] = UsageMeasure.USAGE,
    tenant: Annotated[str | None, typer.Option(help="Only this tenant.")] = None,
    zone: Annotated[str | None, typer.Option(help="Only this zone.")] = None,
    origin_country: Annotated[str | None, typer.Option(help="Only servers made here.")] = None,
    provenance_status: Annotated[str | None, typer.Option(help="Only nodes with this.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="Rows at most.")] = 1000,
    output: Output = OutputFormat.TABLE,
) -> None:
    """GPU-hours over a period, grouped by any dimension (auditors and admins)."""
    dimensions = by or []
    params: dict[str, Any] = {
        "since": since,
        "until": until,
        "group_by": [d.value for d in dimensions],
        "granularity": granularity.value,
        "measure": measure.value,
        "tenant": tenant,
        "zone": zone,
        "origin_country": origin_country,
        "provenance_status": provenance_status,
        "limit": limit,
    }
    report = api(
        "GET", "/v1/usage", params={k: v for k, v in params.items() if v not in (None, [])}
    )
    if output is OutputFormat.JSON:
        emit(report, output)
        return
    columns = (["period_start"] if granularity is not UsageGranularity.TOTAL else []) + [
        _DIMENSION_COLUMNS[d] for d in dimensions
    ]
    emit(report["rows"], output, [*columns, "gpu_hours", "mig_slice_hours"])
    note = " (truncated)" if report["truncated"] else ""
    typer.echo(
        f"{report['gpu_hours']:.3f} GPU-hours, {report['mig_slice_hours']:.3f} MIG slice-hours"
        f" from {report['since']} to {report['until']} ({report['source']}, metered until"
        f" {report['metered_until']}){note}"
    )
