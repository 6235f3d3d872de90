"""The agent's HTTP client for the control plane: register and heartbeat, nothing else.

Standard library only (urllib), so the agent installs with almost no dependencies. Errors
are split by what the agent should do next: retry later (unreachable), register again
(credential rejected), or give up on this request (rejected).
"""

import json
import ssl
import urllib.error
import urllib.request
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
    """JSON over HTTP(S) to the control plane's ``/v1`` agent endpoints."""

    def __init__(self, base_url: str, *, ca_bundle: Path | None = None, timeout: float = 10.0):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._context = ssl.create_default_context(cafile=str(ca_bundle) if ca_bundle else None)

    def _post(self, path: str, token: str, body: dict[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(  # noqa: S310 - the URL is the operator's config
            self.base_url + path,
            data=json.dumps(body).encode(),
            method="POST",
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(  # noqa: S310
                request, timeout=self.timeout, context=self._context
            ) as response:
                answer: dict[str, Any] = json.loads(response.read() or b"{}")
                return answer
        except urllib.error.HTTPError as exc:
            message = _error_message(exc)
            if exc.code == 401:
                raise CredentialRejectedError(message) from None
            if exc.code >= 500 or exc.code == 429:
                raise ControlPlaneUnreachableError(f"HTTP {exc.code}: {message}") from None
            raise RequestRejectedError(exc.code, message) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError, ValueError) as exc:
            raise ControlPlaneUnreachableError(str(exc)) from None

    def register(self, bootstrap_token: str, body: dict[str, Any]) -> dict[str, Any]:
        """Register this node; returns ``node_id``, its credential and the interval."""
        return self._post("/v1/agents/register", bootstrap_token, body)

    def heartbeat(self, node_id: str, token: str, body: dict[str, Any]) -> dict[str, Any]:
        """Send one heartbeat; the answer says whether it was new or a duplicate."""
        return self._post(f"/v1/nodes/{node_id}/heartbeat", token, body)


def _error_message(exc: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(exc.read() or b"{}")
        return str(body.get("error", {}).get("message") or exc.reason)
    except (ValueError, AttributeError, OSError):
        return str(exc.reason)
