"""TLS of the API and the webhook listener: check the files, hand them to uvicorn, reload.

``sovctl serve``, ``sovctl up`` and ``sovctl preflight`` check the files before uvicorn
loads them, so a missing or unreadable file, a file that is not PEM, a key that is not the
certificate's, or an encrypted key without its passphrase is one sentence naming the
setting instead of an OpenSSL traceback from a worker process (or, for the encrypted key,
OpenSSL asking for a passphrase on a terminal nobody watches). The check loads the pair
into a server ``SSLContext`` as uvicorn does. uvicorn's own context is a plain
``PROTOCOL_TLS_SERVER`` one, whose floor since Python 3.10 is TLS 1.2: the API speaks TLS
1.2 and 1.3 only (``tests/e2e/test_tls.py`` checks that a TLS 1.1 client is refused).

The webhook listener (``sovctl serve-webhooks``) has its own pair or the API's, HTTPS
only, and optionally a client CA (``webhook_uvicorn_options``). Both servers pick up a
renewed certificate on the next connection, without a restart (``reloading_context``).
"""

import logging
import re
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from control_plane.core.errors import ConfigurationError
from control_plane.core.settings import Settings

#: The server's own log (uvicorn configures it): a reload is an event of the server.
_log = logging.getLogger("uvicorn.error")

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
    _check_pair(_Pair(cert_file, key_file, settings.tls_key_password, CERT_SETTING, KEY_SETTING))


@dataclass(frozen=True)
class _Pair:
    """A certificate and its key, with the names of the settings they came from."""

    cert_file: Path
    key_file: Path
    password: SecretStr | None
    cert_setting: str
    key_setting: str


def _check_pair(pair: _Pair) -> None:
    cert_file, key_file, password = pair.cert_file, pair.key_file, pair.password
    if _CERTIFICATE_PEM not in _read(cert_file, pair.cert_setting):
        raise _refuse(
            pair.cert_setting, f"{cert_file} is not a PEM certificate (no BEGIN CERTIFICATE)"
        )
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=cert_file)
    except ssl.SSLError as exc:
        raise _refuse(
            pair.cert_setting, f"{cert_file} holds no readable certificate ({exc})"
        ) from None
    if not _KEY_PEM.search(_read(key_file, pair.key_setting)):
        raise _refuse(
            pair.key_setting, f"{key_file} is not a PEM private key (no BEGIN … PRIVATE KEY)"
        )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert_file, key_file, lambda: _passphrase(key_file, password))
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            sentence = f"{key_file} is not the key of the certificate in {cert_file}"
        elif password is not None:
            sentence = f"cannot load {key_file} with {PASSWORD_SETTING} ({exc})"
        else:
            sentence = f"cannot load {key_file} ({exc})"
        raise _refuse(pair.key_setting, sentence) from None


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """``uvicorn.run`` keyword arguments that serve HTTPS with the settings' pair (or none).

    The certificate is re-read when its files change (``reloading_context``).
    """
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return {}
    password = settings.tls_key_password
    return {
        "ssl_certfile": str(settings.tls_cert_file),
        "ssl_keyfile": str(settings.tls_key_file),
        "ssl_keyfile_password": None if password is None else password.get_secret_value(),
        "ssl_context_factory": reloading_context,
    }


_Stamp = tuple[tuple[int, int, int], ...]


def _stamp(files: tuple[Path, ...]) -> _Stamp:
    """What changes when a file is replaced: inode, size, modification time (ns)."""
    stamps = []
    for path in files:
        try:
            status = path.stat()
        except OSError:
            stamps.append((0, 0, 0))
        else:
            stamps.append((status.st_ino, status.st_size, status.st_mtime_ns))
    return tuple(stamps)


class _Reloader:
    """The SNI callback that swaps in a context with the newest certificate on disk.

    OpenSSL calls it on every ClientHello, with or without SNI, before the server sends
    its certificate, so setting ``ssl_object.context`` there serves the new pair on that
    very connection. A failed load (a key not yet matching a certificate copied by hand)
    keeps the current pair, is logged, and is tried again when the files change again.
    """

    def __init__(
        self, factory: Callable[[], ssl.SSLContext], files: tuple[Path, ...], first: ssl.SSLContext
    ) -> None:
        self._factory = factory
        self._files = files
        self._stamp = _stamp(files)
        self._current = first
        self._lock = threading.Lock()

    def __call__(
        self, ssl_object: ssl.SSLObject, server_name: str | None, context: ssl.SSLContext
    ) -> None:
        stamp = _stamp(self._files)
        if stamp != self._stamp:
            with self._lock:
                if stamp != self._stamp:
                    self._reload(stamp)
        if self._current is not context:
            ssl_object.context = self._current

    def _reload(self, stamp: _Stamp) -> None:
        self._stamp = stamp
        try:
            self._current = self._factory()
        except (OSError, ssl.SSLError) as exc:
            _log.warning(
                "TLS certificate files changed but do not load (%s); serving the previous one",
                exc,
            )
        else:
            _log.info("TLS certificate reloaded from %s", ", ".join(map(str, self._files)))


def reloading_context(config: Any, default_factory: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
    """The server's SSL context, serving a renewed certificate without a restart.

    cert-manager renews the certificate into its Secret, which the kubelet updates in the
    pod's volume; a server that read the files once would serve the old certificate until
    it expired, and with the webhooks' ``failurePolicy: Fail`` that is every GPU pod
    refused. Each new connection checks the files' stamps (one ``stat`` each) and loads a
    changed pair once. uvicorn's ``ssl_context_factory`` hook, so ``default_factory`` is
    its own context builder (the same ciphers, client CA and ALPN); a module-level
    function, so worker processes receive it too.
    """
    context = default_factory()
    files = tuple(Path(name) for name in (config.ssl_certfile, config.ssl_keyfile) if name)
    context.sni_callback = _Reloader(default_factory, files, context)
    return context


WEBHOOK_CERT_SETTING = "SOVEREIGN_ADMISSION__TLS_CERT_FILE"
WEBHOOK_KEY_SETTING = "SOVEREIGN_ADMISSION__TLS_KEY_FILE"
CLIENT_CA_SETTING = "SOVEREIGN_ADMISSION__CLIENT_CA_FILE"


def _webhook_pair(settings: Settings) -> _Pair:
    """The webhook listener's own pair, else the API's; HTTPS is not optional there."""
    admission = settings.admission
    if admission.tls_cert_file is not None and admission.tls_key_file is not None:
        return _Pair(
            admission.tls_cert_file,
            admission.tls_key_file,
            None,
            WEBHOOK_CERT_SETTING,
            WEBHOOK_KEY_SETTING,
        )
    if settings.tls_cert_file is not None and settings.tls_key_file is not None:
        return _Pair(
            settings.tls_cert_file,
            settings.tls_key_file,
            settings.tls_key_password,
            CERT_SETTING,
            KEY_SETTING,
        )
    raise _refuse(
        WEBHOOK_CERT_SETTING,
        "the admission webhooks are served over HTTPS only (the kube-apiserver calls no"
        f" http:// webhook): set it and {WEBHOOK_KEY_SETTING}, or the API's {CERT_SETTING}"
        f" and {KEY_SETTING}",
    )


def webhook_uvicorn_options(settings: Settings) -> dict[str, Any]:
    """``uvicorn.run`` keyword arguments for ``sovctl serve-webhooks``, files checked first.

    HTTPS with the listener's pair (or the API's); with a client CA, a certificate from it
    is required in the handshake (``CERT_REQUIRED``), so a caller without one is refused
    before a byte of HTTP is read.
    """
    pair = _webhook_pair(settings)
    _check_pair(pair)
    options: dict[str, Any] = {
        "ssl_certfile": str(pair.cert_file),
        "ssl_keyfile": str(pair.key_file),
        "ssl_keyfile_password": None if pair.password is None else pair.password.get_secret_value(),
        "ssl_context_factory": reloading_context,
    }
    ca_file = settings.admission.client_ca_file
    if ca_file is not None:
        if _CERTIFICATE_PEM not in _read(ca_file, CLIENT_CA_SETTING):
            raise _refuse(CLIENT_CA_SETTING, f"{ca_file} is not a PEM certificate")
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_verify_locations(cafile=ca_file)
        except ssl.SSLError as exc:
            raise _refuse(CLIENT_CA_SETTING, f"{ca_file} holds no readable CA ({exc})") from None
        options |= {"ssl_ca_certs": str(ca_file), "ssl_cert_reqs": ssl.CERT_REQUIRED}
    return options
