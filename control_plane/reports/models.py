"""Report models: the job an auditor asks for, and the report a job builds.

A report is made of **tables** (named, with typed columns and rows) and **headline** lines,
one per board-level measure. The three renderers (JSON, CSV, PDF) all render the same
``ReportTable``s, so the three formats of one report carry the same numbers, and
``content_sha256`` (SHA-256 of the report's data as canonical JSON) is the same for all
three: the signature in each file signs that digest (docs/reports.md).
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

from pydantic import BaseModel, Field, model_validator

#: The version of the report's JSON document; bumped on any change of its shape.
SCHEMA_VERSION = "sovereign-report/2"
#: The bounds of a report's period.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 1, 1, tzinfo=UTC)


class ReportKind(StrEnum):
    """Which report: where the fleet's capacity is, or what the policies decided."""

    SOVEREIGNTY = "sovereignty"
    COMPLIANCE = "compliance"


class ReportFormat(StrEnum):
    """The file a job renders: one JSON document, a zip of CSV tables, or a PDF for people."""

    JSON = "json"
    CSV = "csv"
    PDF = "pdf"

    @property
    def media_type(self) -> str:
        """The download's content type."""
        return {"json": "application/json", "csv": "application/zip", "pdf": "application/pdf"}[
            self.value
        ]

    @property
    def extension(self) -> str:
        """The file name's extension."""
        return "zip" if self is ReportFormat.CSV else self.value


class ReportStatus(StrEnum):
    """Where a job stands; ``running`` again after a worker died counts another attempt."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class ReportCreate(BaseModel):
    """A request for a report of one kind over ``[period_from, period_to)``, in one format."""

    model_config = {"extra": "forbid"}

    kind: ReportKind
    period_from: datetime = Field(description="Start of the period, inclusive (with a zone).")
    period_to: datetime = Field(description="End of the period, exclusive (with a zone).")
    format: ReportFormat = ReportFormat.JSON

    @model_validator(mode="after")
    def _period(self) -> "ReportCreate":
        if self.period_from.tzinfo is None or self.period_to.tzinfo is None:
            raise ValueError("period_from and period_to need a time zone (e.g. Z)")
        if self.period_to <= self.period_from:
            raise ValueError("period_to must be after period_from")
        # Far outside any record, and past the years every part (Python's datetime, the
        # PDF's dates) can write once converted to UTC.
        if self.period_from < EARLIEST or self.period_to > LATEST:
            raise ValueError("the period must lie between 1970-01-01 and 9999-01-01 (UTC)")
        return self


class ReportJobPublic(BaseModel):
    """A report job as the API shows it (and the audit log records it)."""

    id: UUID
    kind: ReportKind
    period_from: datetime
    period_to: datetime
    format: ReportFormat
    checkpoint: int | None = Field(
        description="The audit checkpoint the report covers: the newest signed at or after"
        " the period's end when the job was asked for; null when there was none."
    )
    status: ReportStatus
    percent: int
    step: str
    attempts: int
    error: str | None
    size_bytes: int | None
    sha256: str | None = Field(description="SHA-256 (hex) of the file.")
    content_sha256: str | None = Field(
        description="SHA-256 (hex) of the report's data as canonical JSON, the same in every"
        " format; what the signature in the file signs."
    )
    signature: str | None = Field(description="Ed25519 over the file's bytes (base64).")
    key_fingerprint: str | None
    requested_by: str
    requested_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class ReportJobPage(BaseModel):
    """A page of report jobs, newest first."""

    items: list[ReportJobPublic]
    total: int
    limit: int
    offset: int


@dataclass(frozen=True, slots=True)
class CheckpointRef:
    """The audit checkpoint a report covers: the chain's head as a signature vouches for it."""

    number: int
    head_seq: int
    head_hash: str
    checkpoint_hash: str
    signed_at: datetime

    def to_json(self) -> dict[str, Any]:
        """JSON-safe values."""
        return {
            "number": self.number,
            "head_seq": self.head_seq,
            "head_hash": self.head_hash,
            "checkpoint_hash": self.checkpoint_hash,
            "signed_at": self.signed_at.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class Period:
    """A report's period, ``[start, end)``."""

    start: datetime
    end: datetime


@dataclass(frozen=True, slots=True)
class Column:
    """One column of a report table: its name, what it holds, and its type for CSV/JSON."""

    name: str
    title: str
    kind: str = "text"  # text | int | float | percent | timestamp | json


@dataclass(slots=True)
class ReportTable:
    """One table of a report: the unit every format renders (a CSV file, a PDF table).

    ``rows`` is any iterable of tuples in column order; large ones (every denial) come
    from a server-side cursor and are read once, as they are rendered. ``in_pdf`` false:
    the PDF shows it otherwise (as charts) and leaves its rows to JSON and CSV.
    """

    name: str
    title: str
    description: str
    columns: Sequence[Column]
    rows: Iterable[Sequence[Any]]
    in_pdf: bool = True


@dataclass(frozen=True, slots=True)
class Headline:
    """One line of a report's first page: a measure at the period's start and end.

    A measure of a moment (capacity) has ``at_start`` and ``at_end``; a measure summed
    over time (GPU-hours) has those for the period's first and last day (or hour) and
    ``whole_period`` for all of it.
    """

    measure: str
    text: str
    at_start: float | None
    at_end: float | None
    unit: str = "percent"
    #: Why the measure has no value (its source gave no complete answer), shown instead.
    unavailable: str | None = None
    whole_period: float | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON-safe values."""
        return {
            "measure": self.measure,
            "text": self.text,
            "unit": self.unit,
            "at_start": self.at_start,
            "at_end": self.at_end,
            "change": None
            if self.at_start is None or self.at_end is None
            else round(self.at_end - self.at_start, 4),
            "unavailable": self.unavailable,
            "whole_period": self.whole_period,
        }


@dataclass(slots=True)
class Series:
    """A chart's data: one value per (time, group), for the PDF's charts."""

    name: str
    title: str
    unit: str
    times: list[datetime] = field(default_factory=list)
    groups: dict[str, list[float]] = field(default_factory=dict)


@dataclass(slots=True)
class Report:
    """Everything one report says, before any format: what the renderers take."""

    kind: ReportKind
    period: Period
    checkpoint: CheckpointRef | None
    generated_at: datetime
    headline: list[Headline]
    tables: list[ReportTable]
    charts: list[Series] = field(default_factory=list)

    def header(self) -> dict[str, Any]:
        """The header every format carries: schema, kind, period, checkpoint."""
        return {
            "schema": SCHEMA_VERSION,
            "kind": self.kind.value,
            "period_from": self.period.start.isoformat(),
            "period_to": self.period.end.isoformat(),
            "checkpoint": None if self.checkpoint is None else self.checkpoint.to_json(),
            "generated_at": self.generated_at.isoformat(),
        }
