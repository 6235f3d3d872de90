"""Writing and verifying the audit chain.

Each event's hash is SHA-256 over the canonical JSON of its fields plus the previous
event's hash, so changing, inserting or removing any event breaks every hash after it.
``record`` must run inside the transaction that makes the change it describes: the change
and its evidence commit together or not at all. The event is linked into the chain when
that transaction commits (migration 0010): PostgreSQL then takes the chain's writer lock,
reads the head and computes the same hash from the canonical JSON ``record`` prepared, so
the lock is held for the commit alone, not for the rest of the transaction.
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


#: The keys that only the chain's head decides, or that sit between them, in sorted order:
#: every other hashed key sorts before them, so the canonical JSON ends with these three.
_HEAD_DECIDED = ("prev_hash", "request_id", "seq")
assert sorted((*_HASHED_FIELDS, "prev_hash"))[-3:] == list(_HEAD_DECIDED)


def hash_parts(fields: dict[str, Any]) -> tuple[str, str]:
    """The canonical JSON ``event_hash`` hashes, cut around the values of prev_hash and seq.

    ``head + prev_hash + tail + str(seq) + "}"`` is that JSON for any head: PostgreSQL
    completes and hashes it when the event is linked at commit (migration 0010). ``fields``
    needs every hashed field except ``seq``.
    """
    document = {name: fields[name] for name in _HASHED_FIELDS if name not in _HEAD_DECIDED}
    document["occurred_at"] = _timestamp(fields["occurred_at"])
    head = canonical_json(document)[:-1] + ',"prev_hash":"'
    tail = '","request_id":' + canonical_json(fields["request_id"]) + ',"seq":'
    return head, tail


def record(
    conn: DbConnection,
    ctx: AuditContext,
    *,
    action: str,
    object_type: str,
    object_id: str,
    before: Any = None,
    after: Any = None,
) -> None:
    """Record one event inside the caller's open transaction; it joins the chain at commit.

    ``before`` and ``after`` must be JSON-safe (use ``model_dump(mode="json")``). The event
    gets its ``seq`` and ``hash`` when the transaction commits, in commit order across
    every process, and disappears with it if it rolls back. Call this last in the
    transaction, after the changes it describes (see the lock order in migration 0010).
    """
    if conn.info.transaction_status != TransactionStatus.INTRANS:
        raise RuntimeError("audit.record must run inside the transaction that makes the change")
    # Round-trip through canonical text so what is hashed is exactly what is stored.
    before_json = None if before is None else canonical_json(before)
    after_json = None if after is None else canonical_json(after)
    fields: dict[str, Any] = {
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
    hash_head, hash_tail = hash_parts(fields)
    repository.insert_pending(
        conn,
        {
            **fields,
            "before": before_json,
            "after": after_json,
            "hash_head": hash_head,
            "hash_tail": hash_tail,
        },
    )


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
