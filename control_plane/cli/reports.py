"""``sovctl reports create|list|status|download``: evidence reports, through the HTTP API.

``main.py`` adds this sub-app to ``sovctl``. ``create`` asks for a report, follows the
worker's progress with a progress bar (percent done and the current step) and downloads
the file once it is done, checking that the bytes are the ones the server signed (their
SHA-256). Asking again for a report over the same checkpoint gets the stored one at once.
"""

import hashlib
import re
import time
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

from control_plane.cli.client import ControlPlaneClient, api, api_client
from control_plane.cli.options import Limit
from control_plane.cli.output import Output, OutputFormat, emit, emit_page
from control_plane.reports.models import ReportFormat, ReportKind

app = typer.Typer(
    no_args_is_help=True,
    help="Evidence reports: sovereignty and compliance, signed (via the API).",
)

_COLUMNS = ["id", "kind", "format", "period_from", "period_to", "checkpoint", "status", "percent"]
#: How often ``create`` asks how far the report is: one indexed read per second.
POLL_SECONDS = 1.0
_FILENAME = re.compile(r'filename="([^"]+)"')

_TIMES = ["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%S%z"]
OutPath = Annotated[
    Path | None,
    typer.Option(
        "--out", help="File or directory to write (default: the server's file name, here)."
    ),
]


def _utc(moment: datetime) -> str:
    """A time as the API takes it; one given without a zone is UTC."""
    return moment.isoformat() if moment.tzinfo else f"{moment.isoformat()}Z"


def _wait(client: ControlPlaneClient, job: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Poll the job until it is done, with a progress bar; exit 1 if it fails or times out."""
    deadline = time.monotonic() + timeout
    columns = (
        TextColumn("[bold]{task.fields[step]}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, transient=True) as progress:
        task = progress.add_task("report", total=100, step=job["step"])
        while job["status"] not in {"done", "failed"}:
            if time.monotonic() > deadline:
                progress.stop()
                typer.echo(
                    f"error: report {job['id']} is not done within {timeout:g} s (it is"
                    f" {job['status']}, {job['percent']}%: {job['step']}); the Celery worker or"
                    " beat may not be running. It stays queued: `sovctl reports status"
                    f" {job['id']}` follows it.",
                    err=True,
                )
                raise typer.Exit(1)
            time.sleep(POLL_SECONDS)
            job = client.request("GET", f"/v1/reports/{job['id']}")
            progress.update(task, completed=job["percent"], step=job["step"])
    if job["status"] == "failed":
        typer.echo(f"error: report {job['id']} failed: {job['error']}", err=True)
        raise typer.Exit(1)
    return job


def _download(client: ControlPlaneClient, job: dict[str, Any], out: Path | None) -> Path:
    """Download a done job to ``out``; exit 1 if the bytes are not the ones signed."""
    target = out if out is not None and not out.is_dir() else None
    staging = (out if out is not None and out.is_dir() else Path.cwd()) / f".{job['id']}.part"
    headers = client.download(f"/v1/reports/{job['id']}/download", staging)
    if target is None:
        found = _FILENAME.search(headers.get("content-disposition", ""))
        name = found.group(1) if found else f"report-{job['id']}"
        target = staging.parent / name
    digest = hashlib.sha256()
    with staging.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != headers.get("x-sovereign-sha256"):
        staging.unlink()
        typer.echo("error: the downloaded file is not the one the server signed", err=True)
        raise typer.Exit(1)
    staging.replace(target)
    typer.echo(f"report:     {target}")
    typer.echo(f"sha256:     {digest.hexdigest()}")
    typer.echo(f"checkpoint: {headers.get('x-sovereign-checkpoint')}")
    typer.echo(f"signature:  {headers.get('x-sovereign-signature')}")
    return target


@app.command("create")
def reports_create(
    kind: Annotated[ReportKind, typer.Option("--kind", help="What the report is about.")],
    period_from: Annotated[
        datetime, typer.Option("--from", formats=_TIMES, help="Start (UTC unless a zone).")
    ],
    period_to: Annotated[
        datetime, typer.Option("--to", formats=_TIMES, help="End, exclusive (UTC unless a zone).")
    ],
    fmt: Annotated[ReportFormat, typer.Option("--format", help="The file's format.")] = (
        ReportFormat.PDF
    ),
    out: OutPath = None,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Follow the build and download it.")
    ] = True,
    timeout: Annotated[float, typer.Option(min=0, help="Seconds to wait at most.")] = 600,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Ask for a report, show its progress and download it once it is done."""
    body = {
        "kind": kind.value,
        "format": fmt.value,
        "period_from": _utc(period_from),
        "period_to": _utc(period_to),
    }
    with api_client() as client:
        job = client.request("POST", "/v1/reports", json=body)
        if not wait:
            emit(job, output, _COLUMNS)
            return
        job = _wait(client, job, timeout)
        _download(client, job, out)


@app.command("list")
def reports_list(limit: Limit = 20, output: Output = OutputFormat.TABLE) -> None:
    """List report jobs, newest first."""
    emit_page(api("GET", "/v1/reports", params={"limit": limit}), output, _COLUMNS)


@app.command("status")
def reports_status(
    report_id: Annotated[str, typer.Argument(help="The report job's id.")],
    output: Output = OutputFormat.TABLE,
) -> None:
    """Show one report job: status, percent done, current step, digests and signature."""
    emit(api("GET", f"/v1/reports/{report_id}"), output)


@app.command("download")
def reports_download(
    report_id: Annotated[str, typer.Argument(help="The report job's id.")],
    out: OutPath = None,
) -> None:
    """Download a finished report and check its SHA-256 against the signed one."""
    with api_client() as client:
        job = client.request("GET", f"/v1/reports/{report_id}")
        _download(client, job, out)
