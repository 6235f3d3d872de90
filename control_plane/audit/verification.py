"""What a chain walk checks against signed checkpoints; shared by the database and bundles.

Pure code: no database, no settings, no clock. ``sovctl audit verify`` (events read from
PostgreSQL) and ``sovctl audit verify-bundle`` (events read from an export, offline) both
check the checkpoints with ``check_checkpoints`` and then, while walking the events, tell
a ``CheckpointHeads`` each event's seq and hash. Each problem is a ``Finding`` naming the
kind of tampering and the first seq or checkpoint number it concerns.

The rules for checkpoints:

- each statement is in the one canonical form, hashes to its recorded ``checkpoint_hash``
  and names the previous checkpoint's hash; numbers follow without gaps;
- its ``key_fingerprint`` names a trusted key, and the signature verifies with that key;
- a change of key from one checkpoint to the next must name the old key as
  ``previous_key_fingerprint`` and the events between them must hold the
  ``audit.signing_key_rotated`` event to the new key (a legitimate rotation);
- the event at each checkpoint's ``head_seq`` has exactly its ``head_hash``, and the chain
  reaches the newest checkpoint's ``head_seq`` (removing the newest events is caught).
"""

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from control_plane.audit.signatures import (
    Statement,
    StatementError,
    checkpoint_hash,
    parse_statement,
    signature_verifies,
)

ROTATION_ACTION = "audit.signing_key_rotated"


class Tampering(StrEnum):
    """The kinds of damage a verification names."""

    MODIFIED = "modified"
    DELETED = "deleted"
    INSERTED = "inserted"
    REORDERED = "reordered"
    TRUNCATED = "truncated"
    UNSIGNED_TAIL = "unsigned_tail"
    FORGED_CHECKPOINT = "forged_checkpoint"
    UNKNOWN_KEY = "unknown_key"
    MISSING_CHECKPOINT = "missing_checkpoint"
    BAD_BUNDLE = "bad_bundle"


@dataclass(frozen=True, slots=True)
class Finding:
    """The first problem a verification found."""

    kind: Tampering
    message: str
    seq: int | None = None
    checkpoint: int | None = None


@dataclass(frozen=True, slots=True)
class SignedCheckpoint:
    """A checkpoint as a verifier receives it: the signed bytes, the signature, its hash."""

    statement: bytes
    signature: str
    checkpoint_hash: str


def _check_one(
    signed: SignedCheckpoint,
    statement: Statement,
    previous: Statement | None,
    previous_hash: str | None,
    trusted: Mapping[str, Ed25519PublicKey],
) -> Finding | None:
    number = statement.number
    if checkpoint_hash(signed.statement) != signed.checkpoint_hash:
        return Finding(
            Tampering.FORGED_CHECKPOINT,
            f"checkpoint {number}: its statement does not hash to its recorded checkpoint_hash",
            checkpoint=number,
        )
    if previous is not None:
        if number != previous.number + 1:
            return Finding(
                Tampering.MISSING_CHECKPOINT,
                f"checkpoint {previous.number + 1} is missing (found {number} after "
                f"{previous.number})",
                checkpoint=previous.number + 1,
            )
        if statement.prev_checkpoint_hash != previous_hash:
            return Finding(
                Tampering.FORGED_CHECKPOINT,
                f"checkpoint {number}: prev_checkpoint_hash is not checkpoint "
                f"{previous.number}'s hash",
                checkpoint=number,
            )
    key = trusted.get(statement.key_fingerprint)
    if key is None:
        return Finding(
            Tampering.UNKNOWN_KEY,
            f"checkpoint {number} is signed by key {statement.key_fingerprint}, which is not "
            "a trusted key",
            checkpoint=number,
        )
    if not signature_verifies(key, signed.statement, signed.signature):
        return Finding(
            Tampering.FORGED_CHECKPOINT,
            f"checkpoint {number}: the signature does not verify with key "
            f"{statement.key_fingerprint} (forged or altered)",
            checkpoint=number,
        )
    if previous is not None and previous.head_seq > statement.head_seq:
        return Finding(
            Tampering.FORGED_CHECKPOINT,
            f"checkpoint {number} signs seq {statement.head_seq}, before checkpoint "
            f"{previous.number}'s seq {previous.head_seq}",
            checkpoint=number,
        )
    changed = previous is not None and previous.key_fingerprint != statement.key_fingerprint
    if (
        changed
        and previous is not None
        and statement.previous_key_fingerprint != previous.key_fingerprint
    ):
        return Finding(
            Tampering.UNKNOWN_KEY,
            f"checkpoint {number} changes the signing key from {previous.key_fingerprint} to "
            f"{statement.key_fingerprint} without naming the old key as previous_key_fingerprint",
            checkpoint=number,
        )
    return None


def check_checkpoints(
    checkpoints: Sequence[SignedCheckpoint], trusted: Mapping[str, Ed25519PublicKey]
) -> tuple[list[Statement], Finding | None]:
    """Check every checkpoint in number order; their statements, and the first finding."""
    statements: list[Statement] = []
    previous: Statement | None = None
    previous_hash: str | None = None
    for signed in checkpoints:
        try:
            statement = parse_statement(signed.statement)
        except StatementError as exc:
            number = None if previous is None else previous.number + 1
            return statements, Finding(
                Tampering.FORGED_CHECKPOINT,
                f"checkpoint after {previous.number if previous else 'none'}: {exc}",
                checkpoint=number,
            )
        finding = _check_one(signed, statement, previous, previous_hash, trusted)
        if finding is not None:
            return statements, finding
        statements.append(statement)
        previous, previous_hash = statement, signed.checkpoint_hash
    return statements, None


@dataclass
class _Rotation:
    after_seq: int
    head_seq: int
    fingerprint: str
    checkpoint: int
    seen: bool = False


@dataclass
class CheckpointHeads:
    """Checks each event of a walk against the checkpoints' heads and rotations."""

    statements: Sequence[Statement]
    _heads: dict[int, list[Statement]] = field(default_factory=dict)
    _rotations: list[_Rotation] = field(default_factory=list)

    def __post_init__(self) -> None:
        for statement in self.statements:
            self._heads.setdefault(statement.head_seq, []).append(statement)
        for previous, statement in zip(self.statements, self.statements[1:], strict=False):
            if previous.key_fingerprint != statement.key_fingerprint:
                self._rotations.append(
                    _Rotation(
                        previous.head_seq,
                        statement.head_seq,
                        statement.key_fingerprint,
                        statement.number,
                    )
                )

    def watched(self) -> frozenset[int]:
        """The seqs ``at_event`` must see: checkpoint heads and rotation windows.

        A walk that skips every other seq (the fast path of bundles) misses nothing.
        """
        seqs = set(self._heads)
        for rotation in self._rotations:
            seqs.update(range(rotation.after_seq + 1, rotation.head_seq + 1))
        return frozenset(seqs)

    def in_rotation(self, seq: int) -> bool:
        """Whether the event at ``seq`` may be a rotation that must be found (then describe it)."""
        return any(r.after_seq < seq <= r.head_seq for r in self._rotations)

    def at_event(
        self, seq: int, event_hash: str, describe: Callable[[], tuple[str, str]] | None = None
    ) -> Finding | None:
        """Check the event at ``seq``; ``describe`` gives its action and object id if asked."""
        for statement in self._heads.get(seq, ()):
            if statement.head_hash != event_hash:
                return Finding(
                    Tampering.MODIFIED,
                    f"seq {seq}: its hash differs from the head hash checkpoint "
                    f"{statement.number} signed (the event, or one before it, was changed)",
                    seq=seq,
                    checkpoint=statement.number,
                )
        if describe is not None and self.in_rotation(seq):
            action, object_id = describe()
            for rotation in self._rotations:
                in_window = rotation.after_seq < seq <= rotation.head_seq
                if in_window and action == ROTATION_ACTION and object_id == rotation.fingerprint:
                    rotation.seen = True
        return None

    def rotations_seen(self) -> list[bool]:
        """Which rotations this walk found its event for (in checkpoint order)."""
        return [rotation.seen for rotation in self._rotations]

    def merge_seen(self, seen: Sequence[bool]) -> None:
        """Take in what another walk over other lines found (a parallel walk's part)."""
        for rotation, found in zip(self._rotations, seen, strict=True):
            rotation.seen = rotation.seen or found

    def at_end(self, last_seq: int) -> Finding | None:
        """After the last event: the chain must reach every head, and rotations be recorded."""
        for statement in self.statements:
            if statement.head_seq > last_seq:
                return Finding(
                    Tampering.TRUNCATED,
                    f"the events end at seq {last_seq}, but checkpoint {statement.number} "
                    f"signed seq {statement.head_seq}: events {last_seq + 1} to "
                    f"{statement.head_seq} were removed",
                    seq=last_seq + 1,
                    checkpoint=statement.number,
                )
        for rotation in self._rotations:
            if not rotation.seen:
                return Finding(
                    Tampering.UNKNOWN_KEY,
                    f"checkpoint {rotation.checkpoint} is signed by key {rotation.fingerprint}, "
                    f"but no {ROTATION_ACTION} event to it lies between seq "
                    f"{rotation.after_seq + 1} and {rotation.head_seq}",
                    checkpoint=rotation.checkpoint,
                )
        return None
