# mypy: disable-error-code="union-attr,index,arg-type,no-untyped-call"
# (the client's models make every field optional and take plain dicts at run time)
"""The pod sweep against a real kube-apiserver, evicting as the worker's ServiceAccount.

Each pod is decided by the control plane's real mutating webhook route (``/k8s/mutate``,
posted the AdmissionReview the API server would send, so the decision is stored and the
pod carries its ``sovereign.io/decision-id``), then created through the API server as the
admin with the webhook's patch applied and ``spec.nodeName`` set, as kube-scheduler would
bind it. The tier has no scheduler, kubelet or controller manager: an evicted pod bound to
a node is left terminating (a ``deletionTimestamp``) for a kubelet that never comes, and a
PodDisruptionBudget's ``disruptionsAllowed`` stays 0, so every eviction of a pod it covers
is refused with 429, which is the refusal a real cluster gives while the budget is spent.

The worker has only the rights the chart's ClusterRole gives it with ``evictions.enabled``
(rendered with the Helm SDK): pods get/list and pods/eviction create.
"""

import base64
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonpatch
import pytest
import yaml
from celery import Celery
from fastapi.testclient import TestClient
from kubernetes import client as kube
from kubernetes import dynamic
from kubernetes.client.exceptions import ApiException

from control_plane.admission import pods as admission_pods
from control_plane.app import create_webhook_app
from control_plane.compliance import eviction, repository
from control_plane.compliance.pods import PodSweepReport
from control_plane.compliance.tasks import (
    EVALUATE_TASK,
    POD_SWEEP_ACTOR,
    SWEEP_PODS_TASK,
    register,
)
from control_plane.core.db import DbConnection, connect
from control_plane.core.kube import api_client
from control_plane.core.settings import KubernetesSettings, Settings
from tests.kube.cluster import Cluster
from tests.support import registration

pytestmark = pytest.mark.e2e

CHART_DIR = Path(__file__).resolve().parents[2] / "helm" / "sovereign"
#: The chart's role under a name of this module's, so other modules' roles are left alone.
ROLE = "sovereign-worker-evictions"


@pytest.fixture
def settings(settings: Settings, cluster: Cluster) -> Settings:
    """The pod sweep on, as the worker (``/k8s/mutate`` of ``webhooks`` decides the pods).

    As the chart sets them with ``evictions.enabled``; the worker reaches the API server
    as its ServiceAccount's user.
    """
    return settings.model_copy(
        update={
            "kubernetes": KubernetesSettings(
                kubeconfig=cluster.kubeconfig("worker"), timeout_seconds=5, pod_sweep_enabled=True
            ),
        }
    )


@pytest.fixture
def webhooks(settings: Settings) -> Iterator[TestClient]:
    """The webhook listener's app, whose real ``/k8s/mutate`` decides the test pods."""
    with TestClient(create_webhook_app(settings)) as client:
        yield client


@pytest.fixture(scope="module")
def worker_rbac(cluster: Cluster) -> Iterator[None]:
    """The chart's worker ClusterRole and binding with evictions on (label sync off)."""
    values = {"evictions": {"enabled": True}, "labelSync": {"enabled": False}}
    with helm.Chart.load(CHART_DIR) as chart:
        manifests = chart.render(values, name="sovereign", namespace="sovereign", is_install=True)
    documents = [
        document
        for path, text in manifests.items()
        if not path.endswith("NOTES.txt")
        for document in yaml.safe_load_all(text)
        if isinstance(document, dict)
    ]
    [role] = [d for d in documents if d["kind"] == "ClusterRole"]
    [binding] = [d for d in documents if d["kind"] == "ClusterRoleBinding"]
    role["metadata"] = {"name": ROLE}
    binding["metadata"] = {"name": ROLE}
    binding["roleRef"]["name"] = ROLE
    with api_client(KubernetesSettings(kubeconfig=cluster.kubeconfig("admin"))) as api:
        rbac = kube.RbacAuthorizationV1Api(api)
        rbac.create_cluster_role(role)
        rbac.create_cluster_role_binding(binding)
        try:
            yield
        finally:
            rbac.delete_cluster_role_binding(ROLE)
            rbac.delete_cluster_role(ROLE)


@pytest.fixture
def worker_settings(cluster: Cluster, worker_rbac: None) -> KubernetesSettings:
    """How the worker reaches the API server: as its ServiceAccount's user."""
    return KubernetesSettings(kubeconfig=cluster.kubeconfig("worker"), timeout_seconds=5)


@pytest.fixture
def admin_api(cluster: Cluster) -> Iterator[kube.ApiClient]:
    with api_client(KubernetesSettings(kubeconfig=cluster.kubeconfig("admin"))) as api:
        yield api


@pytest.fixture
def namespace(admin_api: kube.ApiClient) -> Iterator[str]:
    """A namespace of the test's own; its pods are removed at once after it (no kubelet)."""
    core = kube.CoreV1Api(admin_api)
    name = f"sweep-{uuid.uuid4().hex[:8]}"
    core.create_namespace(kube.V1Namespace(metadata=kube.V1ObjectMeta(name=name)))
    try:
        yield name
    finally:
        for pod in core.list_namespaced_pod(name).items:
            core.delete_namespaced_pod(pod.metadata.name, name, grace_period_seconds=0)
        core.delete_namespace(name)


@pytest.fixture
def fleet(client: TestClient, admin: dict[str, str], admin_api: kube.ApiClient) -> dict[str, str]:
    """A Kubernetes Node in jp and one in tw, each an inventory node; tenants research, lab.

    Returns the Kubernetes node names by zone. No policy is active yet: every pod is
    admitted, and a policy activated later makes the running ones violate.
    """
    for path, body in (
        ("/v1/zones", {"slug": "jp", "name": "Japan", "country": "JP"}),
        ("/v1/zones", {"slug": "tw", "name": "Taiwan", "country": "TW"}),
        ("/v1/tenants", {"slug": "research", "name": "Research"}),
        ("/v1/tenants", {"slug": "lab", "name": "Lab"}),
    ):
        response = client.post(path, json=body, headers=admin)
        assert response.status_code == 201, response.text
    core = kube.CoreV1Api(admin_api)
    names: dict[str, str] = {}
    for zone in ("jp", "tw"):
        name = f"gpu-{zone}-{uuid.uuid4().hex[:8]}"
        gpus = tuple(f"GPU-{name}-{i}" for i in range(4))
        body = registration(hostname=name, zone=zone, gpu_uuids=gpus)
        response = client.post("/v1/agents/register", json=body, headers=admin)
        assert response.status_code == 201, response.text
        core.create_node(kube.V1Node(metadata=kube.V1ObjectMeta(name=name)))
        names[zone] = name
    return names


def activate(client: TestClient, admin: dict[str, str], *documents: dict[str, Any]) -> None:
    for document in documents:
        response = client.post("/v1/policies", json=document, headers=admin)
        assert response.status_code == 201, response.text
    response = client.post("/v1/policy-sets/activate", json={}, headers=admin)
    assert response.status_code in (200, 201), response.text


def leave_jp(tenant: str, on_violation: str) -> dict[str, Any]:
    """A deny policy that takes the tenant's compute out of jp."""
    return {
        "name": f"{tenant}-to-tw",
        "selector": {"tenants": [tenant]},
        "requirements": {"compute_zones": ["tw"]},
        "on_violation": on_violation,
    }


def pod_object(namespace: str, name: str, tenant: str, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels,
            "annotations": {
                admission_pods.TENANT: tenant,
                admission_pods.DATASETS: "",
            },
        },
        "spec": {
            "containers": [
                {
                    "name": "main",
                    "image": "registry.local/train:1",
                    "resources": {"limits": {"nvidia.com/gpu": "1"}},
                }
            ],
            "restartPolicy": "Never",
        },
    }


def admitted(client: TestClient, obj: dict[str, Any]) -> dict[str, Any]:
    """The pod as the mutating webhook's admit leaves it (its decision stored)."""
    kind = {"group": "", "version": "v1", "kind": "Pod"}
    resource = {"group": "", "version": "v1", "resource": "pods"}
    review = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": kind,
            "resource": resource,
            "requestKind": kind,
            "requestResource": resource,
            "name": obj["metadata"]["name"],
            "namespace": obj["metadata"]["namespace"],
            "operation": "CREATE",
            "userInfo": {"username": "alice", "groups": ["system:authenticated"]},
            "object": obj,
            "oldObject": None,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
            "dryRun": False,
        },
    }
    answer = client.post("/k8s/mutate", json=review)
    assert answer.status_code == 200, answer.text
    response = answer.json()["response"]
    assert response["allowed"] is True, response
    operations = json.loads(base64.b64decode(response["patch"]))
    result: dict[str, Any] = jsonpatch.apply_patch(obj, operations)
    assert admission_pods.DECISION_ID in result["metadata"]["annotations"]
    return result


def run_pod(admin_api: kube.ApiClient, obj: dict[str, Any], node_name: str) -> kube.V1Pod:
    """Create the pod through the API server, bound to ``node_name`` and running.

    Bound as kube-scheduler binds it, and ``Running`` as its kubelet would report it: the
    Eviction API lets a ``Pending`` pod go whatever its disruption budget says.
    """
    core = kube.CoreV1Api(admin_api)
    namespace = obj["metadata"]["namespace"]
    body = {**obj, "spec": {**obj["spec"], "nodeName": node_name}}
    created = core.create_namespaced_pod(namespace, body)
    core.patch_namespaced_pod_status(
        created.metadata.name, namespace, {"status": {"phase": "Running"}}
    )
    return created


def decided_pod(
    client_: TestClient,
    admin_api: kube.ApiClient,
    namespace: str,
    name: str,
    tenant: str,
    node_name: str,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    obj = admitted(client_, pod_object(namespace, name, tenant, labels or {"app": name}))
    run_pod(admin_api, obj, node_name)
    return obj


def sweep(conn: DbConnection, settings: KubernetesSettings) -> PodSweepReport:
    with api_client(settings) as api:
        return eviction.sweep_pods(
            conn, api, POD_SWEEP_ACTOR, timeout_seconds=settings.timeout_seconds
        )


def state(admin_api: kube.ApiClient, namespace: str, name: str) -> str:
    """``running`` (no deletion asked), ``terminating`` (evicted, kubelet-less) or ``gone``."""
    try:
        pod = kube.CoreV1Api(admin_api).read_namespaced_pod(name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return "gone"
        raise
    return "running" if pod.metadata.deletion_timestamp is None else "terminating"


def events(conn: DbConnection, action: str) -> list[dict[str, Any]]:
    conn.rollback()
    return conn.execute(
        "SELECT actor_id, object_id, after::jsonb AS after FROM audit_event"
        " WHERE action = %(action)s ORDER BY seq",
        {"action": action},
    ).fetchall()


def create_budget(admin_api: kube.ApiClient, namespace: str, app: str) -> None:
    """A PodDisruptionBudget (policy/v1beta1, all Kubernetes 1.20 serves) keeping one up."""
    budgets = dynamic.DynamicClient(admin_api).resources.get(
        api_version="policy/v1beta1", kind="PodDisruptionBudget"
    )
    budgets.create(
        namespace=namespace,
        body={
            "apiVersion": "policy/v1beta1",
            "kind": "PodDisruptionBudget",
            "metadata": {"name": f"{app}-budget", "namespace": namespace},
            "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": app}}},
        },
    )


# First in the module: the chart's role, once bound (module-scoped), stays for the rest.
def test_without_the_chart_rbac_the_worker_cannot_list_pods(
    conn: DbConnection, cluster: Cluster, fleet: dict[str, str]
) -> None:
    bare = KubernetesSettings(kubeconfig=cluster.kubeconfig("worker"), timeout_seconds=5)
    with pytest.raises(ApiException) as refused:
        sweep(conn, bare)
    assert refused.value.status == 403


def test_a_pod_that_breaks_a_revoke_policy_is_evicted_and_audited(
    conn: DbConnection,
    client: TestClient,
    admin: dict[str, str],
    fleet: dict[str, str],
    admin_api: kube.ApiClient,
    namespace: str,
    worker_settings: KubernetesSettings,
    webhooks: TestClient,
) -> None:
    revoked = decided_pod(webhooks, admin_api, namespace, "train", "research", fleet["jp"])
    compliant = decided_pod(webhooks, admin_api, namespace, "train-tw", "research", fleet["tw"])
    notified = decided_pod(webhooks, admin_api, namespace, "lab-train", "lab", fleet["jp"])

    before = sweep(conn, worker_settings)
    assert before.evicted == 0
    assert state(admin_api, namespace, "train") == "running"

    activate(client, admin, leave_jp("research", "revoke"), leave_jp("lab", "notify"))
    report = sweep(conn, worker_settings)

    assert state(admin_api, namespace, "train") == "terminating"
    assert state(admin_api, namespace, "train-tw") == "running"
    assert state(admin_api, namespace, "lab-train") == "running"
    assert f"{namespace}/train" in report.evicted_pods
    assert f"{namespace}/lab-train" in report.notified_pods
    assert f"{namespace}/train-tw" not in report.evicted_pods + report.notified_pods
    [event] = events(conn, "pod.evicted")
    decision_id = revoked["metadata"]["annotations"][admission_pods.DECISION_ID]
    assert event["actor_id"] == "system:pod-sweep"
    assert event["object_id"] == decision_id
    after = event["after"]
    assert (after["namespace"], after["name"]) == (namespace, "train")
    assert after["node"]["name"] == fleet["jp"]
    assert after["node"]["zone"] == "jp"
    assert after["policies"] == ["research-to-tw"]
    assert any(r["policy"] == "research-to-tw" and r["action"] == "deny" for r in after["reasons"])
    assert compliant["metadata"]["annotations"][admission_pods.DECISION_ID] != decision_id
    assert notified["metadata"]["annotations"][admission_pods.DECISION_ID] != decision_id

    # The evicted pod is terminating now: the next sweep leaves it, and audits nothing new.
    again = sweep(conn, worker_settings)
    assert f"{namespace}/train" not in again.evicted_pods
    assert len(events(conn, "pod.evicted")) == 1


def test_a_disruption_budget_blocks_the_eviction_audited_once(
    conn: DbConnection,
    client: TestClient,
    admin: dict[str, str],
    fleet: dict[str, str],
    admin_api: kube.ApiClient,
    namespace: str,
    worker_settings: KubernetesSettings,
    webhooks: TestClient,
) -> None:
    decided_pod(webhooks, admin_api, namespace, "serve", "research", fleet["jp"], {"app": "serve"})
    create_budget(admin_api, namespace, "serve")
    activate(client, admin, leave_jp("research", "revoke"))

    first = sweep(conn, worker_settings)
    second = sweep(conn, worker_settings)

    assert state(admin_api, namespace, "serve") == "running"
    assert f"{namespace}/serve" in first.blocked_pods
    assert f"{namespace}/serve" in second.blocked_pods
    assert events(conn, "pod.evicted") == []
    [event] = events(conn, "pod.eviction_blocked")
    assert event["after"]["name"] == "serve"
    assert event["after"]["policies"] == ["research-to-tw"]
    assert "disruption budget" in event["after"]["refusal"].lower()
    [row] = conn.execute("SELECT refusals FROM pod_eviction_block").fetchall()
    assert row["refusals"] == 2


def test_a_pod_with_a_decision_not_its_own_is_never_evicted(
    conn: DbConnection,
    client: TestClient,
    admin: dict[str, str],
    fleet: dict[str, str],
    admin_api: kube.ApiClient,
    namespace: str,
    worker_settings: KubernetesSettings,
    webhooks: TestClient,
) -> None:
    # A decided pod elsewhere whose id is copied onto pods the webhook never saw.
    original = admitted(webhooks, pod_object(namespace, "original", "research", {"app": "x"}))
    copied_id = original["metadata"]["annotations"][admission_pods.DECISION_ID]
    for name, decision_id in (
        ("copied", copied_id),
        ("made-up", str(uuid.uuid4())),
        ("garbled", "not-a-uuid"),
    ):
        forged = pod_object(namespace, name, "research", {"app": name})
        forged["metadata"]["annotations"][admission_pods.DECISION_ID] = decision_id
        run_pod(admin_api, forged, fleet["jp"])
    activate(client, admin, leave_jp("research", "revoke"))

    report = sweep(conn, worker_settings)

    for name in ("copied", "made-up", "garbled"):
        assert state(admin_api, namespace, name) == "running"
    skipped = {item["pod"]: item["reason"] for item in report.skipped_pods}
    assert "was taken for Pod original" in skipped[f"{namespace}/copied"]
    assert "no stored decision" in skipped[f"{namespace}/made-up"]
    assert "not a decision id" in skipped[f"{namespace}/garbled"]
    assert events(conn, "pod.evicted") == []


def test_a_pod_on_a_node_the_inventory_lacks_is_never_evicted(
    conn: DbConnection,
    client: TestClient,
    admin: dict[str, str],
    fleet: dict[str, str],
    admin_api: kube.ApiClient,
    namespace: str,
    worker_settings: KubernetesSettings,
    webhooks: TestClient,
) -> None:
    obj = admitted(webhooks, pod_object(namespace, "stray", "research", {"app": "stray"}))
    stranger = f"stranger-{uuid.uuid4().hex[:8]}"
    run_pod(admin_api, obj, stranger)
    activate(client, admin, leave_jp("research", "revoke"))

    report = sweep(conn, worker_settings)

    assert state(admin_api, namespace, "stray") == "running"
    skipped = {item["pod"]: item["reason"] for item in report.skipped_pods}
    assert f"{stranger} is not in the inventory" in skipped[f"{namespace}/stray"]


def test_an_evaluation_sends_the_real_worker_sweeping(
    celery_app: Celery,
    worker: None,
    conn: DbConnection,
    client: TestClient,
    admin: dict[str, str],
    fleet: dict[str, str],
    admin_api: kube.ApiClient,
    namespace: str,
    worker_rbac: None,
    webhooks: TestClient,
) -> None:
    decided_pod(webhooks, admin_api, namespace, "train", "research", fleet["jp"])
    activate(client, admin, leave_jp("research", "revoke"))

    summary = celery_app.send_task(EVALUATE_TASK).get(timeout=30)

    assert summary is not None
    deadline = time.monotonic() + 30
    while state(admin_api, namespace, "train") == "running" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert state(admin_api, namespace, "train") == "terminating"
    [event] = events(conn, "pod.evicted")
    assert event["after"]["name"] == "train"


def test_one_sweep_at_a_time(
    conn: DbConnection,
    settings: Settings,
    client: TestClient,
    admin: dict[str, str],
    fleet: dict[str, str],
    admin_api: kube.ApiClient,
    namespace: str,
    worker_settings: KubernetesSettings,
    webhooks: TestClient,
) -> None:
    decided_pod(webhooks, admin_api, namespace, "train", "research", fleet["jp"])
    activate(client, admin, leave_jp("research", "revoke"))

    with connect(settings.database_url) as other:
        assert repository.try_pod_sweep_lock(other, eviction.SWEEP_LOCK)
        report = sweep(conn, worker_settings)
        assert report.already_running
        assert state(admin_api, namespace, "train") == "running"
        # Given back as the other sweep does when it ends. (Closing its session frees the
        # lock too, but only once the server's backend has exited, which on a busy machine
        # can be after the next line: the test would then race the server.)
        repository.pod_sweep_unlock(other, eviction.SWEEP_LOCK)
    assert sweep(conn, worker_settings).evicted_pods == [f"{namespace}/train"]


def test_beat_runs_the_sweep_only_when_enabled(settings: Settings) -> None:
    off = Celery("off")
    register(off, settings.model_copy(update={"kubernetes": KubernetesSettings()}))
    assert "sweep-pods" not in (off.conf.beat_schedule or {})
    assert SWEEP_PODS_TASK in off.tasks
    enabled = settings.model_copy(
        update={"kubernetes": KubernetesSettings(pod_sweep_enabled=True, pod_sweep_seconds=30)}
    )
    on = Celery("on")
    register(on, enabled)
    assert on.conf.beat_schedule["sweep-pods"] == {"task": SWEEP_PODS_TASK, "schedule": 30}
