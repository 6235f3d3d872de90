"""``sovctl``: the root app, where every feature's sub-app is registered, and ``main()``.

Server lifecycle (``preflight``, ``db upgrade``, ``serve``, ``worker``, ``beat``, ``up``)
sits at the top level; each resource has a sub-app named by its plural noun, with the verbs
``create``, ``list``, ``show``, ``update`` and ``delete`` where the API has them, and
``-o/--output table|json`` on every command that prints a result. Commands that set up the
server (server lifecycle, ``tokens``, ``demo``, ``audit verify``) use the database and
settings directly, so they work before any token exists; the rest call the HTTP API with a
token, like any other client.

The spellings of 0.1 (``tenant``, ``dataset register``, ``workload submit``, ...) keep
working until 0.3, hidden and announced; see ``deprecation.py``.
"""

from pathlib import Path
from typing import Annotated

import typer

import control_plane
from control_plane.cli import (
    assets,
    audit,
    cluster,
    compliance,
    demo,
    destinations,
    nodes,
    policies,
    provenance,
    reports,
    server,
    tenants,
    tokens,
    usage,
    workloads,
    zones,
)
from control_plane.cli.client import RemoteError, set_target
from control_plane.cli.deprecation import deprecated_alias
from control_plane.core.errors import SovereignError

app = typer.Typer(no_args_is_help=True, help="Sovereign admin CLI.", add_completion=False)
app.add_typer(server.app)
for sub_app, name in [
    (tokens.app, "tokens"),
    (zones.app, "zones"),
    (nodes.app, "nodes"),
    (tenants.app, "tenants"),
    (assets.datasets_app, "datasets"),
    (assets.models_app, "models"),
    (destinations.app, "destinations"),
    (policies.app, "policies"),
    (workloads.app, "workloads"),
    (compliance.app, "compliance"),
    (cluster.app, "cluster"),
    (provenance.app, "provenance"),
    (audit.app, "audit"),
    (reports.app, "reports"),
    (demo.app, "demo"),
]:
    app.add_typer(sub_app, name=name)
app.command("usage")(usage.usage_command)

# The spellings of 0.1, removed in 0.3: renamed verbs first, so the old nouns carry them too.
deprecated_alias(assets.datasets_app, "register", "create")
deprecated_alias(assets.models_app, "register", "create")
deprecated_alias(workloads.app, "submit", "create")
for old, new in [
    ("token", "tokens"),
    ("tenant", "tenants"),
    ("dataset", "datasets"),
    ("model", "models"),
    ("destination", "destinations"),
    ("policy", "policies"),
    ("workload", "workloads"),
]:
    deprecated_alias(app, old, new)


def _print_version(wanted: bool) -> None:
    """``--version``: print ``sovctl <version>`` and stop before any command runs."""
    if wanted:
        typer.echo(f"sovctl {control_plane.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    url: Annotated[str | None, typer.Option(help="Control-plane URL (or SOVCTL_URL).")] = None,
    token: Annotated[str | None, typer.Option(help="API token (or SOVCTL_TOKEN).")] = None,
    ca_bundle: Annotated[
        Path | None,
        typer.Option(help="PEM CAs to verify an https:// URL with (or SOVCTL_CA_BUNDLE)."),
    ] = None,
    version: Annotated[
        bool,
        typer.Option(
            "--version", is_eager=True, callback=_print_version, help="Print the version, exit."
        ),
    ] = False,
) -> None:
    """Sovereign admin CLI."""
    set_target(url, token, ca_bundle)


def main() -> int:
    """Entry point: run the CLI and turn Sovereign errors into one line on stderr."""
    try:
        # Without standalone mode, typer returns the code of a ``typer.Exit`` instead of
        # raising it; our commands return nothing else.
        outcome = app(standalone_mode=False)
    except SovereignError as exc:
        prefix = f"HTTP {exc.http_status}: " if isinstance(exc, RemoteError) else ""
        typer.echo(f"error: {prefix}{exc.message}", err=True)
        return 1
    except typer.Exit as exc:
        return int(exc.exit_code)
    except typer.Abort:
        typer.echo("aborted", err=True)
        return 1
    except typer.TyperException as exc:  # usage errors: bad option, bad value
        show = getattr(exc, "show", None)
        if callable(show):
            show()
        else:
            typer.echo(f"error: {exc.format_message()}", err=True)
        return exc.exit_code
    return outcome if isinstance(outcome, int) else 0
