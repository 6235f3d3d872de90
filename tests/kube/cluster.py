"""A real Kubernetes API server (with its etcd) on loopback, for the e2e tier in tests/kube.

``build-kube-apiserver.sh`` (beside this file) builds the binary once into a cache outside
the checkout; ``start_cluster`` runs etcd and the API server as child processes in a
directory of the test run, with:

* a serving certificate for 127.0.0.1 (the kubeconfigs trust its CA);
* static bearer tokens for a few users (``USERS``), each with its own kubeconfig, so a test
  acts as the cluster admin, as Sovereign's worker ServiceAccount, or as an ordinary user;
* RBAC authorization, so the chart's least-privilege roles are what the worker really has;
* an admission configuration that makes the API server present a client certificate when
  it calls the webhook at ``127.0.0.1:<webhook_port>`` (mutual TLS, as docs/kubernetes.md
  tells an operator to set up);
* no controller manager, scheduler or kubelet: pods are stored and stay ``Pending``, which
  is all admission, label sync and the Eviction API need.
"""

import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography.hazmat.primitives import serialization

from tests.certificates import TlsFiles, make_client_files, make_tls_files

HERE = Path(__file__).resolve().parent
BUILD_SCRIPT = HERE / "build-kube-apiserver.sh"
#: The build script's answer when this machine cannot build (no root, no apt-get).
CANNOT_BUILD = 3

#: Sovereign's worker, as the chart's ServiceAccount (release ``sovereign`` in namespace
#: ``sovereign``); the only user that may change ``sovereign.io/*`` node labels.
WORKER_USER = "system:serviceaccount:sovereign:sovereign-worker"


#: The common name of the client certificate the API server presents to webhooks.
WEBHOOK_CLIENT = "kube-apiserver"


@dataclass(frozen=True)
class User:
    """A user the API server knows by a static bearer token."""

    name: str
    token: str
    groups: tuple[str, ...]


USERS = {
    # Everything, as a platform team's admin (group system:masters).
    "admin": User("admin", "admin-token", ("system:masters",)),
    # The worker's ServiceAccount; its rights come only from the RBAC a test applies.
    "worker": User(WORKER_USER, "worker-token", ("system:serviceaccounts",)),
    # An ordinary user allowed everything by RBAC, so only Sovereign's webhooks stop her.
    "alice": User("alice", "alice-token", ("system:masters",)),
    # A user with only the rights a test gives him (patching some Nodes and not others).
    "bob": User("bob", "bob-token", ("sovereign-tests",)),
}


def cache_dir() -> Path:
    """Where the build script keeps the binary (the same rule as the script's)."""
    explicit = os.environ.get("SOVEREIGN_KUBE_CACHE")
    if explicit:
        return Path(explicit)
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "sovereign" / "kube"


def build() -> tuple[Path | None, str]:
    """Build (or find) kube-apiserver; the binary, or None and the one-line reason."""
    done = subprocess.run(
        ["bash", str(BUILD_SCRIPT)], capture_output=True, text=True, timeout=40 * 60, check=False
    )
    lines = (done.stdout + done.stderr).strip().splitlines()
    last = lines[-1] if lines else f"exit {done.returncode}"
    if done.returncode == 0:
        return cache_dir() / "bin" / "kube-apiserver", last
    if done.returncode == CANNOT_BUILD:
        return None, last
    raise RuntimeError(f"building kube-apiserver failed:\n{done.stdout}\n{done.stderr}")


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Cluster:
    """A running API server: its URL, CA, users' kubeconfigs and the webhook's client cert."""

    url: str
    directory: Path
    serving: TlsFiles
    #: The certificate the API server presents to the webhook, and the CA that signed it
    #: (the webhook server's ``SOVEREIGN_ADMISSION__CLIENT_CA_FILE``).
    webhook_client: TlsFiles
    webhook_port: int
    processes: list[subprocess.Popen[bytes]]

    def kubeconfig(self, user: str) -> Path:
        """The kubeconfig file of one of ``USERS``."""
        return self.directory / f"kubeconfig-{user}"

    def stop(self) -> None:
        """Stop the API server, then etcd."""
        for process in reversed(self.processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()

    def log(self) -> str:
        """The API server's log, for a failing test's message."""
        path = self.directory / "apiserver.log"
        return path.read_text(errors="replace")[-6000:] if path.exists() else ""


def _kubeconfig(url: str, ca: Path, user: User) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "test", "cluster": {"server": url, "certificate-authority": str(ca)}}
        ],
        "users": [{"name": user.name, "user": {"token": user.token}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": user.name}}],
        "current-context": "test",
    }


def _write_admission_config(directory: Path, webhook_port: int, client: TlsFiles) -> Path:
    """The API server's admission configuration: which client cert to show which webhook."""
    webhook_kubeconfig = directory / "webhook-client.kubeconfig"
    webhook_kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "users": [
                    {
                        "name": f"127.0.0.1:{webhook_port}",
                        "user": {
                            "client-certificate": str(client.cert),
                            "client-key": str(client.key),
                        },
                    }
                ],
            }
        )
    )
    plugin = {"kubeConfigFile": str(webhook_kubeconfig)}
    config = directory / "admission.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "apiserver.config.k8s.io/v1",
                "kind": "AdmissionConfiguration",
                "plugins": [
                    {
                        "name": name,
                        "configuration": {
                            "apiVersion": "apiserver.config.k8s.io/v1",
                            "kind": "WebhookAdmissionConfiguration",
                            **plugin,
                        },
                    }
                    for name in ("ValidatingAdmissionWebhook", "MutatingAdmissionWebhook")
                ],
            }
        )
    )
    return config


def _wait_ready(cluster: Cluster, deadline_seconds: float = 90) -> None:
    context = ssl.create_default_context(cafile=str(cluster.serving.ca_cert))
    request = urllib.request.Request(
        f"{cluster.url}/readyz", headers={"Authorization": f"Bearer {USERS['admin'].token}"}
    )
    deadline = time.monotonic() + deadline_seconds
    last = ""
    while time.monotonic() < deadline:
        for process in cluster.processes:
            if process.poll() is not None:
                raise RuntimeError(f"{process.args!r} exited early:\n{cluster.log()}")
        try:
            with urllib.request.urlopen(request, context=context, timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError as exc:
            last = str(exc)
        time.sleep(0.3)
    raise RuntimeError(
        f"kube-apiserver not ready after {deadline_seconds} s ({last}):\n{cluster.log()}"
    )


def start_cluster(binary: Path, directory: Path) -> Cluster:
    """Start etcd and kube-apiserver in ``directory``; ready when it returns."""
    etcd = shutil.which("etcd")
    if etcd is None:
        raise RuntimeError("etcd is not installed (the build script installs etcd-server)")
    directory.mkdir(parents=True, exist_ok=True)
    serving = make_tls_files(directory / "serving", name="kube-apiserver", hosts=("127.0.0.1",))
    # ServiceAccount tokens are signed with the serving key; the API server reads the
    # public half from its own file.
    public = serialization.load_pem_private_key(serving.key.read_bytes(), None).public_key()
    service_account_public = directory / "service-account.pub"
    service_account_public.write_bytes(
        public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    port, etcd_port, etcd_peer, webhook_port = (free_port() for _ in range(4))
    url = f"https://127.0.0.1:{port}"
    tokens = directory / "tokens.csv"
    tokens.write_text(
        "".join(
            f'{user.token},{user.name},{user.name},"{",".join(user.groups)}"\n'
            for user in USERS.values()
        )
    )
    for key, user in USERS.items():
        (directory / f"kubeconfig-{key}").write_text(
            yaml.safe_dump(_kubeconfig(url, serving.ca_cert, user))
        )
    client_cert = make_client_files(directory / "webhook-client", WEBHOOK_CLIENT)
    admission = _write_admission_config(directory, webhook_port, client_cert)
    etcd_url = f"http://127.0.0.1:{etcd_port}"
    etcd_log = (directory / "etcd.log").open("wb")
    processes = [
        subprocess.Popen(
            [
                etcd,
                "--data-dir",
                str(directory / "etcd"),
                "--listen-client-urls",
                etcd_url,
                "--advertise-client-urls",
                etcd_url,
                "--listen-peer-urls",
                f"http://127.0.0.1:{etcd_peer}",
                "--initial-advertise-peer-urls",
                f"http://127.0.0.1:{etcd_peer}",
                "--initial-cluster",
                f"default=http://127.0.0.1:{etcd_peer}",
            ],
            stdout=etcd_log,
            stderr=subprocess.STDOUT,
        )
    ]
    etcd_log.close()  # the child has its own copy of the descriptor
    apiserver_log = (directory / "apiserver.log").open("wb")
    processes.append(
        subprocess.Popen(
            [
                str(binary),
                f"--etcd-servers={etcd_url}",
                f"--secure-port={port}",
                "--bind-address=127.0.0.1",
                f"--tls-cert-file={serving.cert}",
                f"--tls-private-key-file={serving.key}",
                f"--token-auth-file={tokens}",
                "--service-account-issuer=https://kubernetes.default.svc",
                f"--service-account-key-file={service_account_public}",
                f"--service-account-signing-key-file={serving.key}",
                "--authorization-mode=RBAC",
                "--service-cluster-ip-range=10.96.0.0/16",
                # No controller manager makes ServiceAccounts or their tokens, so pods
                # would wait for a "default" account forever.
                "--disable-admission-plugins=ServiceAccount",
                f"--admission-control-config-file={admission}",
            ],
            stdout=apiserver_log,
            stderr=subprocess.STDOUT,
            cwd=directory,
        )
    )
    apiserver_log.close()
    cluster = Cluster(url, directory, serving, client_cert, webhook_port, processes)
    try:
        _wait_ready(cluster)
    except BaseException:
        cluster.stop()
        raise
    return cluster
