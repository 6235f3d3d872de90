"""``sovctl policies``: residency policies, offline and in the policy store.

``sovctl policies test`` runs the policy engine on files alone (policy documents and a
scenario with the workload, the nodes and the zones), with no server and no database, so
policy authors and CI pipelines can check what a policy does before it is active. Its exit
code can be relied on: 0 admitted (with or without warnings), 1 denied, 2 usage or
validation error.

``apply``, ``list``, ``show``, ``activate``, ``rollback`` and ``sets`` call the API (URL and
token as for every ``sovctl`` API command): they store policy versions and choose which set
of them is enforced. ``whatif`` asks the API what activating a file's policies would change
for the running workloads and each tenant's usable GPUs, and stores nothing.
"""

from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from control_plane.cli.client import RemoteError, api
from control_plane.cli.compliance import denied_by
from control_plane.cli.options import Limit
from control_plane.cli.output import Output, OutputFormat, emit, emit_page
from control_plane.core.errors import InvalidInputError
from control_plane.domain.decisions import EnforcementPoint
from control_plane.policy.documents import compile_policy_set, load_documents
from control_plane.policy.engine import DecisionCache, NodeIndex, decide
from control_plane.policy.models import Decision
from control_plane.policy.scenario import load_scenario

app = typer.Typer(
    no_args_is_help=True, help="Residency policies: test offline, store and activate via the API."
)

PolicyFile = Annotated[
    Path,
    typer.Option(
        "--file",
        "-f",
        exists=True,
        dir_okay=False,
        help="Policy documents (YAML or JSON): one, a list, or several YAML documents.",
    ),
]
Note = Annotated[str, typer.Option("--note", help="Why; kept with the set and in the audit log.")]

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
    decision = decide(
        scenario.workload_view(),
        index,
        policy_set,
        point=EnforcementPoint.CLI,
        cache=DecisionCache(),  # one decision per run: nothing to share
    )
    return decision, index


def _print_problems(lead: str, fields: list[dict[str, Any]]) -> None:
    """``error: LEAD: N problems``, then one line per problem rather than one long line."""
    typer.echo(f"error: {lead}: {len(fields)} problems", err=True)
    for field in fields:
        typer.echo(f"  {field['field']}: {field['message']}", err=True)


def _print_error(exc: InvalidInputError) -> None:
    fields = exc.details.get("fields") or []
    if len(fields) <= 1:
        typer.echo(f"error: {exc.message}", err=True)
        return
    _print_problems(exc.details.get("source", "input"), fields)


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
    _print_explanation(decision)
    hostnames = [index.node(node_id).hostname for node_id in decision.eligible_node_ids]
    typer.echo("")
    typer.echo(f"eligible nodes ({len(hostnames)}): {', '.join(hostnames) or '-'}")


def _print_explanation(decision: Decision) -> None:
    """Which policies applied and what each rule found, and which did not apply and why."""
    explanation = decision.explanation
    typer.echo("")
    if explanation.selected:
        emit(
            [
                {
                    "policy": policy.name,
                    "action": policy.enforcement_action.value,
                    "rules": ", ".join(f"{r.rule} {r.result}" for r in policy.rules) or "-",
                }
                for policy in explanation.selected
            ],
            OutputFormat.TABLE,
            ["policy", "action", "rules"],
        )
    else:
        typer.echo("no policy of the set selects this workload")
    if explanation.not_selected:
        typer.echo("")
        emit(
            [
                {"not_selected": policy.name, "reason": policy.reason}
                for policy in explanation.not_selected
            ],
            OutputFormat.TABLE,
            ["not_selected", "reason"],
        )


@app.command("test")
def policy_test(
    policy_file: PolicyFile,
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
    output: Output = OutputFormat.TABLE,
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


# -- the policy store, through the API -------------------------------------------------

_SUMMARY_COLUMNS = ["name", "version", "active_version", "enforcement_action", "description"]
_VERSION_COLUMNS = ["name", "version", "active", "content_hash", "created_at", "created_by"]
_SET_COLUMNS = ["version", "members", "content_hash", "activated_at", "activated_by", "note"]


def _set_row(policy_set: dict[str, Any]) -> dict[str, Any]:
    members = [f"{m['name']}@{m['version']}" for m in policy_set["members"]]
    return {**policy_set, "members": members}


def _print_set(policy_set: dict[str, Any], output: OutputFormat) -> None:
    if output is OutputFormat.JSON:
        emit(policy_set, output)
        return
    emit(_set_row(policy_set), output, [*_SET_COLUMNS, "previous_version", "restores_version"])


def _member(text: str) -> dict[str, Any]:
    """``name`` (its latest version) or ``name@version``."""
    name, sep, version = text.partition("@")
    if not name or (sep and not version.isdigit()):
        raise typer.BadParameter(f"{text!r}: use NAME or NAME@VERSION", param_hint="--member")
    return {"name": name, "version": int(version)} if sep else {"name": name}


def _post_documents(policy_file: Path, path: str) -> Any:
    """Send a policy file's documents to the API; a rejected file's problems one per line."""
    try:
        documents = load_documents(_read(policy_file))
        return api("POST", path, json=documents)
    except InvalidInputError as exc:
        raise _in_file(policy_file, exc) from None
    except RemoteError as exc:
        fields = exc.details.get("fields") or []
        if len(fields) <= 1:
            raise
        _print_problems(f"HTTP {exc.http_status}: {policy_file}", fields)
        raise typer.Exit(1) from None


@app.command("apply")
def policy_apply(policy_file: PolicyFile, output: Output = OutputFormat.TABLE) -> None:
    """Store new versions of the file's policies; `policies activate` makes them enforced."""
    applied = _post_documents(policy_file, "/v1/policies")
    if output is OutputFormat.JSON:
        emit(applied, output)
        return
    rows = [{**p, "result": "stored" if p["created"] else "unchanged"} for p in applied]
    emit(rows, output, ["name", "version", "result", "content_hash"])
    typer.echo("not enforced until activated: sovctl policies activate")


@app.command("list")
def policy_list(output: Output = OutputFormat.TABLE) -> None:
    """List every policy's latest version and the version the active set enforces."""
    policies = api("GET", "/v1/policies")
    if output is OutputFormat.JSON:
        emit(policies, output)
        return
    active = api("GET", "/v1/policy-sets/active")
    typer.echo(f"active policy set: version {active['version']}, sha256 {active['content_hash']}")
    emit(policies, output, _SUMMARY_COLUMNS)


@app.command("show")
def policy_show(
    name: Annotated[str, typer.Argument(help="Policy name.")],
    version: Annotated[
        int | None, typer.Option("--version", min=1, help="One version (default: all).")
    ] = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Show a policy's versions, or one version with its document."""
    if version is None:
        emit(api("GET", f"/v1/policies/{name}"), output, _VERSION_COLUMNS)
        return
    found = api("GET", f"/v1/policies/{name}/versions/{version}")
    if output is OutputFormat.JSON:
        emit(found, output)
        return
    emit(found, output, _VERSION_COLUMNS)
    typer.echo("")
    typer.echo(yaml.safe_dump(found["document"], sort_keys=False).rstrip())


@app.command("activate")
def policy_activate(
    member: Annotated[
        list[str] | None,
        typer.Option(
            "--member",
            "-m",
            help="NAME or NAME@VERSION; repeat. Default: the latest version of every policy.",
        ),
    ] = None,
    without: Annotated[
        list[str] | None, typer.Option("--without", help="Leave this policy out; repeat.")
    ] = None,
    note: Note = "",
    output: Output = OutputFormat.TABLE,
) -> None:
    """Make a new policy set active (enforced from now on)."""
    body: dict[str, Any] = {"without": without or [], "note": note}
    if member:
        body["members"] = [_member(text) for text in member]
    _print_set(api("POST", "/v1/policy-sets/activate", json=body), output)


@app.command("rollback")
def policy_rollback(
    to: Annotated[
        int | None,
        typer.Option("--to", min=1, help="Set version to restore (default: the previous one)."),
    ] = None,
    note: Note = "",
    output: Output = OutputFormat.TABLE,
) -> None:
    """Make an earlier set's policies active again, as a new set."""
    body = {"to_version": to, "note": note}
    _print_set(api("POST", "/v1/policy-sets/rollback", json=body), output)


@app.command("sets")
def policy_sets(
    limit: Limit = 20,
    output: Output = OutputFormat.TABLE,
) -> None:
    """List the policy sets activated, newest (the active one) first."""
    page = api("GET", "/v1/policy-sets", params={"limit": limit})
    emit_page(page, output, _SET_COLUMNS, _set_row)


# -- what-if ---------------------------------------------------------------------------

_WHATIF_COLUMNS = ["workload_id", "tenant", "hostname", "zone", "new", "denied_by"]
_CAPACITY_COLUMNS = [
    "tenant",
    "nodes_now",
    "nodes_candidate",
    "lost",
    "gained",
    "gpus_now",
    "gpus_candidate",
    "change",
]


def _hosts(change: dict[str, Any]) -> str:
    """``3 (gpu-a, gpu-b and 1 more)``: the count and the hostnames the API listed."""
    if not change["count"]:
        return "0"
    listed = ", ".join(change["hostnames"])
    more = change["count"] - len(change["hostnames"])
    return f"{change['count']} ({listed}{f' and {more} more' if more else ''})"


def _print_whatif(result: dict[str, Any]) -> None:
    active, candidate = result["active_set"], result["candidate_set"]
    violations = result["violations"]
    typer.echo(
        f"active policy set:    version {active['version']}, sha256 {active['content_hash']}"
    )
    state = (
        "says what the active set says"
        if candidate["unchanged"]
        else f"activation would make it version {candidate['version']}"
    )
    typer.echo(f"candidate policy set: sha256 {candidate['content_hash']} ({state})")
    members = ", ".join(
        f"{m['name']}@{m['version']}" if m["source"] == "stored" else f"{m['name']} (candidate)"
        for m in candidate["members"]
    )
    typer.echo(f"candidate members:    {members}")
    typer.echo(
        f"running workloads:    {result['workloads_evaluated']} evaluated;"
        f" {violations['count']} would violate ({violations['new']} new),"
        f" {violations['fixed']} fixed, {violations['warned']} with warnings"
    )
    if violations["items"]:
        typer.echo("")
        rows = [
            {
                **item,
                "new": "yes" if item["new"] else "no",
                "denied_by": denied_by(item["reasons"]),
            }
            for item in violations["items"]
        ]
        emit(rows, OutputFormat.TABLE, _WHATIF_COLUMNS)
        if len(rows) < violations["count"]:
            typer.echo(f"({len(rows)} of {violations['count']}; -o json for the reasons)")
    typer.echo("")
    typer.echo("usable GPUs per tenant (probe: 1 GPU, no data named):")
    emit(
        [
            {
                "tenant": tenant["tenant"],
                "nodes_now": tenant["eligible_nodes_now"],
                "nodes_candidate": tenant["eligible_nodes_candidate"],
                "lost": _hosts(tenant["nodes_lost"]),
                "gained": _hosts(tenant["nodes_gained"]),
                "gpus_now": tenant["usable_gpus_now"],
                "gpus_candidate": tenant["usable_gpus_candidate"],
                "change": f"{tenant['change']:+d}",
            }
            for tenant in result["tenants"]
        ],
        OutputFormat.TABLE,
        _CAPACITY_COLUMNS,
    )


@app.command("whatif")
def policy_whatif(policy_file: PolicyFile, output: Output = OutputFormat.TABLE) -> None:
    """Show what activating the file's policies would change; stores nothing."""
    result = _post_documents(policy_file, "/v1/policies/whatif")
    if output is OutputFormat.JSON:
        emit(result, output)
        return
    _print_whatif(result)
