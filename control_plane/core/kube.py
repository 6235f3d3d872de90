"""The one way the control plane reaches a Kubernetes API server.

Node label sync and evictions change the cluster through the official client; both get
their client here, built from ``KubernetesSettings`` when a task runs (never at import
time): the in-cluster ServiceAccount configuration by default, a kubeconfig file when
``SOVEREIGN_KUBERNETES__KUBECONFIG`` names one. Failures to reach the API server become
``ClusterUnavailableError`` at this boundary, so callers handle one error of ours rather
than urllib3's and the client's own.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from control_plane.core.errors import ConfigurationError, ServiceUnavailableError
from control_plane.core.settings import KubernetesSettings

if TYPE_CHECKING:
    from kubernetes.client import ApiClient


class ClusterUnavailableError(ServiceUnavailableError):
    """The Kubernetes API server cannot be reached or did not answer."""

    code = "cluster_unavailable"


def api_client(settings: KubernetesSettings) -> "ApiClient":
    """A client for the configured cluster; the caller closes it (``with`` works)."""
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    configuration = client.Configuration()
    try:
        if settings.kubeconfig is None:
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        else:
            config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=str(settings.kubeconfig),
                context=settings.context,
                client_configuration=configuration,
                persist_config=False,
            )
    except (ConfigException, OSError) as exc:
        where = (
            "the in-cluster configuration (no SOVEREIGN_KUBERNETES__KUBECONFIG set)"
            if settings.kubeconfig is None
            else f"SOVEREIGN_KUBERNETES__KUBECONFIG={settings.kubeconfig}"
        )
        raise ConfigurationError(f"cannot load {where}: {exc}") from None
    # Connection errors are retried by the caller's task (with backoff), not inside a call.
    configuration.retries = 0
    return client.ApiClient(configuration)


@contextmanager
def reaching_cluster() -> Iterator[None]:
    """Turn "the API server is down or slow" into ``ClusterUnavailableError``.

    An answer with a status (404, 409, 422, 429) is the API server speaking: it passes
    through as the client's ``ApiException`` for the caller to read, except 5xx.
    """
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    try:
        yield
    except HTTPError as exc:
        raise ClusterUnavailableError(f"the Kubernetes API server is unreachable: {exc}") from exc
    except ApiException as exc:
        if exc.status is not None and exc.status >= 500:
            raise ClusterUnavailableError(
                f"the Kubernetes API server answered {exc.status} {exc.reason}"
            ) from exc
        raise
