"""Reading and verifying the audit chain.

Events are recorded by ``core.audit_log`` (every mutation goes through its ``audited``
helper); this feature reads them back and walks the chain, recomputing each hash with the
same ``event_hash``, so a changed, inserted or removed event is pinpointed.
"""

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from control_plane.audit import repository
from control_plane.audit.models import (
    AuditEventPage,
    ChainVerification,
    CheckpointPublic,
    EventOrder,
)
from control_plane.audit.repository import StoredEvent
from control_plane.audit.signatures import StatementError, fingerprint, load_public_key
from control_plane.audit.verification import (
    CheckpointHeads,
    Finding,
    SignedCheckpoint,
    Tampering,
    check_checkpoints,
)
from control_plane.core.audit_log import GENESIS_HASH, event_hash
from control_plane.core.db import DbConnection

_FIELDS = tuple(field.name for field in dataclasses.fields(StoredEvent))


def broken_link(event: StoredEvent, expected_seq: int, prev_hash: str) -> str | None:
    """Why ``event`` does not continue a chain whose last hash is ``prev_hash``; None if it does."""
    if event.seq != expected_seq:
        return f"expected seq {expected_seq}, found {event.seq} (events missing)"
    if event.prev_hash != prev_hash:
        return "prev_hash does not match the previous event's hash"
    fields = {name: getattr(event, name) for name in _FIELDS}
    if event_hash(fields, prev_hash) != event.hash:
        return "hash does not match the event's contents"
    return None


def _stored_keys(checkpoints: list[CheckpointPublic]) -> dict[str, Ed25519PublicKey]:
    """The keys the stored checkpoints name, each only if it has the fingerprint it claims."""
    keys: dict[str, Ed25519PublicKey] = {}
    for checkpoint in checkpoints:
        try:
            key = load_public_key(checkpoint.public_key)
        except StatementError:
            continue
        if fingerprint(key) == checkpoint.key_fingerprint:
            keys[checkpoint.key_fingerprint] = key
    return keys


def _describer(event: StoredEvent) -> Callable[[], tuple[str, str]]:
    return lambda: (event.action, event.object_id)


def verify_chain(
    conn: DbConnection,
    batch_size: int = 1000,
    *,
    trusted_keys: Mapping[str, Ed25519PublicKey] | None = None,
) -> ChainVerification:
    """Walk the whole chain in seq order and report the first event that breaks it.

    Every checkpoint is verified first (``verification``): with ``trusted_keys`` only, if
    given (an auditor's pinned keys), else with the keys the checkpoints carry. The walk
    then checks each signed head, and that the chain still reaches the newest one, so
    removing the newest events is found too.
    """
    checkpoints = list(repository.iter_checkpoints(conn))
    trusted = dict(trusted_keys) if trusted_keys is not None else _stored_keys(checkpoints)
    signed = [
        SignedCheckpoint(c.statement.encode("utf-8"), c.signature, c.checkpoint_hash)
        for c in checkpoints
    ]
    statements, finding = check_checkpoints(signed, trusted)
    newest = statements[-1] if statements else None
    summary = {
        "checkpoints_checked": len(statements),
        "newest_checkpoint": None if newest is None else newest.number,
        "newest_checkpoint_seq": None if newest is None else newest.head_seq,
        "key_fingerprints": sorted({s.key_fingerprint for s in statements}),
    }
    prev_hash = GENESIS_HASH
    checked = 0
    head_seq: int | None = None

    def result(found: Finding | None) -> ChainVerification:
        return ChainVerification(
            ok=found is None,
            events_checked=checked,
            head_seq=head_seq,
            head_hash=None if head_seq is None else prev_hash,
            first_broken_seq=None if found is None else found.seq,
            reason=None if found is None else found.message,
            kind=None if found is None else found.kind.value,
            **summary,
        )

    if finding is not None:
        return result(finding)
    heads = CheckpointHeads(statements)
    for event in repository.iter_events(conn, batch_size):
        reason = broken_link(event, checked + 1, prev_hash)
        if reason is not None:
            kind = Tampering.DELETED if event.seq > checked + 1 else Tampering.MODIFIED
            first = checked + 1 if event.seq > checked + 1 else event.seq
            return result(Finding(kind, reason, seq=first))
        found = heads.at_event(event.seq, event.hash, _describer(event))
        if found is not None:
            return result(found)
        checked += 1
        head_seq = event.seq
        prev_hash = event.hash
    return result(heads.at_end(head_seq or 0))


def list_events(
    conn: DbConnection,
    *,
    object_type: str | None = None,
    object_id: str | None = None,
    action: str | Sequence[str] | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    order: EventOrder = EventOrder.ASC,
    cursor: int | None = None,
    limit: int = 100,
) -> AuditEventPage:
    """A page of events, optionally for one object, some actions or a time range.

    Oldest first unless ``order`` says otherwise (the API's default is newest first);
    ``cursor`` is the previous page's ``next_cursor``.
    """
    actions = [] if action is None else [action] if isinstance(action, str) else list(action)
    filters = {
        "object_type": object_type,
        "object_id": object_id,
        "actions": actions,
        "since": since,
        "until": until,
    }
    items, total = repository.list_events(
        conn, filters, limit, cursor, newest_first=order is EventOrder.DESC
    )
    next_cursor = items[-1].seq if len(items) == limit else None
    return AuditEventPage(items=items, total=total, limit=limit, next_cursor=next_cursor)
