"""Audit API models: the events as stored, a page of them, and what a chain walk found."""

import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, BeforeValidator, Field

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


_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})")


def _rfc3339(value: object) -> object:
    """Only an RFC 3339 time with a zone: pydantic would also take ``0.5`` (Unix seconds)."""
    if isinstance(value, str) and _RFC3339.fullmatch(value):
        return value
    if isinstance(value, datetime):
        return value
    raise ValueError("must be an RFC 3339 time with a zone, e.g. 2026-01-31T00:00:00Z")


#: A query parameter's time: RFC 3339 with a zone, nothing else.
QueryTime = Annotated[AwareDatetime, BeforeValidator(_rfc3339)]


class EventOrder(StrEnum):
    """Which way a page of events runs: by ``seq``, newest or oldest first."""

    DESC = "desc"
    ASC = "asc"


class AuditFilters(BaseModel):
    """The query parameters of ``GET /v1/audit/events``.

    ``object_type`` and ``action`` come from closed lists (``domain.audit``), so a
    misspelt one is a 422 naming it rather than an empty page; ``action`` may be given
    several times (any of them). ``since`` and ``until`` are RFC 3339 times with a zone
    (``until`` excluded). ``object_id`` is any text: the events of a deleted object stay in
    the log, so its id need not exist.
    """

    object_type: AuditObjectType | None = None
    object_id: Lookup | None = None
    action: list[AuditAction] = Field(default_factory=list)
    since: QueryTime | None = Field(default=None, description="Events at or after it.")
    until: QueryTime | None = Field(default=None, description="Events before it.")


class AuditEventPage(BaseModel):
    """A page of audit events, in ``seq`` order (newest first from the API by default)."""

    items: list[AuditEventPublic]
    total: int = Field(description="How many events match the filters, on every page.")
    limit: int
    next_cursor: int | None = Field(
        default=None,
        description="Pass as `cursor` for the next page (null: this is the last): the seq "
        "the page stopped at, so pages stay stable while events are appended.",
    )


class ChainVerification(BaseModel):
    """What walking the chain found: either intact, or the first event that breaks it."""

    ok: bool
    events_checked: int
    head_seq: int | None = Field(description="The last intact event's seq.")
    head_hash: str | None
    first_broken_seq: int | None = None
    reason: str | None = None
    kind: str | None = Field(
        default=None,
        description="What the damage looks like: modified, deleted, truncated, "
        "forged_checkpoint, unknown_key, ... (null: intact).",
    )
    checkpoints_checked: int = 0
    newest_checkpoint: int | None = Field(default=None, description="Its number.")
    newest_checkpoint_seq: int | None = Field(default=None, description="The seq it signed.")
    key_fingerprints: list[str] = Field(
        default_factory=list, description="The keys the checkpoints were verified with."
    )


class SigningKeyPublic(BaseModel):
    """A checkpoint signing key's public half: what a rotation event holds on each side."""

    fingerprint: str = Field(description="SHA-256 (hex) of the key's DER SubjectPublicKeyInfo.")
    public_key: str = Field(description="The Ed25519 public key, PEM SubjectPublicKeyInfo.")


class CheckpointPublic(BaseModel):
    """A signed checkpoint of the chain's head, as stored (docs/audit.md#checkpoints)."""

    number: int
    head_seq: int
    head_hash: str
    signed_at: datetime
    prev_checkpoint_hash: str
    key_fingerprint: str
    previous_key_fingerprint: str | None
    public_key: str
    statement: str = Field(description="The exact bytes signed (canonical JSON).")
    checkpoint_hash: str = Field(description="SHA-256 (hex) of the statement.")
    signature: str = Field(description="Ed25519 signature of the statement, base64.")


class CheckpointPage(BaseModel):
    """A page of checkpoints, newest first."""

    items: list[CheckpointPublic]
    limit: int
    next_cursor: int | None = Field(description="Pass as `cursor` for the next (older) page.")


class PublishedKey(BaseModel):
    """A key that signs, or signed, checkpoints, and when it did."""

    fingerprint: str
    public_key: str
    current: bool = Field(description="The key this control plane signs with now.")
    first_checkpoint: int | None = Field(description="The first checkpoint it signed.")
    last_checkpoint: int | None = Field(description="The newest checkpoint it signed.")
    valid_from: datetime | None = Field(description="When it signed its first checkpoint.")
    valid_until: datetime | None = Field(
        description="When the next key took over (null: still in use)."
    )


class PublicKeys(BaseModel):
    """``GET /v1/audit/public-key``: the current signing key and every earlier one."""

    fingerprint: str | None = Field(description="The current key's fingerprint.")
    public_key: str | None = Field(description="The current key, PEM.")
    keys: list[PublishedKey]
