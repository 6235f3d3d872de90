"""What every format shares: cells as JSON values, the content digest, the seal.

The **content digest** (``content_sha256``) is SHA-256 over lines of canonical JSON, each
followed by a newline: first the header's signed part (``schema``, ``kind``,
``period_from``, ``period_to``, ``checkpoint``), then for each table an object
``{"columns": [names], "table": name}`` and one array per row, its cells as JSON values
(timestamps ISO 8601, UUIDs as strings). Every renderer feeds it the same lines as it
writes, so the JSON, CSV and PDF of one report have the same digest, and anyone can
recompute it from the JSON or CSV files (docs/reports.md shows how).
"""

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from agents.protocol import canonical_json
from control_plane.reports.models import Report, ReportTable

#: The header fields the digest covers (``generated_at`` is not: it differs per format).
SIGNED_HEADER = ("schema", "kind", "period_from", "period_to", "checkpoint")


def cell(value: Any) -> Any:
    """A table cell as a JSON value."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    return value


@dataclass(frozen=True, slots=True)
class Seal:
    """The signature a file carries: the exact statement signed and its Ed25519 signature."""

    content_sha256: str
    statement: str
    signature: str
    key_fingerprint: str

    def to_json(self) -> dict[str, str]:
        """JSON-safe values."""
        return {
            "algorithm": "ed25519",
            "content_sha256": self.content_sha256,
            "statement": self.statement,
            "signature": self.signature,
            "key_fingerprint": self.key_fingerprint,
        }


#: Seals a content digest: given ``content_sha256``, the statement and its signature.
Sealer = Callable[[str], Seal]


class ContentDigest:
    """The running content digest of one report, fed line by line as a renderer writes."""

    def __init__(self, report: Report) -> None:
        self._hash = hashlib.sha256()
        header = report.header()
        self._line({name: header[name] for name in SIGNED_HEADER})

    def _line(self, value: Any) -> None:
        self._hash.update(canonical_json(value).encode("utf-8") + b"\n")

    def table(self, table: ReportTable) -> None:
        """Start a table."""
        self._line({"columns": [c.name for c in table.columns], "table": table.name})

    def row(self, values: Sequence[Any]) -> list[Any]:
        """Add one row; its cells as JSON values, for the renderer to write."""
        cells = [cell(v) for v in values]
        self._line(cells)
        return cells

    def row_json(self, values: Sequence[Any]) -> bytes:
        """Add one row; the canonical JSON the digest took, for the JSON file as it is."""
        line = canonical_json([cell(v) for v in values]).encode("utf-8")
        self._hash.update(line + b"\n")
        return line

    def hexdigest(self) -> str:
        """The digest so far (the report's, once every table was fed)."""
        return self._hash.hexdigest()
