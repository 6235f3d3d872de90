"""``sovctl provenance import``: check a bill of materials, through the HTTP API.

The CSV is parsed here, so a malformed file is reported with its line before anything is
sent; the server compares the rows with what the agents read and records the import.
"""

from pathlib import Path
from typing import Annotated, Any

import typer

from control_plane.cli.client import api
from control_plane.cli.output import Output, OutputFormat, emit
from control_plane.core.errors import InvalidInputError
from control_plane.provenance import bom

app = typer.Typer(no_args_is_help=True, help="Provenance checks (via the API).")


def _server_row(server: dict[str, Any]) -> dict[str, Any]:
    """A checked server for the table: the reason, or which checks mismatched."""
    mismatches = dict.fromkeys(c["check"] for c in server["checks"] if c["result"] == "mismatch")
    return {
        **server,
        "detail": server["reason"] or ("mismatch: " + ", ".join(mismatches) if mismatches else ""),
    }


@app.command("import")
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
