"""Helpers shared by tests: request bodies, auth headers, ports and process plumbing."""

import json
import os
import re
import socket
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
from psycopg import sql

from control_plane.cli.deprecation import REMOVED_IN
from control_plane.core import tls
from control_plane.core.audit_log import AuditContext
from control_plane.core.settings import Settings

ADMIN_URL = os.environ.get("SOVTEST_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("SOVTEST_REDIS_URL", "redis://127.0.0.1:6379/0")
SECRET = "test-secret-key-0123456789"
TEST_ACTOR = AuditContext(actor_id="test:fixture", actor_name="pytest")


def url_for(dbname: str) -> str:
    return psycopg.conninfo.make_conninfo(ADMIN_URL, dbname=dbname)


def _admin_execute(statement: sql.Composed) -> None:
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(statement)


def drop_database(name: str) -> None:
    """Drop a test database, closing any connection still open to it."""
    _admin_execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@contextmanager
def scratch_database(prefix: str, template: str | None = None) -> Iterator[str]:
    """Create a database (empty, or a copy of ``template``), yield its name, then drop it."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    create = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template is not None:
        create = sql.SQL("{} TEMPLATE {}").format(create, sql.Identifier(template))
    _admin_execute(create)
    try:
        yield name
    finally:
        drop_database(name)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


#: The ``make_bootstrap`` fixture: a bootstrap token scoped to a zone (and site), the zone
#: created if it does not exist yet.
MakeBootstrap = Callable[..., str]


def registration(
    hostname: str = "gpu-node-01",
    machine_id: str | None = None,
    gpu_uuids: tuple[str, ...] = ("GPU-00000000-0000-0000-0000-000000000001",),
    zone: str | None = None,
    origin_country: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A registration body like the agent sends (model name from the recorded H100)."""
    body: dict[str, Any] = {
        "inventory": {
            "host": {"hostname": hostname, "machine_id": machine_id or f"mid-{uuid.uuid4().hex}"},
            "gpus": [
                {
                    "uuid": u,
                    "index": i,
                    "model": "NVIDIA H100 80GB HBM3",
                    "memory_total_bytes": 85520809984,
                    "serial": f"165232{i:07d}",
                }
                for i, u in enumerate(gpu_uuids)
            ],
        },
        "zone": zone,
        "provenance": {"origin_country": origin_country} if origin_country else {},
        **extra,
    }
    return body


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until_ready(
    url: str,
    timeout: float = 30.0,
    process: subprocess.Popen[Any] | None = None,
    verify: ssl.SSLContext | bool = True,
) -> float:
    """Poll ``url`` until it answers 200; return how long that took.

    An ``https`` URL is verified as httpx's ``verify`` says (a context with the test CA).
    """
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if process is not None and process.poll() is not None:
            raise AssertionError(f"process exited with {process.returncode} before {url} was ready")
        try:
            if httpx.get(url, timeout=1, verify=verify).status_code == 200:
                return time.monotonic() - started
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} not ready within {timeout} s")


@contextmanager
def api_in_thread(
    settings: Settings,
    verify: ssl.SSLContext | bool = True,
    port: int | None = None,
    **config: Any,
) -> Iterator[str]:
    """The real API on ``port`` (a free one by default), in a thread; yields its base URL.

    ``config`` goes to ``uvicorn.Config`` (``timeout_keep_alive``, say). With the TLS
    settings it serves HTTPS as ``sovctl serve`` does, checked ready with ``verify``.
    """
    import uvicorn

    from control_plane.app import create_app

    port = free_port() if port is None else port
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            **{**tls.uvicorn_options(settings), **config},
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"{tls.scheme(settings)}://127.0.0.1:{port}"
    try:
        wait_until_ready(f"{base}/readyz", verify=verify)
        yield base
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def subprocess_env(settings: Settings, **extra: str) -> dict[str, str]:
    """Environment for a ``sovctl`` child process running against the test database."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SOVEREIGN_", "SOVCTL_"))}
    env.update(
        {
            "SOVEREIGN_DATABASE_URL": settings.database_url,
            "SOVEREIGN_REDIS_URL": settings.redis_url,
            "SOVEREIGN_SECRET_KEY": settings.secret_key.get_secret_value(),
            "SOVEREIGN_CELERY_QUEUE": settings.celery_queue,
            "PYTHONUNBUFFERED": "1",
        }
    )
    if settings.tls_cert_file is not None and settings.tls_key_file is not None:
        env["SOVEREIGN_TLS_CERT_FILE"] = str(settings.tls_cert_file)
        env["SOVEREIGN_TLS_KEY_FILE"] = str(settings.tls_key_file)
    if settings.tls_key_password is not None:
        env["SOVEREIGN_TLS_KEY_PASSWORD"] = settings.tls_key_password.get_secret_value()
    env.update(extra)
    return env


SOVCTL = [sys.executable, "-m", "control_plane.cli"]


@dataclass
class ApiProcess:
    """``sovctl serve`` as its own process: its base URL, the process, its log file."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        return self.process.poll() is None

    def rss_bytes(self) -> int:
        """The server's resident memory now, from /proc."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    def healthz_seconds(self) -> float:
        """How long ``/healthz`` takes to answer 200 now."""
        started = time.monotonic()
        response = httpx.get(f"{self.url}/healthz", timeout=5)
        assert response.status_code == 200
        return time.monotonic() - started


@contextmanager
def _sovctl_server(
    command: list[str], url: str, env: dict[str, str], log: Path, verify: ssl.SSLContext | bool
) -> Iterator[ApiProcess]:
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*SOVCTL, *command], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    server = ApiProcess(url, process, log)
    try:
        wait_until_ready(f"{server.url}/readyz", process=process, verify=verify)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


@contextmanager
def api_process(
    settings: Settings, log_dir: Path, verify: ssl.SSLContext | bool = True, **env: str
) -> Iterator[ApiProcess]:
    """The real API as a child process on a free port (a crash kills it, not the tests).

    With the TLS settings it serves HTTPS, checked ready with ``verify``.
    """
    port = free_port()
    with _sovctl_server(
        ["serve", "--port", str(port)],
        f"{tls.scheme(settings)}://127.0.0.1:{port}",
        subprocess_env(settings, **env),
        log_dir / f"api-{port}.log",
        verify,
    ) as server:
        yield server


@contextmanager
def webhook_process(
    settings: Settings, log_dir: Path, verify: ssl.SSLContext, port: int | None = None, **env: str
) -> Iterator[ApiProcess]:
    """``sovctl serve-webhooks`` as a child process: always HTTPS, on ``port`` or a free one.

    ``env`` carries the ``SOVEREIGN_ADMISSION__*`` settings (client CA, names, its own
    pair); ``verify`` must trust the listener's certificate and, with a client CA, present
    a client certificate (``load_cert_chain``), since readiness is probed through it.
    """
    port = port or free_port()
    with _sovctl_server(
        ["serve-webhooks", "--port", str(port)],
        f"https://127.0.0.1:{port}",
        subprocess_env(settings, **env),
        log_dir / f"webhooks-{port}.log",
        verify,
    ) as server:
        yield server


#: ``sovctl`` run in-process (the ``sovctl`` fixture): arguments in, (exit code, stdout, stderr).
Run = Callable[..., tuple[int, str, str]]


def deprecation_notice(old: list[str], new: list[str]) -> str:
    """The one stderr line ``sovctl`` prints for a deprecated spelling of a command path."""
    return (
        f"sovctl: '{' '.join(old)}' is deprecated, use '{' '.join(new)}' "
        f"(removed in {REMOVED_IN})\n"
    )


def tamper(owner_conn: Any, statement: str, params: tuple[Any, ...] = ()) -> None:
    """Rewrite audit rows as the database owner would: past the append-only trigger."""
    with owner_conn.transaction():
        owner_conn.execute("SET LOCAL session_replication_role = replica")
        owner_conn.execute(statement, params)


#: ``<!-- api-example: GROUP STEP request METHOD PATH token=NAME -->`` or
#: ``<!-- api-example: GROUP STEP response STATUS -->``, each followed by a JSON block.
_API_EXAMPLE = re.compile(
    r"<!-- api-example: (?P<group>[\w-]+) (?P<step>[\w-]+) (?P<kind>request|response)"
    r" (?P<rest>[^>]*)-->\n```json\n(?P<body>.*?)```",
    re.S,
)
#: In a documented answer, stands for a value that differs on every run.
ANY_VALUE = "…"


@dataclass(frozen=True)
class ApiExample:
    """One documented request and the answer the docs show for it."""

    step: str
    method: str
    path: str
    token: str
    body: Any
    status: int
    answer: Any


def documented_api_examples(page: Path, group: str) -> list[ApiExample]:
    """The ``api-example`` request/response pairs of ``group`` on a docs page, in order."""
    found = [m for m in _API_EXAMPLE.finditer(page.read_text()) if m["group"] == group]
    examples = []
    for request, response in zip(found[::2], found[1::2], strict=True):
        assert request["step"] == response["step"], (request["step"], response["step"])
        assert (request["kind"], response["kind"]) == ("request", "response")
        method, path, token = request["rest"].split()
        examples.append(
            ApiExample(
                request["step"],
                method,
                path,
                token.removeprefix("token="),
                json.loads(request["body"]),
                int(response["rest"]),
                json.loads(response["body"]),
            )
        )
    return examples


def matches_documented(documented: Any, actual: Any) -> bool:
    """Whether ``actual`` holds every documented key and value (``…`` matches anything).

    Objects may have more keys than documented; lists must match item by item.
    """
    if documented == ANY_VALUE:
        return True
    if isinstance(documented, dict):
        return isinstance(actual, dict) and all(
            key in actual and matches_documented(value, actual[key])
            for key, value in documented.items()
        )
    if isinstance(documented, list):
        return (
            isinstance(actual, list)
            and len(actual) == len(documented)
            and all(matches_documented(d, a) for d, a in zip(documented, actual, strict=True))
        )
    return bool(documented == actual)
