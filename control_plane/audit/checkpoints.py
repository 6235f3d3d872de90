"""Signing checkpoints of the audit chain, listing them, and the keys that signed them.

A checkpoint is the signed statement of ``signatures`` over the chain's head. Beat signs
one every ``SOVEREIGN_AUDIT__CHECKPOINT_SECONDS`` when the head moved; an admin may ask for
one at any time (``POST /v1/audit/checkpoints``, ``sovctl audit checkpoint``). Before
signing, the events since the previous checkpoint are verified, so a signature never
vouches for a chain that was already broken.

Rotation: when the configured key is not the one that signed the newest checkpoint, the
signer first records ``audit.signing_key_rotated`` (old and new key) through the audited
change helper, then signs with the new key a checkpoint that covers that event and names
the old key as ``previous_key_fingerprint``. A verifier accepts a change of key only in
that shape: the new key announced inside the chain the old key's checkpoints lead to.
"""

from datetime import UTC, datetime

from control_plane.audit import repository
from control_plane.audit.keys import SigningKey, load_signing_key
from control_plane.audit.models import (
    CheckpointPage,
    CheckpointPublic,
    PublicKeys,
    PublishedKey,
    SigningKeyPublic,
)
from control_plane.audit.repository import SignedKeyRange
from control_plane.audit.service import broken_link
from control_plane.audit.signatures import (
    GENESIS_CHECKPOINT_HASH,
    Statement,
    checkpoint_hash,
    sign,
)
from control_plane.core.audit_log import GENESIS_HASH, AuditContext, audited
from control_plane.core.db import DbConnection
from control_plane.core.errors import ConflictError
from control_plane.core.settings import Environment, Settings
from control_plane.domain.audit import AuditAction
from control_plane.domain.types import BIGINT_END

#: Events checked per round trip before signing.
_VERIFY_BATCH = 1000


def _rotate(
    conn: DbConnection, ctx: AuditContext, newest: CheckpointPublic, key: SigningKey
) -> None:
    """Record the change of key, unless a crashed signer recorded it already."""
    action = AuditAction.AUDIT_SIGNING_KEY_ROTATED
    if repository.rotation_recorded(conn, newest.head_seq, action.value, key.fingerprint):
        return
    old = SigningKeyPublic(fingerprint=newest.key_fingerprint, public_key=newest.public_key)
    with audited(conn, ctx, action, key.fingerprint, before=old) as change:
        change.after = SigningKeyPublic(fingerprint=key.fingerprint, public_key=key.public_key_pem)


def _verify_since(conn: DbConnection, newest: CheckpointPublic | None, head_seq: int) -> None:
    """Refuse to sign over events after the newest checkpoint that break the chain."""
    seq = 0 if newest is None else newest.head_seq
    prev_hash = GENESIS_HASH if newest is None else newest.head_hash
    for event in repository.iter_events(conn, _VERIFY_BATCH, after_seq=seq, last_seq=head_seq):
        reason = broken_link(event, seq + 1, prev_hash)
        if reason is not None:
            raise ConflictError(
                f"not signing: the audit chain is broken at seq {seq + 1}: {reason}",
                details={"first_broken_seq": seq + 1},
            )
        seq, prev_hash = event.seq, event.hash
    if seq != head_seq:
        raise ConflictError(f"not signing: the chain ends at seq {seq}, before its head {head_seq}")


def take_checkpoint(
    conn: DbConnection,
    key: SigningKey,
    ctx: AuditContext,
    *,
    only_if_moved: bool = False,
    now: datetime | None = None,
) -> CheckpointPublic | None:
    """Sign the chain's head; None when it is empty, or did not move and ``only_if_moved``.

    ``conn`` must be outside a transaction: a rotation event has to commit (and be
    chained) before the head that covers it is read. One signer at a time, by a session
    lock, so numbers have no gaps and a rotation is recorded once.
    """
    repository.lock_checkpoints(conn)
    try:
        newest = repository.newest_checkpoint(conn)
        rotated_from = None
        if newest is not None and newest.key_fingerprint != key.fingerprint:
            _rotate(conn, ctx, newest, key)
            rotated_from = newest.key_fingerprint
        head = repository.chain_head(conn)
        if head is None:
            return None
        if only_if_moved and rotated_from is None and newest and newest.head_seq == head.seq:
            return None
        _verify_since(conn, newest, head.seq)
        statement = Statement(
            number=1 if newest is None else newest.number + 1,
            head_seq=head.seq,
            head_hash=head.hash,
            signed_at=now or datetime.now(UTC),
            prev_checkpoint_hash=GENESIS_CHECKPOINT_HASH
            if newest is None
            else newest.checkpoint_hash,
            key_fingerprint=key.fingerprint,
            previous_key_fingerprint=rotated_from,
        )
        signed = statement.encode()
        return repository.insert_checkpoint(
            conn,
            CheckpointPublic(
                number=statement.number,
                head_seq=statement.head_seq,
                head_hash=statement.head_hash,
                signed_at=statement.signed_at,
                prev_checkpoint_hash=statement.prev_checkpoint_hash,
                key_fingerprint=statement.key_fingerprint,
                previous_key_fingerprint=rotated_from,
                public_key=key.public_key_pem,
                statement=signed.decode("utf-8"),
                checkpoint_hash=checkpoint_hash(signed),
                signature=sign(key.private_key, signed),
            ),
        )
    finally:
        repository.unlock_checkpoints(conn)


def list_checkpoints(conn: DbConnection, *, limit: int, cursor: int | None) -> CheckpointPage:
    """A page of checkpoints, newest first; ``cursor`` is the previous page's ``next_cursor``."""
    items = repository.checkpoints_before(conn, cursor or BIGINT_END - 1, limit)
    next_cursor = items[-1].number if len(items) == limit else None
    return CheckpointPage(items=items, limit=limit, next_cursor=next_cursor)


def public_keys(conn: DbConnection, current: SigningKey | None) -> PublicKeys:
    """The current key (if this process has one) and every key that signed a checkpoint.

    A key's validity runs from its first checkpoint to the first checkpoint of the key
    after it.
    """
    ranges = repository.signing_keys(conn)
    successors: list[SignedKeyRange | None] = [*ranges[1:], None]
    keys = [
        PublishedKey(
            fingerprint=signed.fingerprint,
            public_key=signed.public_key,
            current=current is not None and signed.fingerprint == current.fingerprint,
            first_checkpoint=signed.first_checkpoint,
            last_checkpoint=signed.last_checkpoint,
            valid_from=signed.valid_from,
            valid_until=None if later is None else later.valid_from,
        )
        for signed, later in zip(ranges, successors[: len(ranges)], strict=True)
    ]
    if current is not None and all(k.fingerprint != current.fingerprint for k in keys):
        keys.append(
            PublishedKey(
                fingerprint=current.fingerprint,
                public_key=current.public_key_pem,
                current=True,
                first_checkpoint=None,
                last_checkpoint=None,
                valid_from=None,
                valid_until=None,
            )
        )
    return PublicKeys(
        fingerprint=None if current is None else current.fingerprint,
        public_key=None if current is None else current.public_key_pem,
        keys=keys,
    )


def current_key(settings: Settings) -> SigningKey | None:
    """The signing key this process would use, or None where none is configured (prod).

    Only for showing the public half: an unreadable or malformed key file still fails.
    """
    if settings.audit.signing_key_file is None and settings.env is Environment.PROD:
        return None
    return load_signing_key(settings)
