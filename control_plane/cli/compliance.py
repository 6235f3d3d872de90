"""``sovctl compliance evaluate|list|show``: continuous compliance, through the HTTP API.

``main.py`` adds this sub-app to ``sovctl``. ``evaluate`` asks for an evaluation (the
worker runs it on its next beat); ``list`` and ``show`` read what evaluations recorded.
"""

from typing import Annotated, Any

import typer

from control_plane.cli.client import api
from control_plane.cli.output import Output, OutputFormat, emit, emit_page

app = typer.Typer(
    no_args_is_help=True,
    help="Continuous compliance: re-evaluate running workloads (via the API).",
)

_LIST_COLUMNS = [
    "id",
    "finished_at",
    "policy_set_version",
    "workloads_evaluated",
    "violating_workloads",
    "warned_workloads",
    "trigger_count",
]
_SAMPLE_COLUMNS = ["workload_id", "tenant", "hostname", "zone", "denied_by"]


@app.command("evaluate")
def compliance_evaluate(output: Output = OutputFormat.TABLE) -> None:
    """Ask for every running workload to be re-evaluated; the worker runs it next beat."""
    requested = api("POST", "/v1/compliance/evaluations")
    if output is OutputFormat.JSON:
        emit(requested, output)
        return
    typer.echo(
        f"evaluation requested (request {requested['id']}); the worker runs it within"
        " SOVEREIGN_COMPLIANCE_INTERVAL_SECONDS. See it with: sovctl compliance show"
    )


@app.command("list")
def compliance_list(
    limit: Annotated[int, typer.Option(min=1, max=500)] = 20,
    output: Output = OutputFormat.TABLE,
) -> None:
    """List compliance evaluations, newest first."""
    emit_page(
        api("GET", "/v1/compliance/evaluations", params={"limit": limit}), output, _LIST_COLUMNS
    )


def denied_by(reasons: list[dict[str, Any]]) -> str:
    """``policy:rule`` of each deny reason (``-`` for a reason of no policy)."""
    return ", ".join(
        f"{reason['policy'] or '-'}:{reason['rule']}"
        for reason in reasons
        if reason["action"] == "deny"
    )


def _print(evaluation: dict[str, Any]) -> None:
    triggers = sorted({trigger["reason"] for trigger in evaluation["triggers"]})
    typer.echo(f"evaluation:   {evaluation['id']}")
    typer.echo(f"finished at:  {evaluation['finished_at']}")
    typer.echo(
        f"policy set:   version {evaluation['policy_set_version']},"
        f" sha256 {evaluation['policy_set_hash']}"
    )
    typer.echo(f"fleet:        generation {evaluation['fleet_generation']}")
    typer.echo(f"triggered by: {evaluation['trigger_count']} request(s): {', '.join(triggers)}")
    typer.echo(
        f"workloads:    {evaluation['workloads_evaluated']} evaluated,"
        f" {evaluation['violating_workloads']} violating,"
        f" {evaluation['warned_workloads']} with warnings"
    )
    if evaluation["violations_by_rule"]:
        typer.echo("")
        emit(evaluation["violations_by_rule"], OutputFormat.TABLE, ["policy", "rule", "workloads"])
        typer.echo("")
        emit(
            [{"tenant": t, "workloads": n} for t, n in evaluation["violations_by_tenant"].items()],
            OutputFormat.TABLE,
            ["tenant", "workloads"],
        )
    if evaluation["sample"]:
        typer.echo("")
        rows = [{**item, "denied_by": denied_by(item["reasons"])} for item in evaluation["sample"]]
        emit(rows, OutputFormat.TABLE, _SAMPLE_COLUMNS)
        if len(rows) < evaluation["violating_workloads"]:
            typer.echo(f"({len(rows)} of {evaluation['violating_workloads']} listed)")


@app.command("show")
def compliance_show(
    evaluation_id: Annotated[
        str | None, typer.Argument(help="Evaluation id (default: the latest).")
    ] = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Show an evaluation (the latest by default) with its sample of violating workloads."""
    found = api("GET", f"/v1/compliance/evaluations/{evaluation_id or 'latest'}")
    if output is OutputFormat.JSON:
        emit(found, output)
        return
    _print(found)
