"""Audit vocabulary: who acted, what was recorded, and what a chain walk found."""

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

#: ``prev_hash`` of the first event: there is nothing before it.
GENESIS_HASH = "0" * 64


@dataclass(frozen=True, slots=True)
class AuditContext:
    """Who is changing something, and in which request; passed to every mutating service.

    The actor's name is copied onto each event so the record survives the actor's deletion.
    """

    actor_id: str
    actor_name: str
    request_id: str | None = None


class AuditEventPublic(BaseModel):
    """One link of the audit chain, as stored."""

    seq: int
    occurred_at: datetime
    actor_id: str
    actor_name: str
    request_id: str | None
    action: str = Field(description="What happened, as `object.verb`, e.g. `zone.created`.")
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
