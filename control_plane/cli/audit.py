"""``sovctl audit verify|actions``: walk the audit hash chain; list what it records.

``verify`` reads the database directly by default, so an auditor with database access
need not trust the API; ``--api`` asks the server instead, with an auditor's token.
``actions`` needs neither: it prints the closed list of actions the code records, with
the snapshot each event's ``before`` and ``after`` hold (docs/audit.md shows the same).
"""

from typing import Annotated

import typer

from control_plane.audit import service as audit
from control_plane.cli.client import api
from control_plane.cli.output import Output, OutputFormat, emit
from control_plane.core.db import connect
from control_plane.core.settings import load_settings
from control_plane.domain.audit import AUDIT_ACTIONS

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


def _models(models: tuple[str | None, ...]) -> str:
    return " or ".join("null" if model is None else model for model in models)


@app.command("actions")
def audit_actions(output: Output = OutputFormat.TABLE) -> None:
    """List every action the audit log records, with what its before and after hold."""
    emit(
        [
            {
                "action": action.value,
                "object_type": record.object_type,
                "when": record.when,
                "before": _models(record.before.models),
                "after": _models(record.after.models),
            }
            for action, record in AUDIT_ACTIONS.items()
        ],
        output,
        ["action", "object_type", "before", "after"],
    )
