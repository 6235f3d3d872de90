"""``sovctl nodes list|show|update|tag|ack-drift|approve-replacement``: GPU servers, via the API.

Agents register nodes; admins place them (``update``), label them (``tag``), accept a
drifted node's new hardware identity (``ack-drift``) and let an agent that lost its
credential register its node again with the bootstrap token (``approve-replacement``).
"""

from typing import Annotated, Any

import typer

from control_plane.cli.client import api
from control_plane.cli.options import Limit, Offset, changes
from control_plane.cli.output import Output, OutputFormat, emit, emit_page
from control_plane.domain.fleet import NodeStatus
from control_plane.inventory.models import (
    MAX_REPLACEMENT_APPROVAL_SECONDS,
    REPLACEMENT_APPROVAL_SECONDS,
)

app = typer.Typer(no_args_is_help=True, help="GPU servers (via the API).")

Node = Annotated[str, typer.Argument(help="Node id or hostname.")]

_COLUMNS = [
    "id",
    "hostname",
    "zone",
    "site",
    "status",
    "location",
    "origin_country",
    "provenance_status",
    "drift_status",
    "gpu_count",
    "mig_slices",
    "labels",
]
_GPU_COLUMNS = [
    "index",
    "uuid",
    "model",
    "serial",
    "memory_total_bytes",
    "mig_mode",
    "utilization_pct",
    "temperature_c",
]
_MIG_COLUMNS = ["gpu_uuid", "index", "uuid", "profile", "memory_total_bytes", "booked", "missing"]


def _slices(counts: list[dict[str, Any]]) -> str:
    """A node's MIG slices by profile as one cell: ``1g.10gb 5/7`` (free of total)."""
    return ", ".join(f"{c['profile']} {c['free']}/{c['total']}" for c in counts)


def _row(node: dict[str, Any]) -> dict[str, Any]:
    """A node flattened for the table: its provenance and drift status as columns."""
    provenance = node.get("provenance", {})
    return {
        **node,
        "origin_country": provenance.get("origin_country"),
        "provenance_status": provenance.get("status"),
        "drift_status": node.get("drift", {}).get("status"),
        "location": node.get("location", {}).get("via") or "unconfirmed",
        "mig_slices": _slices(node.get("mig_slices", [])),
    }


@app.command("list")
def nodes_list(
    zone: Annotated[str | None, typer.Option(help="Zone slug (nested zones included).")] = None,
    origin_country: Annotated[
        str | None, typer.Option("--origin", help="Country of origin.")
    ] = None,
    status: Annotated[str | None, typer.Option(help="Lifecycle status.")] = None,
    gpu_model: Annotated[str | None, typer.Option(help="GPU model substring.")] = None,
    provenance_status: Annotated[str | None, typer.Option("--provenance")] = None,
    drift_status: Annotated[str | None, typer.Option("--drift", help="none or drifted.")] = None,
    site: Annotated[str | None, typer.Option(help="Site slug.")] = None,
    limit: Limit = 100,
    offset: Offset = 0,
    output: Output = OutputFormat.TABLE,
) -> None:
    """List GPU servers."""
    params = {
        "zone": zone,
        "origin_country": origin_country,
        "status": status,
        "gpu_model": gpu_model,
        "provenance_status": provenance_status,
        "drift_status": drift_status,
        "site": site,
        "limit": limit,
        "offset": offset,
    }
    emit_page(api("GET", "/v1/nodes", params=params), output, _COLUMNS, _row)


def _print_detail(detail: dict[str, Any], output: OutputFormat) -> None:
    """A node as ``show`` prints it: the API's JSON, or the node and a table of its GPUs."""
    if output is OutputFormat.JSON:
        emit(detail, output)
        return
    emit(_row(detail), output, [*_COLUMNS, "last_heartbeat_at", "agent_version"])
    typer.echo("")
    emit(detail["gpus"], output, _GPU_COLUMNS)
    devices = [
        {**device, "gpu_uuid": gpu["uuid"], "missing": device["missing_since"] is not None}
        for gpu in detail["gpus"]
        for device in gpu.get("mig_devices", [])
    ]
    if devices:
        typer.echo("")
        emit(devices, output, _MIG_COLUMNS)


@app.command("show")
def nodes_show(node: Node, output: Output = OutputFormat.TABLE) -> None:
    """Show a GPU server with its GPUs."""
    _print_detail(api("GET", f"/v1/nodes/{node}"), output)


@app.command("update")
def nodes_update(
    node: Node,
    zone: Annotated[str | None, typer.Option(help="Move it to this zone.")] = None,
    site: Annotated[str | None, typer.Option(help="Move it to this site.")] = None,
    no_zone: Annotated[bool, typer.Option("--no-zone", help="Detach it from its zone.")] = False,
    no_site: Annotated[bool, typer.Option("--no-site", help="Detach it from its site.")] = False,
    status: Annotated[NodeStatus | None, typer.Option(help="New lifecycle status.")] = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Change a node's zone, site or status; options left out stay (labels: `nodes tag`)."""
    if (zone is not None and no_zone) or (site is not None and no_site):
        raise typer.BadParameter("give a zone or site, or detach it, not both")
    cleared = [name for name, clear in (("zone", no_zone), ("site", no_site)) if clear]
    body = changes({"zone": zone, "site": site, "status": status}, cleared=cleared)
    _print_detail(api("PATCH", f"/v1/nodes/{node}", json=body), output)


@app.command("confirm-location")
def nodes_confirm_location(
    node: Node,
    zone: Annotated[str, typer.Option(help="The zone the node stands in, as you checked.")],
    site: Annotated[str | None, typer.Option(help="The site, if it has one.")] = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Confirm where a node stands; a node waiting for that (planned) becomes active."""
    detail = api("GET", f"/v1/nodes/{node}")
    body: dict[str, Any] = {"zone": zone}
    if site is not None:
        body["site"] = site
    if detail["status"] == NodeStatus.PLANNED and detail["drift"]["status"] == "none":
        body["status"] = NodeStatus.ACTIVE
    _print_detail(api("PATCH", f"/v1/nodes/{node}", json=body), output)


@app.command("tag")
def nodes_tag(
    node: Node,
    labels: Annotated[list[str], typer.Argument(help="key=value to set, key- to remove.")],
    output: Output = OutputFormat.TABLE,
) -> None:
    """Set or remove labels on a GPU server."""
    patch: dict[str, str | None] = {}
    for item in labels:
        if item.endswith("-") and "=" not in item:
            patch[item[:-1]] = None
        elif "=" in item:
            key, value = item.split("=", 1)
            patch[key] = value
        else:
            raise typer.BadParameter(f"{item!r}: use key=value or key-", param_hint="LABELS")
    detail = api("PATCH", f"/v1/nodes/{node}", json={"labels": patch})
    emit(_row(detail), output, ["id", "hostname", "labels"])


@app.command("ack-drift")
def nodes_ack_drift(
    node: Node,
    note: Annotated[str | None, typer.Option(help="Why the change is expected.")] = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Accept a drifted node's reported hardware identity as its baseline; end the quarantine."""
    detail = api("POST", f"/v1/nodes/{node}/drift/acknowledge", json={"note": note})
    emit(_row(detail), output, ["id", "hostname", "status", "drift_status"])


@app.command("approve-replacement")
def nodes_approve_replacement(
    node: Node,
    reason: Annotated[str | None, typer.Option(help="Why, e.g. a ticket for a disk swap.")] = None,
    expires_in: Annotated[
        int,
        typer.Option(
            "--expires-in",
            min=60,
            max=MAX_REPLACEMENT_APPROVAL_SECONDS,
            help="Seconds the approval may be used (once).",
        ),
    ] = REPLACEMENT_APPROVAL_SECONDS,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Allow one bootstrap-token registration of a node whose agent lost its credential."""
    body = {"reason": reason, "expires_in_seconds": expires_in}
    approval = api("POST", f"/v1/nodes/{node}/replacement", json=body)
    emit(approval, output, ["node_id", "approved_by", "approved_at", "expires_at", "reason"])
