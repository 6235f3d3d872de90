"""``sovctl demo seed``: demo data for ``make up``, an admin token, zones and a fleet.

A new user should see a living inventory at once: four zones in three countries with
simulated GPU servers reporting into them. Everything here is idempotent, so ``make up``
can run it every time. ``sovctl up --simulate N`` runs the fleet (``simulator_command``).

A simulated node whose state directory is gone (its credential with it) may register its
machine id again only with an admin's approval, as a real one; seeding approves it, so
the demo fleet comes back after ``.sovereign/simulator`` is removed.
"""

import json
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
import yaml

import control_plane
from control_plane.access import service as access
from control_plane.access.models import Role
from control_plane.cli.local import cli_actor
from control_plane.core import tls
from control_plane.core.audit_log import AuditContext
from control_plane.core.db import DbConnection, connect
from control_plane.core.settings import Settings, load_settings
from control_plane.inventory import agents, nodes
from control_plane.inventory import zones as inventory
from control_plane.inventory.models import NodeFilters, ReplacementApprove, ZoneCreate

app = typer.Typer(no_args_is_help=True, help="Demo data for a first look.")

DEMO_ADMIN_NAME = "demo-admin"
SIMULATOR_TOKEN_NAME = "demo-simulator"  # noqa: S105 - a token's name, not a secret
#: Parents first. The simulated fleet spreads over the four leaf zones.
DEMO_ZONES = (
    ZoneCreate(slug="jp", name="Japan", country="JP"),
    ZoneCreate(slug="jp-east", name="Japan East (Tokyo)", country="JP", parent="jp"),
    ZoneCreate(slug="jp-west", name="Japan West (Osaka)", country="JP", parent="jp"),
    ZoneCreate(slug="tw-north", name="Taiwan North (Hsinchu)", country="TW"),
    ZoneCreate(slug="us-east", name="US East (Virginia)", country="US"),
)
SIMULATED_ZONES = ("jp-east", "jp-west", "tw-north", "us-east")
SIMULATED_ORIGINS = ("TW", "US", "JP")
#: The recorded H100 the simulator replays; present in a checkout of the repository.
#: The label the simulator puts on its nodes.
SIMULATED_LABEL = ("simulated", "true")
RECORDING = Path(control_plane.__file__).resolve().parent.parent / (
    "tests/fixtures/gpu/h100-80gb-hbm3"
)


@dataclass(frozen=True, slots=True)
class DemoSeed:
    """What seeding produced: the admin token (only when new) and the simulator config."""

    admin_token: str | None
    admin_token_file: Path
    simulator_config: Path
    zones_created: list[str]
    #: Hostnames of simulated nodes approved for replacement (their state was gone).
    replacements_approved: list[str]


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(stat.S_IRUSR | stat.S_IWUSR)


def _token(
    settings: Settings,
    actor: AuditContext,
    name: str,
    role: Role,
    file: Path,
    zone: str | None = None,
) -> str | None:
    """Create the named token unless it exists with its file; return it when new.

    A bootstrap token is scoped to ``zone`` when one is given.
    """
    with connect(settings.database_url) as conn:
        existing = [t for t in access.list_tokens(conn) if t.name == name]
        if existing and file.is_file():
            return None
        if existing:  # the secret is lost with its file: replace the token
            access.revoke_token(conn, actor, str(existing[0].id))
        secret_key = settings.secret_key.get_secret_value()
        issued = (
            agents.create_bootstrap_token(conn, actor, name=name, secret_key=secret_key, zone=zone)
            if role is Role.BOOTSTRAP
            else access.create_token(conn, actor, name=name, role=role, secret_key=secret_key)
        )
    _write_private(file, issued.token + "\n")
    return issued.token


def _has_credential(state_dir: Path, api_url: str) -> bool:
    """Whether a simulated agent's state holds a credential for this control plane."""
    try:
        stored = json.loads((state_dir / "credential.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(stored, dict) and stored.get("control_plane_url") == api_url


def _approve_lost_simulated_nodes(
    conn: DbConnection, actor: AuditContext, simulator_state: Path, api_url: str
) -> list[str]:
    """Approve a replacement for each simulated node whose agent state has no credential."""
    key, value = SIMULATED_LABEL
    approved = []
    offset, page_size = 0, 500
    while True:
        page = nodes.list_nodes(conn, NodeFilters(), page_size, offset)
        for node in page.items:
            if node.labels.get(key) != value:
                continue
            if _has_credential(simulator_state / node.hostname, api_url):
                continue
            reason = "demo seed: the simulator's state for this node is gone"
            agents.approve_replacement(conn, actor, node.id, ReplacementApprove(reason=reason))
            approved.append(node.hostname)
        offset += page_size
        if offset >= page.total:
            return approved


def seed(
    settings: Settings, actor: AuditContext, api_url: str, ca_bundle: Path | None = None
) -> DemoSeed:
    """Create the demo admin token, zones and the simulator's bootstrap config if missing.

    ``ca_bundle``: what the simulated agents verify an HTTPS API with (else the system's
    trust store).
    """
    admin_file = settings.state_dir / "admin.token"
    admin_token = _token(settings, actor, DEMO_ADMIN_NAME, Role.ADMIN, admin_file)
    created = []
    with connect(settings.database_url) as conn:
        present = {z.slug for z in inventory.list_zones(conn)}
        for zone in DEMO_ZONES:
            if zone.slug not in present:
                inventory.create_zone(conn, actor, zone)
                created.append(zone.slug)
        simulator_state = settings.state_dir / "simulator"
        approved = _approve_lost_simulated_nodes(conn, actor, simulator_state, api_url)
    simulator_file = settings.state_dir / "simulator.token"
    _token(settings, actor, SIMULATOR_TOKEN_NAME, Role.BOOTSTRAP, simulator_file)
    # A rack's installer gets a token for that rack's zone: the simulator one per zone, so
    # its nodes' locations are confirmed by the credential and they are active at once.
    for zone_slug in SIMULATED_ZONES:
        _token(
            settings,
            actor,
            f"{SIMULATOR_TOKEN_NAME}-{zone_slug}",
            Role.BOOTSTRAP,
            zone_token_file(settings.state_dir, zone_slug),
            zone=zone_slug,
        )
    config = settings.state_dir / "simulator.yaml"
    control_plane: dict[str, str] = {
        "url": api_url,
        "bootstrap_token": simulator_file.read_text().strip(),
    }
    if ca_bundle is not None:
        control_plane["ca_bundle"] = str(ca_bundle.resolve())
    document = {
        "version": "v1",
        "control_plane": control_plane,
        "sweep_interval_seconds": settings.heartbeat_interval_seconds,
        "state_dir": str(simulator_state),
    }
    _write_private(config, yaml.safe_dump(document, sort_keys=False))
    return DemoSeed(admin_token, admin_file, config, created, approved)


def zone_token_file(state_dir: Path, zone: str) -> Path:
    """Where the demo keeps the simulator's bootstrap token scoped to ``zone``."""
    return state_dir / f"simulator-{zone}.token"


def simulator_command(config: Path, nodes: int) -> list[str] | None:
    """The command that runs the simulated fleet, or None without the recording.

    The fleet registers with the zone-scoped tokens next to ``config`` (``seed``).
    """
    if nodes <= 0 or not RECORDING.is_dir():
        return None
    zone_tokens = [
        argument
        for zone in SIMULATED_ZONES
        for argument in ("--zone-token", f"{zone}={zone_token_file(config.parent, zone)}")
    ]
    return [
        sys.executable,
        "-m",
        "agents",
        "simulate",
        "--config",
        str(config),
        "--nodes",
        str(nodes),
        "--fixture",
        str(RECORDING),
        "--zones",
        ",".join(SIMULATED_ZONES),
        "--origins",
        ",".join(SIMULATED_ORIGINS),
        *zone_tokens,
    ]


def _local_api_url(settings: Settings, host: str | None, port: int | None) -> str:
    """The URL a process on this host reaches the API at, given where it listens."""
    listen = host or settings.api.host
    reachable = "127.0.0.1" if listen in ("0.0.0.0", "::", "") else listen  # noqa: S104
    return f"{tls.scheme(settings)}://{reachable}:{port or settings.api.port}"


@app.command("seed")
def demo_seed(
    host: Annotated[str | None, typer.Option(help="API address the simulator uses.")] = None,
    port: Annotated[int | None, typer.Option(help="API port the simulator uses.")] = None,
    ca_bundle: Annotated[
        Path | None,
        typer.Option(help="With SOVEREIGN_TLS_*: the CA the simulated agents verify the API with."),
    ] = None,
) -> None:
    """Create the demo admin token (printed once), demo zones and the simulator's config."""
    settings = load_settings()
    result = seed(settings, cli_actor(), _local_api_url(settings, host, port), ca_bundle)
    if result.admin_token:
        typer.echo(
            f"demo admin token (shown once, also saved to {result.admin_token_file}):\n"
            f"  {result.admin_token}"
        )
    else:
        typer.echo(f"demo admin token exists; it is in {result.admin_token_file}")
    if result.zones_created:
        typer.echo(f"demo zones created: {', '.join(result.zones_created)}")
    if result.replacements_approved:
        typer.echo(
            f"simulated nodes whose state is gone, approved to register again: "
            f"{len(result.replacements_approved)}"
        )
