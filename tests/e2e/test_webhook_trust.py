"""Who may call the admission webhooks: ``sovctl serve-webhooks`` as the chart runs it.

The listener runs as its own process, HTTPS only, with a client CA as the kube-apiserver's
client certificate would be configured (docs/kubernetes.md). A caller with a certificate
from that CA is heard, and the audit records which certificate called beside the user the
review claims; one without a certificate, or with one from another CA, fails the TLS
handshake and nothing is recorded; with ``SOVEREIGN_ADMISSION__CLIENT_NAMES`` a
certificate of the right CA but another name is refused 403. Without TLS settings the
listener does not start, in one line. Both servers serve a renewed certificate without a
restart.
"""

import hashlib
import socket
import ssl
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from control_plane.audit import service as audit
from control_plane.core.db import DbConnection
from control_plane.core.settings import Settings
from tests.certificates import TlsFiles, make_client_files, make_tls_files
from tests.support import (
    SOVCTL,
    ApiProcess,
    free_port,
    subprocess_env,
    wait_until_ready,
    webhook_process,
)

pytestmark = pytest.mark.e2e

APISERVER = "kube-apiserver"


@pytest.fixture
def server_files(tmp_path: Path) -> TlsFiles:
    return make_tls_files(tmp_path / "server", name="webhooks")


@pytest.fixture
def apiserver(tmp_path: Path) -> TlsFiles:
    """The kube-apiserver's client certificate and the CA that signed it."""
    return make_client_files(tmp_path / "apiserver", APISERVER)


def client_context(server: TlsFiles, client: TlsFiles | None) -> ssl.SSLContext:
    """Trusts the listener; presents ``client``'s certificate when given."""
    context = ssl.create_default_context(cafile=server.ca_cert)
    if client is not None:
        context.load_cert_chain(client.cert, client.key)
    return context


@pytest.fixture
def listener(
    settings: Settings, server_files: TlsFiles, apiserver: TlsFiles, tmp_path: Path
) -> Iterator[ApiProcess]:
    """``sovctl serve-webhooks`` with its own pair and the API server's client CA."""
    with webhook_process(
        settings,
        tmp_path,
        verify=client_context(server_files, apiserver),
        SOVEREIGN_ADMISSION__TLS_CERT_FILE=str(server_files.cert),
        SOVEREIGN_ADMISSION__TLS_KEY_FILE=str(server_files.key),
        SOVEREIGN_ADMISSION__CLIENT_CA_FILE=str(apiserver.ca_cert),
    ) as server:
        yield server


def node_review(username: str) -> dict[str, Any]:
    """An UPDATE of a Node moving it from zone jp to tw: denied unless by the label sync."""

    def node(zone: str) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": "gpu-node-01", "labels": {"sovereign.io/zone": zone}},
        }

    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": {"group": "", "version": "v1", "kind": "Node"},
            "resource": {"group": "", "version": "v1", "resource": "nodes"},
            "name": "gpu-node-01",
            "operation": "UPDATE",
            "userInfo": {"username": username},
            "object": node("tw"),
            "oldObject": node("jp"),
            "dryRun": False,
        },
    }


def certificate_facts(files: TlsFiles) -> dict[str, str]:
    certificate = x509.load_pem_x509_certificate(files.cert.read_bytes())
    return {
        "subject": certificate.subject.rfc4514_string(),
        "serial": format(certificate.serial_number, "X"),
        "sha256": hashlib.sha256(certificate.public_bytes(Encoding.DER)).hexdigest(),
    }


def denials(conn: DbConnection) -> list[Any]:
    conn.rollback()
    return audit.list_events(conn, object_type="kubernetes_node").items


def test_the_api_servers_certificate_is_heard_and_recorded(
    listener: ApiProcess, server_files: TlsFiles, apiserver: TlsFiles, conn: DbConnection
) -> None:
    with httpx.Client(verify=client_context(server_files, apiserver)) as client:
        answer = client.post(f"{listener.url}/k8s/validate-node", json=node_review("mallory"))
    assert answer.status_code == 200, answer.text
    assert answer.json()["response"]["allowed"] is False
    [event] = denials(conn)
    assert event.actor_name == "mallory"
    assert event.after["caller"] == {
        "authentication": "client_certificate",
        **certificate_facts(apiserver),
    }
    assert event.after["caller"]["subject"] == f"CN={APISERVER}"


@pytest.mark.parametrize("who", ["no certificate", "another CA"])
def test_a_caller_without_the_cas_certificate_fails_the_handshake(
    who: str,
    listener: ApiProcess,
    server_files: TlsFiles,
    tmp_path: Path,
    conn: DbConnection,
) -> None:
    presented = (
        None if who == "no certificate" else make_client_files(tmp_path / "other", APISERVER)
    )
    with (
        httpx.Client(verify=client_context(server_files, presented)) as client,
        pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)),
    ):
        client.post(f"{listener.url}/k8s/validate-node", json=node_review("mallory"))
    assert denials(conn) == []
    assert listener.alive()


def test_client_names_narrow_a_shared_ca(
    settings: Settings, server_files: TlsFiles, tmp_path: Path, conn: DbConnection
) -> None:
    """One CA signs several certificates: only the named ones may call."""
    ca = make_client_files(tmp_path / "shared", APISERVER)
    named_by_dns = make_client_files(
        tmp_path / "dns", "front-proxy", ("webhook-caller.cluster",), issuer=ca
    )
    unnamed = make_client_files(tmp_path / "unnamed", "someone-else", issuer=ca)
    with webhook_process(
        settings,
        tmp_path,
        verify=client_context(server_files, ca),
        SOVEREIGN_ADMISSION__TLS_CERT_FILE=str(server_files.cert),
        SOVEREIGN_ADMISSION__TLS_KEY_FILE=str(server_files.key),
        SOVEREIGN_ADMISSION__CLIENT_CA_FILE=str(ca.ca_cert),
        SOVEREIGN_ADMISSION__CLIENT_NAMES=f'["{APISERVER}", "webhook-caller.cluster"]',
    ) as listener:
        for files, status in ((ca, 200), (named_by_dns, 200), (unnamed, 403)):
            with httpx.Client(verify=client_context(server_files, files)) as client:
                answer = client.post(
                    f"{listener.url}/k8s/validate-node", json=node_review("mallory")
                )
            assert answer.status_code == status, answer.text
    refused = answer.json()["error"]
    assert refused["code"] == "permission_denied"
    assert "SOVEREIGN_ADMISSION__CLIENT_NAMES" in refused["message"]
    assert "CN=someone-else" in refused["message"]
    callers = [event.after["caller"]["subject"] for event in denials(conn)]
    assert sorted(callers) == ["CN=front-proxy", f"CN={APISERVER}"]


def serve_webhooks(settings: Settings, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SOVCTL, "serve-webhooks", "--port", str(free_port())],
        env=subprocess_env(settings, **env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_listener_serves_https_only(settings: Settings) -> None:
    result = serve_webhooks(settings)
    assert result.returncode == 1
    assert result.stderr.startswith(
        "error: SOVEREIGN_ADMISSION__TLS_CERT_FILE: the admission webhooks are served over"
        " HTTPS only"
    )
    assert result.stderr.count("\n") == 1


def test_an_unreadable_client_ca_stops_the_listener_in_one_line(
    settings: Settings, server_files: TlsFiles, tmp_path: Path
) -> None:
    garbage = tmp_path / "ca.crt"
    garbage.write_text("not a certificate\n")
    result = serve_webhooks(
        settings,
        SOVEREIGN_TLS_CERT_FILE=str(server_files.cert),
        SOVEREIGN_TLS_KEY_FILE=str(server_files.key),
        SOVEREIGN_ADMISSION__CLIENT_CA_FILE=str(garbage),
    )
    assert result.returncode == 1
    assert result.stderr == (
        f"error: SOVEREIGN_ADMISSION__CLIENT_CA_FILE: {garbage} is not a PEM certificate\n"
    )


def served_certificate(port: int, ca: Path, client: TlsFiles | None = None) -> x509.Certificate:
    """The certificate a new connection to ``port`` is served, verified against ``ca``."""
    context = ssl.create_default_context(cafile=ca)
    if client is not None:
        context.load_cert_chain(client.cert, client.key)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls_socket,
    ):
        der = tls_socket.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


@pytest.mark.parametrize("server", ["serve", "serve-webhooks"])
def test_a_renewed_certificate_is_served_without_a_restart(
    server: str, settings: Settings, apiserver: TlsFiles, tmp_path: Path
) -> None:
    """As cert-manager renews into the Secret the pod mounts: files swapped by a symlink."""
    first = make_tls_files(tmp_path / "first", name="first")
    second = make_tls_files(tmp_path / "second", name="second")
    mounted = tmp_path / "mounted"
    mounted.mkdir()
    data = mounted / "..data"
    data.symlink_to(first.cert.parent)
    for name in ("tls.crt", "tls.key"):
        (mounted / name).symlink_to(Path("..data") / name)
    env = {
        "SOVEREIGN_TLS_CERT_FILE": str(mounted / "tls.crt"),
        "SOVEREIGN_TLS_KEY_FILE": str(mounted / "tls.key"),
    }
    client = apiserver if server == "serve-webhooks" else None
    if client is not None:
        env["SOVEREIGN_ADMISSION__CLIENT_CA_FILE"] = str(apiserver.ca_cert)
    port = free_port()
    log = tmp_path / f"{server}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*SOVCTL, server, "--port", str(port)],
            env=subprocess_env(settings, **env),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until_ready(
            f"https://127.0.0.1:{port}/readyz",
            process=process,
            verify=client_context(first, client),
        )
        before = served_certificate(port, first.ca_cert, client)
        # The kubelet's update: a new folder, then the ..data link swapped in one rename.
        swap = mounted / "..data_tmp"
        swap.symlink_to(second.cert.parent)
        swap.rename(data)
        after = served_certificate(port, second.ca_cert, client)
        assert process.poll() is None, log.read_text()
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert before.issuer.rfc4514_string() == "CN=first CA"
    assert after.issuer.rfc4514_string() == "CN=second CA"
    assert "TLS certificate reloaded" in log.read_text()
