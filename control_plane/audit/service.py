"""Reading and verifying the audit chain.

Events are recorded by ``core.audit_log`` (every mutation goes through its ``audited``
helper); this feature reads them back and walks the chain, recomputing each hash with the
same ``event_hash``, so a changed, inserted or removed event is pinpointed.
"""

import dataclasses

from control_plane.audit import repository
from control_plane.audit.models import AuditEventPage, ChainVerification
from control_plane.audit.repository import StoredEvent
from control_plane.core.audit_log import GENESIS_HASH, event_hash
from control_plane.core.db import DbConnection

_FIELDS = tuple(field.name for field in dataclasses.fields(StoredEvent))


def _broken(event: StoredEvent, expected_seq: int, prev_hash: str) -> str | None:
    if event.seq != expected_seq:
        return f"expected seq {expected_seq}, found {event.seq} (events missing)"
    if event.prev_hash != prev_hash:
        return "prev_hash does not match the previous event's hash"
    fields = {name: getattr(event, name) for name in _FIELDS}
    if event_hash(fields, prev_hash) != event.hash:
        return "hash does not match the event's contents"
    return None


def verify_chain(conn: DbConnection, batch_size: int = 1000) -> ChainVerification:
    """Walk the whole chain in seq order and report the first event that breaks it."""
    prev_hash = GENESIS_HASH
    checked = 0
    head_seq: int | None = None
    for event in repository.iter_events(conn, batch_size):
        reason = _broken(event, checked + 1, prev_hash)
        if reason is not None:
            return ChainVerification(
                ok=False,
                events_checked=checked,
                head_seq=head_seq,
                head_hash=None if head_seq is None else prev_hash,
                first_broken_seq=checked + 1 if event.seq > checked + 1 else event.seq,
                reason=reason,
            )
        checked += 1
        head_seq = event.seq
        prev_hash = event.hash
    return ChainVerification(
        ok=True,
        events_checked=checked,
        head_seq=head_seq,
        head_hash=None if head_seq is None else prev_hash,
    )


def list_events(
    conn: DbConnection,
    *,
    object_type: str | None = None,
    object_id: str | None = None,
    action: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> AuditEventPage:
    """Return a page of events, oldest first, optionally for one object or action."""
    filters = {"object_type": object_type, "object_id": object_id, "action": action}
    items, total = repository.list_events(conn, filters, limit, offset)
    return AuditEventPage(items=items, total=total, limit=limit, offset=offset)
