"""The agent's HTTP client for the control plane: register and heartbeat, nothing else.

Standard library only, so the agent installs with almost no dependencies. Errors are split
by what the agent should do next: retry later (unreachable), register again (credential
rejected), or give up on this request (rejected).

It speaks the small part of HTTP/1.1 the agent needs over one persistent socket (TLS
where the URL is ``https``, the server's certificate verified against the configured CA
bundle or else the system store, its name checked against the URL's host): a ``POST``
with a JSON body written in one ``send``, and an answer with a ``Content-Length`` or
chunked body, or one that ends with the connection. ``http.client`` did the same job, but
built the request in several steps, sent head and body apart and parsed the answer's
headers with the ``email`` package: about 230 µs of CPU per heartbeat when the daemon
wakes with cold caches, against 1 ms per second for the whole agent. Header lines and
counts are bounded as ``http.client`` bounds them.
"""

import json
import re
import socket
import ssl
import urllib.parse
from pathlib import Path
from typing import IO, Any

#: Longest status or header line, and most header lines, accepted in an answer (as
#: ``http.client``): a broken or hostile server cannot make the agent buffer without end.
MAX_LINE_BYTES = 65536
MAX_HEADERS = 100
#: Largest answer body accepted: the control plane answers an agent with a few hundred
#: bytes, so anything near this is a broken or hostile server, not an answer to buffer.
MAX_BODY_BYTES = 1024 * 1024

#: Compact JSON, made once: ``json.dumps`` with ``separators`` builds an encoder per call.
_ENCODER = json.JSONEncoder(separators=(",", ":"))
#: What may not appear in a request line or a header value (controls, spaces, DEL).
_UNSAFE = re.compile(r"[\x00-\x20\x7f]")


class ControlPlaneUnreachableError(Exception):
    """The control plane did not answer, failed verification, or answered 5xx: try later.

    A certificate that does not verify is retried like an outage (with backoff, heartbeats
    spooled): the operator fixes the CA bundle or the certificate, and nothing is lost.
    """


class CredentialRejectedError(Exception):
    """401: the node credential (or bootstrap token) is unknown or revoked."""


class RequestRejectedError(Exception):
    """A 4xx other than 401: retrying the same request will not help."""

    def __init__(self, status: int, message: str):
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


class _ClosedBeforeAnswerError(OSError):
    """The connection ended before any byte of the answer: the server closed it idle."""


#: How a reused connection that the server had closed while idle fails: no byte of the
#: answer, or a reset (or broken pipe) on sending. Worth one more try on a new connection.
_CLOSED_WHILE_IDLE = (_ClosedBeforeAnswerError, ConnectionResetError, BrokenPipeError)


class _Answer:
    """Status, reason, the headers the client acts on, the body, and whether to hang up."""

    __slots__ = ("body", "reason", "status", "will_close")

    def __init__(self, status: int, reason: str, body: bytes, will_close: bool):
        self.status = status
        self.reason = reason
        self.body = body
        self.will_close = will_close


class ControlPlaneClient:
    """JSON over HTTP(S) to the control plane's ``/v1`` agent endpoints.

    One persistent connection is reused across heartbeats (HTTP keep-alive): opening a
    TCP (and TLS) connection every sweep would cost more than everything else the agent
    does. A broken connection is dropped and reopened on the next request. A server may
    close a keep-alive connection that sat idle (uvicorn after 5 s, less than the default
    10 s sweep): when a reused connection ends before any byte of the answer, the request
    is sent once more on a new connection. The server had not taken the first (it closed
    the connection idle), and a heartbeat sent twice would count once all the same (the
    control plane drops a repeated sequence number).
    """

    def __init__(self, base_url: str, *, ca_bundle: Path | None = None, timeout: float = 10.0):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        parts = urllib.parse.urlsplit(self.base_url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or "localhost"
        self._port = parts.port or (443 if self._https else 80)
        self._prefix = parts.path
        default_port = self._port == (443 if self._https else 80)
        host = f"[{self._host}]" if ":" in self._host else self._host
        self._host_header = host if default_port else f"{host}:{self._port}"
        # Certificate and hostname (or IP address) verified, TLS 1.2 or newer: the defaults
        # of a default context. The handshake completes in ``wrap_socket``, before a byte of
        # the request (and its token) is written, so no token goes to an unverified server.
        self._context = (
            ssl.create_default_context(cafile=str(ca_bundle) if ca_bundle else None)
            if self._https
            else None
        )
        self._trusted = (
            f"control_plane.ca_bundle {ca_bundle}" if ca_bundle else "the system trust store"
        )
        self._socket: socket.socket | None = None
        self._reader: IO[bytes] | None = None

    def _connect(self) -> tuple[socket.socket, IO[bytes]]:
        if self._socket is None or self._reader is None:
            sock = socket.create_connection((self._host, self._port), timeout=self.timeout)
            try:
                # One segment per request; waiting for an ACK (Nagle) only adds latency.
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if self._context is not None:
                    sock = self._context.wrap_socket(sock, server_hostname=self._host)
            except BaseException:
                sock.close()
                raise
            self._socket, self._reader = sock, sock.makefile("rb")
        return self._socket, self._reader

    def close(self) -> None:
        """Close the persistent connection (it reopens on the next request)."""
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def _request_bytes(self, path: str, token: str, payload: bytes) -> bytes:
        target = self._prefix + path
        if _UNSAFE.search(target) or _UNSAFE.search(token):
            # A header or request line that is not what it seems; never sent.
            raise RequestRejectedError(0, "refusing to send a control character or space")
        head = (
            f"POST {target} HTTP/1.1\r\nHost: {self._host_header}\r\n"
            f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n"
        )
        try:
            return head.encode("ascii") + payload
        except UnicodeEncodeError:
            raise RequestRejectedError(0, "refusing to send a non-ASCII header") from None

    def _exchange(self, request: bytes) -> _Answer:
        """Send the request and read the answer; once more on a new connection if needed."""
        for attempt in (1, 2):
            reused = self._socket is not None
            try:
                sock, reader = self._connect()
                sock.sendall(request)
                answer = _read_answer(reader)
            except ssl.SSLCertVerificationError as exc:
                self.close()
                raise ControlPlaneUnreachableError(
                    f"certificate verify failed for {self.base_url}: "
                    f"{str(exc.verify_message).rstrip('.')}; "
                    f"trusting {self._trusted}"
                ) from None
            except (OSError, ValueError) as exc:
                self.close()
                if reused and attempt == 1 and isinstance(exc, _CLOSED_WHILE_IDLE):
                    continue
                raise ControlPlaneUnreachableError(str(exc) or type(exc).__name__) from None
            if answer.will_close:
                self.close()
            return answer
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def _post(self, path: str, token: str, body: dict[str, Any]) -> dict[str, Any]:
        payload = _ENCODER.encode(body).encode()
        answer = self._exchange(self._request_bytes(path, token, payload))
        status, raw = answer.status, answer.body
        if status >= 400:
            message = _error_message(raw, answer.reason)
            if status == 401:
                raise CredentialRejectedError(message)
            if status >= 500 or status == 429:
                raise ControlPlaneUnreachableError(f"HTTP {status}: {message}")
            raise RequestRejectedError(status, message)
        try:
            result: dict[str, Any] = json.loads(raw or b"{}")
        except ValueError as exc:
            raise ControlPlaneUnreachableError(f"not JSON from the control plane: {exc}") from None
        return result

    def register(self, token: str, body: dict[str, Any]) -> dict[str, Any]:
        """Register this node; returns ``node_id``, its (new) credential and the interval.

        ``token`` is the bootstrap token, or the node's own credential to register again
        (a known machine id takes that, or a bootstrap token an admin approved; else 409).
        """
        return self._post("/v1/agents/register", token, body)

    def heartbeat(self, node_id: str, token: str, body: dict[str, Any]) -> dict[str, Any]:
        """Send one heartbeat; the answer says whether it was new or a duplicate."""
        return self._post(f"/v1/nodes/{node_id}/heartbeat", token, body)


def _line(reader: IO[bytes]) -> bytes:
    line = reader.readline(MAX_LINE_BYTES + 1)
    if len(line) > MAX_LINE_BYTES:
        raise ValueError("line too long in the control plane's answer")
    if not line:
        raise OSError("connection closed in the middle of the answer")
    return line


def _read_answer(reader: IO[bytes]) -> _Answer:
    """Read one HTTP/1.x answer; ``ValueError`` where it is not one."""
    while True:
        status_line = reader.readline(MAX_LINE_BYTES + 1)
        if not status_line:
            raise _ClosedBeforeAnswerError("connection closed before an answer")
        if len(status_line) > MAX_LINE_BYTES:
            raise ValueError("status line too long in the control plane's answer")
        version, _, rest = status_line.decode("latin-1").rstrip("\r\n").partition(" ")
        code, _, reason = rest.partition(" ")
        if not version.startswith("HTTP/1.") or len(code) != 3 or not code.isdigit():
            raise ValueError(f"not an HTTP answer: {status_line[:80]!r}")
        status = int(code)
        headers: dict[str, str] = {}
        for _ in range(MAX_HEADERS + 1):
            line = _line(reader)
            if line in (b"\r\n", b"\n"):
                break
            name, colon, value = line.decode("latin-1").partition(":")
            if not colon:
                raise ValueError(f"malformed header line: {line[:80]!r}")
            headers[name.strip().lower()] = value.strip()
        else:
            raise ValueError(f"more than {MAX_HEADERS} header lines")
        if 100 <= status < 200:
            continue  # an interim answer (we never ask for one); the real one follows
        break
    connection = headers.get("connection", "").lower()
    will_close = "close" in connection or (version == "HTTP/1.0" and "keep-alive" not in connection)
    if status in (204, 304):
        body = b""
    elif "chunked" in headers.get("transfer-encoding", "").lower():
        body = _read_chunked(reader)
    elif "content-length" in headers:
        length = int(headers["content-length"])
        if not 0 <= length <= MAX_BODY_BYTES:
            raise ValueError(f"Content-Length {length} outside 0..{MAX_BODY_BYTES}")
        body = reader.read(length)
        if len(body) != length:
            raise OSError("connection closed in the middle of the answer")
    else:
        body, will_close = reader.read(MAX_BODY_BYTES + 1), True  # ends with the connection
        if len(body) > MAX_BODY_BYTES:
            raise ValueError(f"answer body larger than {MAX_BODY_BYTES} bytes")
    return _Answer(status, reason, body, will_close)


def _read_chunked(reader: IO[bytes]) -> bytes:
    chunks = []
    total = 0
    while True:
        size = int(_line(reader).split(b";", 1)[0].strip(), 16)
        if size == 0:
            break
        total += size
        if total > MAX_BODY_BYTES:
            raise ValueError(f"answer body larger than {MAX_BODY_BYTES} bytes")
        chunk = reader.read(size)
        if len(chunk) != size:
            raise OSError("connection closed in the middle of the answer")
        chunks.append(chunk)
        _line(reader)  # the CRLF after the chunk
    for _ in range(MAX_HEADERS + 1):  # trailers, unused, up to the blank line
        if _line(reader) in (b"\r\n", b"\n"):
            return b"".join(chunks)
    raise ValueError(f"more than {MAX_HEADERS} trailer lines")


def _error_message(raw: bytes, reason: str) -> str:
    try:
        body = json.loads(raw or b"{}")
        return str(body.get("error", {}).get("message") or reason)
    except (ValueError, AttributeError):
        return reason
