"""The node label sync against a real kube-apiserver, patching as the worker's user.

The inventory is the real PostgreSQL of ``tests/conftest.py``; the worker gets only the
rights the chart's ClusterRole gives it (nodes get/list/watch/patch). Nodes are
cluster-scoped and the API server is shared by the tier, so every test names its Nodes
uniquely and asserts only on them.
"""

import logging
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from fastapi.testclient import TestClient
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from control_plane.access.models import Role
from control_plane.audit import service as audit
from control_plane.audit.models import AuditEventPublic
from control_plane.cluster import repository, service
from control_plane.cluster.models import SyncReport
from control_plane.cluster.tasks import LABEL_SYNC_ACTOR, SYNC_LABELS_TASK, register
from control_plane.core.db import DbConnection
from control_plane.core.kube import ClusterUnavailableError, api_client
from control_plane.core.settings import KubernetesSettings, Settings
from control_plane.inventory import zones
from control_plane.inventory.models import ZoneCreate
from tests.kube.cluster import Cluster, free_port
from tests.support import TEST_ACTOR, registration

pytestmark = pytest.mark.e2e

WORKER_ROLE = "sovereign-worker-label-sync"


@contextmanager
def cluster_role(
    cluster: Cluster, name: str, rules: list[client.V1PolicyRule], subject: client.RbacV1Subject
) -> Iterator[None]:
    """A ClusterRole of ``rules`` bound to ``subject`` for the block, made as the admin."""
    with api_client(KubernetesSettings(kubeconfig=cluster.kubeconfig("admin"))) as api:
        rbac = client.RbacAuthorizationV1Api(api)
        rbac.create_cluster_role(
            client.V1ClusterRole(metadata=client.V1ObjectMeta(name=name), rules=rules)
        )
        rbac.create_cluster_role_binding(
            client.V1ClusterRoleBinding(
                metadata=client.V1ObjectMeta(name=name),
                role_ref=client.V1RoleRef(
                    api_group="rbac.authorization.k8s.io", kind="ClusterRole", name=name
                ),
                subjects=[subject],
            )
        )
        try:
            yield
        finally:
            rbac.delete_cluster_role_binding(name)
            rbac.delete_cluster_role(name)


@pytest.fixture(scope="module")
def worker_rbac(cluster: Cluster) -> Iterator[None]:
    """The chart's worker ClusterRole for label sync, bound to the worker ServiceAccount."""
    rules = [
        client.V1PolicyRule(
            api_groups=[""], resources=["nodes"], verbs=["get", "list", "watch", "patch"]
        )
    ]
    worker = client.RbacV1Subject(
        kind="ServiceAccount", name="sovereign-worker", namespace="sovereign"
    )
    with cluster_role(cluster, WORKER_ROLE, rules, worker):
        yield


@pytest.fixture
def admin_core(cluster: Cluster) -> Iterator[client.CoreV1Api]:
    """The Kubernetes admin's client, to make Nodes and read them back.

    The Nodes a test made are deleted after it, so the tier's shared API server keeps none.
    """
    with api_client(KubernetesSettings(kubeconfig=cluster.kubeconfig("admin"))) as api:
        core = client.CoreV1Api(api)
        before = node_names(core)
        yield core
        for name in node_names(core) - before:
            core.delete_node(name)


def node_names(core: client.CoreV1Api) -> set[str]:
    return {
        item.metadata.name
        for item in core.list_node().items
        if item.metadata is not None and item.metadata.name
    }


@pytest.fixture
def worker_settings(cluster: Cluster, worker_rbac: None) -> KubernetesSettings:
    """How the worker reaches the API server: as its ServiceAccount's user."""
    return KubernetesSettings(kubeconfig=cluster.kubeconfig("worker"), timeout_seconds=5)


@pytest.fixture
def zone_tree(conn: DbConnection) -> None:
    """``jp`` with ``jp-east`` inside it."""
    zones.create_zone(conn, TEST_ACTOR, ZoneCreate(slug="jp", name="Japan", country="JP"))
    zones.create_zone(
        conn, TEST_ACTOR, ZoneCreate(slug="jp-east", name="Japan East", country="JP", parent="jp")
    )


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def make_kube_node(core: client.CoreV1Api, name: str, labels: dict[str, str]) -> None:
    core.create_node(client.V1Node(metadata=client.V1ObjectMeta(name=name, labels=labels)))


def labels_of(core: client.CoreV1Api, name: str) -> dict[str, str]:
    metadata = core.read_node(name).metadata
    assert metadata is not None
    return dict(metadata.labels or {})


def resource_version(core: client.CoreV1Api, name: str) -> str | None:
    metadata = core.read_node(name).metadata
    assert metadata is not None
    return metadata.resource_version


def register_node(client_: TestClient, admin: dict[str, str], hostname: str, **body: Any) -> str:
    gpu = f"GPU-{uuid.uuid4()}"
    response = client_.post(
        "/v1/agents/register",
        json=registration(hostname=hostname, gpu_uuids=(gpu,), **body),
        headers=admin,
    )
    assert response.status_code in (200, 201), response.text
    return str(response.json()["node_id"])


def sync(conn: DbConnection, settings: KubernetesSettings) -> SyncReport:
    with api_client(settings) as api:
        return service.sync_node_labels(
            conn, LABEL_SYNC_ACTOR, api, timeout_seconds=settings.timeout_seconds
        )


def synced_events(conn: DbConnection, name: str) -> list[AuditEventPublic]:
    """The audit events of the label sync's changes to Node ``name``, oldest first."""
    return audit.list_events(
        conn, object_type="kubernetes_node", object_id=name, action="kubernetes_node.labels_synced"
    ).items


def test_an_active_node_gets_its_labels_and_its_ancestor_zones(
    conn: DbConnection,
    client: TestClient,
    admin: dict[str, str],
    zone_tree: None,
    admin_core: client.CoreV1Api,
    worker_settings: KubernetesSettings,
) -> None:
    name = unique("gpu")
    node_id = register_node(client, admin, name, zone="jp-east", origin_country="US")
    make_kube_node(admin_core, name, {"kubernetes.io/hostname": name, "team": "ml"})

    report = sync(conn, worker_settings)

    labels = labels_of(admin_core, name)
    assert labels == {
        "kubernetes.io/hostname": name,
        "team": "ml",
        "sovereign.io/node-id": node_id,
        "sovereign.io/zone": "jp-east",
        "sovereign.io/country": "JP",
        "sovereign.io/origin-country": "US",
        "sovereign.io/provenance": "declared",
        "sovereign.io/zone.jp-east": "true",
        "sovereign.io/zone.jp": "true",
    }
    assert report.patched >= 1
    assert name not in report.unknown
    # The change is evidence: which Node, matched to which inventory node, each label.
    [event] = synced_events(conn, name)
    assert (event.actor_id, event.actor_name) == ("system:label-sync", "node label sync")
    assert event.after is not None
    assert event.after["node"] == name
    assert event.after["node_id"] == node_id
    assert {change["key"]: (change["old"], change["new"]) for change in event.after["changes"]} == {
        key: (None, value) for key, value in labels.items() if key.startswith("sovereign.io/")
    }


def test_stale_labels_of_ours_go_and_foreign_ones_stay(
    conn: DbConnection,
    client: TestClient,
    admin: dict[str, str],
    zone_tree: None,
    admin_core: client.CoreV1Api,
    worker_settings: KubernetesSettings,
) -> None:
    name = unique("gpu")
    register_node(client, admin, name, zone="jp")
    make_kube_node(
        admin_core,
        name,
        {
            "sovereign.io/zone": "de",
            "sovereign.io/zone.de": "true",
            "sovereign.io/leftover": "x",
            "example.com/sovereign.io": "kept",
            "team": "ml",
        },
    )

    sync(conn, worker_settings)

    labels = labels_of(admin_core, name)
    ours = {key for key in labels if key.startswith("sovereign.io/")}
    assert labels["sovereign.io/zone"] == "jp"
    assert "sovereign.io/zone.de" not in ours
    assert "sovereign.io/leftover" not in ours
    assert "sovereign.io/zone.jp-east" not in ours
    assert labels["example.com/sovereign.io"] == "kept"
    assert labels["team"] == "ml"


def test_a_node_the_inventory_lacks_is_reported_not_labelled(
    conn: DbConnection,
    zone_tree: None,
    admin_core: client.CoreV1Api,
    worker_settings: KubernetesSettings,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    name = unique("stranger")
    make_kube_node(admin_core, name, {"team": "ml", "sovereign.io/zone": "jp"})
    # Earlier tests in the same process may have configured logging (Celery's worker, say,
    # disables existing loggers); the warning must be seen whatever ran before.
    logger = logging.getLogger(service.__name__)
    monkeypatch.setattr(logger, "disabled", False)
    monkeypatch.setattr(logger, "propagate", True)
    caplog.set_level(logging.WARNING, logger=service.__name__)

    report = sync(conn, worker_settings)

    assert name in report.unknown
    assert report.unknown_count >= 1
    assert labels_of(admin_core, name) == {"team": "ml"}
    assert any(name in record.getMessage() for record in caplog.records)
    # The removal of the stranger's label is audited, matched to no inventory node.
    [event] = synced_events(conn, name)
    assert event.after == {
        "node": name,
        "node_id": None,
        "changes": [{"key": "sovereign.io/zone", "old": "jp", "new": None}],
    }


def test_the_latest_report_is_kept_for_admins_auditors_and_prometheus(
    conn: DbConnection,
    client: TestClient,
    make_token: Callable[[Role], str],
    zone_tree: None,
    admin_core: client.CoreV1Api,
    worker_settings: KubernetesSettings,
) -> None:
    auditor = {"Authorization": f"Bearer {make_token(Role.AUDITOR)}"}
    before = client.get("/v1/cluster/label-sync", headers=auditor)
    assert before.status_code == 200, before.text
    assert before.json()["last_run"] is None
    name = unique("stranger")
    make_kube_node(admin_core, name, {})

    report = sync(conn, worker_settings)

    answer = client.get("/v1/cluster/label-sync", headers=auditor)
    assert answer.status_code == 200, answer.text
    run = answer.json()["last_run"]
    assert name in run["unknown"]
    assert {key: run[key] for key in ("nodes_seen", "patched", "unchanged", "unknown_count")} == {
        "nodes_seen": report.nodes_seen,
        "patched": report.patched,
        "unchanged": report.unchanged,
        "unknown_count": report.unknown_count,
    }
    metrics = client.get("/metrics").text
    assert f"sovereign_kubernetes_unknown_nodes {float(report.unknown_count)}" in metrics

    # The next run's report replaces it: the Node is gone, so is the name.
    admin_core.delete_node(name)
    sync(conn, worker_settings)
    again = client.get("/v1/cluster/label-sync", headers=auditor).json()["last_run"]
    assert name not in again["unknown"]
    assert again["finished_at"] > run["finished_at"]


def test_a_node_not_placeable_loses_our_labels(
    conn: DbConnection,
    client: TestClient,
    admin: dict[str, str],
    zone_tree: None,
    admin_core: client.CoreV1Api,
    worker_settings: KubernetesSettings,
) -> None:
    planned = unique("planned")
    register_node(client, admin, planned)
    quarantined = unique("quarantined")
    quarantined_id = register_node(client, admin, quarantined, zone="jp")
    for name in (planned, quarantined):
        make_kube_node(admin_core, name, {"team": "ml"})
    sync(conn, worker_settings)
    assert "sovereign.io/node-id" in labels_of(admin_core, quarantined)

    changed = client.patch(
        f"/v1/nodes/{quarantined_id}", json={"status": "quarantined"}, headers=admin
    )
    assert changed.status_code == 200, changed.text
    sync(conn, worker_settings)

    assert labels_of(admin_core, planned) == {"team": "ml"}
    assert labels_of(admin_core, quarantined) == {"team": "ml"}


def test_a_second_run_sends_no_patch(
    conn: DbConnection,
    client: TestClient,
    admin: dict[str, str],
    zone_tree: None,
    admin_core: client.CoreV1Api,
    worker_settings: KubernetesSettings,
) -> None:
    name = unique("gpu")
    register_node(client, admin, name, zone="jp-east")
    make_kube_node(admin_core, name, {})
    sync(conn, worker_settings)
    version = resource_version(admin_core, name)

    again = sync(conn, worker_settings)

    assert again.patched == 0
    assert again.unchanged == again.nodes_seen
    assert resource_version(admin_core, name) == version
    assert len(synced_events(conn, name)) == 1  # the first run's; nothing changed since


@contextmanager
def patching_only(cluster: Cluster, user: str, nodes: list[str]) -> Iterator[None]:
    """``user`` may list every Node but patch only ``nodes`` (RBAC ``resourceNames``)."""
    rules = [
        client.V1PolicyRule(api_groups=[""], resources=["nodes"], verbs=["get", "list", "watch"]),
        client.V1PolicyRule(
            api_groups=[""], resources=["nodes"], verbs=["patch"], resource_names=nodes
        ),
    ]
    subject = client.RbacV1Subject(kind="User", name=user, api_group="rbac.authorization.k8s.io")
    with cluster_role(cluster, f"label-sync-{uuid.uuid4().hex[:8]}", rules, subject):
        yield


def test_a_run_broken_off_records_the_patches_it_made_and_no_report(
    conn: DbConnection,
    client: TestClient,
    admin: dict[str, str],
    zone_tree: None,
    admin_core: client.CoreV1Api,
    cluster: Cluster,
) -> None:
    # Nodes are listed in name order: these two before any other test's.
    first, second = unique("0a"), unique("0b")
    for name in (first, second):
        register_node(client, admin, name, zone="jp")
        make_kube_node(admin_core, name, {})
    settings = KubernetesSettings(kubeconfig=cluster.kubeconfig("bob"), timeout_seconds=5)

    with patching_only(cluster, "bob", [first]), pytest.raises(ApiException) as refused:
        sync(conn, settings)

    assert refused.value.status == 403
    assert labels_of(admin_core, first)["sovereign.io/zone"] == "jp"
    assert labels_of(admin_core, second) == {}
    # The patch that happened is evidence all the same; the one refused is not.
    [event] = synced_events(conn, first)
    assert event.after is not None
    assert event.after["node"] == first
    assert synced_events(conn, second) == []
    # A run that did not finish is no report of the cluster.
    assert repository.last_report(conn) is None


def down_kubeconfig(cluster: Cluster, directory: Path) -> Path:
    text = (
        cluster.kubeconfig("admin")
        .read_text()
        .replace(cluster.url, f"https://127.0.0.1:{free_port()}")
    )
    kubeconfig = directory / "kubeconfig"
    kubeconfig.write_text(text)
    return kubeconfig


def test_an_unreachable_api_server_is_cluster_unavailable(
    conn: DbConnection, cluster: Cluster, tmp_path: Path
) -> None:
    settings = KubernetesSettings(kubeconfig=down_kubeconfig(cluster, tmp_path), timeout_seconds=2)
    with pytest.raises(ClusterUnavailableError):
        sync(conn, settings)


def test_the_task_retries_when_the_api_server_is_down(
    settings: Settings, cluster: Cluster, tmp_path: Path
) -> None:
    down = settings.model_copy(
        update={
            "kubernetes": KubernetesSettings(
                kubeconfig=down_kubeconfig(cluster, tmp_path), timeout_seconds=2
            )
        }
    )
    app = Celery("label-sync-test")
    register(app, down)
    task = app.tasks[SYNC_LABELS_TASK]
    calls: list[BaseException | None] = []
    # Celery's retry re-enqueues the run; what it is asked to do is what we check.
    original = task.retry

    def recording_retry(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs.get("exc"))
        return original(*args, **kwargs)

    task.retry = recording_retry  # type: ignore[method-assign]
    result = task.apply()
    assert calls
    assert isinstance(calls[0], ClusterUnavailableError)
    assert isinstance(result.result, ClusterUnavailableError)


def test_beat_runs_the_sync_only_when_enabled(settings: Settings) -> None:
    off = Celery("off")
    register(off, settings)
    assert "sync-node-labels" not in (off.conf.beat_schedule or {})
    enabled = settings.model_copy(
        update={"kubernetes": KubernetesSettings(label_sync_enabled=True, label_sync_seconds=30)}
    )
    on = Celery("on")
    register(on, enabled)
    assert on.conf.beat_schedule["sync-node-labels"] == {
        "task": SYNC_LABELS_TASK,
        "schedule": 30,
    }


def test_the_agent_reported_kubernetes_name_matches_before_the_hostname(
    conn: DbConnection,
    client: TestClient,
    admin: dict[str, str],
    zone_tree: None,
    admin_core: client.CoreV1Api,
    worker_settings: KubernetesSettings,
) -> None:
    hostname = unique("host")
    kube_name = unique("k8s")
    node_id = register_node(client, admin, hostname, zone="jp", kubernetes_node_name=f"{kube_name}")
    # What an admin sees matching a Node by hand.
    shown = client.get(f"/v1/nodes/{node_id}", headers=admin).json()
    assert shown["kubernetes_node_name"] == kube_name
    make_kube_node(admin_core, kube_name, {})
    make_kube_node(admin_core, hostname, {})

    report = sync(conn, worker_settings)

    assert labels_of(admin_core, kube_name)["sovereign.io/node-id"] == node_id
    assert labels_of(admin_core, hostname) == {}
    assert hostname in report.unknown


def test_a_kubernetes_name_that_is_no_dns_subdomain_is_refused_naming_the_field(
    client: TestClient, admin: dict[str, str], zone_tree: None
) -> None:
    response = client.post(
        "/v1/agents/register",
        json=registration(hostname="gpu-x", kubernetes_node_name="Not_A_Node/Name"),
        headers=admin,
    )
    assert response.status_code == 422
    assert "kubernetes_node_name" in response.text
