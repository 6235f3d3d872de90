"""Audit API models: the events as stored, a page of them, and what a chain walk found."""

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from control_plane.domain.audit import AuditAction, AuditObjectType
from control_plane.domain.types import Lookup


class AuditEventPublic(BaseModel):
    """One link of the audit chain, as stored."""

    seq: int
    occurred_at: datetime
    actor_id: str
    actor_name: str
    request_id: str | None
    # As stored, not as the enumeration: an event someone edited in the table must still be
    # readable here, for the auditor to see it beside the broken hash.
    action: str = Field(description="What happened: one of the actions in docs/audit.md.")
    object_type: str
    object_id: str
    before: Any
    after: Any
    prev_hash: str
    hash: str


class AuditFilters(BaseModel):
    """The query parameters of ``GET /v1/audit/events``.

    ``object_type`` and ``action`` come from closed lists (``domain.audit``), so a
    misspelt one is a 422 naming it rather than an empty page. ``object_id`` is any text:
    the events of a deleted object stay in the log, so its id need not exist.
    """

    object_type: AuditObjectType | None = None
    object_id: Lookup | None = None
    action: AuditAction | None = None


class AuditEventPage(BaseModel):
    """A page of audit events, oldest first."""

    items: list[AuditEventPublic]
    total: int
    limit: int
    offset: int


class ChainVerification(BaseModel):
    """What walking the chain found: either intact, or the first event that breaks it."""

    ok: bool
    events_checked: int
    head_seq: int | None = Field(description="The last intact event's seq.")
    head_hash: str | None
    first_broken_seq: int | None = None
    reason: str | None = None
