"""Bill-of-materials vocabulary and the API models of a provenance import.

A bill of materials (BOM) is what procurement says a server is made of, one row per
component, with each component's country of origin. Only part of it can be checked: the
GPU serials NVML reads and the system serial from DMI. The rest (declared countries) is
compared with what the node already declares, never silently overwritten.
"""

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Self
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, model_validator

from control_plane.domain.countries import CountryCode
from control_plane.domain.types import ShortText

#: A BOM is checked in one transaction that locks every node it names, so its size is
#: capped: 10 000 rows is about a thousand 8-GPU servers, checked in well under a second.
MAX_BOM_ROWS = 10_000

#: An identifying text; empty cells arrive as null, never as "".
Identifier = Annotated[ShortText, Field(min_length=1)]


class BomComponent(StrEnum):
    """What a BOM row describes: ``system`` is the server itself (origin: final assembly)."""

    SYSTEM = "system"
    GPU = "gpu"
    CPU = "cpu"
    BOARD = "board"
    NIC = "nic"


class CheckResult(StrEnum):
    """How one BOM fact compares with what is known about the node."""

    MATCH = "match"
    MISMATCH = "mismatch"
    UNVERIFIABLE = "unverifiable"


class ServerStatus(StrEnum):
    """What an import concluded about one BOM server.

    ``verified`` and ``mismatch`` are stored on the node; ``unverifiable`` (nothing the
    agent read could be compared) and ``unmatched`` (no node found) leave it untouched.
    """

    VERIFIED = "verified"
    MISMATCH = "mismatch"
    UNVERIFIABLE = "unverifiable"
    UNMATCHED = "unmatched"


class MatchedBy(StrEnum):
    """Which BOM field found the node."""

    SYSTEM_SERIAL = "system_serial"
    ASSET_TAG = "asset_tag"


class BomRow(BaseModel):
    """One component of one server; the server is named by system serial and/or asset tag."""

    model_config = ConfigDict(extra="forbid")

    system_serial: Identifier | None = Field(
        default=None, description="The server's serial, as DMI reports it."
    )
    asset_tag: Identifier | None = None
    component: BomComponent
    serial: Identifier | None = Field(
        default=None, description="The component's serial (for a GPU: what NVML reads)."
    )
    part_number: Identifier | None = None
    origin_country: CountryCode = Field(
        description="ISO 3166-1 alpha-2; for the system row, the country of final assembly."
    )

    @model_validator(mode="after")
    def _names_its_server(self) -> Self:
        if self.system_serial is None and self.asset_tag is None:
            raise ValueError("a row needs a system_serial or an asset_tag to name its server")
        return self


class BomImport(BaseModel):
    """A bill of materials to check, as rows (``sovctl provenance import`` sends a CSV's)."""

    model_config = ConfigDict(extra="forbid")

    name: ShortText | None = Field(
        default=None, description="Where the BOM came from, e.g. its file name; kept as evidence."
    )
    rows: list[BomRow] = Field(min_length=1, max_length=MAX_BOM_ROWS)


class EvidenceCheck(BaseModel):
    """One comparison: what the BOM says, what is known about the node, and the verdict."""

    check: str = Field(
        description="`system_serial`, `gpu_count`, `gpu_serial`, `origin_country` or "
        "`component_origins.<class>`."
    )
    expected: str | int | None = Field(description="What the BOM says.")
    observed: str | int | None = Field(description="What the agent read or the node declares.")
    result: CheckResult


class ServerCheck(BaseModel):
    """What an import found for one BOM server."""

    system_serial: str | None
    asset_tag: str | None
    status: ServerStatus
    node_id: UUID | None
    hostname: str | None
    matched_by: MatchedBy | None
    reason: str | None = Field(description="Why no node was matched, when none was.")
    checks: list[EvidenceCheck]


class ImportResult(BaseModel):
    """The outcome of one BOM import, server by server."""

    import_id: UUID
    checked_at: datetime
    servers: list[ServerCheck]
