"""Writing and verifying the audit chain.

Each event's hash is SHA-256 over the canonical JSON of its fields plus the previous
event's hash, so changing, inserting or removing any event breaks every hash after it.
``record`` must run inside the transaction that makes the change it describes: the change
and its evidence commit together or not at all.
"""

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from psycopg.pq import TransactionStatus
from psycopg.rows import DictRow

from control_plane.audit import repository
from control_plane.audit.models import (
    GENESIS_HASH,
    AuditContext,
    AuditEventPage,
    AuditEventPublic,
    ChainVerification,
)
from control_plane.core.db import DbConnection

_HASHED_FIELDS = (
    "seq",
    "occurred_at",
    "actor_id",
    "actor_name",
    "request_id",
    "action",
    "object_type",
    "object_id",
    "before",
    "after",
)


def canonical_json(value: Any) -> str:
    """Serialise JSON-safe ``value`` one way only: sorted keys, no spaces, UTF-8 as is."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def event_hash(fields: dict[str, Any], prev_hash: str) -> str:
    """Hash an event's fields (``before``/``after`` as JSON values) chained to ``prev_hash``."""
    document = {name: fields[name] for name in _HASHED_FIELDS}
    document["occurred_at"] = _timestamp(fields["occurred_at"])
    document["prev_hash"] = prev_hash
    return hashlib.sha256(canonical_json(document).encode("utf-8")).hexdigest()


def record(
    conn: DbConnection,
    ctx: AuditContext,
    *,
    action: str,
    object_type: str,
    object_id: str,
    before: Any = None,
    after: Any = None,
) -> AuditEventPublic:
    """Append one event to the chain inside the caller's open transaction.

    ``before`` and ``after`` must be JSON-safe (use ``model_dump(mode="json")``). Call
    this last in the transaction: it holds the chain lock until commit.
    """
    if conn.info.transaction_status != TransactionStatus.INTRANS:
        raise RuntimeError("audit.record must run inside the transaction that makes the change")
    # Round-trip through canonical text so what is hashed is exactly what is stored.
    before_json = None if before is None else canonical_json(before)
    after_json = None if after is None else canonical_json(after)
    head = repository.lock_head(conn)
    fields: dict[str, Any] = {
        "seq": 1 if head is None else head["seq"] + 1,
        "occurred_at": datetime.now(UTC),
        "actor_id": ctx.actor_id,
        "actor_name": ctx.actor_name,
        "request_id": ctx.request_id,
        "action": action,
        "object_type": object_type,
        "object_id": object_id,
        "before": None if before_json is None else json.loads(before_json),
        "after": None if after_json is None else json.loads(after_json),
    }
    prev_hash = GENESIS_HASH if head is None else head["hash"]
    digest = event_hash(fields, prev_hash)
    row = repository.insert_event(
        conn,
        {
            **fields,
            "before": before_json,
            "after": after_json,
            "prev_hash": prev_hash,
            "hash": digest,
        },
    )
    return AuditEventPublic.model_validate(row)


def _broken(row: DictRow, expected_seq: int, prev_hash: str) -> str | None:
    if row["seq"] != expected_seq:
        return f"expected seq {expected_seq}, found {row['seq']} (events missing)"
    if row["prev_hash"] != prev_hash:
        return "prev_hash does not match the previous event's hash"
    if event_hash(dict(row), prev_hash) != row["hash"]:
        return "hash does not match the event's contents"
    return None


def verify_chain(conn: DbConnection, batch_size: int = 1000) -> ChainVerification:
    """Walk the whole chain in seq order and report the first event that breaks it."""
    prev_hash = GENESIS_HASH
    checked = 0
    head_seq: int | None = None
    for row in repository.iter_events(conn, batch_size):
        reason = _broken(row, checked + 1, prev_hash)
        if reason is not None:
            return ChainVerification(
                ok=False,
                events_checked=checked,
                head_seq=head_seq,
                head_hash=None if head_seq is None else prev_hash,
                first_broken_seq=checked + 1 if row["seq"] > checked + 1 else row["seq"],
                reason=reason,
            )
        checked += 1
        head_seq = row["seq"]
        prev_hash = row["hash"]
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
    rows, total = repository.list_events(conn, filters, limit, offset)
    return AuditEventPage(
        items=[AuditEventPublic.model_validate(r) for r in rows],
        total=total,
        limit=limit,
        offset=offset,
    )
