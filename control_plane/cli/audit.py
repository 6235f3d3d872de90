"""``sovctl audit``: verify the chain, sign checkpoints, export and verify bundles.

``verify`` reads the database directly by default, so an auditor with database access
need not trust the API; ``--api`` asks the server instead, with an auditor's token. It
checks every signed checkpoint too, so removing the newest events is found. ``checkpoint``
signs the head now (directly, with the configured key, or ``--api`` as an admin).
``export`` writes a time range as a bundle (docs/audit.md#export-bundles) and
``verify-bundle`` checks one with no database, no server and no settings. ``actions``
needs neither: it prints the closed list of actions the code records, with the snapshot
each event's ``before`` and ``after`` hold (docs/audit.md shows the same).
"""

import os
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from control_plane.audit import checkpoints, export
from control_plane.audit import service as audit
from control_plane.audit.bundle import verify_bundle
from control_plane.audit.keys import load_signing_key
from control_plane.audit.signatures import StatementError, fingerprint, load_public_key
from control_plane.cli.client import api
from control_plane.cli.local import cli_actor
from control_plane.cli.output import Output, OutputFormat, emit
from control_plane.core.db import connect
from control_plane.core.errors import ConflictError
from control_plane.core.settings import load_settings
from control_plane.domain.audit import AUDIT_ACTIONS

app = typer.Typer(no_args_is_help=True, help="The audit chain.")

Keys = Annotated[
    list[Path] | None,
    typer.Option(
        "--key",
        help="Trust only this public key (PEM; repeatable): the keys published at "
        "/v1/audit/public-key, obtained on their own.",
        exists=True,
        dir_okay=False,
    ),
]


def _pinned(paths: list[Path] | None) -> list[Ed25519PublicKey] | None:
    if not paths:
        return None
    keys = []
    for path in paths:
        try:
            keys.append(load_public_key(path.read_bytes()))
        except StatementError as exc:
            raise typer.BadParameter(f"{path}: {exc}", param_hint="--key") from None
    return keys


def _time(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is not an RFC 3339 time (2026-01-31T00:00:00Z)", param_hint=option
        ) from None
    if moment.tzinfo is None:
        raise typer.BadParameter(f"{value!r} has no time zone (add Z or +09:00)", param_hint=option)
    return moment


@app.command("verify")
def audit_verify(
    via_api: Annotated[
        bool, typer.Option("--api", help="Ask the server instead of the DB.")
    ] = False,
    keys: Keys = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Walk the chain and its checkpoints; exit 1 and name the first broken seq if not intact."""
    pinned = _pinned(keys)
    if via_api and pinned:
        raise typer.BadParameter("pinned keys need the database (drop --api)", param_hint="--key")
    if via_api:
        result = api("GET", "/v1/audit/verify")
    else:
        trusted = None if pinned is None else {fingerprint(k): k for k in pinned}
        with connect(load_settings().database_url) as conn:
            result = audit.verify_chain(conn, trusted_keys=trusted).model_dump(mode="json")
    if output is OutputFormat.JSON:
        emit(result, output)
    elif result["ok"]:
        signed = (
            f"; newest checkpoint {result['newest_checkpoint']} signs seq "
            f"{result['newest_checkpoint_seq']}"
            if result.get("newest_checkpoint")
            else "; no checkpoint signed yet, so removing the newest events would go unseen"
        )
        typer.echo(
            f"audit chain intact: {result['events_checked']} events, "
            f"head seq {result['head_seq']}, hash {result['head_hash']}{signed}"
        )
    else:
        typer.echo(
            f"audit chain BROKEN at seq {result['first_broken_seq']}: {result['reason']} "
            f"({result['events_checked']} events before it are intact)"
        )
    if not result["ok"]:
        raise typer.Exit(1)


@app.command("checkpoint")
def audit_checkpoint(
    via_api: Annotated[
        bool, typer.Option("--api", help="Ask the server (an admin token) instead of the DB.")
    ] = False,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Sign a checkpoint of the chain's head now, with SOVEREIGN_AUDIT__SIGNING_KEY_FILE."""
    if via_api:
        signed: dict[str, Any] = api("POST", "/v1/audit/checkpoints")
    else:
        settings = load_settings()
        key = load_signing_key(settings)
        with connect(settings.database_url) as conn:
            taken = checkpoints.take_checkpoint(conn, key, cli_actor())
        if taken is None:
            raise ConflictError("the audit chain is empty: there is no head to sign yet")
        signed = taken.model_dump(mode="json")
    emit(
        {k: signed[k] for k in ("number", "head_seq", "head_hash", "signed_at", "key_fingerprint")},
        output,
    )


@app.command("export")
def audit_export(
    bundle: Annotated[
        Path | None, typer.Argument(help="The bundle directory to create (new or empty).")
    ] = None,
    since: Annotated[
        str | None, typer.Option("--from", help="First time included (RFC 3339).")
    ] = None,
    until: Annotated[
        str | None, typer.Option("--to", help="First time excluded (RFC 3339).")
    ] = None,
    # A command that writes a file names it with -o, as curl does (test_cli_shape.py).
    to_directory: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="The bundle directory to create (new or empty); or as BUNDLE."
        ),
    ] = None,
) -> None:
    """Write the events of a time range, their checkpoints and keys as a bundle (from the DB)."""
    if (bundle is None) == (to_directory is None):
        raise typer.BadParameter("name the bundle directory once: BUNDLE or -o BUNDLE")
    bundle = bundle or to_directory
    assert bundle is not None
    start, end = _time(since, "--from"), _time(until, "--to")
    with connect(load_settings().database_url) as conn:
        manifest = export.export_bundle(conn, bundle, start, end)
    typer.echo(
        f"exported seq {manifest['first_seq']} to {manifest['last_seq']} "
        f"({manifest['events']} events, checkpoints {manifest['checkpoints']}) to {bundle}; "
        f"keys {', '.join(manifest['keys'])}"
    )


@app.command("verify-bundle")
def audit_verify_bundle(
    bundle: Annotated[
        Path, typer.Argument(help="The bundle directory.", exists=True, file_okay=False)
    ],
    keys: Keys = None,
    jobs: Annotated[
        int,
        typer.Option(
            "--jobs", min=1, max=256, help="Processes to hash the events with (large bundles)."
        ),
    ] = max(1, min(8, os.cpu_count() or 1)),
    output: Output = OutputFormat.TABLE,
) -> None:
    """Verify an export bundle offline; exit 1 naming the first bad seq and the kind of damage."""
    result = verify_bundle(bundle, _pinned(keys), jobs=jobs).as_json()
    if output is OutputFormat.JSON:
        emit(result, output)
    elif result["ok"]:
        trust = "pinned" if result["keys_pinned"] else "carried by the bundle (pin with --key)"
        typer.echo(
            f"bundle intact: seq {result['first_seq']} to {result['last_seq']} "
            f"({result['events_checked']} events), {result['checkpoints_checked']} checkpoints, "
            f"keys {trust}: {', '.join(result['key_fingerprints'])}"
        )
    else:
        where = "" if result["first_bad_seq"] is None else f" at seq {result['first_bad_seq']}"
        typer.echo(f"bundle BROKEN ({result['kind']}){where}: {result['reason']}")
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
