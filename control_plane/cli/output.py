"""Rendering CLI results as a plain table or as JSON (``--output table|json``)."""

import json
from collections.abc import Callable, Mapping, Sequence
from enum import StrEnum
from typing import Annotated, Any

import typer

from control_plane.domain.types import printable


class OutputFormat(StrEnum):
    """How a command prints its result."""

    TABLE = "table"
    JSON = "json"


#: The ``--output``/``-o`` option of every command that prints a result.
Output = Annotated[OutputFormat, typer.Option("--output", "-o", help="table or json")]


def _cell(value: Any) -> str:
    """One value as a table shows it; control characters escaped, so no cell forges a line."""
    if value is None:
        return "-"
    if isinstance(value, Mapping):
        text = ",".join(f"{k}={v}" for k, v in value.items()) or "-"
    elif isinstance(value, list):
        text = ",".join(str(v) for v in value) or "-"
    else:
        text = str(value)
    return printable(text)


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """Format ``rows`` as aligned columns with an upper-case header."""
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(line.rstrip() for line in lines)


def emit(result: Any, output: OutputFormat, columns: Sequence[str] | None = None) -> None:
    """Print ``result`` (a dict, or a list of dicts) in the chosen format."""
    if output is OutputFormat.JSON:
        typer.echo(json.dumps(result, indent=2, default=str))
        return
    if isinstance(result, list):
        keys = columns or (list(result[0]) if result else [])
        typer.echo(table(result, keys) if result else "(none)")
        return
    if isinstance(result, Mapping):
        keys = columns or list(result)
        width = max(len(k) for k in keys) if keys else 0
        for key in keys:
            typer.echo(f"{key.ljust(width)}  {_cell(result.get(key))}")
        return
    typer.echo(str(result))


def emit_page(
    page: Mapping[str, Any],
    output: OutputFormat,
    columns: Sequence[str],
    row: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> None:
    """Print a listing's page: all of it as JSON, or its items as a table and ``(n of total)``.

    ``row``, if given, reshapes each item for the table.
    """
    if output is OutputFormat.JSON:
        emit(page, output)
        return
    items = page["items"]
    emit([row(item) for item in items] if row else items, output, columns)
    typer.echo(f"({len(items)} of {page['total']})")
