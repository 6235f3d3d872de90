"""The API's own TLS: check the certificate and key settings, and hand them to uvicorn.

``sovctl serve``, ``sovctl up`` and ``sovctl preflight`` check the files before uvicorn
loads them, so a missing or unreadable file, a file that is not PEM, a key that is not the
certificate's, or an encrypted key without its passphrase is one sentence naming the
setting instead of an OpenSSL traceback from a worker process (or, for the encrypted key,
OpenSSL asking for a passphrase on a terminal nobody watches). The check loads the pair
into a server ``SSLContext`` as uvicorn does. uvicorn's own context is a plain
``PROTOCOL_TLS_SERVER`` one, whose floor since Python 3.10 is TLS 1.2: the API speaks TLS
1.2 and 1.3 only (``tests/e2e/test_tls.py`` checks that a TLS 1.1 client is refused).
"""

import re
import ssl
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from control_plane.core.errors import ConfigurationError
from control_plane.core.settings import Settings

CERT_SETTING = "SOVEREIGN_TLS_CERT_FILE"
KEY_SETTING = "SOVEREIGN_TLS_KEY_FILE"
PASSWORD_SETTING = "SOVEREIGN_TLS_KEY_PASSWORD"  # noqa: S105 - a setting's name, no secret
_CERTIFICATE_PEM = b"-----BEGIN CERTIFICATE-----"
#: ``PRIVATE KEY`` (PKCS #8), ``ENCRYPTED PRIVATE KEY``, ``RSA PRIVATE KEY``, ``EC PRIVATE KEY``.
_KEY_PEM = re.compile(rb"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----")


def enabled(settings: Settings) -> bool:
    """Whether the API serves HTTPS (the settings validator keeps the pair together)."""
    return settings.tls_cert_file is not None


def scheme(settings: Settings) -> str:
    """``https`` or ``http``: what clients of this API put in its URL."""
    return "https" if enabled(settings) else "http"


def _refuse(setting: str, sentence: str) -> ConfigurationError:
    return ConfigurationError(f"{setting}: {sentence}", details={"setting": setting})


def _read(path: Path, setting: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise _refuse(setting, f"cannot read {path} ({exc.strerror or exc})") from None


def _passphrase(key_file: Path, password: SecretStr | None) -> str:
    """The key's passphrase for OpenSSL, which asks only when the key is encrypted."""
    if password is None:
        raise _refuse(
            KEY_SETTING, f"{key_file} is encrypted; set {PASSWORD_SETTING} to its passphrase"
        )
    return password.get_secret_value()


def check(settings: Settings) -> None:
    """Load the certificate and key as uvicorn will; a ``ConfigurationError`` if they fail.

    Each failure names the one setting to fix: the certificate file is checked on its own
    first (readable, PEM, parses), so what fails after that is the key. Without TLS
    settings there is nothing to check.
    """
    cert_file, key_file = settings.tls_cert_file, settings.tls_key_file
    if cert_file is None or key_file is None:
        return
    if _CERTIFICATE_PEM not in _read(cert_file, CERT_SETTING):
        raise _refuse(CERT_SETTING, f"{cert_file} is not a PEM certificate (no BEGIN CERTIFICATE)")
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=cert_file)
    except ssl.SSLError as exc:
        raise _refuse(CERT_SETTING, f"{cert_file} holds no readable certificate ({exc})") from None
    if not _KEY_PEM.search(_read(key_file, KEY_SETTING)):
        raise _refuse(KEY_SETTING, f"{key_file} is not a PEM private key (no BEGIN … PRIVATE KEY)")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    password = settings.tls_key_password
    try:
        context.load_cert_chain(cert_file, key_file, lambda: _passphrase(key_file, password))
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            sentence = f"{key_file} is not the key of the certificate in {cert_file}"
        elif password is not None:
            sentence = f"cannot load {key_file} with {PASSWORD_SETTING} ({exc})"
        else:
            sentence = f"cannot load {key_file} ({exc})"
        raise _refuse(KEY_SETTING, sentence) from None


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """``uvicorn.run`` keyword arguments that serve HTTPS with the settings' pair (or none)."""
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return {}
    password = settings.tls_key_password
    return {
        "ssl_certfile": str(settings.tls_cert_file),
        "ssl_keyfile": str(settings.tls_key_file),
        "ssl_keyfile_password": None if password is None else password.get_secret_value(),
    }
