"""Audit API models: the events as stored, a page of them, and what a chain walk found."""

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from control_plane.domain.audit import AuditAction


class AuditEventPublic(BaseModel):
    """One link of the audit chain, as stored."""

    seq: int
    occurred_at: datetime
    actor_id: str
    actor_name: str
    request_id: str | None
    action: AuditAction = Field(description="What happened, as `object.verb` (docs/audit.md).")
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
