"""``sovctl`` commands.

Commands that run or set up the server (``db``, ``serve``, ``worker``, ``beat``, ``up``,
``token``, ``demo``, ``audit verify``) use the database and settings directly, so they work
before any token exists. Everyday commands (``zones``, ``nodes``, ``provenance``) call the
HTTP API with a token, like any other client.
"""

import getpass
import socket
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from control_plane.access import service as access
from control_plane.access.models import Role
from control_plane.audit import service as audit
from control_plane.cli import compliance, demo, policy, registry, workload
from control_plane.cli.client import RemoteError, api, set_target
from control_plane.cli.output import Output, OutputFormat, emit, emit_page
from control_plane.cli.supervisor import supervise
from control_plane.core import migrations, preflight
from control_plane.core.audit_log import AuditContext
from control_plane.core.db import connect
from control_plane.core.errors import InvalidInputError, SovereignError
from control_plane.core.settings import Settings, load_settings
from control_plane.provenance import bom

app = typer.Typer(no_args_is_help=True, help="Sovereign admin CLI.", add_completion=False)
db_app = typer.Typer(no_args_is_help=True, help="Database schema.")
token_app = typer.Typer(no_args_is_help=True, help="API tokens (stored only as hashes).")
zones_app = typer.Typer(no_args_is_help=True, help="Residency zones (via the API).")
nodes_app = typer.Typer(no_args_is_help=True, help="GPU servers (via the API).")
provenance_app = typer.Typer(no_args_is_help=True, help="Provenance checks (via the API).")
audit_app = typer.Typer(no_args_is_help=True, help="The audit chain.")
demo_app = typer.Typer(no_args_is_help=True, help="Demo data for a first look.")
for sub, name in [
    (db_app, "db"),
    (token_app, "token"),
    (zones_app, "zones"),
    (nodes_app, "nodes"),
    (provenance_app, "provenance"),
    (audit_app, "audit"),
    (demo_app, "demo"),
    (policy.app, "policy"),
    (registry.tenant_app, "tenant"),
    (registry.dataset_app, "dataset"),
    (registry.model_app, "model"),
    (registry.destination_app, "destination"),
    (workload.app, "workload"),
    (compliance.app, "compliance"),
]:
    app.add_typer(sub, name=name)


@app.callback()
def _root(
    url: Annotated[str | None, typer.Option(help="Control-plane URL (or SOVCTL_URL).")] = None,
    token: Annotated[str | None, typer.Option(help="API token (or SOVCTL_TOKEN).")] = None,
) -> None:
    """Sovereign admin CLI."""
    set_target(url, token)


def _settings() -> Settings:
    return load_settings()


def _cli_actor() -> AuditContext:
    """The audit actor for commands run directly against the database."""
    user = getpass.getuser()
    return AuditContext(actor_id=f"cli:{user}@{socket.gethostname()}", actor_name=user)


# -- server and database ---------------------------------------------------------------


@app.command("preflight")
def preflight_command() -> None:
    """Check that PostgreSQL and Redis answer; say which to start if not."""
    settings = _settings()
    found = preflight.problems(settings.database_url, settings.redis_url)
    for sentence in found:
        typer.echo(sentence, err=True)
    if found:
        raise typer.Exit(1)
    typer.echo("PostgreSQL and Redis are reachable.")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create the database if missing and apply pending migrations."""
    settings = _settings()
    if migrations.ensure_database(settings.database_url):
        typer.echo("created the database")
    applied = migrations.upgrade(settings.database_url)
    typer.echo(f"applied {', '.join(applied)}" if applied else "database is up to date")


@app.command("serve")
def serve(
    host: Annotated[str | None, typer.Option(help="Listen address.")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port.")] = None,
    workers: Annotated[int, typer.Option(help="Worker processes.")] = 1,
) -> None:
    """Run the HTTP API."""
    import uvicorn

    settings = _settings()
    uvicorn.run(
        "control_plane.app:create_app",
        factory=True,
        host=host or settings.api.host,
        port=port or settings.api.port,
        workers=workers,
        log_level=settings.log_level.lower(),
    )


@app.command("worker")
def worker(concurrency: Annotated[int, typer.Option(help="Worker processes.")] = 2) -> None:
    """Run a Celery worker."""
    from control_plane.celery_app import create_celery

    settings = _settings()
    create_celery(settings).worker_main(
        [
            "worker",
            f"--loglevel={settings.log_level}",
            f"--concurrency={concurrency}",
            "-Q",
            settings.celery_queue,
        ]
    )


@app.command("beat")
def beat() -> None:
    """Run Celery beat (the periodic schedule)."""
    from control_plane.celery_app import create_celery

    settings = _settings()
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    schedule = settings.state_dir / f"beat-schedule-{settings.celery_queue}"
    create_celery(settings).start(
        ["beat", f"--loglevel={settings.log_level}", f"--schedule={schedule}"]
    )


@app.command("up")
def up(
    host: Annotated[str | None, typer.Option(help="Listen address.")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port.")] = None,
    simulate: Annotated[
        int, typer.Option(help="Simulated GPU servers to run (needs `demo seed` first).")
    ] = 0,
) -> None:
    """Run API, worker and beat (and a simulated fleet) in the foreground; Ctrl-C stops all."""
    settings = _settings()
    me = [sys.executable, "-m", "control_plane.cli"]
    commands = {
        "api": [
            *me,
            "serve",
            "--host",
            host or settings.api.host,
            "--port",
            str(port or settings.api.port),
        ],
        "worker": [*me, "worker", "--concurrency", "1"],
        "beat": [*me, "beat"],
    }
    fleet = demo.simulator_command(settings.state_dir / "simulator.yaml", simulate)
    if fleet is not None:
        commands["simulator"] = fleet
    elif simulate:
        typer.echo(
            "no recording to simulate from (tests/fixtures/gpu); running without a fleet", err=True
        )
    raise typer.Exit(supervise(commands))


# -- tokens ----------------------------------------------------------------------------


@token_app.command("create")
def token_create(
    name: Annotated[str, typer.Option(help="Who or what the token is for.")],
    role: Annotated[Role, typer.Option(help="admin, operator, auditor or bootstrap.")],
    output: Output = OutputFormat.TABLE,
) -> None:
    """Create a token; its secret is printed once and never stored."""
    settings = _settings()
    with connect(settings.database_url) as conn:
        issued = access.create_token(
            conn,
            _cli_actor(),
            name=name,
            role=role,
            secret_key=settings.secret_key.get_secret_value(),
        )
    emit(
        {"token": issued.token, **issued.info.model_dump(mode="json")},
        output,
        ["token", "id", "name", "role"],
    )


@token_app.command("list")
def token_list(
    all_tokens: Annotated[
        bool, typer.Option("--all", help="Include revoked and agent tokens.")
    ] = False,
    output: Output = OutputFormat.TABLE,
) -> None:
    """List tokens (never their secrets)."""
    settings = _settings()
    with connect(settings.database_url) as conn:
        tokens = access.list_tokens(conn, include_revoked=all_tokens, include_agents=all_tokens)
    emit(
        [t.model_dump(mode="json") for t in tokens],
        output,
        ["id", "name", "role", "token_prefix", "created_at", "revoked_at"],
    )


@token_app.command("revoke")
def token_revoke(
    ref: Annotated[str, typer.Argument(help="Token id, name or prefix.")],
    output: Output = OutputFormat.TABLE,
) -> None:
    """Revoke a token; it stops working at once."""
    settings = _settings()
    with connect(settings.database_url) as conn:
        revoked = access.revoke_token(conn, _cli_actor(), ref)
    emit(revoked.model_dump(mode="json"), output, ["id", "name", "role", "revoked_at"])


def _local_api_url(settings: Settings, host: str | None, port: int | None) -> str:
    listen = host or settings.api.host
    reachable = "127.0.0.1" if listen in ("0.0.0.0", "::", "") else listen  # noqa: S104
    return f"http://{reachable}:{port or settings.api.port}"


@demo_app.command("seed")
def demo_seed(
    host: Annotated[str | None, typer.Option(help="API address the simulator uses.")] = None,
    port: Annotated[int | None, typer.Option(help="API port the simulator uses.")] = None,
) -> None:
    """Create the demo admin token (printed once), demo zones and the simulator's config."""
    settings = _settings()
    result = demo.seed(settings, _cli_actor(), _local_api_url(settings, host, port))
    if result.admin_token:
        typer.echo(
            f"demo admin token (shown once, also saved to {result.admin_token_file}):\n"
            f"  {result.admin_token}"
        )
    else:
        typer.echo(f"demo admin token exists; it is in {result.admin_token_file}")
    if result.zones_created:
        typer.echo(f"demo zones created: {', '.join(result.zones_created)}")


# -- zones and nodes (through the API) -------------------------------------------------

_ZONE_COLUMNS = ["slug", "name", "country", "parent", "description"]
_NODE_COLUMNS = [
    "id",
    "hostname",
    "zone",
    "site",
    "status",
    "origin_country",
    "provenance_status",
    "drift_status",
    "gpu_count",
    "labels",
]


def _node_row(node: dict[str, Any]) -> dict[str, Any]:
    provenance = node.get("provenance", {})
    return {
        **node,
        "origin_country": provenance.get("origin_country"),
        "provenance_status": provenance.get("status"),
        "drift_status": node.get("drift", {}).get("status"),
    }


@zones_app.command("create")
def zones_create(
    slug: Annotated[str, typer.Argument(help="Short id, e.g. jp-east.")],
    name: Annotated[str, typer.Option(help="Display name.")],
    country: Annotated[str, typer.Option(help="ISO 3166-1 alpha-2, e.g. JP.")],
    parent: Annotated[str | None, typer.Option(help="Enclosing zone's slug.")] = None,
    description: Annotated[str, typer.Option(help="Free text.")] = "",
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
    emit(zone, output, _ZONE_COLUMNS)


@zones_app.command("list")
def zones_list(output: Output = OutputFormat.TABLE) -> None:
    """List residency zones."""
    emit(api("GET", "/v1/zones"), output, _ZONE_COLUMNS)


@nodes_app.command("list")
def nodes_list(
    zone: Annotated[str | None, typer.Option(help="Zone slug (nested zones included).")] = None,
    origin_country: Annotated[
        str | None, typer.Option("--origin", help="Country of origin.")
    ] = None,
    status: Annotated[str | None, typer.Option(help="Lifecycle status.")] = None,
    gpu_model: Annotated[str | None, typer.Option(help="GPU model substring.")] = None,
    provenance_status: Annotated[str | None, typer.Option("--provenance")] = None,
    drift_status: Annotated[str | None, typer.Option("--drift", help="none or drifted.")] = None,
    site: Annotated[str | None, typer.Option(help="Site slug.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 100,
    offset: Annotated[int, typer.Option(min=0)] = 0,
    output: Output = OutputFormat.TABLE,
) -> None:
    """List GPU servers."""
    params = {
        "zone": zone,
        "origin_country": origin_country,
        "status": status,
        "gpu_model": gpu_model,
        "provenance_status": provenance_status,
        "drift_status": drift_status,
        "site": site,
        "limit": limit,
        "offset": offset,
    }
    emit_page(api("GET", "/v1/nodes", params=params), output, _NODE_COLUMNS, _node_row)


@nodes_app.command("show")
def nodes_show(
    node: Annotated[str, typer.Argument(help="Node id or hostname.")],
    output: Output = OutputFormat.TABLE,
) -> None:
    """Show a GPU server with its GPUs."""
    detail = api("GET", f"/v1/nodes/{node}")
    if output is OutputFormat.JSON:
        emit(detail, output)
        return
    emit(_node_row(detail), output, [*_NODE_COLUMNS, "last_heartbeat_at", "agent_version"])
    typer.echo("")
    emit(
        detail["gpus"],
        output,
        [
            "index",
            "uuid",
            "model",
            "serial",
            "memory_total_bytes",
            "utilization_pct",
            "temperature_c",
        ],
    )


@nodes_app.command("tag")
def nodes_tag(
    node: Annotated[str, typer.Argument(help="Node id or hostname.")],
    labels: Annotated[list[str], typer.Argument(help="key=value to set, key- to remove.")],
    output: Output = OutputFormat.TABLE,
) -> None:
    """Set or remove labels on a GPU server."""
    patch: dict[str, str | None] = {}
    for item in labels:
        if item.endswith("-") and "=" not in item:
            patch[item[:-1]] = None
        elif "=" in item:
            key, value = item.split("=", 1)
            patch[key] = value
        else:
            raise typer.BadParameter(f"{item!r}: use key=value or key-", param_hint="LABELS")
    detail = api("PATCH", f"/v1/nodes/{node}", json={"labels": patch})
    emit(_node_row(detail), output, ["id", "hostname", "labels"])


@nodes_app.command("ack-drift")
def nodes_ack_drift(
    node: Annotated[str, typer.Argument(help="Node id or hostname.")],
    note: Annotated[str | None, typer.Option(help="Why the change is expected.")] = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Accept a drifted node's reported hardware identity as its baseline; end the quarantine."""
    detail = api("POST", f"/v1/nodes/{node}/drift/acknowledge", json={"note": note})
    emit(_node_row(detail), output, ["id", "hostname", "status", "drift_status"])


# -- provenance (through the API) ------------------------------------------------------


def _server_row(server: dict[str, Any]) -> dict[str, Any]:
    mismatches = dict.fromkeys(c["check"] for c in server["checks"] if c["result"] == "mismatch")
    return {
        **server,
        "detail": server["reason"] or ("mismatch: " + ", ".join(mismatches) if mismatches else ""),
    }


@provenance_app.command("import")
def provenance_import(
    path: Annotated[
        Path,
        typer.Argument(
            metavar="FILE.csv",
            exists=True,
            dir_okay=False,
            help="BOM: system_serial,asset_tag,component,serial,part_number,origin_country.",
        ),
    ],
    output: Output = OutputFormat.TABLE,
) -> None:
    """Check a hardware bill of materials (CSV) against what the agents read."""
    try:
        rows = bom.parse_csv(path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError:
        raise InvalidInputError(f"{path}: not UTF-8 text") from None
    except InvalidInputError as exc:
        raise InvalidInputError(f"{path}: {exc.message}", details=exc.details) from None
    result = api(
        "POST",
        "/v1/provenance/imports",
        json={"name": path.name, "rows": [r.model_dump(mode="json") for r in rows]},
    )
    if output is OutputFormat.JSON:
        emit(result, output)
        return
    emit(
        [_server_row(s) for s in result["servers"]],
        output,
        ["system_serial", "asset_tag", "hostname", "status", "detail"],
    )
    typer.echo(f"import {result['import_id']}: {len(result['servers'])} servers")


# -- audit -----------------------------------------------------------------------------


@audit_app.command("verify")
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
        with connect(_settings().database_url) as conn:
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
