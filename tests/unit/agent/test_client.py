"""The agent's HTTP client against a scripted server on loopback, one answer at a time.

Each accepted connection is handed to the next script; a script reads requests and writes
exactly the bytes a test wants, so keep-alive, idle closes, chunked bodies and broken
answers are all reproducible.
"""

import json
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agents.client import (
    MAX_BODY_BYTES,
    MAX_LINE_BYTES,
    ControlPlaneClient,
    ControlPlaneUnreachableError,
    CredentialRejectedError,
    RequestRejectedError,
)
from tests.certificates import TlsFiles, make_tls_files

Script = Callable[[socket.socket, "ScriptedServer"], None]
OK = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 17\r\n\r\n"
    b'{"accepted":true}'
)


class ScriptedServer:
    """Accepts connections on 127.0.0.1 and runs one script per connection, in order."""

    def __init__(self, scripts: list[Script], tls: ssl.SSLContext | None = None):
        self.scripts = list(scripts)
        self.connections = 0
        self.requests: list[tuple[bytes, bytes]] = []  # (head, body)
        self.handshake_errors: list[str] = []
        self._tls = tls
        self._listener = socket.create_server(("127.0.0.1", 0))
        scheme = "http" if tls is None else "https"
        self.url = f"{scheme}://127.0.0.1:{self._listener.getsockname()[1]}"
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        for script in self.scripts:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            if self._tls is not None:
                try:
                    conn = self._tls.wrap_socket(conn, server_side=True)
                except (ssl.SSLError, OSError) as exc:  # the client hung up on our certificate
                    self.handshake_errors.append(str(exc))
                    conn.close()
                    continue
            with conn:
                script(conn, self)

    def read_request(self, conn: socket.socket) -> bool:
        """Read one whole request into ``requests``; False if the client hung up instead."""
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return False
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        while len(body) < length:
            body += conn.recv(65536)
        self.requests.append((head, body))
        return True

    def close(self) -> None:
        """Stop: a script still waiting for its connection gets one that says nothing."""
        for _ in range(len(self.scripts)):
            if not self._thread.is_alive():
                break
            with socket.create_connection(self._listener.getsockname(), timeout=1):
                pass
            self._thread.join(timeout=0.5)
        self._listener.close()


@pytest.fixture
def serve() -> Iterator[Callable[..., ScriptedServer]]:
    servers: list[ScriptedServer] = []

    def start(*scripts: Script, tls: ssl.SSLContext | None = None) -> ScriptedServer:
        server = ScriptedServer(list(scripts), tls)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def connect() -> Iterator[Callable[..., ControlPlaneClient]]:
    """Clients that are closed after the test, so no socket is left to the collector."""
    clients: list[ControlPlaneClient] = []

    def make(url: str, **options: Any) -> ControlPlaneClient:
        client = ControlPlaneClient(url, **options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def answer(*answers: bytes) -> Script:
    """Per request, write the next answer; then close the connection."""

    def script(conn: socket.socket, server: ScriptedServer) -> None:
        for reply in answers:
            if not server.read_request(conn):
                return
            conn.sendall(reply)

    return script


def heartbeat(client: ControlPlaneClient, seq: int = 1) -> dict[str, Any]:
    return client.heartbeat("node-1", "node-token", {"seq": seq, "telemetry": []})


def test_the_request_is_one_compact_post_with_the_credential(serve: Any, connect: Any) -> None:
    server = serve(answer(OK))
    client = connect(server.url + "/prefix")
    assert heartbeat(client, seq=7) == {"accepted": True}
    client.close()
    ((head, body),) = server.requests
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /prefix/v1/nodes/node-1/heartbeat HTTP/1.1"
    port = server.url.rsplit(":", 1)[1]
    assert set(lines[1:]) == {
        f"Host: 127.0.0.1:{port}",
        "Authorization: Bearer node-token",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
    }
    assert body == b'{"seq":7,"telemetry":[]}'


def test_heartbeats_share_one_connection(serve: Any, connect: Any) -> None:
    server = serve(answer(OK, OK, OK))
    client = connect(server.url)
    for seq in (1, 2, 3):
        heartbeat(client, seq)
    client.close()
    assert server.connections == 1
    assert len(server.requests) == 3


def test_a_connection_the_server_closed_while_idle_is_replaced_and_the_request_resent(
    serve: Any,
    connect: Any,
) -> None:
    # uvicorn closes a keep-alive connection after 5 s idle; the default sweep is 10 s.
    server = serve(answer(OK), answer(OK))
    client = connect(server.url)
    heartbeat(client, 1)
    assert heartbeat(client, 2) == {"accepted": True}
    client.close()
    assert server.connections == 2
    assert [json.loads(body)["seq"] for _, body in server.requests] == [1, 2]


def test_a_new_connection_closed_before_an_answer_is_not_retried(serve: Any, connect: Any) -> None:
    def hang_up(conn: socket.socket, server: ScriptedServer) -> None:
        server.read_request(conn)

    server = serve(hang_up, answer(OK))
    client = connect(server.url)
    with pytest.raises(ControlPlaneUnreachableError, match="closed before an answer"):
        heartbeat(client)
    assert server.connections == 1


def test_an_answer_cut_off_midway_is_not_resent(serve: Any, connect: Any) -> None:
    # The server may have acted on it; only an answer that never began is resent.
    server = serve(answer(OK, b'HTTP/1.1 200 OK\r\nContent-Length: 17\r\n\r\n{"acc'), answer(OK))
    client = connect(server.url)
    heartbeat(client, 1)
    with pytest.raises(ControlPlaneUnreachableError, match="middle of the answer"):
        heartbeat(client, 2)
    assert len(server.requests) == 2
    assert heartbeat(client, 3) == {"accepted": True}  # on a new connection
    assert server.connections == 2


def test_a_chunked_answer_is_read_whole(serve: Any, connect: Any) -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b'5;ext=1\r\n{"dup\r\nd\r\nlicate":true}\r\n0\r\nX-Trailer: 1\r\n\r\n'
    )
    server = serve(answer(chunked, OK))
    client = connect(server.url)
    assert heartbeat(client) == {"duplicate": True}
    assert heartbeat(client) == {"accepted": True}  # the connection is still in step
    assert server.connections == 1


def test_connection_close_and_an_http10_answer_without_length_end_the_connection(
    serve: Any,
    connect: Any,
) -> None:
    closing = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}"
    old = b'HTTP/1.0 200 OK\r\n\r\n{"accepted":true}'
    server = serve(answer(closing), answer(old), answer(OK))
    client = connect(server.url)
    assert heartbeat(client) == {}
    assert heartbeat(client) == {"accepted": True}
    assert heartbeat(client) == {"accepted": True}
    assert server.connections == 3


def test_an_interim_answer_is_skipped(serve: Any, connect: Any) -> None:
    server = serve(answer(b"HTTP/1.1 100 Continue\r\n\r\n" + OK))
    assert heartbeat(connect(server.url)) == {"accepted": True}


@pytest.mark.parametrize(
    ("reply", "error", "message"),
    [
        (b"HTTP/1.1 401 No\r\nContent-Length: 0\r\n\r\n", CredentialRejectedError, None),
        (
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 37\r\n\r\n"
            b'{"error":{"message":"no such node"}}\n',
            RequestRejectedError,
            "HTTP 404: no such node",
        ),
        (b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n", ControlPlaneUnreachableError, "503"),
        (b"HTTP/1.1 429 Later\r\nContent-Length: 0\r\n\r\n", ControlPlaneUnreachableError, None),
        (b"SMTP ready\r\n\r\n", ControlPlaneUnreachableError, "not an HTTP answer"),
        (
            b"HTTP/1.1 200 OK\r\nX: " + b"a" * MAX_LINE_BYTES + b"\r\n\r\n",
            ControlPlaneUnreachableError,
            "too long",
        ),
        (
            b"HTTP/1.1 200 OK\r\n" + b"X: 1\r\n" * 101 + b"\r\n",
            ControlPlaneUnreachableError,
            "header lines",
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nnot json!",
            ControlPlaneUnreachableError,
            "not JSON",
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (MAX_BODY_BYTES + 1),
            ControlPlaneUnreachableError,
            "outside",
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n" % (MAX_BODY_BYTES + 1),
            ControlPlaneUnreachableError,
            "larger than",
        ),
        (
            b"HTTP/1.0 200 OK\r\n\r\n" + b"x" * (MAX_BODY_BYTES + 1),
            ControlPlaneUnreachableError,
            "larger than",
        ),
    ],
)
def test_answers_map_to_what_the_agent_does_next(
    serve: Any, connect: Any, reply: bytes, error: type[Exception], message: str | None
) -> None:
    server = serve(answer(reply))
    with pytest.raises(error, match=message):
        heartbeat(connect(server.url, timeout=5))


def test_a_control_character_in_the_credential_is_never_sent(serve: Any, connect: Any) -> None:
    server = serve(answer(OK))
    client = connect(server.url)
    with pytest.raises(RequestRejectedError, match="control character"):
        client.heartbeat("node-1", "token\r\nX-Injected: 1", {"seq": 1})
    with pytest.raises(RequestRejectedError, match="control character"):
        client.heartbeat("node 1", "token", {"seq": 1})
    client.close()
    assert server.requests == []


def test_nothing_listening_is_unreachable(connect: Any) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ControlPlaneUnreachableError):
        heartbeat(connect(f"http://127.0.0.1:{port}", timeout=1))


# -- HTTPS ---------------------------------------------------------------------------------


def _server_context(files: TlsFiles) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(files.cert, files.key)
    return context


@pytest.fixture
def tls_files(tmp_path: Path) -> TlsFiles:
    return make_tls_files(tmp_path / "tls")


def test_https_with_the_ca_bundle_verifies_and_sends(
    serve: Any, connect: Any, tls_files: TlsFiles
) -> None:
    server = serve(answer(OK), tls=_server_context(tls_files))
    client = connect(server.url, ca_bundle=tls_files.ca_cert)
    assert heartbeat(client) == {"accepted": True}
    ((head, _),) = server.requests
    assert b"Authorization: Bearer node-token" in head.split(b"\r\n")


@pytest.mark.parametrize(
    ("server_hosts", "trusted", "reason"),
    [
        # Signed by another CA than the bundle's.
        (("localhost", "127.0.0.1"), "other", "unable to get local issuer certificate"),
        # The bundle's CA, but for another name than the URL's host.
        (("sovereign.example",), "ours", "IP address mismatch, certificate is not valid for"),
        # No bundle: the system store, which has never heard of the test CA.
        (("localhost", "127.0.0.1"), None, "unable to get local issuer certificate"),
    ],
)
def test_an_unverified_server_never_sees_the_token(
    serve: Any,
    connect: Any,
    tmp_path: Path,
    server_hosts: tuple[str, ...],
    trusted: str | None,
    reason: str,
) -> None:
    ours = make_tls_files(tmp_path / "ours", name="ours", hosts=server_hosts)
    other = make_tls_files(tmp_path / "other", name="other")
    bundle = {"ours": ours.ca_cert, "other": other.ca_cert, None: None}[trusted]
    server = serve(answer(OK), tls=_server_context(ours))
    client = connect(server.url, ca_bundle=bundle)
    with pytest.raises(ControlPlaneUnreachableError) as raised:
        heartbeat(client)
    trusting = "the system trust store" if bundle is None else f"control_plane.ca_bundle {bundle}"
    assert str(raised.value).startswith(f"certificate verify failed for {server.url}: {reason}")
    assert str(raised.value).endswith(f"; trusting {trusting}")
    # The handshake failed before the request was written: the server read no byte of it.
    assert server.requests == []
    server.close()
    assert len(server.handshake_errors) == 1
