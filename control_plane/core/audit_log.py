"""Recording audited changes: the one helper every mutation goes through, and the chain format.

Every mutation runs inside ``audited`` (or, for a batch in one transaction, calls
``record_change`` per object, or ``record_changes`` once for them all): the change and its
evidence commit together or not at all.
The helper takes typed snapshots, public models as the API shows them, of the object
before and after the change, dumps them as JSON at the moment they are given, and queues
one event with an action from ``domain.audit.AuditAction``. Nothing else writes events, so
there is no free-string action and no hand-made before/after shape.

The chain: each event's hash is SHA-256 over the canonical JSON of its fields plus the
previous event's hash, so changing, inserting or removing any event breaks every hash after
it. An event is linked into the chain when its transaction commits (migration 0010):
PostgreSQL then takes the chain's writer lock, reads the head and computes the same hash
from the canonical JSON prepared here, so the lock is held for the commit alone. The audit
feature (``control_plane.audit``) reads and verifies the chain with ``event_hash``.

This is ground-floor plumbing: access, inventory, registry, policy, scheduling and
compliance all record through it, and the audit feature, which reads the log, sits above
them.
"""

import hashlib
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, LiteralString

from psycopg.pq import TransactionStatus
from pydantic import BaseModel

from agents.protocol import canonical_json
from control_plane.core.db import DbConnection, load_queries
from control_plane.domain.audit import AuditAction, check_snapshot

#: ``agents.protocol.canonical_json`` as one encoder built once: ``json.dumps`` with these
#: options builds a new encoder on every call, which the write path would pay several times
#: per event. The same text (tests/unit/test_audit_hash.py holds them equal).
_canonical = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode

#: ``prev_hash`` of the first event: there is nothing before it.
GENESIS_HASH = "0" * 64

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
#: The keys that only the chain's head decides, or that sit between them, in sorted order:
#: every other hashed key sorts before them, so the canonical JSON ends with these three.
_HEAD_DECIDED = ("prev_hash", "request_id", "seq")


@dataclass(frozen=True, slots=True)
class AuditContext:
    """Who is changing something, and in which request; passed to every mutating service.

    The actor's name is copied onto each event so the record survives the actor's deletion.
    """

    actor_id: str
    actor_name: str
    request_id: str | None = None


def _timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def hashed_text(fields: dict[str, Any], prev_hash: str) -> str:
    """The canonical JSON an event's hash is taken over: its fields chained to ``prev_hash``.

    One line of an audit export is exactly this text, so ``sha256sum`` of a line is the
    event's hash (docs/audit.md#verify-a-bundle-by-hand).
    """
    document = {name: fields[name] for name in _HASHED_FIELDS}
    document["occurred_at"] = _timestamp(fields["occurred_at"])
    document["prev_hash"] = prev_hash
    return canonical_json(document)


def event_hash(fields: dict[str, Any], prev_hash: str) -> str:
    """Hash an event's fields (``before``/``after`` as JSON values) chained to ``prev_hash``."""
    return hashlib.sha256(hashed_text(fields, prev_hash).encode("utf-8")).hexdigest()


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


def _hash_parts_of_text(
    fields: dict[str, Any], before_json: str | None, after_json: str | None
) -> tuple[str, str]:
    """``hash_parts``, built around ``before``/``after`` already in canonical text.

    The same strings (a unit test holds the two equal) without serialising the snapshots a
    second time: the top-level keys sort as ``action, actor_id, actor_name, after, before,
    object_id, object_type, occurred_at``, then the head-decided ones.
    """
    head = (
        '{"action":'
        + _canonical(fields["action"])
        + ',"actor_id":'
        + _canonical(fields["actor_id"])
        + ',"actor_name":'
        + _canonical(fields["actor_name"])
        + ',"after":'
        + ("null" if after_json is None else after_json)
        + ',"before":'
        + ("null" if before_json is None else before_json)
        + ',"object_id":'
        + _canonical(fields["object_id"])
        + ',"object_type":'
        + _canonical(fields["object_type"])
        + ',"occurred_at":"'
        + _timestamp(fields["occurred_at"])
        + '","prev_hash":"'
    )
    tail = '","request_id":' + _canonical(fields["request_id"]) + ',"seq":'
    return head, tail


def _insert_pending() -> LiteralString:
    return load_queries("control_plane.core", "audit_log.sql")["insert_pending"]


def _copy_pending() -> LiteralString:
    return load_queries("control_plane.core", "audit_log.sql")["copy_pending"]


#: The columns of ``copy_pending``, in its order.
_PENDING_COLUMNS = (
    "occurred_at",
    "actor_id",
    "actor_name",
    "request_id",
    "action",
    "object_type",
    "object_id",
    "before",
    "after",
    "hash_head",
    "hash_tail",
)


def _snapshot(model: BaseModel | None) -> str | None:
    """A model as the canonical JSON text the event stores and hashes (None for nothing)."""
    return None if model is None else _canonical(model.model_dump(mode="json"))


def _pending_row(
    ctx: AuditContext,
    action: AuditAction,
    object_id: str,
    before_json: str | None,
    after_json: str | None,
) -> dict[str, Any]:
    """The ``audit_pending`` row of one event: its fields and the hashed JSON around the head."""
    fields: dict[str, Any] = {
        "occurred_at": datetime.now(UTC),
        "actor_id": ctx.actor_id,
        "actor_name": ctx.actor_name,
        "request_id": ctx.request_id,
        "action": action.value,
        "object_type": action.object_type.value,
        "object_id": object_id,
    }
    hash_head, hash_tail = _hash_parts_of_text(fields, before_json, after_json)
    # What is hashed is the canonical text, exactly as stored.
    return {
        **fields,
        "before": before_json,
        "after": after_json,
        "hash_head": hash_head,
        "hash_tail": hash_tail,
    }


def _require_transaction(conn: DbConnection) -> None:
    if conn.info.transaction_status != TransactionStatus.INTRANS:
        raise RuntimeError("an audited change must run inside the transaction that makes it")


def _queue_event(
    conn: DbConnection,
    ctx: AuditContext,
    action: AuditAction,
    object_id: str,
    before_json: str | None,
    after_json: str | None,
) -> None:
    """Queue one event in the open transaction; the commit trigger links it into the chain."""
    _require_transaction(conn)
    conn.execute(_insert_pending(), _pending_row(ctx, action, object_id, before_json, after_json))


def record_change(
    conn: DbConnection,
    ctx: AuditContext,
    action: AuditAction,
    object_id: str,
    *,
    before: BaseModel | None = None,
    after: BaseModel | None = None,
) -> None:
    """Record one change inside the caller's open transaction; it joins the chain at commit.

    ``before`` and ``after`` are the object's public models (or the typed snapshot the
    action documents in ``domain.audit``), dumped as JSON now. Call it after the changes
    it describes (see the lock order in migration 0010); ``audited`` does that for you.
    Each snapshot must be of the model ``domain.audit.AUDIT_ACTIONS`` documents for the
    action (a ``TypeError`` otherwise), so docs/audit.md says what the log holds.
    """
    check_snapshot(action, "before", None if before is None else type(before).__name__)
    check_snapshot(action, "after", None if after is None else type(after).__name__)
    _queue_event(conn, ctx, action, object_id, _snapshot(before), _snapshot(after))


@dataclass(frozen=True, slots=True)
class Change:
    """One change of a batch given to ``record_changes``: as ``record_change`` takes it."""

    action: AuditAction
    object_id: str
    before: BaseModel | None = None
    after: BaseModel | None = None


def record_changes(conn: DbConnection, ctx: AuditContext, changes: Sequence[Change]) -> None:
    """Record a batch of changes, in order, inside the caller's open transaction.

    The same events as ``record_change`` once per change (same checks, same snapshots,
    same chain), queued with one ``COPY`` instead of a statement each: for sweeps that
    change many objects in one transaction. They join the chain at commit, in the order
    given, all linked by one call of the chain trigger (migration 0029).
    """
    _require_transaction(conn)
    rows: list[tuple[Any, ...]] = []
    for change in changes:
        before, after = change.before, change.after
        check_snapshot(change.action, "before", None if before is None else type(before).__name__)
        check_snapshot(change.action, "after", None if after is None else type(after).__name__)
        fields = _pending_row(
            ctx, change.action, change.object_id, _snapshot(before), _snapshot(after)
        )
        rows.append(tuple(fields[name] for name in _PENDING_COLUMNS))
    if rows:
        # COPY: one statement for the batch; an INSERT each (even pipelined) started the
        # executor once per row, about 12 µs of the ~30 µs a queued event cost here.
        with conn.cursor() as cursor, cursor.copy(_copy_pending()) as copy:
            for row in rows:
                copy.write_row(row)


class AuditedChange:
    """A change in progress: the action, the object and its public models before and after.

    ``action`` and ``object_id`` may be settled inside the block, when the change itself
    decides them (a workload admitted or denied; a new node's id). The models are dumped
    when the change is recorded, at the end of the block.
    """

    __slots__ = ("action", "after", "before", "object_id")

    def __init__(self, action: AuditAction, object_id: str | None, before: BaseModel | None):
        self.action = action
        self.object_id = object_id
        self.before = before
        self.after: BaseModel | None = None

    def _record(self, conn: DbConnection, ctx: AuditContext) -> None:
        if self.object_id is None:
            raise RuntimeError(f"{self.action}: the change named no object")
        record_change(conn, ctx, self.action, self.object_id, before=self.before, after=self.after)


def transaction(conn: DbConnection) -> Any:
    """The caller's open transaction, or a new one: joining costs no savepoint round trip."""
    if conn.info.transaction_status == TransactionStatus.INTRANS:
        return nullcontext()
    return conn.transaction()


@contextmanager
def audited(
    conn: DbConnection,
    ctx: AuditContext,
    action: AuditAction,
    object_id: str | None = None,
    *,
    before: BaseModel | None = None,
) -> Iterator[AuditedChange]:
    """Run a mutation in a transaction and record it, with its snapshots, as it commits.

    The block makes the change and sets ``change.after`` (and ``before`` if it was not
    known when entering); on a normal exit the event is queued last in the transaction,
    after everything it describes. An exception rolls back the change and records nothing.
    Inside an open transaction it joins it, so several objects changed together (a node
    registered with its credential) commit as one.
    """
    with transaction(conn):
        change = AuditedChange(action, object_id, before)
        yield change
        change._record(conn, ctx)
