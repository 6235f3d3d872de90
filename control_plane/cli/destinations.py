"""``sovctl destinations create|list|show|delete``: artifact destinations, via the API.

A destination is where a workload writes its outputs; its zone is what residency policies
check for them.
"""

from typing import Annotated

import typer

from control_plane.cli.client import api
from control_plane.cli.options import Description
from control_plane.cli.output import Output, OutputFormat, emit

app = typer.Typer(no_args_is_help=True, help="Artifact destinations (via the API).")

Name = Annotated[str, typer.Argument(help="Destination name.")]

_COLUMNS = ["name", "zone", "description"]


@app.command("create")
def destinations_create(
    name: Annotated[str, typer.Argument(help="Short id, e.g. results-jp.")],
    zone: Annotated[str, typer.Option(help="Zone slug the outputs stay in.")],
    description: Description = "",
    output: Output = OutputFormat.TABLE,
) -> None:
    """Create an artifact destination (where workloads write outputs)."""
    body = {"name": name, "zone": zone, "description": description}
    emit(api("POST", "/v1/destinations", json=body), output, _COLUMNS)


@app.command("list")
def destinations_list(output: Output = OutputFormat.TABLE) -> None:
    """List artifact destinations."""
    emit(api("GET", "/v1/destinations"), output, _COLUMNS)


@app.command("show")
def destinations_show(name: Name, output: Output = OutputFormat.TABLE) -> None:
    """Show an artifact destination."""
    emit(api("GET", f"/v1/destinations/{name}"), output, [*_COLUMNS, "created_at"])


@app.command("delete")
def destinations_delete(name: Name) -> None:
    """Delete an artifact destination."""
    api("DELETE", f"/v1/destinations/{name}")
    typer.echo(f"deleted destination {name}")
