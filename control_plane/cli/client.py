"""The CLI's HTTP client: server URL and token from flags, ``SOVCTL_*`` env, or a config file.

Precedence: ``--url``/``--token``/``--ca-bundle`` flags, then ``SOVCTL_URL``/
``SOVCTL_TOKEN``/``SOVCTL_CA_BUNDLE``, then the YAML file at ``SOVCTL_CONFIG`` (default
``~/.config/sovereign/sovctl.yaml``) with keys ``url``, ``token`` and ``ca_bundle``. The CA
bundle is the PEM file of CAs an ``https://`` control plane's certificate is verified
against (the chart's CA, say); unset, httpx's default trust store is used.
"""

import os
import ssl
from pathlib import Path
from typing import Any

import httpx
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from control_plane.core.errors import ConfigurationError, ServiceUnavailableError, SovereignError

DEFAULT_URL = "http://127.0.0.1:8080"
DEFAULT_CONFIG = Path("~/.config/sovereign/sovctl.yaml")


class ClientConfig(BaseModel):
    """Where the control plane is and which token to present."""

    model_config = ConfigDict(extra="forbid")

    url: str = DEFAULT_URL
    token: str | None = None
    ca_bundle: Path | None = None


def _verify(ca_bundle: Path | None) -> ssl.SSLContext | bool:
    """What httpx verifies the server with: the bundle's CAs only, or its default store."""
    if ca_bundle is None:
        return True
    try:
        return ssl.create_default_context(cafile=ca_bundle.expanduser())
    except OSError as exc:  # ssl.SSLError is one too: a file with no PEM certificate in it
        raise ConfigurationError(
            f"CA bundle {ca_bundle} (--ca-bundle, SOVCTL_CA_BUNDLE or ca_bundle): "
            f"{exc.strerror or exc}"
        ) from None


def load_client_config(
    url: str | None, token: str | None, ca_bundle: Path | None = None
) -> ClientConfig:
    """Merge flags, environment and config file, in that order of precedence."""
    path = Path(os.environ.get("SOVCTL_CONFIG", str(DEFAULT_CONFIG))).expanduser()
    from_file: dict[str, Any] = {}
    if path.is_file():
        try:
            from_file = yaml.safe_load(path.read_text()) or {}
            ClientConfig.model_validate(from_file)
        except (yaml.YAMLError, ValidationError) as exc:
            raise ConfigurationError(f"{path}: not a valid sovctl config ({exc})") from None
    merged = {
        "url": url or os.environ.get("SOVCTL_URL") or from_file.get("url") or DEFAULT_URL,
        "token": token or os.environ.get("SOVCTL_TOKEN") or from_file.get("token"),
        "ca_bundle": ca_bundle or os.environ.get("SOVCTL_CA_BUNDLE") or from_file.get("ca_bundle"),
    }
    return ClientConfig.model_validate(merged)


class RemoteError(SovereignError):
    """The control plane refused the request."""

    def __init__(self, status: int, body: dict[str, Any]):
        error = body.get("error", {}) if isinstance(body, dict) else {}
        super().__init__(
            error.get("message") or f"HTTP {status}", details=error.get("details") or {}
        )
        self.http_status = status
        self.remote_code = error.get("code", "error")


class ControlPlaneClient:
    """A small synchronous client for the ``/v1`` API."""

    def __init__(self, config: ClientConfig, transport: httpx.BaseTransport | None = None):
        headers = {"Authorization": f"Bearer {config.token}"} if config.token else {}
        self._http = httpx.Client(
            base_url=config.url,
            headers=headers,
            timeout=30,
            transport=transport,
            verify=_verify(config.ca_bundle),
        )
        self._url = config.url

    def __enter__(self) -> "ControlPlaneClient":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the underlying connections."""
        self._http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send a request; return the decoded JSON body, or raise ``RemoteError``.

        Query parameters that are ``None`` are left out (httpx would send them empty), so
        a command passes its options as they are, given or not.
        """
        if kwargs.get("params"):
            kwargs["params"] = {k: v for k, v in kwargs["params"].items() if v is not None}
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            if "CERTIFICATE_VERIFY_FAILED" in str(exc):
                raise ServiceUnavailableError(
                    f"cannot verify the control plane's certificate at {self._url} ({exc}); "
                    "point --ca-bundle or SOVCTL_CA_BUNDLE at the CA that signed it"
                ) from None
            raise ServiceUnavailableError(
                f"the control plane is not reachable at {self._url} ({exc}); start it with "
                "`make up` or set SOVCTL_URL"
            ) from None
        if response.status_code == 204:
            return None
        try:
            body = response.json()
        except ValueError:
            body = {"error": {"message": response.text[:200]}}
        if response.is_error:
            raise RemoteError(response.status_code, body)
        return body

    def download(self, path: str, destination: Path) -> httpx.Headers:
        """Stream ``path`` into ``destination`` (a file); the response's headers.

        Written a chunk at a time, so a large report never sits in memory; an error answer
        raises ``RemoteError`` and writes nothing.
        """
        try:
            with self._http.stream("GET", path) as response:
                if response.is_error:
                    response.read()
                    try:
                        body = response.json()
                    except ValueError:
                        body = {"error": {"message": response.text[:200]}}
                    raise RemoteError(response.status_code, body)
                with destination.open("wb") as file:
                    for chunk in response.iter_bytes():
                        file.write(chunk)
                return response.headers
        except httpx.TransportError as exc:
            raise ServiceUnavailableError(
                f"the control plane is not reachable at {self._url} ({exc})"
            ) from None


class _Target:
    """The ``--url``, ``--token`` and ``--ca-bundle`` given to ``sovctl`` (None: not given)."""

    url: str | None = None
    token: str | None = None
    ca_bundle: Path | None = None


def set_target(url: str | None, token: str | None, ca_bundle: Path | None = None) -> None:
    """Remember ``sovctl``'s top-level ``--url``, ``--token`` and ``--ca-bundle`` for ``api``."""
    _Target.url = url
    _Target.token = token
    _Target.ca_bundle = ca_bundle


def api_client() -> ControlPlaneClient:
    """A client for several calls on one connection (polling), configured as ``api`` is."""
    return ControlPlaneClient(load_client_config(_Target.url, _Target.token, _Target.ca_bundle))


def api(method: str, path: str, **kwargs: Any) -> Any:
    """Call the control-plane API once, as every ``sovctl`` API command does.

    The URL and token come from ``set_target``, else the environment or the config file.
    """
    with api_client() as client:
        return client.request(method, path, **kwargs)
