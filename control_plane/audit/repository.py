"""SQL access for the audit chain and its checkpoints. Functions take the caller's connection."""

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, LiteralString

from control_plane.audit.models import AuditEventPublic, CheckpointPublic
from control_plane.core.db import (
    DbConnection,
    fetch_all_as,
    fetch_one,
    fetch_one_as,
    fetch_returning_as,
    load_queries,
    unique,
)
from control_plane.domain.types import BIGINT_END


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


@dataclass(frozen=True, slots=True)
class ChainHead:
    """The newest event's position and hash."""

    seq: int
    hash: str


@dataclass(frozen=True, slots=True)
class SignedKeyRange:
    """One signing key as the checkpoints it signed show it."""

    fingerprint: str
    public_key: str
    first_checkpoint: int
    last_checkpoint: int
    valid_from: datetime


def iter_events(
    conn: DbConnection,
    batch_size: int = 1000,
    *,
    after_seq: int = 0,
    last_seq: int | None = None,
) -> Iterator[StoredEvent]:
    """Yield the events after ``after_seq`` (to ``last_seq``) in seq order, a batch at a time."""
    while True:
        params: dict[str, Any] = {"after_seq": after_seq, "limit": batch_size}
        if last_seq is None:
            events = fetch_all_as(conn, StoredEvent, _q("events_after"), params)
        else:
            params["last_seq"] = last_seq
            events = fetch_all_as(conn, StoredEvent, _q("events_between"), params)
        if not events:
            return
        yield from events
        after_seq = events[-1].seq


def list_events(
    conn: DbConnection,
    filters: dict[str, Any],
    limit: int,
    cursor: int | None,
    *,
    newest_first: bool,
) -> tuple[list[AuditEventPublic], int]:
    """One page of events matching ``filters`` past ``cursor`` (a seq), and how many match."""
    if newest_first:
        query, start = _q("list_events_desc"), BIGINT_END - 1
    else:
        query, start = _q("list_events_asc"), 0
    params = {**filters, "cursor": start if cursor is None else cursor, "limit": limit}
    items = fetch_all_as(conn, AuditEventPublic, query, params)
    row = fetch_one(conn, _q("count_events"), filters)
    return items, 0 if row is None else int(row["total"])


def chain_head(conn: DbConnection) -> ChainHead | None:
    """The newest event's seq and hash, or None for an empty chain."""
    return fetch_one_as(conn, ChainHead, _q("chain_head"), {})


def seq_range(
    conn: DbConnection, since: datetime | None, until: datetime | None
) -> tuple[int, int] | None:
    """The first and last seq of the events recorded in ``[since, until)``, or None."""
    row = fetch_one(conn, _q("seq_range_for_time"), {"since": since, "until": until})
    if row is None or row["first_seq"] is None:
        return None
    return int(row["first_seq"]), int(row["last_seq"])


def rotation_recorded(conn: DbConnection, after_seq: int, action: str, fingerprint: str) -> bool:
    """Whether a rotation event to ``fingerprint`` was recorded after ``after_seq``."""
    params = {"after_seq": after_seq, "action": action, "object_id": fingerprint}
    return fetch_one(conn, _q("rotation_recorded"), params) is not None


def lock_checkpoints(conn: DbConnection) -> None:
    """Take the session lock that makes one signer at a time (API, worker, CLI)."""
    conn.execute(_q("lock_checkpoints"))


def unlock_checkpoints(conn: DbConnection) -> None:
    """Release the lock ``lock_checkpoints`` took."""
    conn.execute(_q("unlock_checkpoints"))


def newest_checkpoint(conn: DbConnection) -> CheckpointPublic | None:
    """The newest checkpoint, or None before the first."""
    return fetch_one_as(conn, CheckpointPublic, _q("newest_checkpoint"), {})


def insert_checkpoint(conn: DbConnection, checkpoint: CheckpointPublic) -> CheckpointPublic:
    """Append one checkpoint; a number taken already is a 409 (another signer won)."""
    return fetch_returning_as(
        conn,
        CheckpointPublic,
        _q("insert_checkpoint"),
        checkpoint.model_dump(),
        {"audit_checkpoint_pkey": unique("number", "another checkpoint took this number")},
    )


def checkpoints_before(conn: DbConnection, before: int, limit: int) -> list[CheckpointPublic]:
    """Up to ``limit`` checkpoints numbered below ``before``, newest first."""
    params = {"before": before, "limit": limit}
    return fetch_all_as(conn, CheckpointPublic, _q("checkpoints_before"), params)


def iter_checkpoints(conn: DbConnection, batch_size: int = 1000) -> Iterator[CheckpointPublic]:
    """Every checkpoint, oldest first, a batch at a time."""
    after = 0
    while True:
        params = {"after": after, "limit": batch_size}
        batch = fetch_all_as(conn, CheckpointPublic, _q("checkpoints_in_order"), params)
        if not batch:
            return
        yield from batch
        after = batch[-1].number


def checkpoints_covering(
    conn: DbConnection, first_seq: int, last_seq: int
) -> list[CheckpointPublic]:
    """The checkpoints inside ``[first_seq, last_seq]`` and the first one at or after it."""
    params = {"first_seq": first_seq, "last_seq": last_seq}
    return fetch_all_as(conn, CheckpointPublic, _q("checkpoints_covering"), params)


def signing_keys(conn: DbConnection) -> list[SignedKeyRange]:
    """Every key that signed a checkpoint, in the order they were first used."""
    return fetch_all_as(conn, SignedKeyRange, _q("signing_keys"), {})
