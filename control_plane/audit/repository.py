"""SQL access for the audit chain. Functions take the caller's connection."""

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, LiteralString

from control_plane.audit.models import AuditEventPublic
from control_plane.core.db import DbConnection, fetch_all_as, fetch_page_as, load_queries


def _q(name: str) -> LiteralString:
    return load_queries("control_plane.audit")[name]


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """One ``audit_event`` row as the chain walk reads it: every column, as stored.

    A dataclass, not the API model: a walk reads every event, and what it checks is the
    row exactly as stored, whatever an editor of the table may have put in it.
    """

    seq: int
    occurred_at: datetime
    actor_id: str
    actor_name: str
    request_id: str | None
    action: str
    object_type: str
    object_id: str
    before: Any
    after: Any
    prev_hash: str
    hash: str


def iter_events(conn: DbConnection, batch_size: int = 1000) -> Iterator[StoredEvent]:
    """Yield every event in seq order, a batch at a time, so memory stays flat."""
    after_seq = 0
    while True:
        params = {"after_seq": after_seq, "limit": batch_size}
        events = fetch_all_as(conn, StoredEvent, _q("events_after"), params)
        if not events:
            return
        yield from events
        after_seq = events[-1].seq


def list_events(
    conn: DbConnection, filters: dict[str, str | None], limit: int, offset: int
) -> tuple[list[AuditEventPublic], int]:
    """Return one page of events matching ``filters`` and the total that match."""
    return fetch_page_as(
        conn, AuditEventPublic, _q("list_events"), _q("count_events"), filters, limit, offset
    )
