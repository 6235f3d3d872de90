"""``sovctl tokens create|list|revoke``: API tokens, straight in the database.

Tokens have no API of their own: the first admin token has to come from somewhere, so these
commands use the settings' database and secret key, and record ``cli:user@host`` as the
actor. A token's secret is printed once at creation; only its hash is stored.
"""

from typing import Annotated

import typer

from control_plane.access import service as access
from control_plane.access.models import Role
from control_plane.cli.local import cli_actor
from control_plane.cli.output import Output, OutputFormat, emit
from control_plane.core.db import connect
from control_plane.core.settings import load_settings
from control_plane.inventory import agents

app = typer.Typer(no_args_is_help=True, help="API tokens (stored only as hashes).")


@app.command("create")
def tokens_create(
    name: Annotated[str, typer.Option(help="Who or what the token is for.")],
    role: Annotated[Role, typer.Option(help="admin, operator, auditor or bootstrap.")],
    zone: Annotated[
        str | None,
        typer.Option(help="Bootstrap only: the zone its nodes stand in (confirmed)."),
    ] = None,
    site: Annotated[
        str | None, typer.Option(help="Bootstrap only: the site within --zone.")
    ] = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Create a token; its secret is printed once and never stored.

    A bootstrap token with --zone (and --site) confirms where the nodes it registers
    stand and refuses a registration claiming anywhere else; without a scope its nodes
    wait `planned` until an admin runs `sovctl nodes confirm-location`.
    """
    settings = load_settings()
    secret_key = settings.secret_key.get_secret_value()
    if (zone is not None or site is not None) and role is not Role.BOOTSTRAP:
        raise typer.BadParameter("only bootstrap tokens have a zone or site", param_hint="--zone")
    with connect(settings.database_url) as conn:
        if role is Role.BOOTSTRAP:
            issued = agents.create_bootstrap_token(
                conn, cli_actor(), name=name, secret_key=secret_key, zone=zone, site=site
            )
        else:
            issued = access.create_token(
                conn, cli_actor(), name=name, role=role, secret_key=secret_key
            )
    emit(
        {"token": issued.token, **issued.info.model_dump(mode="json")},
        output,
        ["token", "id", "name", "role", "zone", "site"],
    )


@app.command("list")
def tokens_list(
    all_tokens: Annotated[
        bool, typer.Option("--all", help="Include revoked and agent tokens.")
    ] = False,
    output: Output = OutputFormat.TABLE,
) -> None:
    """List tokens (never their secrets)."""
    with connect(load_settings().database_url) as conn:
        tokens = access.list_tokens(conn, include_revoked=all_tokens, include_agents=all_tokens)
    emit(
        [t.model_dump(mode="json") for t in tokens],
        output,
        ["id", "name", "role", "zone", "site", "token_prefix", "created_at", "revoked_at"],
    )


@app.command("revoke")
def tokens_revoke(
    ref: Annotated[str, typer.Argument(help="Token id, name or prefix.")],
    output: Output = OutputFormat.TABLE,
) -> None:
    """Revoke a token; it stops working at once."""
    with connect(load_settings().database_url) as conn:
        revoked = access.revoke_token(conn, cli_actor(), ref)
    emit(revoked.model_dump(mode="json"), output, ["id", "name", "role", "revoked_at"])
