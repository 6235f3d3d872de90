"""``control_plane.core.kube`` against a real API server: config loading and its errors."""

from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from control_plane.core.errors import ConfigurationError
from control_plane.core.kube import ClusterUnavailableError, api_client, reaching_cluster
from control_plane.core.settings import KubernetesSettings
from tests.kube.cluster import WORKER_USER, Cluster, free_port

pytestmark = pytest.mark.e2e


def test_a_kubeconfig_reaches_the_api_server_as_its_user(cluster: Cluster) -> None:
    settings = KubernetesSettings(kubeconfig=cluster.kubeconfig("worker"))
    # Without RBAC the worker may list nothing: the API server knows who it is (403 names
    # the user), which is what the kubeconfig must give.
    with api_client(settings) as api, reaching_cluster(), pytest.raises(ApiException) as refused:
        client.CoreV1Api(api).list_node()
    assert refused.value.status == 403
    assert WORKER_USER in str(refused.value.body)


def test_an_unreachable_api_server_is_one_error_of_ours(cluster: Cluster, tmp_path: Path) -> None:
    text = (
        cluster.kubeconfig("admin")
        .read_text()
        .replace(cluster.url, f"https://127.0.0.1:{free_port()}")
    )
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(text)
    with (
        api_client(KubernetesSettings(kubeconfig=kubeconfig)) as api,
        pytest.raises(ClusterUnavailableError, match="unreachable"),
        reaching_cluster(),
    ):
        client.CoreV1Api(api).list_node(_request_timeout=2)


def test_a_missing_kubeconfig_names_the_setting(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(ConfigurationError, match="SOVEREIGN_KUBERNETES__KUBECONFIG"):
        api_client(KubernetesSettings(kubeconfig=missing))


def test_outside_a_cluster_the_in_cluster_config_is_refused_clearly() -> None:
    with pytest.raises(ConfigurationError, match="in-cluster"):
        api_client(KubernetesSettings())
