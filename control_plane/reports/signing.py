"""Signing reports: the one boundary between reports and the control plane's Ed25519 key.

Reports are signed with the key that signs the audit checkpoints
(``SOVEREIGN_AUDIT__SIGNING_KEY_FILE``), so one public key (``/v1/audit/public-key``)
verifies both. Two signatures, both Ed25519, base64:

* **In the file**, over the report's *statement*: the canonical JSON (sorted keys, no
  spaces) of ``{"checkpoint", "content_sha256", "format", "key_fingerprint", "kind",
  "period_from", "period_to"}``, written into the file as the exact string signed.
  ``content_sha256`` digests the report's data, so the JSON, CSV and PDF of one report
  carry the same statement.
* **In the download's headers** (``X-Sovereign-Signature``), over the file's bytes as
  downloaded: ``openssl pkeyutl -verify -rawin`` checks it by hand (docs/reports.md).

Everything that touches the key is in this module: ``load_signer`` builds a ``Signer`` from
settings once per worker, and nothing else reads the key.
"""

import base64
import hashlib
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agents.protocol import canonical_json
from control_plane.audit.keys import load_signing_key
from control_plane.core.settings import Settings

#: The statement's ``format``: bumped if the signed fields change.
STATEMENT_FORMAT = "sovereign-report-signature/1"


@dataclass(frozen=True, slots=True)
class Signer:
    """The signing key with the fingerprint that names its public half."""

    private_key: Ed25519PrivateKey
    fingerprint: str

    def sign(self, data: bytes) -> str:
        """Ed25519 over ``data``, base64."""
        return base64.b64encode(self.private_key.sign(data)).decode("ascii")

    def public_key_pem(self) -> str:
        """The public key as PEM SubjectPublicKeyInfo, for ``openssl pkeyutl -verify``."""
        return (
            self.private_key.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode("ascii")
        )


def statement(header: dict[str, Any], content_sha256: str, key_fingerprint: str) -> str:
    """The exact text the signature in a report file signs (see the module docstring)."""
    checkpoint = header["checkpoint"]
    return canonical_json(
        {
            "checkpoint": None if checkpoint is None else checkpoint["number"],
            "content_sha256": content_sha256,
            "format": STATEMENT_FORMAT,
            "key_fingerprint": key_fingerprint,
            "kind": header["kind"],
            "period_from": header["period_from"],
            "period_to": header["period_to"],
        }
    )


def _fingerprint(key: Ed25519PrivateKey) -> str:
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def signer_for(key: Ed25519PrivateKey) -> Signer:
    """A signer for ``key`` (the audit checkpoints' key, or a test's)."""
    return Signer(key, _fingerprint(key))


def load_signer(settings: Settings) -> Signer:
    """The key reports are signed with: the audit checkpoints' (``audit.keys``).

    ``SOVEREIGN_AUDIT__SIGNING_KEY_FILE``; in dev, the key generated under ``state_dir``
    for the checkpoints too; in prod, unset is a ``ConfigurationError`` naming it.
    """
    return signer_for(load_signing_key(settings).private_key)
