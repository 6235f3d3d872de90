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
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agents.protocol import canonical_json
from control_plane.core.errors import ConfigurationError
from control_plane.core.settings import Environment, Settings

#: The statement's ``format``: bumped if the signed fields change.
STATEMENT_FORMAT = "sovereign-report-signature/1"
#: The development key under ``state_dir``: the file the audit checkpoints use in dev too.
DEV_KEY_NAME = "audit-signing-key.pem"

log = logging.getLogger(__name__)


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


def _read(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigurationError(f"report signing key {path}: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigurationError(f"report signing key {path}: not an Ed25519 key")
    return key


def _dev_key(path: Path) -> Ed25519PrivateKey:
    if path.exists():
        return _read(path)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    # O_EXCL: two workers starting together must not each write a key of their own.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read(path)
    with os.fdopen(fd, "wb") as file:
        file.write(pem)
    log.warning("generated a development signing key at %s: not for real evidence", path)
    return key


def signer_for(key: Ed25519PrivateKey) -> Signer:
    """A signer for ``key`` (the audit checkpoints' key, or a test's)."""
    return Signer(key, _fingerprint(key))


def load_signer(settings: Settings) -> Signer:
    """The key reports are signed with; in dev, the one under ``state_dir`` (made if missing).

    Production needs the audit signing key, which arrives with the audit checkpoints
    (``SOVEREIGN_AUDIT__SIGNING_KEY_FILE``); until then a production worker refuses to sign.
    """
    if settings.env is Environment.PROD:
        raise ConfigurationError(
            "reports are signed with SOVEREIGN_AUDIT__SIGNING_KEY_FILE, which this build"
            " does not have yet"
        )
    return signer_for(_dev_key(settings.state_dir / DEV_KEY_NAME))
