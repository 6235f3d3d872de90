"""Signed checkpoints of the audit chain: the statement, its signature, the key's fingerprint.

A checkpoint says "the chain reached ``head_seq`` with ``head_hash`` at ``signed_at``",
signed with the control plane's Ed25519 key. The signed bytes are the **statement**: the
canonical JSON (sorted keys, no spaces, ASCII here) of exactly these fields::

    {"format":"sovereign-audit-checkpoint/1","head_hash":"<64 hex>","head_seq":<int>,
     "key_fingerprint":"<64 hex>","number":<int>,"prev_checkpoint_hash":"<64 hex>",
     "previous_key_fingerprint":null|"<64 hex>","signed_at":"<UTC ISO-8601, microseconds>"}

with no newline after it. ``checkpoint_hash`` is SHA-256 of those bytes (the next
checkpoint's ``prev_checkpoint_hash``; 64 zeros before the first). The key fingerprint is
SHA-256 of the public key's DER SubjectPublicKeyInfo (``openssl pkey -pubin -outform DER
| sha256sum``). ``previous_key_fingerprint`` is set on the first checkpoint after a key
rotation and names the key the checkpoint before it was signed with.

Pure code, no database and no settings: the offline bundle verifier, the signer and the
tests share it, so what is signed is what is verified (docs/audit.md shows the same by hand).
"""

import base64
import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from agents.protocol import canonical_json

STATEMENT_FORMAT = "sovereign-audit-checkpoint/1"
#: ``prev_checkpoint_hash`` of the first checkpoint: there is none before it.
GENESIS_CHECKPOINT_HASH = "0" * 64
_STATEMENT_KEYS = frozenset(
    {
        "format",
        "head_hash",
        "head_seq",
        "key_fingerprint",
        "number",
        "prev_checkpoint_hash",
        "previous_key_fingerprint",
        "signed_at",
    }
)


class StatementError(ValueError):
    """A checkpoint statement that is not in the one documented form."""


def public_key_pem(key: Ed25519PublicKey) -> str:
    """The public key as PEM SubjectPublicKeyInfo, as bundles and the API carry it."""
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def fingerprint(key: Ed25519PublicKey) -> str:
    """SHA-256 (hex) of the key's DER SubjectPublicKeyInfo: what names a key everywhere."""
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def load_public_key(pem: str | bytes) -> Ed25519PublicKey:
    """An Ed25519 public key from PEM; ``StatementError`` for anything else."""
    data = pem.encode("ascii") if isinstance(pem, str) else pem
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise StatementError(f"not a PEM public key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise StatementError("not an Ed25519 public key")
    return key


def _timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


@dataclass(frozen=True, slots=True)
class Statement:
    """The fields a checkpoint signs (see the module docstring for their exact bytes)."""

    number: int
    head_seq: int
    head_hash: str
    signed_at: datetime
    prev_checkpoint_hash: str
    key_fingerprint: str
    previous_key_fingerprint: str | None = None

    def document(self) -> dict[str, Any]:
        """The statement as the JSON object that is signed."""
        return {
            "format": STATEMENT_FORMAT,
            "head_hash": self.head_hash,
            "head_seq": self.head_seq,
            "key_fingerprint": self.key_fingerprint,
            "number": self.number,
            "prev_checkpoint_hash": self.prev_checkpoint_hash,
            "previous_key_fingerprint": self.previous_key_fingerprint,
            "signed_at": _timestamp(self.signed_at),
        }

    def encode(self) -> bytes:
        """The exact bytes that are signed and hashed."""
        return canonical_json(self.document()).encode("utf-8")


def parse_statement(data: bytes) -> Statement:
    """Read signed bytes back, refusing any form but the canonical one.

    A statement that parses but is not byte-for-byte canonical is refused: two byte strings
    meaning the same checkpoint would let a verifier and a reader disagree.
    """
    try:
        document = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise StatementError(f"not JSON: {exc}") from None
    if not isinstance(document, dict) or set(document) != _STATEMENT_KEYS:
        raise StatementError(f"a statement holds exactly the keys {sorted(_STATEMENT_KEYS)}")
    if document["format"] != STATEMENT_FORMAT:
        raise StatementError(f"unknown format {document['format']!r}")
    try:
        statement = Statement(
            number=int(document["number"]),
            head_seq=int(document["head_seq"]),
            head_hash=str(document["head_hash"]),
            signed_at=datetime.fromisoformat(document["signed_at"]),
            prev_checkpoint_hash=str(document["prev_checkpoint_hash"]),
            key_fingerprint=str(document["key_fingerprint"]),
            previous_key_fingerprint=document["previous_key_fingerprint"],
        )
    except (TypeError, ValueError) as exc:
        raise StatementError(f"bad field: {exc}") from None
    if statement.encode() != data:
        raise StatementError("not in canonical form")
    return statement


def checkpoint_hash(statement_bytes: bytes) -> str:
    """SHA-256 (hex) of a statement's bytes: the next checkpoint's ``prev_checkpoint_hash``."""
    return hashlib.sha256(statement_bytes).hexdigest()


def sign(key: Ed25519PrivateKey, statement_bytes: bytes) -> str:
    """The Ed25519 signature of ``statement_bytes``, base64 (standard alphabet, padded)."""
    return base64.b64encode(key.sign(statement_bytes)).decode("ascii")


def signature_verifies(key: Ed25519PublicKey, statement_bytes: bytes, signature: str) -> bool:
    """Whether ``signature`` (base64) is ``key``'s signature of exactly ``statement_bytes``."""
    try:
        raw = base64.b64decode(signature, validate=True)
        key.verify(raw, statement_bytes)
    except (InvalidSignature, ValueError):
        return False
    return True
