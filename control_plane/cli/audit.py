"""``sovctl audit verify``: walk the audit hash chain.

By default it reads the database directly, so an auditor with database access need not
trust the API; ``--api`` asks the server instead, with an auditor's token.
"""

from typing import Annotated

import typer

from control_plane.audit import service as audit
from control_plane.cli.client import api
from control_plane.cli.output import Output, OutputFormat, emit
from control_plane.core.db import connect
from control_plane.core.settings import load_settings

app = typer.Typer(no_args_is_help=True, help="The audit chain.")


@app.command("verify")
def audit_verify(
    via_api: Annotated[
        bool, typer.Option("--api", help="Ask the server instead of the DB.")
    ] = False,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Walk the audit chain; exit 1 and name the first broken seq if it is not intact."""
    if via_api:
        result = api("GET", "/v1/audit/verify")
    else:
        with connect(load_settings().database_url) as conn:
            result = audit.verify_chain(conn).model_dump(mode="json")
    if output is OutputFormat.JSON:
        emit(result, output)
    elif result["ok"]:
        typer.echo(
            f"audit chain intact: {result['events_checked']} events, "
            f"head seq {result['head_seq']}, hash {result['head_hash']}"
        )
    else:
        typer.echo(
            f"audit chain BROKEN at seq {result['first_broken_seq']}: {result['reason']} "
            f"({result['events_checked']} events before it are intact)"
        )
    if not result["ok"]:
        raise typer.Exit(1)
