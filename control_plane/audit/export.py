"""Exporting a time range of the audit chain as a bundle an auditor verifies offline.

The bundle (``bundle``) holds every event from the first recorded in ``[since, until)``
through the head of the first checkpoint at or after the last one, so the tail is signed;
the checkpoints whose heads lie in that stretch; and the keys that signed them. With no
checkpoint covering the range yet, the export refuses and says to take one first: a bundle
whose tail no signature covers could be cut without a trace.
"""

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from control_plane.audit import repository
from control_plane.audit.bundle import BundleCheckpoint, write_bundle
from control_plane.audit.repository import StoredEvent
from control_plane.core.audit_log import hashed_text
from control_plane.core.db import DbConnection
from control_plane.core.errors import ConflictError, NotFoundError

#: Events read per round trip while exporting: memory stays flat for any range.
EXPORT_BATCH = 5000


def _fields(event: StoredEvent) -> dict[str, Any]:
    return {
        "seq": event.seq,
        "occurred_at": event.occurred_at,
        "actor_id": event.actor_id,
        "actor_name": event.actor_name,
        "request_id": event.request_id,
        "action": event.action,
        "object_type": event.object_type,
        "object_id": event.object_id,
        "before": event.before,
        "after": event.after,
    }


def event_line(event: StoredEvent) -> str:
    """One line of ``events.jsonl``: the canonical JSON the event's hash is over."""
    return hashed_text(_fields(event), event.prev_hash)


def export_bundle(
    conn: DbConnection, directory: Path, since: datetime | None, until: datetime | None
) -> dict[str, Any]:
    """Write the bundle of ``[since, until)`` into ``directory``; its manifest.

    ``NotFoundError`` when no event lies in the range; ``ConflictError`` when no checkpoint
    covers its last event yet (``sovctl audit checkpoint`` takes one).
    """
    found = repository.seq_range(conn, since, until)
    if found is None:
        raise NotFoundError("no audit event was recorded in that time range")
    first_seq, range_last_seq = found
    checkpoints = repository.checkpoints_covering(conn, first_seq, range_last_seq)
    if not checkpoints or checkpoints[-1].head_seq < range_last_seq:
        raise ConflictError(
            f"no checkpoint covers seq {range_last_seq} yet; take one with "
            "`sovctl audit checkpoint` (or wait for beat's) and export again"
        )
    last_seq = checkpoints[-1].head_seq
    events = repository.iter_events(conn, EXPORT_BATCH, after_seq=first_seq - 1, last_seq=last_seq)
    first = next(events)
    anchor = first.prev_hash

    def lines() -> Iterator[str]:
        yield event_line(first)
        for event in events:
            yield event_line(event)

    manifest = {
        "exported_at": datetime.now(UTC).isoformat(timespec="microseconds"),
        "since": None if since is None else since.isoformat(),
        "until": None if until is None else until.isoformat(),
        "first_seq": first_seq,
        "range_last_seq": range_last_seq,
        "last_seq": last_seq,
        "anchor_prev_hash": anchor,
    }
    bundled = [
        BundleCheckpoint(
            number=c.number,
            statement=c.statement,
            signature=c.signature,
            checkpoint_hash=c.checkpoint_hash,
            public_key=c.public_key,
            key_fingerprint=c.key_fingerprint,
        )
        for c in checkpoints
    ]
    return write_bundle(directory, lines(), bundled, manifest)
