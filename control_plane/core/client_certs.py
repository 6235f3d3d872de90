"""Verified TLS client certificates, from the connection to the app, as ASGI says.

The admission webhooks are called by the kube-apiserver, which authenticates itself with
a client certificate (docs/kubernetes.md). OpenSSL verifies that certificate against the
configured CA during the handshake (uvicorn's ``ssl_cert_reqs``/``ssl_ca_certs``), so a
caller without one never reaches the app. The app still needs to know *which*
certificate: to check its name against ``SOVEREIGN_ADMISSION__CLIENT_NAMES`` and to record
it beside each decision, since the Kubernetes user in a review is only what the caller
claims.

ASGI has a place for this, the ``tls`` extension of the connection scope
(``scope["extensions"]["tls"]["client_cert_chain"]``, PEM, the peer's certificate first),
but uvicorn 0.54 does not fill it. ``TlsScopeProtocol`` is uvicorn's httptools protocol
with that one addition: it reads the verified peer certificate once per connection, when
the handshake has completed, and puts it in the scope of each request on it. The app
reads the extension through ``peer_certificate`` and nothing else, so another ASGI server
that implements the extension needs no change here; and a server that fills nothing
(plain uvicorn, a test client) gives no certificate, which the webhooks treat as a refusal
when client certificates are required: they fail closed.
"""

import asyncio
import hashlib
import ssl
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

#: ASGI's TLS extension names TLS versions by their wire numbers.
_TLS_VERSIONS = {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}


@dataclass(frozen=True)
class PeerCertificate:
    """The client certificate a TLS connection was verified with: who, and which one."""

    #: The subject as RFC 4514 writes it, e.g. ``CN=kube-apiserver,O=cluster``.
    subject: str
    #: The subject's common names and the certificate's DNS names: what a name list matches.
    names: tuple[str, ...]
    #: The serial number in hex, as ``openssl x509 -serial`` prints it.
    serial: str
    #: SHA-256 of the DER certificate, hex: the certificate exactly.
    sha256: str


def tls_extension(transport: asyncio.BaseTransport) -> dict[object, object] | None:
    """ASGI's ``tls`` scope extension for a connection; None when it is not TLS.

    ``client_cert_chain`` holds the peer's certificate (PEM) when the handshake verified
    one; Python's ``ssl`` gives the peer's own certificate, not the chain above it.
    """
    ssl_object: ssl.SSLObject | None = transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    return {
        "server_cert": None,
        "client_cert_chain": [ssl.DER_cert_to_PEM_cert(der)] if der else [],
        "client_cert_name": None,
        "client_cert_error": None,
        "tls_version": _TLS_VERSIONS.get(ssl_object.version() or ""),
        "cipher_suite": None,
    }


class TlsScopeProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol that puts the ``tls`` extension in every request scope."""

    _tls: dict[object, object] | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Read the verified peer certificate once: asyncio calls this after the handshake."""
        self._tls = tls_extension(transport)
        super().connection_made(transport)

    def on_message_begin(self) -> None:
        """Start a request scope as uvicorn does, with the connection's TLS facts added."""
        super().on_message_begin()
        if self._tls is not None:
            self.scope["extensions"] = {"tls": self._tls}


def _names(certificate: x509.Certificate) -> tuple[str, ...]:
    common = [
        str(attribute.value)
        for attribute in certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    ]
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return tuple(common)
    return tuple(common + san.value.get_values_for_type(x509.DNSName))


def peer_certificate(scope: dict[str, Any] | Any) -> PeerCertificate | None:
    """The verified client certificate of the request's connection; None without one."""
    extensions = scope.get("extensions") or {}
    chain = (extensions.get("tls") or {}).get("client_cert_chain") or []
    if not chain:
        return None
    certificate = x509.load_pem_x509_certificate(chain[0].encode("ascii"))
    der = certificate.public_bytes(Encoding.DER)
    return PeerCertificate(
        subject=certificate.subject.rfc4514_string(),
        names=_names(certificate),
        serial=format(certificate.serial_number, "X"),
        sha256=hashlib.sha256(der).hexdigest(),
    )
