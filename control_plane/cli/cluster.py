"""``sovctl cluster label-sync``: what the node label sync last found, through the HTTP API.

``main.py`` adds this sub-app to ``sovctl``.
"""

import typer

from control_plane.cli.client import api
from control_plane.cli.output import Output, OutputFormat, emit

app = typer.Typer(
    no_args_is_help=True, help="The Kubernetes cluster: node label sync (via the API)."
)


@app.command("label-sync")
def label_sync(output: Output = OutputFormat.TABLE) -> None:
    """The latest node label sync: counts, and the Nodes the inventory does not know."""
    status = api("GET", "/v1/cluster/label-sync")
    if output is OutputFormat.JSON:
        emit(status, output)
        return
    run = status["last_run"]
    state = "enabled" if status["enabled"] else "disabled"
    typer.echo(f"label sync: {state}, every {status['interval_seconds']:g} s")
    if run is None:
        typer.echo("no run has finished yet")
        return
    emit({key: run[key] for key in run if key != "unknown"}, output)
    if run["unknown"]:
        shown = len(run["unknown"])
        more = f" (the first {shown})" if shown < run["unknown_count"] else ""
        typer.echo(f"Nodes the inventory does not know, never labelled{more}:")
        for name in run["unknown"]:
            typer.echo(f"  {name}")
