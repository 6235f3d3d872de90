"""Audit API models: the events as stored, a page of them, and what a chain walk found."""

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


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
