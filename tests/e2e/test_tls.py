"""The API over HTTPS as the chart runs it, and the real agent and sovctl verifying it.

``sovctl serve`` runs as its own process with a certificate from a throwaway CA. The agent
(``python -m agents run``) registers and heartbeats when its ``ca_bundle`` holds that CA,
and never sends its bootstrap token to a server another CA signed (the server's access log
shows no registration, and no node appears). sovctl lists nodes with ``--ca-bundle`` or
``SOVCTL_CA_BUNDLE``. A missing key file stops ``sovctl serve`` with one line, and without
the TLS settings the API and the agent speak plain HTTP as before.
"""

import os
import socket
import ssl
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from control_plane.access.models import Role
from control_plane.core.settings import Settings
from tests.certificates import TlsFiles, make_tls_files
from tests.e2e.test_agent_process import RECORDING, wait_for
from tests.support import (
    SOVCTL,
    ApiProcess,
    MakeBootstrap,
    Run,
    api_process,
    bearer,
    free_port,
    subprocess_env,
)

pytestmark = pytest.mark.e2e

REGISTER_PATH = "/v1/agents/register"


@pytest.fixture
def tls_files(tmp_path: Path) -> TlsFiles:
    return make_tls_files(tmp_path / "tls", name="sovereign-test")


@pytest.fixture
def https_settings(settings: Settings, tls_files: TlsFiles) -> Settings:
    return settings.model_copy(
        update={"tls_cert_file": tls_files.cert, "tls_key_file": tls_files.key}
    )


@pytest.fixture
def https_api(
    https_settings: Settings, tls_files: TlsFiles, tmp_path: Path
) -> Iterator[ApiProcess]:
    with api_process(https_settings, tmp_path, verify=verified(tls_files)) as server:
        yield server


def verified(files: TlsFiles) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=files.ca_cert)


def start_agent(
    url: str, bootstrap: str, work: Path, *options: str
) -> tuple[subprocess.Popen[bytes], Path]:
    """The real agent daemon on the recorded H100, sweeping every second; its log file."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "none.yaml").write_text("version: v1\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOVEREIGN_")}
    env.update({"SOVEREIGN_AGENT_BACKOFF_MAX_SECONDS": "2", "PYTHONUNBUFFERED": "1"})
    log = work / "agent.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "agents", "run", "--config", str(work / "none.yaml")),
                *("--control-plane", url, "--bootstrap-token", bootstrap),
                *("--backend", "replay", "--replay", str(RECORDING), "--interval", "1"),
                *("--state-dir", str(work), "--metrics-port", str(free_port())),
                *options,
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return process, log


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    process.wait(timeout=20)


def nodes(
    url: str, headers: dict[str, str], verify: ssl.SSLContext | bool
) -> list[dict[str, object]]:
    page = httpx.get(f"{url}/v1/nodes", headers=headers, timeout=10, verify=verify).json()
    items: list[dict[str, object]] = page["items"]
    return items


# -- the API -------------------------------------------------------------------------------


def test_the_api_serves_https_with_its_health_endpoints(
    https_api: ApiProcess, tls_files: TlsFiles
) -> None:
    assert https_api.url.startswith("https://127.0.0.1:")
    for path in ("/healthz", "/readyz"):
        answer = httpx.get(f"{https_api.url}{path}", verify=verified(tls_files), timeout=5)
        assert answer.status_code == 200, path
    # localhost is in the certificate too, for kubectl port-forward.
    local = https_api.url.replace("127.0.0.1", "localhost")
    assert httpx.get(f"{local}/healthz", verify=verified(tls_files), timeout=5).status_code == 200
    # Plain HTTP to the HTTPS port gets no answer.
    with pytest.raises(httpx.TransportError):
        httpx.get(https_api.url.replace("https://", "http://") + "/healthz", timeout=5)


def _handshake(port: int, context: ssl.SSLContext) -> str:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        return str(tls.version())


def test_the_api_speaks_tls_1_2_and_1_3_only(https_api: ApiProcess, tls_files: TlsFiles) -> None:
    port = int(https_api.url.rsplit(":", 1)[1])
    assert _handshake(port, verified(tls_files)) == "TLSv1.3"
    tls12 = verified(tls_files)
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    assert _handshake(port, tls12) == "TLSv1.2"
    # A client that would speak TLS 1.0 or 1.1 (its own security level lowered so that it
    # offers them at all) is turned away by the server.
    old = verified(tls_files)
    old.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():  # deprecated: the very point of this client
        warnings.simplefilter("ignore", DeprecationWarning)
        old.minimum_version = ssl.TLSVersion.TLSv1
        old.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises(ssl.SSLError) as refused:
        _handshake(port, old)
    # The server hung up on the offer (uvicorn closes without an alert); this client did
    # offer TLS 1.1, and a server with a TLS 1.0 floor completes this very handshake.
    assert "NO_PROTOCOLS_AVAILABLE" not in str(refused.value)


def test_serve_with_a_missing_key_file_says_so_in_one_line(
    settings: Settings, tls_files: TlsFiles, tmp_path: Path
) -> None:
    missing = tmp_path / "tls.key"
    env = subprocess_env(
        settings,
        SOVEREIGN_TLS_CERT_FILE=str(tls_files.cert),
        SOVEREIGN_TLS_KEY_FILE=str(missing),
    )
    result = subprocess.run(
        [*SOVCTL, "serve", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr == (
        f"error: SOVEREIGN_TLS_KEY_FILE: cannot read {missing} (No such file or directory)\n"
    )
    assert result.stdout == ""


def test_half_a_pair_stops_serve(settings: Settings, tls_files: TlsFiles) -> None:
    env = subprocess_env(settings, SOVEREIGN_TLS_CERT_FILE=str(tls_files.cert))
    result = subprocess.run(
        [*SOVCTL, "serve", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr == (
        "error: SOVEREIGN_TLS_CERT_FILE is set but SOVEREIGN_TLS_KEY_FILE is not; set both "
        "(HTTPS) or neither (plain HTTP)\n"
    )


def test_preflight_and_up_check_the_files_first(
    sovctl: Run, tls_files: TlsFiles, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = make_tls_files(tmp_path / "other", name="other")
    monkeypatch.setenv("SOVEREIGN_TLS_CERT_FILE", str(tls_files.cert))
    monkeypatch.setenv("SOVEREIGN_TLS_KEY_FILE", str(other.key))
    mismatch = (
        f"SOVEREIGN_TLS_KEY_FILE: {other.key} is not the key of the certificate in {tls_files.cert}"
    )
    code, out, err = sovctl("preflight")
    assert (code, err) == (1, mismatch + "\n")
    # `up` refuses before it starts the API, a worker or beat.
    code, out, err = sovctl("up", "--port", str(free_port()))
    assert (code, out, err) == (1, "", f"error: {mismatch}\n")
    monkeypatch.setenv("SOVEREIGN_TLS_KEY_FILE", str(tls_files.key))
    code, out, err = sovctl("preflight")
    assert code == 0, err
    assert f"The TLS certificate {tls_files.cert} and its key load." in out


# -- the agent -----------------------------------------------------------------------------


def test_the_agent_registers_and_heartbeats_over_https_and_sovctl_lists_it(
    https_api: ApiProcess,
    tls_files: TlsFiles,
    make_token: Callable[[Role], str],
    make_bootstrap: MakeBootstrap,
    sovctl: Run,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    admin_token = make_token(Role.ADMIN)
    admin = bearer(admin_token)
    agent, log = start_agent(
        https_api.url, make_bootstrap(), tmp_path / "agent", "--ca-bundle", str(tls_files.ca_cert)
    )
    try:
        wait_for(
            lambda: any(
                int(str(node.get("heartbeats_received", 0))) >= 2
                for node in nodes(https_api.url, admin, verified(tls_files))
            ),
            30,
            "the agent to register and heartbeat over HTTPS",
        )
    finally:
        stop(agent)
    assert "certificate verify failed" not in log.read_text()
    (node,) = nodes(https_api.url, admin, verified(tls_files))

    monkeypatch.setenv("SOVCTL_URL", https_api.url)
    monkeypatch.setenv("SOVCTL_TOKEN", admin_token)
    code, out, err = sovctl("--ca-bundle", str(tls_files.ca_cert), "nodes", "list", "-o", "json")
    assert code == 0, err
    assert '"' + str(node["id"]) + '"' in out
    # Without the CA sovctl refuses the server, in one line that says what to set.
    code, out, err = sovctl("nodes", "list")
    assert code == 1
    assert err.startswith(
        f"error: cannot verify the control plane's certificate at {https_api.url}"
    )
    assert err.endswith("point --ca-bundle or SOVCTL_CA_BUNDLE at the CA that signed it\n")
    monkeypatch.setenv("SOVCTL_CA_BUNDLE", str(tls_files.ca_cert))
    code, out, err = sovctl("nodes", "list", "-o", "json")
    assert code == 0, err
    assert '"' + str(node["id"]) + '"' in out
    # A bundle with no certificate in it (the key, by mistake) is named, before any request.
    monkeypatch.setenv("SOVCTL_CA_BUNDLE", str(tls_files.key))
    code, out, err = sovctl("nodes", "list")
    assert code == 1
    assert err.startswith(
        f"error: CA bundle {tls_files.key} (--ca-bundle, SOVCTL_CA_BUNDLE or ca_bundle): "
    )
    assert err.count("\n") == 1


@pytest.mark.parametrize("mismatch", ["another CA", "another host name"])
def test_the_agent_never_sends_its_token_to_a_server_it_cannot_verify(
    settings: Settings,
    tls_files: TlsFiles,
    make_token: Callable[[Role], str],
    make_bootstrap: MakeBootstrap,
    tmp_path: Path,
    mismatch: str,
) -> None:
    if mismatch == "another CA":
        # The server's certificate is fine, but the agent trusts another CA.
        served, trusted = tls_files, make_tls_files(tmp_path / "other", name="other")
        reason = "unable to get local issuer certificate"
    else:
        # The agent's CA signed it, but for a name that is not the URL's host.
        served = make_tls_files(tmp_path / "elsewhere", hosts=("sovereign.example",))
        trusted = served
        reason = "IP address mismatch, certificate is not valid for '127.0.0.1'"
    https = settings.model_copy(update={"tls_cert_file": served.cert, "tls_key_file": served.key})
    admin = bearer(make_token(Role.ADMIN))
    # We check the server with its CA, and its name only where it matches the URL.
    server_verify = verified(served)
    server_verify.check_hostname = mismatch != "another host name"
    with api_process(https, tmp_path, verify=server_verify) as api:
        agent, log = start_agent(
            api.url, make_bootstrap(), tmp_path / "agent", "--ca-bundle", str(trusted.ca_cert)
        )
        try:
            wait_for(lambda: log.read_text().count("not delivered") >= 2, 30, "two attempts")
        finally:
            stop(agent)
        assert nodes(api.url, admin, server_verify) == []
    agent_log = log.read_text()
    assert (
        f"not delivered (certificate verify failed for {api.url}: {reason}; trusting "
        f"control_plane.ca_bundle {trusted.ca_cert})"
    ) in agent_log
    assert "heartbeat(s) spooled" in agent_log
    # The server logs every request it reads; it read our readiness checks, not the agent's.
    access = api.log.read_text()
    assert "/readyz" in access
    assert REGISTER_PATH not in access


def test_without_tls_settings_the_api_and_agent_speak_plain_http(
    settings: Settings,
    tls_files: TlsFiles,
    make_token: Callable[[Role], str],
    make_bootstrap: MakeBootstrap,
    tmp_path: Path,
) -> None:
    admin = bearer(make_token(Role.ADMIN))
    with api_process(settings, tmp_path) as api:
        assert api.url.startswith("http://")
        # A CA bundle beside an http:// URL verifies nothing; the agent says so and goes on.
        agent, log = start_agent(
            api.url, make_bootstrap(), tmp_path / "agent", "--ca-bundle", str(tls_files.ca_cert)
        )
        try:
            wait_for(lambda: len(nodes(api.url, admin, True)) == 1, 30, "the agent to register")
        finally:
            stop(agent)
    assert "is not https://: nothing is verified" in log.read_text()
