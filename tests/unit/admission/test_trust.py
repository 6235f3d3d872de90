"""The webhook caller check on request scopes as ASGI servers fill them (or do not)."""

import hashlib
import ssl
from pathlib import Path

import pytest

from control_plane.admission.trust import UNAUTHENTICATED, webhook_caller
from control_plane.core.errors import PermissionDeniedError
from control_plane.core.settings import AdmissionSettings
from tests.certificates import make_client_files


def scope_with(certificate_pem: str | None) -> dict[str, object]:
    """A request scope as ``TlsScopeProtocol`` fills it (None: a TLS connection, no cert)."""
    chain = [] if certificate_pem is None else [certificate_pem]
    return {"type": "http", "extensions": {"tls": {"client_cert_chain": chain}}}


def test_without_a_client_ca_every_caller_is_unauthenticated(tmp_path: Path) -> None:
    files = make_client_files(tmp_path, "kube-apiserver")
    pem = files.cert.read_text()
    for scope in ({"type": "http"}, scope_with(None), scope_with(pem)):
        assert webhook_caller(scope, AdmissionSettings()) is UNAUTHENTICATED


@pytest.mark.parametrize(
    "scope",
    [
        {"type": "http"},
        {"type": "http", "extensions": {}},
        scope_with(None),
        scope_with("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n"),
        scope_with("\u00e9" * 100_000),
    ],
    ids=["no-extension", "no-tls", "no-chain", "garbled-pem", "not-ascii"],
)
def test_a_required_certificate_that_did_not_arrive_is_refused(
    scope: dict[str, object], tmp_path: Path
) -> None:
    """A server that passes no certificate on (plain uvicorn, a test client) fails closed."""
    settings = AdmissionSettings(client_ca_file=tmp_path / "ca.crt")
    with pytest.raises(PermissionDeniedError, match="require a client certificate"):
        webhook_caller(scope, settings)


def test_names_match_the_common_name_or_a_dns_name(tmp_path: Path) -> None:
    ca = make_client_files(tmp_path / "ca", "kube-apiserver")
    by_dns = make_client_files(tmp_path / "dns", "proxy", ("caller.cluster",), issuer=ca)
    other = make_client_files(tmp_path / "other", "someone", issuer=ca)
    settings = AdmissionSettings(
        client_ca_file=ca.ca_cert, client_names=["kube-apiserver", "caller.cluster"]
    )
    for files, subject in ((ca, "CN=kube-apiserver"), (by_dns, "CN=proxy")):
        caller = webhook_caller(scope_with(files.cert.read_text()), settings)
        assert (caller.authentication, caller.subject) == ("client_certificate", subject)
        der = ssl.PEM_cert_to_DER_cert(files.cert.read_text())
        assert caller.sha256 == hashlib.sha256(der).hexdigest()
    with pytest.raises(PermissionDeniedError, match="CN=someone"):
        webhook_caller(scope_with(other.cert.read_text()), settings)


def test_names_without_a_ca_are_a_configuration_mistake() -> None:
    with pytest.raises(ValueError, match="CLIENT_NAMES is set but"):
        AdmissionSettings(client_names=["kube-apiserver"])
