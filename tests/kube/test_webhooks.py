# mypy: disable-error-code="union-attr,index,arg-type,no-untyped-call"
# (the client's models make every field optional and take plain dicts at run time)
"""The admission webhooks registered in a real kube-apiserver, called by it over mutual TLS.

The webhook configurations are the Helm chart's own (rendered with the Helm SDK, release
``sovereign`` in namespace ``sovereign``), changed only where a loopback test must: the
``clientConfig`` points at the control plane on 127.0.0.1 instead of the chart's Service,
and ``matchConditions`` are dropped because Kubernetes 1.20 does not know them (the handler
lets a pod without GPUs through untouched, which is what the conditions spare it).

The webhooks are served as the chart runs them, by ``sovctl serve-webhooks`` as its own
process over TLS, requiring the client certificate that the API server's admission
configuration presents (``tests/kube/cluster.py``), so every answer here came through an
authenticated API server, and each decision records that certificate. Pods are created
through the API server with the kubernetes client as ``alice``, an ordinary user whose
RBAC allows everything: only Sovereign stands in her way.
"""

import base64
import json
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import httpx
import pytest
import yaml
from fastapi.testclient import TestClient
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from control_plane.admission import pods
from control_plane.core.db import DbConnection
from control_plane.core.settings import Settings
from control_plane.domain.kubernetes import LABEL_PREFIX, NODE_ID_LABEL
from control_plane.facts.fleet import load_snapshot
from tests.certificates import make_tls_files
from tests.kube.cluster import WEBHOOK_CLIENT, Cluster
from tests.support import registration, webhook_process
from tests.unit.admission.affinity import ours, selected

pytestmark = pytest.mark.e2e

CHART_DIR = Path(__file__).resolve().parents[2] / "helm" / "sovereign"
NAMESPACE = "research"


@pytest.fixture(scope="module")
def chart_objects() -> list[dict[str, Any]]:
    """The chart's objects with default values, as ``helm install sovereign -n sovereign``."""
    with helm.Chart.load(CHART_DIR) as chart:
        manifests = chart.render({}, name="sovereign", namespace="sovereign", is_install=True)
    return [
        document
        for path, text in sorted(manifests.items())
        if not path.endswith("NOTES.txt")
        for document in yaml.safe_load_all(text)
        if document
    ]


def _loopback(configuration: dict[str, Any], base: str, ca_bundle: bytes) -> dict[str, Any]:
    """The chart's webhook configuration, calling ``base`` instead of the in-cluster Service."""
    changed = {**configuration, "metadata": {"name": configuration["metadata"]["name"]}}
    webhooks = []
    for webhook in configuration["webhooks"]:
        path = webhook["clientConfig"]["service"]["path"]
        entry = {key: value for key, value in webhook.items() if key != "matchConditions"}
        entry["clientConfig"] = {
            "url": f"{base}{path}",
            "caBundle": base64.b64encode(ca_bundle).decode(),
        }
        webhooks.append(entry)
    changed["webhooks"] = webhooks
    return changed


def api_as(cluster: Cluster, user: str) -> client.ApiClient:
    return client.ApiClient(
        configuration=_configuration(cluster.kubeconfig(user)),
    )


def _configuration(kubeconfig: Path) -> client.Configuration:
    from kubernetes import config

    configuration = client.Configuration()
    config.load_kube_config(
        config_file=str(kubeconfig), client_configuration=configuration, persist_config=False
    )
    return configuration


@pytest.fixture
def fleet(client: TestClient, admin: dict[str, str]) -> dict[str, str]:
    """jp-a (4 GPUs) and jp-b (2) in jp, tw-a (2) in tw; tenant research, its data in jp.

    A policy keeps compute on the dataset's own zone, so the jp nodes are the eligible ones.
    """
    for path, body in (
        ("/v1/zones", {"slug": "jp", "name": "Japan", "country": "JP"}),
        ("/v1/zones", {"slug": "tw", "name": "Taiwan", "country": "TW"}),
        ("/v1/tenants", {"slug": NAMESPACE, "name": "Research"}),
        (
            "/v1/datasets",
            {
                "name": "tickets",
                "tenant": NAMESPACE,
                "classification": "confidential",
                "zones": ["jp"],
            },
        ),
        ("/v1/destinations", {"name": "results-jp", "zone": "jp"}),
        (
            "/v1/policies",
            {
                "name": "data-stays-home",
                "requirements": {"compute_zones": ["jp"], "data_residency": True},
            },
        ),
        ("/v1/policy-sets/activate", {}),
    ):
        response = client.post(path, json=body, headers=admin)
        assert response.status_code in (200, 201), response.text
    found: dict[str, str] = {}
    for hostname, zone, count in (("jp-a", "jp", 4), ("jp-b", "jp", 2), ("tw-a", "tw", 2)):
        uuids = tuple(f"GPU-{hostname}-{i:04d}" for i in range(count))
        body = registration(hostname=hostname, zone=zone, gpu_uuids=uuids)
        response = client.post("/v1/agents/register", json=body, headers=admin)
        assert response.status_code == 201, response.text
        found[hostname] = response.json()["node_id"]
    return found


@pytest.fixture
def webhooks(
    cluster: Cluster,
    settings: Settings,
    fleet: dict[str, str],
    chart_objects: list[dict[str, Any]],
    tmp_path: Path,
) -> Iterator[str]:
    """The control plane serving the webhooks on the port the API server's mTLS config names.

    Registers the chart's webhook configurations for the test and removes them after, so a
    test that follows finds a cluster without Sovereign in the path.
    """
    serving = make_tls_files(
        tmp_path / "webhook-tls", name="sovereign-webhook", hosts=("127.0.0.1",)
    )
    ready = ssl.create_default_context(cafile=serving.ca_cert)
    ready.load_cert_chain(cluster.webhook_client.cert, cluster.webhook_client.key)
    admin = api_as(cluster, "admin")
    registrations = client.AdmissionregistrationV1Api(admin)
    # As the chart runs it: its own listener, its own pair, the API server's client CA.
    with webhook_process(
        settings,
        tmp_path,
        verify=ready,
        port=cluster.webhook_port,
        SOVEREIGN_ADMISSION__TLS_CERT_FILE=str(serving.cert),
        SOVEREIGN_ADMISSION__TLS_KEY_FILE=str(serving.key),
        SOVEREIGN_ADMISSION__CLIENT_CA_FILE=str(cluster.webhook_client.ca_cert),
        SOVEREIGN_ADMISSION__CLIENT_NAMES=f'["{WEBHOOK_CLIENT}"]',
    ) as listener:
        base = listener.url
        created: list[tuple[str, str]] = []
        for item in chart_objects:
            if item["kind"] not in (
                "MutatingWebhookConfiguration",
                "ValidatingWebhookConfiguration",
            ):
                continue
            body = _loopback(item, base, serving.ca_cert.read_bytes())
            if item["kind"] == "MutatingWebhookConfiguration":
                registrations.create_mutating_webhook_configuration(body)
            else:
                registrations.create_validating_webhook_configuration(body)
            created.append((item["kind"], body["metadata"]["name"]))
        core = client.CoreV1Api(admin)
        try:
            core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=NAMESPACE)))
        except ApiException as exc:
            if exc.status != 409:
                raise
        _wait_until_in_path(core)
        try:
            yield base
        finally:
            for kind, name in created:
                if kind == "MutatingWebhookConfiguration":
                    registrations.delete_mutating_webhook_configuration(name)
                else:
                    registrations.delete_validating_webhook_configuration(name)
            for pod in core.list_namespaced_pod(NAMESPACE).items:
                core.delete_namespaced_pod(pod.metadata.name, NAMESPACE, grace_period_seconds=0)
            admin.close()


def required_terms(spec: Any) -> list[Any]:
    """The required node-affinity terms of a pod spec the client returned."""
    required = spec.affinity.node_affinity.required_during_scheduling_ignored_during_execution
    return list(required.node_selector_terms)


def _wait_until_in_path(core: client.CoreV1Api, seconds: float = 20) -> None:
    """Until the API server calls both webhooks: it loads new configurations from a watch.

    Probed with dry runs, which record nothing: an undeclared GPU pod must be refused (the
    validating configuration is loaded) and a declared one restricted (the mutating one).
    """
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            core.create_namespaced_pod(
                NAMESPACE, gpu_pod("probe-undeclared", annotations={}), dry_run="All"
            )
        except ApiException as exc:
            if exc.status == 403:
                probe = core.create_namespaced_pod(NAMESPACE, gpu_pod("probe"), dry_run="All")
                if probe.spec.affinity is not None and any(
                    expression.key.startswith(LABEL_PREFIX)
                    for term in required_terms(probe.spec)
                    for expression in term.match_expressions
                ):
                    return
        time.sleep(0.2)
    raise AssertionError(f"the webhooks were not called within {seconds} s")


def gpu_pod(name: str, gpus: int = 1, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    declared = {pods.DATASETS: "tickets", pods.OUTPUT: "results-jp"}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "labels": {"app": "train"},
            "annotations": declared if annotations is None else annotations,
        },
        "spec": {
            "restartPolicy": "Never",
            "initContainers": [{"name": "fetch", "image": "registry.local/fetch:1"}],
            "containers": [
                {
                    "name": "train",
                    "image": "registry.local/train:1",
                    "resources": {"limits": {"nvidia.com/gpu": str(gpus)}},
                },
                {"name": "log", "image": "registry.local/log:1"},
            ],
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [
                            {
                                "matchExpressions": [
                                    {
                                        "key": "kubernetes.io/arch",
                                        "operator": "In",
                                        "values": ["amd64"],
                                    }
                                ]
                            }
                        ]
                    }
                }
            },
        },
    }


def _denied(call: Any) -> str:
    with pytest.raises(ApiException) as refused:
        call()
    assert refused.value.status == 403, refused.value.body
    return str(refused.value.body)


def test_a_gpu_pod_is_admitted_through_the_api_server_restricted_to_eligible_nodes(
    cluster: Cluster, webhooks: str, fleet: dict[str, str], conn: DbConnection
) -> None:
    with api_as(cluster, "alice") as alice:
        created = client.CoreV1Api(alice).create_namespaced_pod(NAMESPACE, gpu_pod("train"))
    annotations = created.metadata.annotations
    decision_id = annotations[pods.DECISION_ID]
    assert annotations[pods.POLICY_SET_VERSION] == "1"
    (term,) = (
        created.spec.affinity.node_affinity.required_during_scheduling_ignored_during_execution.node_selector_terms
    )
    by_key = {expression.key: expression for expression in term.match_expressions}
    # Her own requirement is kept, Sovereign's is ANDed into the same term.
    assert by_key["kubernetes.io/arch"].values == ["amd64"]
    # The nodes the engine judged eligible, by the node-id label the label sync writes.
    assert by_key[NODE_ID_LABEL].operator == "In"
    assert set(by_key[NODE_ID_LABEL].values) == {fleet["jp-a"], fleet["jp-b"]}
    raw = client.ApiClient().sanitize_for_serialization(term)
    assert selected(ours([raw]), load_snapshot(conn).index) == {fleet["jp-a"], fleet["jp-b"]}
    row = conn.execute(
        "SELECT outcome, username, namespace, name, webhook FROM pod_decision WHERE id = %s",
        (decision_id,),
    ).fetchone()
    assert row is not None
    assert tuple(row.values()) == ("admitted", "alice", NAMESPACE, "train", "mutate")
    event = conn.execute(
        "SELECT actor_name, after FROM audit_event"
        " WHERE action = 'pod.admitted' AND object_id = %s",
        (decision_id,),
    ).fetchone()
    assert event is not None
    # alice as the API server authenticated her, and the API server's certificate called.
    assert event["actor_name"] == "alice"
    assert event["after"]["caller"]["authentication"] == "client_certificate"
    assert event["after"]["caller"]["subject"] == f"CN={WEBHOOK_CLIENT}"


def test_pods_sovereign_must_refuse_are_refused_by_the_api_server(
    cluster: Cluster, webhooks: str, conn: DbConnection
) -> None:
    with api_as(cluster, "alice") as alice:
        core = client.CoreV1Api(alice)
        undeclared = _denied(
            lambda: core.create_namespaced_pod(NAMESPACE, gpu_pod("bare", annotations={}))
        )
        too_big = _denied(lambda: core.create_namespaced_pod(NAMESPACE, gpu_pod("huge", gpus=16)))
        stored = [pod.metadata.name for pod in core.list_namespaced_pod(NAMESPACE).items]
    assert "declares no data or models" in undeclared
    assert "Sovereign denied this pod" in too_big
    assert stored == []
    (denied,) = conn.execute(
        "SELECT count(*) AS n FROM pod_decision WHERE outcome = 'denied' AND name = 'huge'"
    ).fetchall()
    assert denied["n"] >= 1


def test_a_pod_without_gpus_and_a_dry_run_pass_without_a_record(
    cluster: Cluster, webhooks: str, conn: DbConnection
) -> None:
    plain = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web"},
        "spec": {"containers": [{"name": "web", "image": "registry.local/web:1"}]},
    }
    with api_as(cluster, "alice") as alice:
        core = client.CoreV1Api(alice)
        web = core.create_namespaced_pod(NAMESPACE, plain)
        rehearsal = core.create_namespaced_pod(NAMESPACE, gpu_pod("rehearsal"), dry_run="All")
        stored = {pod.metadata.name for pod in core.list_namespaced_pod(NAMESPACE).items}
    assert web.spec.affinity is None
    assert not (web.metadata.annotations)
    assert not ({})
    # The dry run is answered (restricted, as the real one would be) but nothing is kept.
    assert rehearsal.spec.affinity is not None
    assert pods.DECISION_ID not in (rehearsal.metadata.annotations or {})
    assert stored == {"web"}
    assert conn.execute("SELECT count(*) AS n FROM pod_decision").fetchone() == {"n": 0}


def test_a_job_gets_its_pod_template_restricted(cluster: Cluster, webhooks: str) -> None:
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": "nightly",
            "annotations": {pods.DATASETS: "tickets", pods.OUTPUT: "results-jp"},
        },
        "spec": {"template": {"spec": dict(gpu_pod("x")["spec"].items())}},
    }
    with api_as(cluster, "alice") as alice:
        created = client.BatchV1Api(alice).create_namespaced_job(NAMESPACE, job)
        client.BatchV1Api(alice).delete_namespaced_job("nightly", NAMESPACE)
    template = created.spec.template
    # The job's declaration is copied onto its pods, so each pod is decided the same.
    assert template.metadata.annotations[pods.DATASETS] == "tickets"
    terms = required_terms(template.spec)
    assert all(
        any(expression.key.startswith(LABEL_PREFIX) for expression in term.match_expressions)
        for term in terms
    )


def test_only_the_control_plane_may_change_sovereign_node_labels(
    cluster: Cluster, webhooks: str, chart_objects: list[dict[str, Any]]
) -> None:
    with api_as(cluster, "admin") as admin:
        core = client.CoreV1Api(admin)
        name = "gpu-node-protected"
        core.create_node(
            client.V1Node(
                metadata=client.V1ObjectMeta(name=name, labels={"sovereign.io/zone": "jp"})
            )
        )
        try:
            # The body is the API server's Status as JSON, where ">" is written \u003e.
            moved = json.loads(
                _denied(
                    lambda: core.patch_node(
                        name, {"metadata": {"labels": {"sovereign.io/zone": "tw"}}}
                    )
                )
            )["message"]
            # Other labels stay anyone's to change.
            core.patch_node(name, {"metadata": {"labels": {"team": "vision"}}})
            # The worker may, with the chart's own RBAC for it.
            for item in chart_objects:
                if (
                    item["kind"] in ("ClusterRole", "ClusterRoleBinding")
                    and "worker" in item["metadata"]["name"]
                ):
                    body = {**item, "metadata": {"name": item["metadata"]["name"]}}
                    rbac = client.RbacAuthorizationV1Api(admin)
                    if item["kind"] == "ClusterRole":
                        rbac.create_cluster_role(body)
                    else:
                        rbac.create_cluster_role_binding(body)
            with api_as(cluster, "worker") as worker:
                client.CoreV1Api(worker).patch_node(
                    name, {"metadata": {"labels": {"sovereign.io/zone": "tw"}}}
                )
            labels = core.read_node(name).metadata.labels
        finally:
            core.delete_node(name)
    assert "sovereign.io/zone (jp -> tw)" in moved
    assert labels["sovereign.io/zone"] == "tw"
    assert labels["team"] == "vision"


def test_the_webhook_port_refuses_a_caller_without_the_api_servers_certificate(
    cluster: Cluster, webhooks: str
) -> None:
    with pytest.raises(httpx.TransportError):
        httpx.post(f"{webhooks}/k8s/mutate", json={}, verify=False, timeout=5)
