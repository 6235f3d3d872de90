"""Control-plane settings, read from ``SOVEREIGN_*`` environment variables.

Settings are built explicitly (``load_settings()``) by the process entry points, never at
import time, so tests and tools can build as many differently-configured apps as they need.
"""

import os
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal, Self
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from control_plane.core.errors import ConfigurationError
from control_plane.domain.countries import CountryCode

ENV_PREFIX = "SOVEREIGN_"
#: The node agent reads its own ``SOVEREIGN_AGENT_*`` variables; they are not ours to reject.
AGENT_ENV_PREFIX = "SOVEREIGN_AGENT_"
#: Secrets that ship in examples and compose files; refused outside development.
PLACEHOLDER_SECRETS = frozenset({"", "change-me", "changeme", "dev-insecure-secret", "secret"})
#: Token hashes are keyed with the secret; a short one is guessable.
MIN_PROD_SECRET_LENGTH = 32
#: A webhook signing key shorter than this could be guessed from signed bodies.
MIN_WEBHOOK_SECRET_LENGTH = 16


class Environment(StrEnum):
    """Where the control plane runs; ``prod`` turns on the refusals that protect real data."""

    DEV = "dev"
    PROD = "prod"


#: A violation webhook URL longer than this is refused (no real receiver needs more).
MAX_WEBHOOK_URL_LENGTH = 2048


def _webhook_url(value: str) -> str:
    """An absolute ``http`` or ``https`` URL with a host: nothing else is ever fetched.

    ``file:``, ``gopher:`` and the like would turn the worker into a reader of whatever it
    can reach; a URL without a host would be resolved somewhere nobody meant.
    """
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https"):
        raise ValueError("must be an http:// or https:// URL")
    if not parts.hostname:
        raise ValueError("must name a host")
    if len(value) > MAX_WEBHOOK_URL_LENGTH:
        raise ValueError(f"must be at most {MAX_WEBHOOK_URL_LENGTH} characters")
    return value


WebhookUrl = Annotated[str, AfterValidator(_webhook_url)]


class ApiSettings(BaseModel):
    """How ``sovctl serve`` listens."""

    model_config = {"extra": "forbid"}

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)


class AdmissionSettings(BaseModel):
    """The Kubernetes admission webhooks (``control_plane.admission``; docs/kubernetes.md).

    ``SOVEREIGN_ADMISSION__EXEMPT_NAMESPACES='["sovereign","kube-system"]'`` and the like:
    lists and maps are JSON.
    """

    model_config = {"extra": "forbid"}

    #: Where ``sovctl serve-webhooks`` listens: its own port, HTTPS only, apart from the
    #: API's, so only the kube-apiserver needs to reach it (the chart's NetworkPolicy).
    host: str = "0.0.0.0"  # noqa: S104 - a pod's listener; the NetworkPolicy narrows it
    port: int = Field(default=8443, ge=1, le=65535)
    #: The listener's certificate and key (PEM); unset: the API's own
    #: (``SOVEREIGN_TLS_CERT_FILE``/``_KEY_FILE``). One of the two pairs is required.
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    #: The CA that signs the kube-apiserver's client certificate. Set: a caller without
    #: a certificate from it fails the TLS handshake, and each decision records which
    #: certificate called. Unset: any caller that reaches the port is heard, and decisions
    #: record ``authentication: none`` (docs/kubernetes.md, "Who may call the webhooks").
    client_ca_file: Path | None = None
    #: With a client CA shared with other uses: the certificate names (subject common
    #: name or DNS name) allowed to call; any other is refused 403. Empty: any the CA signed.
    client_names: list[str] = Field(default_factory=list)
    #: Pods there are allowed without a decision: the platform's own namespace (where the
    #: chart installs Sovereign) and Kubernetes' system namespaces.
    exempt_namespaces: list[str] = Field(
        default_factory=lambda: ["sovereign", "kube-system", "kube-public", "kube-node-lease"]
    )
    #: Namespaces where a GPU pod that declares nothing (no ``sovereign.io/datasets``,
    #: ``models`` or ``output`` annotation) is allowed, with a warning, instead of denied.
    undeclared_allowed_namespaces: list[str] = Field(default_factory=list)
    #: Namespace to tenant slug, where they differ; otherwise a pod without a
    #: ``sovereign.io/tenant`` annotation runs for the tenant whose slug is its namespace.
    namespace_tenants: dict[str, str] = Field(default_factory=dict)
    #: How the mutating webhook writes the eligible nodes into a pod's affinity.
    #: ``node_ids``: ``sovereign.io/node-id In [...]``, exactly the nodes the engine judged
    #: (about 40 bytes a node in the pod object). ``zones``: where whole zones are
    #: eligible, their ``sovereign.io/zone.<slug>`` labels instead (a few hundred bytes),
    #: which a node joining such a zone after the decision also matches, unjudged, once
    #: the label sync labels it (docs/kubernetes.md, "By id or by zone").
    affinity: Literal["node_ids", "zones"] = "node_ids"
    #: The only user that may change ``sovereign.io/*`` labels on Nodes: the control
    #: plane's own ServiceAccount (the worker that syncs them).
    label_sync_user: str = "system:serviceaccount:sovereign:sovereign-worker"

    @model_validator(mode="after")
    def _tls_files_come_in_pairs(self) -> Self:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError(
                "SOVEREIGN_ADMISSION__TLS_CERT_FILE and SOVEREIGN_ADMISSION__TLS_KEY_FILE come"
                " together: set both (the listener's own pair) or neither (the API's pair)"
            )
        if self.client_names and self.client_ca_file is None:
            raise ValueError(
                "SOVEREIGN_ADMISSION__CLIENT_NAMES is set but SOVEREIGN_ADMISSION__CLIENT_CA_FILE"
                " is not: names are checked on client certificates, which only a CA asks for"
            )
        return self


class KubernetesSettings(BaseModel):
    """How the worker reaches the cluster's API server (``control_plane.core.kube``).

    Used by the tasks that change the cluster: node label sync and the pod sweep's
    evictions. Unset ``kubeconfig`` means the in-cluster configuration (the pod's
    ServiceAccount token and CA, as the Helm chart runs it); a kubeconfig file is for a
    worker outside the cluster.
    """

    model_config = {"extra": "forbid"}

    #: A kubeconfig file; unset: the in-cluster ServiceAccount configuration.
    kubeconfig: Path | None = None
    #: The kubeconfig context to use; unset: its ``current-context``.
    context: str | None = None
    #: How long one call to the API server may take, connecting and reading the answer.
    timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    #: Whether beat runs the node label sync (``cluster.tasks``); the worker then needs
    #: nodes get/list/patch (the chart's ``labelSync.enabled``).
    label_sync_enabled: bool = False
    #: How often beat runs the label sync, in seconds.
    label_sync_seconds: float = Field(default=60.0, ge=5, le=86_400)
    #: Whether beat runs the pod sweep (``compliance.eviction``), which evicts running pods
    #: that violate a ``revoke`` policy; the worker then needs pods get/list and
    #: pods/eviction create (the chart's ``evictions.enabled``). It also runs right after
    #: each compliance evaluation.
    pod_sweep_enabled: bool = False
    #: How often beat runs the pod sweep, in seconds.
    pod_sweep_seconds: float = Field(default=60.0, ge=5, le=86_400)


class AuditSettings(BaseModel):
    """How the audit chain's checkpoints are signed (``control_plane.audit.checkpoints``)."""

    model_config = {"extra": "forbid"}

    #: The Ed25519 private key that signs checkpoints (PEM, unencrypted PKCS#8: ``openssl
    #: genpkey -algorithm ed25519``); in Kubernetes the Secret the chart mounts. Required
    #: with ``SOVEREIGN_ENV=prod``; in dev, unset means a key generated under ``state_dir``.
    #: A different key here is a rotation, audited at the next checkpoint.
    signing_key_file: Path | None = None
    #: How often beat signs a checkpoint of the chain's head (skipped when it did not move).
    checkpoint_seconds: float = Field(default=300.0, ge=1, le=86_400)


class ReportSettings(BaseModel):
    """How evidence reports are built (``control_plane.reports``, docs/reports.md)."""

    model_config = {"extra": "forbid"}

    #: The countries whose residency zones are the company's own, for the sovereignty
    #: report's first line (ISO 3166-1 alpha-2). Empty: every zone counts as its own, and
    #: only capacity outside any zone does not.
    home_countries: list[CountryCode] = Field(default_factory=list)
    #: How often beat sends queued report jobs to the worker.
    dispatch_seconds: float = Field(default=2.0, ge=0.1, le=3600)
    #: How long a running job's builder may stay silent (no progress step) before the job
    #: is sent to the queue again, its worker presumed dead.
    lease_seconds: float = Field(default=120.0, ge=1, le=86_400)
    #: A pause after each build step: to watch the progress bar in a demo, or to kill a
    #: worker mid-report in a test. Leave it 0 in production.
    step_delay_seconds: float = Field(default=0.0, ge=0, le=60)


class Settings(BaseSettings):
    """Everything the API, the Celery worker and beat need to run.

    Nested values use a double underscore: ``SOVEREIGN_API__PORT=9000``.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        case_sensitive=False,
    )

    env: Environment = Environment.DEV
    database_url: str = "postgresql://postgres@127.0.0.1:5432/sovereign"
    redis_url: str = "redis://127.0.0.1:6379/0"
    secret_key: SecretStr = SecretStr("dev-insecure-secret")
    api: ApiSettings = ApiSettings()
    admission: AdmissionSettings = AdmissionSettings()
    kubernetes: KubernetesSettings = KubernetesSettings()
    audit: AuditSettings = AuditSettings()
    reports: ReportSettings = ReportSettings()
    db_pool_min_size: int = Field(default=1, ge=0)
    db_pool_max_size: int = Field(default=10, ge=1)
    #: How often agents are told to send heartbeats; three missed ones mark a node offline.
    heartbeat_interval_seconds: int = Field(default=10, ge=1, le=3600)
    #: How often the beat schedule runs the offline sweep.
    offline_sweep_seconds: float = Field(default=10.0, gt=0)
    #: How often beat runs the compliance evaluation; it re-evaluates running workloads
    #: only when something asked for it (a policy activation, a node change, drift).
    compliance_interval_seconds: float = Field(default=10.0, gt=0)
    #: Violating workloads kept, with their reasons, per compliance evaluation and what-if
    #: answer; the counts are always exact.
    compliance_sample_size: int = Field(default=100, ge=1, le=10_000)
    #: Days a handled compliance request is kept (readable by id) before an evaluation
    #: deletes it; the evaluation that handled it keeps its triggers. At most a century,
    #: so the cutoff stays a valid timestamp.
    compliance_request_retention_days: int = Field(default=7, ge=1, le=36_500)
    #: How often beat runs the metering roll-up, which carries running workloads and the
    #: fleet capacity forward into the usage rollups (ended workloads are metered as they
    #: end). A report is at most this much (plus the lag) behind for running workloads.
    metering_interval_seconds: float = Field(default=300.0, ge=5, le=86_400)
    #: How far behind now the roll-up stops, so a change whose transaction started before
    #: the roll-up but commits after it is still attributed to the right node state.
    metering_lag_seconds: float = Field(default=60.0, ge=0, le=3600)
    #: Deny a workload on classified data (its most sensitive dataset or model is above
    #: ``public``) that no active policy selects, instead of admitting it on the baseline
    #: alone: for sites where "no policy applies" must not read as "compliant". Admission,
    #: compliance evaluations and what-if all apply it, so they keep agreeing.
    default_deny_unselected: bool = False
    #: Where the compliance worker sends violations of policies with ``on_violation:
    #: notify`` or ``revoke`` (a signed POST); unset: they wait in the delivery log.
    violation_webhook_url: WebhookUrl | None = None
    #: The HMAC-SHA256 key that signs each webhook body; required with the URL.
    violation_webhook_secret: SecretStr | None = None
    #: How long one delivery attempt may take, connecting and reading the answer.
    violation_webhook_timeout_seconds: float = Field(default=5.0, gt=0, le=30)
    #: Attempts per delivery before it is marked failed; the gaps double from 2 s.
    violation_webhook_max_attempts: int = Field(default=8, ge=1, le=20)
    #: Failed authentications a client address may make per window before it is answered
    #: 429 (per API process), so random tokens cannot be tried at the server's speed.
    auth_failure_limit: int = Field(default=20, ge=1, le=1_000_000)
    auth_failure_window_seconds: float = Field(default=60.0, gt=0, le=86_400)
    #: Celery queue name, so several deployments (or test runs) can share one Redis.
    celery_queue: str = "sovereign"
    #: Local state of ``sovctl up``: beat's schedule file and the demo admin token.
    state_dir: Path = Path(".sovereign")
    #: The API's certificate (PEM; intermediates after it) and private key. With both set,
    #: ``sovctl serve`` (and ``up``) serve HTTPS only, TLS 1.2 or newer; with neither,
    #: plain HTTP. ``control_plane.core.tls`` checks the files before the server starts.
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    #: The passphrase of an encrypted key file; unset for a plain one.
    tls_key_password: SecretStr | None = None
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @model_validator(mode="after")
    def _refuse_placeholder_secret_in_prod(self) -> Self:
        secret = self.secret_key.get_secret_value()
        if self.env is Environment.PROD and (
            secret in PLACEHOLDER_SECRETS or len(secret) < MIN_PROD_SECRET_LENGTH
        ):
            raise ValueError(
                "SOVEREIGN_SECRET_KEY is a placeholder or shorter than "
                f"{MIN_PROD_SECRET_LENGTH} characters; set a random secret (e.g. "
                "`openssl rand -hex 32`) before running with SOVEREIGN_ENV=prod"
            )
        return self

    @model_validator(mode="after")
    def _webhook_needs_a_secret(self) -> Self:
        if self.violation_webhook_url is None:
            return self
        secret = self.violation_webhook_secret
        value = "" if secret is None else secret.get_secret_value()
        if len(value) < MIN_WEBHOOK_SECRET_LENGTH or (
            self.env is Environment.PROD and value in PLACEHOLDER_SECRETS
        ):
            raise ValueError(
                "SOVEREIGN_VIOLATION_WEBHOOK_URL is set, so SOVEREIGN_VIOLATION_WEBHOOK_SECRET"
                f" must be set too, at least {MIN_WEBHOOK_SECRET_LENGTH} characters: receivers"
                " check each body's signature with it"
            )
        return self

    @model_validator(mode="after")
    def _tls_files_come_in_pairs(self) -> Self:
        # A certificate without its key (or the reverse) is a half-done deployment: serving
        # plain HTTP instead would send every token in clear to a client that meant HTTPS.
        if self.tls_cert_file is not None and self.tls_key_file is None:
            raise ValueError(
                "SOVEREIGN_TLS_CERT_FILE is set but SOVEREIGN_TLS_KEY_FILE is not; set both "
                "(HTTPS) or neither (plain HTTP)"
            )
        if self.tls_key_file is not None and self.tls_cert_file is None:
            raise ValueError(
                "SOVEREIGN_TLS_KEY_FILE is set but SOVEREIGN_TLS_CERT_FILE is not; set both "
                "(HTTPS) or neither (plain HTTP)"
            )
        if self.tls_key_password is not None and self.tls_key_file is None:
            raise ValueError("SOVEREIGN_TLS_KEY_PASSWORD is set but SOVEREIGN_TLS_KEY_FILE is not")
        return self

    @model_validator(mode="after")
    def _pool_bounds(self) -> Self:
        if self.db_pool_min_size > self.db_pool_max_size:
            raise ValueError("SOVEREIGN_DB_POOL_MIN_SIZE is larger than SOVEREIGN_DB_POOL_MAX_SIZE")
        return self


def _unknown_environment_keys(environ: dict[str, str]) -> list[str]:
    """Return ``SOVEREIGN_*`` variables that match no setting, so a typo fails loudly."""
    known = {name.upper() for name in Settings.model_fields}
    unknown = []
    for key in environ:
        upper = key.upper()
        if not upper.startswith(ENV_PREFIX) or upper.startswith(AGENT_ENV_PREFIX):
            continue
        field = upper.removeprefix(ENV_PREFIX).split("__", 1)[0]
        if field not in known:
            unknown.append(key)
    return sorted(unknown)


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment plus explicit overrides.

    Raises ``ConfigurationError`` naming the offending variable instead of a pydantic
    traceback, because this runs at process start where a clear sentence matters most.
    """
    unknown = _unknown_environment_keys(dict(os.environ))
    if unknown:
        raise ConfigurationError(
            f"unknown setting(s) {', '.join(unknown)}; see docs/configuration.md",
            details={"unknown": unknown},
        )
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = [
            (f"{ENV_PREFIX}{'__'.join(str(p) for p in err['loc']).upper()}: " if err["loc"] else "")
            + err["msg"].removeprefix("Value error, ")
            for err in exc.errors()
        ]
        raise ConfigurationError("; ".join(problems), details={"errors": problems}) from None
