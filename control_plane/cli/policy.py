"""``sovctl policy``: residency policies, offline.

``sovctl policy test`` runs the policy engine on files alone (policy documents and a
scenario with the workload, the nodes and the zones), with no server and no database, so
policy authors and CI pipelines can check what a policy does before it is active. Its exit
code can be relied on: 0 admitted (with or without warnings), 1 denied, 2 usage or
validation error.
"""

from pathlib import Path
from typing import Annotated, Any

import typer

from control_plane.cli.output import OutputFormat, emit
from control_plane.core.errors import InvalidInputError
from control_plane.policy.documents import compile_policy_set, load_documents
from control_plane.policy.engine import NodeIndex, decide
from control_plane.policy.models import Decision, EnforcementPoint
from control_plane.policy.scenario import load_scenario

app = typer.Typer(no_args_is_help=True, help="Residency policies (offline).")

#: Exit code for a file that does not parse or validate, as for a usage error.
EXIT_INVALID = 2
#: Exit code for a denied workload.
EXIT_DENIED = 1


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidInputError("not UTF-8 text") from None
    except OSError as exc:
        raise InvalidInputError(str(exc.strerror or exc)) from None


def _in_file(path: Path, exc: InvalidInputError) -> InvalidInputError:
    """The same error, its message led by the file it is about, which ``details`` records."""
    return InvalidInputError(f"{path}: {exc.message}", details={**exc.details, "source": str(path)})


def _evaluate(policy_file: Path, scenario_file: Path, version: int) -> tuple[Decision, NodeIndex]:
    try:
        scenario = load_scenario(_read(scenario_file))
    except InvalidInputError as exc:
        raise _in_file(scenario_file, exc) from None
    zones = scenario.zone_views()
    try:
        policy_set = compile_policy_set(load_documents(_read(policy_file)), version, zones)
    except InvalidInputError as exc:
        raise _in_file(policy_file, exc) from None
    index = NodeIndex.build(scenario.node_views(), zones)
    decision = decide(scenario.workload_view(), index, policy_set, point=EnforcementPoint.CLI)
    return decision, index


def _print_error(exc: InvalidInputError) -> None:
    fields = exc.details.get("fields") or []
    if len(fields) <= 1:
        typer.echo(f"error: {exc.message}", err=True)
        return
    typer.echo(f"error: {exc.details.get('source', 'input')}: {len(fields)} problems", err=True)
    for field in fields:
        typer.echo(f"  {field['field']}: {field['message']}", err=True)


def _print_table(decision: Decision, index: NodeIndex) -> None:
    typer.echo(f"outcome: {decision.outcome}")
    typer.echo(
        f"policy set: version {decision.policy_set_version}, sha256 {decision.policy_set_hash}"
    )
    if decision.reasons:
        typer.echo("")
        emit(
            [reason.to_json() for reason in decision.reasons],
            OutputFormat.TABLE,
            ["action", "policy", "rule", "message"],
        )
    hostnames = [index.node(node_id).hostname for node_id in decision.eligible_node_ids]
    typer.echo("")
    typer.echo(f"eligible nodes ({len(hostnames)}): {', '.join(hostnames) or '-'}")


@app.command("test")
def policy_test(
    policy_file: Annotated[
        Path,
        typer.Option(
            "--file",
            "-f",
            exists=True,
            dir_okay=False,
            help="Policy documents (YAML or JSON): one, a list, or several YAML documents.",
        ),
    ],
    scenario_file: Annotated[
        Path,
        typer.Option(
            "--workload",
            "-w",
            exists=True,
            dir_okay=False,
            help="Scenario (YAML or JSON): the workload, the nodes and the zones.",
        ),
    ],
    version: Annotated[
        int, typer.Option("--policy-version", min=0, help="Version to record on the decision.")
    ] = 0,
    output: Annotated[
        OutputFormat, typer.Option("--output", "-o", help="table or json")
    ] = OutputFormat.TABLE,
) -> None:
    """Decide a scenario's workload under the policies, offline; exit 1 if it is denied."""
    try:
        decision, index = _evaluate(policy_file, scenario_file, version)
    except InvalidInputError as exc:
        _print_error(exc)
        raise typer.Exit(EXIT_INVALID) from None
    if output is OutputFormat.JSON:
        result: dict[str, Any] = decision.to_json()
        result["eligible_nodes"] = [
            {"id": node_id, "hostname": index.node(node_id).hostname}
            for node_id in decision.eligible_node_ids
        ]
        emit(result, output)
    else:
        _print_table(decision, index)
    if not decision.admitted:
        raise typer.Exit(EXIT_DENIED)
