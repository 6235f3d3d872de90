"""The checkpoint signing key: read from ``SOVEREIGN_AUDIT__SIGNING_KEY_FILE``, or made in dev.

In production the key is a file the operator provides (in Kubernetes, a Secret the chart
mounts); without it checkpointing refuses to start, in one line naming the setting, since
an unsigned chain cannot show that its newest events were removed. In development a key is
generated once under ``state_dir`` and reused, and the log says so: it protects nothing
outside that machine and must never be used for real evidence.
"""

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from control_plane.audit.signatures import fingerprint, public_key_pem
from control_plane.core.errors import ConfigurationError
from control_plane.core.settings import Environment, Settings

#: The development key's file name under ``state_dir``.
DEV_KEY_NAME = "audit-signing-key.pem"
_SETTING = "SOVEREIGN_AUDIT__SIGNING_KEY_FILE"

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SigningKey:
    """The private key that signs checkpoints, with its public half as the world sees it."""

    private_key: Ed25519PrivateKey
    public_key_pem: str
    fingerprint: str
    path: Path


def _read(path: Path) -> Ed25519PrivateKey:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"{_SETTING}: cannot read {path}: {exc.strerror}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(
            f"{_SETTING}: {path} is not an unencrypted PEM private key ({exc})"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigurationError(
            f"{_SETTING}: {path} is not an Ed25519 key (make one with "
            "`openssl genpkey -algorithm ed25519 -out key.pem`)"
        )
    return key


def _generate(path: Path) -> Ed25519PrivateKey:
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written aside, then linked into place: two processes starting together (the API and
    # the worker of `sovctl up`) must end with one key, and neither may read a half-written
    # file. The link fails if the other won; then its key is the key.
    aside = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
    fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(pem)
    try:
        os.link(aside, path)
    except FileExistsError:
        return _read(path)
    finally:
        aside.unlink()
    log.warning(
        "generated a development audit signing key at %s (SOVEREIGN_ENV=dev): set %s "
        "to a key of your own for real evidence",
        path,
        _SETTING,
    )
    return key


def load_signing_key(settings: Settings) -> SigningKey:
    """The configured signing key; in dev, the one under ``state_dir`` (made if missing).

    Raises ``ConfigurationError`` naming the setting when it is unset in prod, unreadable,
    or not an Ed25519 PEM key.
    """
    path = settings.audit.signing_key_file
    if path is not None:
        key = _read(path)
    elif settings.env is Environment.PROD:
        raise ConfigurationError(
            f"{_SETTING} is not set: audit checkpoints need an Ed25519 signing key (PEM "
            "PKCS#8; in Kubernetes the Secret the chart mounts) with SOVEREIGN_ENV=prod"
        )
    else:
        path = settings.state_dir / DEV_KEY_NAME
        key = _read(path) if path.exists() else _generate(path)
    public = key.public_key()
    return SigningKey(key, public_key_pem(public), fingerprint(public), path)
