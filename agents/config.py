"""Agent configuration: versioned YAML, overridden by ``SOVEREIGN_AGENT_*``, then by flags.

The same precedence as NVIDIA's GPU Feature Discovery: command-line flag > environment >
file. The file is versioned (``version: v1``) so later releases can change its shape
without misreading an old one. Unknown keys are errors, so a typo fails at start.
"""

import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from agents.backends.selection import BackendKind
from agents.metrics import DEFAULT_METRICS_PORT
from agents.protocol import DeclaredProvenance, Inventory, NodeRegister

DEFAULT_CONFIG_PATH = Path("/etc/sovereign/agent.yaml")
DEFAULT_STATE_DIR = Path("/var/lib/sovereign-agent")
ENV_PREFIX = "SOVEREIGN_AGENT_"
SUPPORTED_VERSIONS = ("v1",)
COMPONENT_CLASSES = ("gpu", "cpu", "board", "nic")
BACKENDS = tuple(BackendKind)


class AgentConfigError(Exception):
    """The agent's configuration is invalid; the message names the key."""


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """Everything the agent needs to run, after file, environment and flags are merged."""

    control_plane_url: str | None = None
    ca_bundle: Path | None = None
    bootstrap_token: str | None = None
    sweep_interval_seconds: float = 10.0
    backend: str = "auto"
    nvidia_smi_xml: Path | None = None
    replay: Path | None = None
    state_dir: Path = DEFAULT_STATE_DIR
    metrics_host: str = "0.0.0.0"  # noqa: S104 - Prometheus scrapes the node from outside
    metrics_port: int = DEFAULT_METRICS_PORT
    spool_max_entries: int = 8640  # a day of 10 s heartbeats
    backoff_max_seconds: float = 300.0
    # Declared placement and provenance, sent at registration.
    zone: str | None = None
    site: str | None = None
    asset_tag: str | None = None
    origin_country: str | None = None
    component_origins: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    #: The Kubernetes Node this server is, for the control plane's node label sync.
    kubernetes_node_name: str | None = None

    def registration(self, inventory: Inventory) -> NodeRegister:
        """The registration of ``inventory`` with the zone, site, labels and provenance declared.

        An empty origin country or asset tag (an unset environment variable, say) is no
        declaration.
        """
        return NodeRegister(
            inventory=inventory,
            zone=self.zone,
            site=self.site,
            labels=dict(self.labels),
            provenance=DeclaredProvenance(
                origin_country=self.origin_country or None,
                component_origins=dict(self.component_origins),
                asset_tag=self.asset_tag or None,
            ),
            kubernetes_node_name=self.kubernetes_node_name or None,
        )


_FILE_KEYS = {
    "control_plane": {
        "url": "control_plane_url",
        "ca_bundle": "ca_bundle",
        "bootstrap_token": "bootstrap_token",
    },
    "metrics": {"host": "metrics_host", "port": "metrics_port"},
    "spool": {"max_entries": "spool_max_entries"},
    "declared": {
        "zone": "zone",
        "site": "site",
        "asset_tag": "asset_tag",
        "origin_country": "origin_country",
        "component_origins": "component_origins",
    },
}
_TOP_KEYS = {
    "sweep_interval_seconds",
    "backend",
    "nvidia_smi_xml",
    "replay",
    "state_dir",
    "labels",
    "backoff_max_seconds",
    "kubernetes_node_name",
}
_FIELD_NAMES = frozenset(f.name for f in fields(AgentConfig))


def _pairs(text: str, name: str) -> dict[str, str]:
    """Parse ``k=v,k2=v2`` (environment and flags carry maps this way)."""
    result = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise AgentConfigError(f"{name}: expected key=value pairs, got {item!r}")
        result[key.strip()] = value.strip()
    return result


_PATHS = {"ca_bundle", "nvidia_smi_xml", "replay", "state_dir"}
_FLOATS = {"sweep_interval_seconds", "backoff_max_seconds"}
_INTS = {"metrics_port", "spool_max_entries"}
_MAPS = {"component_origins", "labels"}


def _coerce(name: str, value: Any) -> Any:
    """Convert a raw value to the field's type, naming the field when it does not fit."""
    if value is None:
        return None
    try:
        if name in _MAPS:
            mapping = _pairs(value, name) if isinstance(value, str) else dict(value)
            return {str(k): str(v) for k, v in mapping.items()}
        if name in _PATHS:
            return Path(str(value))
        if name in _FLOATS:
            return float(value)
        if name in _INTS:
            return int(value)
    except (TypeError, ValueError) as exc:
        raise AgentConfigError(f"{name}: {value!r} is not valid ({exc})") from None
    return str(value)


def _from_file(path: Path) -> dict[str, Any]:
    try:
        document = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise AgentConfigError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(document, dict):
        raise AgentConfigError(f"{path}: expected a mapping at the top level")
    version = document.pop("version", None)
    if version not in SUPPORTED_VERSIONS:
        raise AgentConfigError(
            f"{path}: version must be one of {', '.join(SUPPORTED_VERSIONS)} (got {version!r})"
        )
    values: dict[str, Any] = {}
    for key, value in document.items():
        if key in _FILE_KEYS:
            if not isinstance(value, dict):
                raise AgentConfigError(f"{path}: {key} must be a mapping")
            for sub_key, sub_value in value.items():
                if sub_key not in _FILE_KEYS[key]:
                    raise AgentConfigError(f"{path}: unknown key {key}.{sub_key}")
                values[_FILE_KEYS[key][sub_key]] = sub_value
        elif key in _TOP_KEYS:
            values[key] = value
        else:
            raise AgentConfigError(f"{path}: unknown key {key}")
    return values


def _from_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key, value in environ.items():
        if not key.startswith(ENV_PREFIX):
            continue
        name = key.removeprefix(ENV_PREFIX).lower()
        if name == "config":
            continue
        if name not in _FIELD_NAMES:
            raise AgentConfigError(f"unknown setting {key}")
        values[name] = value
    return values


def _check_ca_bundle(path: Path) -> None:
    """Refuse a CA bundle that is missing or holds no PEM certificate, at start.

    Loaded the way the client loads it: otherwise a bundle that is not PEM would surface
    as an OpenSSL error at the first connection, or as every heartbeat failing.
    """
    if not path.is_file():
        raise AgentConfigError(f"control_plane.ca_bundle: no such file {path}")
    try:
        ssl.create_default_context(cafile=path)
    except ssl.SSLError as exc:
        raise AgentConfigError(
            f"control_plane.ca_bundle: {path} holds no PEM certificate ({exc.reason or exc})"
        ) from None
    except OSError as exc:
        raise AgentConfigError(
            f"control_plane.ca_bundle: cannot read {path} ({exc.strerror or exc})"
        ) from None


def _validate(config: AgentConfig) -> AgentConfig:
    if config.sweep_interval_seconds <= 0:
        raise AgentConfigError("sweep_interval_seconds must be greater than 0")
    if not 0 < config.metrics_port < 65536:
        raise AgentConfigError("metrics_port must be between 1 and 65535")
    if config.spool_max_entries < 1:
        raise AgentConfigError("spool_max_entries must be at least 1")
    if config.backend not in BACKENDS:
        raise AgentConfigError(f"backend: {config.backend!r} is not one of {', '.join(BACKENDS)}")
    url = config.control_plane_url
    if url is not None and not url.startswith(("http://", "https://")):
        raise AgentConfigError(f"control_plane.url: {url!r} must start with http:// or https://")
    if config.ca_bundle is not None:
        _check_ca_bundle(config.ca_bundle)
    unknown = set(config.component_origins) - set(COMPONENT_CLASSES)
    if unknown:
        raise AgentConfigError(
            f"component_origins: unknown class {sorted(unknown)[0]!r} "
            f"(use {', '.join(COMPONENT_CLASSES)})"
        )
    return config


def load_config(
    path: Path | None = None,
    environ: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> AgentConfig:
    """Merge the YAML file (if present), the environment and flags, in rising precedence.

    ``path`` defaults to ``SOVEREIGN_AGENT_CONFIG`` or /etc/sovereign/agent.yaml; a
    missing default file is fine, a missing file the user named is an error.
    """
    env = dict(os.environ if environ is None else environ)
    named = path or (Path(env[f"{ENV_PREFIX}CONFIG"]) if f"{ENV_PREFIX}CONFIG" in env else None)
    file_path = named or DEFAULT_CONFIG_PATH
    raw: dict[str, Any] = {}
    if file_path.is_file():
        raw.update(_from_file(file_path))
    elif named is not None:
        raise AgentConfigError(f"{file_path}: no such config file")
    raw.update(_from_environment(env))
    raw.update({k: v for k, v in (flags or {}).items() if v is not None})
    values = {name: _coerce(name, value) for name, value in raw.items()}
    return _validate(replace(AgentConfig(), **values))
