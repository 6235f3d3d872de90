"""``sovctl compliance evaluate|list|show``: continuous compliance, through the HTTP API.

``main.py`` adds this sub-app to ``sovctl``. ``evaluate`` asks for an evaluation (the
worker runs it on its next beat) and, with ``--wait``, polls the request until an
evaluation handled it and shows that evaluation; ``list`` and ``show`` read what
evaluations recorded.
"""

import time
from typing import Annotated, Any

import typer

from control_plane.cli.client import api, api_client
from control_plane.cli.options import Limit
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
#: How often ``evaluate --wait`` asks whether its request was handled: the worker runs
#: every SOVEREIGN_COMPLIANCE_INTERVAL_SECONDS (10 s by default), so a second is prompt
#: enough and costs the API one indexed read per second.
POLL_SECONDS = 1.0


def _wait_for_evaluation(request_id: int, timeout: float) -> dict[str, Any]:
    """Poll request ``request_id`` until an evaluation handled it; return that evaluation.

    Exits with status 1 after ``timeout`` seconds, saying why that usually happens.
    """
    deadline = time.monotonic() + timeout
    with api_client() as client:
        while True:
            request = client.request("GET", f"/v1/compliance/requests/{request_id}")
            if request["evaluation_id"] is not None:
                evaluation: dict[str, Any] = client.request(
                    "GET", f"/v1/compliance/evaluations/{request['evaluation_id']}"
                )
                return evaluation
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                typer.echo(
                    f"error: request {request_id} was not evaluated within {timeout:g} s; the"
                    " Celery worker or beat may not be running (start both with `sovctl up`,"
                    " or `sovctl worker` and `sovctl beat`). The request stays pending and is"
                    " evaluated once they run.",
                    err=True,
                )
                raise typer.Exit(1)
            time.sleep(min(POLL_SECONDS, remaining))


@app.command("evaluate")
def compliance_evaluate(
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait until the evaluation ran, then show it.")
    ] = False,
    timeout: Annotated[
        float, typer.Option(min=0, help="Seconds --wait waits at most before failing.")
    ] = 120,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Ask for every running workload to be re-evaluated; the worker runs it next beat."""
    requested = api("POST", "/v1/compliance/evaluations")
    if wait:
        _show(_wait_for_evaluation(requested["id"], timeout), output)
        return
    if output is OutputFormat.JSON:
        emit(requested, output)
        return
    typer.echo(
        f"evaluation requested (request {requested['id']}); the worker runs it within"
        " SOVEREIGN_COMPLIANCE_INTERVAL_SECONDS. See it with: sovctl compliance show"
    )


@app.command("list")
def compliance_list(
    limit: Limit = 20,
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


def _show(evaluation: dict[str, Any], output: OutputFormat) -> None:
    """Print an evaluation as ``show`` does: the API's JSON, or a summary and tables."""
    if output is OutputFormat.JSON:
        emit(evaluation, output)
        return
    _print(evaluation)


@app.command("show")
def compliance_show(
    evaluation_id: Annotated[
        str | None, typer.Argument(help="Evaluation id (default: the latest).")
    ] = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Show an evaluation (the latest by default) with its sample of violating workloads."""
    _show(api("GET", f"/v1/compliance/evaluations/{evaluation_id or 'latest'}"), output)
