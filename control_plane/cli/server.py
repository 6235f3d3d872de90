"""``sovctl preflight|db upgrade|serve|worker|beat|up``: set up and run the server.

These commands read the settings and reach PostgreSQL and Redis directly; ``main.py`` adds
them at the top level of ``sovctl``. ``up`` runs the API, a worker, beat and (with
``--simulate N``) a simulated fleet in the foreground for development and demos.
"""

import sys
from typing import Annotated

import typer

from control_plane.cli import demo
from control_plane.cli.supervisor import supervise
from control_plane.core import migrations, preflight, tls
from control_plane.core.errors import ConfigurationError
from control_plane.core.settings import load_settings

app = typer.Typer()
db_app = typer.Typer(no_args_is_help=True, help="Database schema.")
app.add_typer(db_app, name="db")


@app.command("preflight")
def preflight_command() -> None:
    """Check that PostgreSQL and Redis answer and the TLS files load; say what to fix if not."""
    settings = load_settings()
    found = preflight.problems(settings.database_url, settings.redis_url)
    try:
        tls.check(settings)
    except ConfigurationError as exc:
        found.append(exc.message)
    for sentence in found:
        typer.echo(sentence, err=True)
    if found:
        raise typer.Exit(1)
    typer.echo("PostgreSQL and Redis are reachable.")
    if tls.enabled(settings):
        typer.echo(f"The TLS certificate {settings.tls_cert_file} and its key load.")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create the database if missing and apply pending migrations."""
    settings = load_settings()
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
    """Run the HTTP API (HTTPS with SOVEREIGN_TLS_CERT_FILE and SOVEREIGN_TLS_KEY_FILE)."""
    import uvicorn

    settings = load_settings()
    # Here, once, before any worker starts: a bad file is one line, not a traceback per worker.
    tls.check(settings)
    uvicorn.run(
        "control_plane.app:create_app",
        factory=True,
        host=host or settings.api.host,
        port=port or settings.api.port,
        workers=workers,
        log_level=settings.log_level.lower(),
        **tls.uvicorn_options(settings),
    )


@app.command("serve-webhooks")
def serve_webhooks(
    host: Annotated[str | None, typer.Option(help="Listen address.")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port.")] = None,
    workers: Annotated[int, typer.Option(help="Worker processes.")] = 1,
) -> None:
    """Run the Kubernetes admission webhooks: HTTPS only, client certificates with a CA.

    Its own listener (SOVEREIGN_ADMISSION__HOST/PORT), apart from the API: only /k8s/*
    and health routes. With SOVEREIGN_ADMISSION__CLIENT_CA_FILE a caller without a client
    certificate from that CA fails the TLS handshake (docs/kubernetes.md).
    """
    import uvicorn

    from control_plane.core.client_certs import TlsScopeProtocol

    settings = load_settings()
    # Checked here, once: a bad file is one line naming the setting, not a traceback.
    options = tls.webhook_uvicorn_options(settings)
    uvicorn.run(
        "control_plane.app:create_webhook_app",
        factory=True,
        host=host or settings.admission.host,
        port=port or settings.admission.port,
        workers=workers,
        log_level=settings.log_level.lower(),
        # uvicorn's httptools protocol, passing the verified client certificate on.
        http=TlsScopeProtocol,
        **options,
    )


@app.command("worker")
def worker(concurrency: Annotated[int, typer.Option(help="Worker processes.")] = 2) -> None:
    """Run a Celery worker."""
    from control_plane.celery_app import create_celery

    settings = load_settings()
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

    settings = load_settings()
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
    settings = load_settings()
    # The API child serves HTTPS from the same settings; refuse bad files before any starts.
    tls.check(settings)
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
