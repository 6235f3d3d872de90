"""The bill-of-materials format: CSV rows in, servers out. Pure code, no I/O.

The CSV has the header ``system_serial,asset_tag,component,serial,part_number,
origin_country`` (any column order) and one row per component. Rows naming the same
system serial or asset tag belong to one server. ``sovctl provenance import`` parses the
file here, so a bad row is reported with its line number before anything is sent; the API
checks the same rules again on the rows it receives.
"""

import csv
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pydantic import ValidationError

from control_plane.core.errors import InvalidInputError
from control_plane.provenance.models import BomComponent, BomRow

BOM_COLUMNS = ("system_serial", "asset_tag", "component", "serial", "part_number", "origin_country")

#: Names a row's field in an error: ``rows.3.asset_tag`` for the API, a line for the CLI.
FieldNamer = Callable[[int, str], str]


def _api_field(index: int, field: str) -> str:
    return f"rows.{index}.{field}"


@dataclass(frozen=True)
class BomServer:
    """One server of a BOM: the serial and asset tag that name it, and its rows."""

    system_serial: str | None
    asset_tag: str | None
    rows: tuple[BomRow, ...]

    @property
    def system(self) -> BomRow | None:
        """The row for the server itself (its country of final assembly), if listed."""
        return next((r for r in self.rows if r.component is BomComponent.SYSTEM), None)

    def components(self, component: BomComponent) -> list[BomRow]:
        """The rows of one component class, in BOM order."""
        return [r for r in self.rows if r.component is component]


def group_servers(rows: Sequence[BomRow], field_name: FieldNamer = _api_field) -> list[BomServer]:
    """Group rows into servers, in order of first appearance; refuse contradictory rows.

    A system serial must always come with the same asset tag and vice versa, a server has
    at most one ``system`` row, and a component serial is listed once per server.
    """
    keys: list[tuple[str | None, str | None]] = []
    grouped: dict[tuple[str | None, str | None], list[BomRow]] = {}
    by_serial: dict[str, str | None] = {}
    by_tag: dict[str, str | None] = {}
    for index, row in enumerate(rows):
        key = (row.system_serial, row.asset_tag)
        if row.system_serial is not None and by_serial.get(row.system_serial, key[1]) != key[1]:
            raise InvalidInputError.for_field(
                field_name(index, "asset_tag"),
                f"system serial {row.system_serial} has asset tag "
                f"{by_serial[row.system_serial]!r} on another row",
                row.asset_tag,
            )
        if row.asset_tag is not None and by_tag.get(row.asset_tag, key[0]) != key[0]:
            raise InvalidInputError.for_field(
                field_name(index, "system_serial"),
                f"asset tag {row.asset_tag} has system serial "
                f"{by_tag[row.asset_tag]!r} on another row",
                row.system_serial,
            )
        _check_row_in_server(index, row, grouped.get(key, []), field_name)
        if key not in grouped:
            keys.append(key)
            grouped[key] = []
        grouped[key].append(row)
        if row.system_serial is not None:
            by_serial[row.system_serial] = row.asset_tag
        if row.asset_tag is not None:
            by_tag[row.asset_tag] = row.system_serial
    return [BomServer(serial, tag, tuple(grouped[(serial, tag)])) for serial, tag in keys]


def _check_row_in_server(
    index: int, row: BomRow, earlier: list[BomRow], field_name: FieldNamer
) -> None:
    server = row.system_serial or row.asset_tag
    if row.component is BomComponent.SYSTEM:
        if any(r.component is BomComponent.SYSTEM for r in earlier):
            raise InvalidInputError.for_field(
                field_name(index, "component"),
                f"server {server} has a second system row",
                row.component.value,
            )
        if row.serial is not None and row.serial != row.system_serial:
            raise InvalidInputError.for_field(
                field_name(index, "serial"),
                "a system row's serial is the system serial; leave it empty or repeat it",
                row.serial,
            )
    elif row.serial is not None and any(
        r.component is row.component and r.serial == row.serial for r in earlier
    ):
        raise InvalidInputError.for_field(
            field_name(index, "serial"),
            f"{row.component.value} serial {row.serial} is listed twice for server {server}",
            row.serial,
        )


def _line_error(line: int, message: str, field: str | None = None) -> InvalidInputError:
    name = f"line {line}" if field is None else f"line {line}, {field}"
    return InvalidInputError.for_field(name, message)


def parse_csv(text: str) -> list[BomRow]:
    """Read a BOM CSV into rows; any problem is an error naming its line (and field).

    Empty cells are null and blank lines are skipped. The rows are also grouped into
    servers, so contradictions between rows are reported by line too.
    """
    reader = csv.reader(io.StringIO(text), strict=True)
    rows: list[BomRow] = []
    lines: list[int] = []
    try:
        header = [name.strip().lower() for name in next(reader, [])]
        if sorted(header) != sorted(BOM_COLUMNS):
            raise _line_error(
                1, f"the header must name the columns {','.join(BOM_COLUMNS)} (in any order)"
            )
        for record in reader:
            if not any(cell.strip() for cell in record):
                continue
            if len(record) != len(header):
                raise _line_error(
                    reader.line_num, f"expected {len(header)} fields, found {len(record)}"
                )
            cells = {name: cell.strip() or None for name, cell in zip(header, record, strict=True)}
            try:
                rows.append(BomRow.model_validate(cells))
            except ValidationError as exc:
                error = exc.errors()[0]
                field = ".".join(str(part) for part in error["loc"]) or None
                raise _line_error(
                    reader.line_num, error["msg"].removeprefix("Value error, "), field
                ) from None
            lines.append(reader.line_num)
    except csv.Error as exc:
        raise _line_error(reader.line_num, f"not valid CSV ({exc})") from None
    if not rows:
        raise InvalidInputError("the bill of materials has no component rows")
    group_servers(rows, lambda index, field: f"line {lines[index]}, {field}")
    return rows
