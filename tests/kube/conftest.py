"""The e2e tier against a real kube-apiserver (``tests/kube/cluster.py``).

The binary is built once into a cache outside the checkout (``make kube-apiserver``; the
first session fixture does the same when it is missing). Where it cannot be built (no root,
no apt-get), every test here is skipped with the build script's one-line reason and the rest
of the suite runs.
"""

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kube.cluster import Cluster, build, start_cluster


@pytest.fixture(scope="session")
def kube_apiserver_binary() -> Path:
    """The built kube-apiserver, or a skip saying why there is none."""
    binary, line = build()
    if binary is None:
        pytest.skip(f"Kubernetes e2e tier skipped: {line}")
    return binary


@pytest.fixture(scope="session")
def cluster(
    kube_apiserver_binary: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """One API server (and etcd) for the whole tier; tests use their own namespaces."""
    running = start_cluster(kube_apiserver_binary, tmp_path_factory.mktemp("kube"))
    try:
        yield running
    finally:
        running.stop()
