"""``sovctl zones create|list|show|update|delete``: residency zones, through the HTTP API."""

from typing import Annotated

import typer

from control_plane.cli.client import api
from control_plane.cli.options import Description, NewDescription, changes
from control_plane.cli.output import Output, OutputFormat, emit

app = typer.Typer(no_args_is_help=True, help="Residency zones (via the API).")

Slug = Annotated[str, typer.Argument(help="Zone slug, e.g. jp-east.")]

_COLUMNS = ["slug", "name", "country", "parent", "description"]


@app.command("create")
def zones_create(
    slug: Annotated[str, typer.Argument(help="Short id, e.g. jp-east.")],
    name: Annotated[str, typer.Option(help="Display name.")],
    country: Annotated[str, typer.Option(help="ISO 3166-1 alpha-2, e.g. JP.")],
    parent: Annotated[str | None, typer.Option(help="Enclosing zone's slug.")] = None,
    description: Description = "",
    output: Output = OutputFormat.TABLE,
) -> None:
    """Create a residency zone."""
    zone = api(
        "POST",
        "/v1/zones",
        json={
            "slug": slug,
            "name": name,
            "country": country,
            "parent": parent,
            "description": description,
        },
    )
    emit(zone, output, _COLUMNS)


@app.command("list")
def zones_list(output: Output = OutputFormat.TABLE) -> None:
    """List residency zones."""
    emit(api("GET", "/v1/zones"), output, _COLUMNS)


@app.command("show")
def zones_show(slug: Slug, output: Output = OutputFormat.TABLE) -> None:
    """Show a residency zone."""
    emit(api("GET", f"/v1/zones/{slug}"), output, [*_COLUMNS, "created_at"])


@app.command("update")
def zones_update(
    slug: Slug,
    name: Annotated[str | None, typer.Option(help="New display name.")] = None,
    country: Annotated[str | None, typer.Option(help="New country, ISO alpha-2.")] = None,
    parent: Annotated[str | None, typer.Option(help="New enclosing zone's slug.")] = None,
    no_parent: Annotated[
        bool, typer.Option("--no-parent", help="Detach it from its enclosing zone.")
    ] = False,
    description: NewDescription = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Change a zone's name, country, parent or description; options left out stay."""
    if no_parent and parent is not None:
        raise typer.BadParameter("give --parent or --no-parent, not both", param_hint="--parent")
    body = changes(
        {"name": name, "country": country, "parent": parent, "description": description},
        cleared=["parent"] if no_parent else [],
    )
    emit(api("PATCH", f"/v1/zones/{slug}", json=body), output, _COLUMNS)


@app.command("delete")
def zones_delete(slug: Slug) -> None:
    """Delete a zone that no node, site or child zone uses (else HTTP 409)."""
    api("DELETE", f"/v1/zones/{slug}")
    typer.echo(f"deleted zone {slug}")
