"""The agent's HTTP client for the control plane: register and heartbeat, nothing else.

Standard library only (http.client), so the agent installs with almost no dependencies. Errors
are split by what the agent should do next: retry later (unreachable), register again
(credential rejected), or give up on this request (rejected).
"""

import http.client
import json
import ssl
import urllib.parse
from pathlib import Path
from typing import Any


class ControlPlaneUnreachableError(Exception):
    """The control plane did not answer, or answered 5xx: try again later."""


class CredentialRejectedError(Exception):
    """401: the node credential (or bootstrap token) is unknown or revoked."""


class RequestRejectedError(Exception):
    """A 4xx other than 401: retrying the same request will not help."""

    def __init__(self, status: int, message: str):
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


class ControlPlaneClient:
    """JSON over HTTP(S) to the control plane's ``/v1`` agent endpoints.

    One persistent connection is reused across heartbeats (HTTP keep-alive): opening a
    TCP (and TLS) connection every sweep would cost more than everything else the agent
    does. A broken connection is dropped and reopened on the next request.
    """

    def __init__(self, base_url: str, *, ca_bundle: Path | None = None, timeout: float = 10.0):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        parts = urllib.parse.urlsplit(self.base_url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or "localhost"
        self._port = parts.port
        self._prefix = parts.path
        self._context = (
            ssl.create_default_context(cafile=str(ca_bundle) if ca_bundle else None)
            if self._https
            else None
        )
        self._connection: http.client.HTTPConnection | None = None

    def _connect(self) -> http.client.HTTPConnection:
        if self._connection is None:
            if self._https:
                self._connection = http.client.HTTPSConnection(
                    self._host, self._port, timeout=self.timeout, context=self._context
                )
            else:
                self._connection = http.client.HTTPConnection(
                    self._host, self._port, timeout=self.timeout
                )
        return self._connection

    def close(self) -> None:
        """Close the persistent connection (it reopens on the next request)."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _post(self, path: str, token: str, body: dict[str, Any]) -> dict[str, Any]:
        payload = json.dumps(body, separators=(",", ":")).encode()
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        try:
            connection = self._connect()
            connection.request("POST", self._prefix + path, body=payload, headers=headers)
            response = connection.getresponse()
            status, raw = response.status, response.read()
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise ControlPlaneUnreachableError(str(exc) or type(exc).__name__) from None
        if status >= 400:
            message = _error_message(raw, response.reason)
            if status == 401:
                raise CredentialRejectedError(message)
            if status >= 500 or status == 429:
                raise ControlPlaneUnreachableError(f"HTTP {status}: {message}")
            raise RequestRejectedError(status, message)
        try:
            answer: dict[str, Any] = json.loads(raw or b"{}")
        except ValueError as exc:
            raise ControlPlaneUnreachableError(f"not JSON from the control plane: {exc}") from None
        return answer

    def register(self, bootstrap_token: str, body: dict[str, Any]) -> dict[str, Any]:
        """Register this node; returns ``node_id``, its credential and the interval."""
        return self._post("/v1/agents/register", bootstrap_token, body)

    def heartbeat(self, node_id: str, token: str, body: dict[str, Any]) -> dict[str, Any]:
        """Send one heartbeat; the answer says whether it was new or a duplicate."""
        return self._post(f"/v1/nodes/{node_id}/heartbeat", token, body)


def _error_message(raw: bytes, reason: str) -> str:
    try:
        body = json.loads(raw or b"{}")
        return str(body.get("error", {}).get("message") or reason)
    except (ValueError, AttributeError):
        return reason
