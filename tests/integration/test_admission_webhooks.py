"""The admission webhooks against the real API and database, with a real fleet registered.

Every request is an ``admission.k8s.io/v1`` AdmissionReview in the shape of the
Kubernetes API reference (uid, kind, resource, requestKind, userInfo, object, oldObject,
options, dryRun), posted to the app as the kube-apiserver would. The returned JSONPatch is
applied to the object with ``jsonpatch`` (a maintained RFC 6902 implementation).
"""

import base64
import json
import uuid
from collections.abc import Iterator
from typing import Any, LiteralString

import jsonpatch
import pytest
from fastapi.testclient import TestClient

from control_plane.admission import pods, service
from control_plane.app import create_webhook_app
from control_plane.audit import service as audit
from control_plane.core.db import DbConnection
from control_plane.core.settings import AdmissionSettings, Settings
from control_plane.domain.decisions import EnforcementPoint
from control_plane.domain.kubernetes import NODE_ID_LABEL
from control_plane.facts.fleet import load_snapshot
from control_plane.facts.workloads import WorkloadRequest, workload_view
from control_plane.policy.engine import DecisionCache, decide
from control_plane.policy.service import active_policy_set
from tests.support import registration
from tests.unit.admission.affinity import ours, selected

pytestmark = pytest.mark.integration

WORKER = "system:serviceaccount:sovereign:sovereign-worker"
ZONE_JP = "sovereign.io/zone.jp"
#: Who called, as the audit records it when no client CA is configured.
UNCHECKED = {"authentication": "none", "subject": None, "serial": None, "sha256": None}


@pytest.fixture
def webhooks(settings: Settings) -> Iterator[TestClient]:
    """The webhook listener's app (``sovctl serve-webhooks``), on the test's database.

    Without a client CA, as the TestClient presents no certificate: the caller checks are
    in test_webhook_trust.py, against a real listener.
    """
    with TestClient(create_webhook_app(settings), raise_server_exceptions=False) as client:
        yield client


# -- the fleet ----------------------------------------------------------------------------


@pytest.fixture
def node_ids(client: TestClient, admin: dict[str, str]) -> dict[str, str]:
    """jp-a (4 GPUs) and jp-b (2) in jp, tw-a (2) in tw; tenant research, dataset in jp."""
    for path, body in (
        ("/v1/zones", {"slug": "jp", "name": "Japan", "country": "JP"}),
        ("/v1/zones", {"slug": "tw", "name": "Taiwan", "country": "TW"}),
        ("/v1/tenants", {"slug": "research", "name": "Research"}),
        (
            "/v1/datasets",
            {
                "name": "tickets",
                "tenant": "research",
                "classification": "confidential",
                "zones": ["jp"],
            },
        ),
        ("/v1/destinations", {"name": "results-jp", "zone": "jp"}),
    ):
        response = client.post(path, json=body, headers=admin)
        assert response.status_code == 201, response.text
    found: dict[str, str] = {}
    for hostname, zone, count in (("jp-a", "jp", 4), ("jp-b", "jp", 2), ("tw-a", "tw", 2)):
        uuids = tuple(f"GPU-{hostname}-{i:04d}" for i in range(count))
        body = registration(hostname=hostname, zone=zone, gpu_uuids=uuids)
        response = client.post("/v1/agents/register", json=body, headers=admin)
        assert response.status_code == 201, response.text
        found[hostname] = response.json()["node_id"]
    return found


def apply_policy(client: TestClient, admin: dict[str, str], *documents: dict[str, Any]) -> None:
    for document in documents:
        response = client.post("/v1/policies", json=document, headers=admin)
        assert response.status_code == 201, response.text
    response = client.post("/v1/policy-sets/activate", json={}, headers=admin)
    assert response.status_code in (200, 201), response.text


#: Compute in jp, on data stored in jp (tickets is).
RESIDENCY = {
    "name": "data-stays-home",
    "requirements": {"compute_zones": ["jp"], "data_residency": True},
}


# -- the documents ------------------------------------------------------------------------

DECLARED = {pods.DATASETS: "tickets", pods.OUTPUT: "results-jp"}


def container(name: str, gpus: int = 0, **extra: Any) -> dict[str, Any]:
    limits: dict[str, Any] = {"cpu": "2", "memory": "8Gi"}
    if gpus:
        limits["nvidia.com/gpu"] = gpus
    return {
        "name": name,
        "image": "registry.local/train:1",
        "resources": {"limits": limits},
        **extra,
    }


def pod_object(
    *containers: dict[str, Any],
    annotations: dict[str, str] | None = None,
    namespace: str = "research",
    **spec: Any,
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "train",
            "namespace": namespace,
            "uid": str(uuid.uuid4()),
            "creationTimestamp": None,
            "labels": {"app": "train"},
            "annotations": dict(DECLARED if annotations is None else annotations),
        },
        "spec": {
            "containers": list(containers) or [container("main", 1)],
            "restartPolicy": "Never",
            "serviceAccountName": "default",
            "tolerations": [
                {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
            ],
            **spec,
        },
        "status": {},
    }


KINDS = {
    "Pod": ({"group": "", "version": "v1", "kind": "Pod"}, "pods"),
    "Job": ({"group": "batch", "version": "v1", "kind": "Job"}, "jobs"),
    "CronJob": ({"group": "batch", "version": "v1", "kind": "CronJob"}, "cronjobs"),
    "Node": ({"group": "", "version": "v1", "kind": "Node"}, "nodes"),
}


def review(
    obj: dict[str, Any],
    *,
    operation: str = "CREATE",
    username: str = "alice@example.com",
    dry_run: bool = False,
    old: dict[str, Any] | None = None,
    namespace: str | None = "research",
) -> dict[str, Any]:
    """An AdmissionReview as the kube-apiserver sends it (Kubernetes API reference)."""
    kind, resource = KINDS[obj["kind"]]
    group_version_resource = {"group": kind["group"], "version": "v1", "resource": resource}
    request: dict[str, Any] = {
        "uid": str(uuid.uuid4()),
        "kind": kind,
        "resource": group_version_resource,
        "requestKind": kind,
        "requestResource": group_version_resource,
        "name": obj["metadata"].get("name"),
        "operation": operation,
        "userInfo": {
            "username": username,
            "uid": "014fbff9a07c",
            "groups": ["system:authenticated"],
            "extra": {"some-key": ["some-value1", "some-value2"]},
        },
        "object": obj,
        "oldObject": old,
        "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
        "dryRun": dry_run,
    }
    if namespace is not None:
        request["namespace"] = namespace
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


def post(client: TestClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """Post a review (no bearer token: the API server sends none) and check the envelope."""
    answer = client.post(path, json=body)
    assert answer.status_code == 200, answer.text
    document: dict[str, Any] = answer.json()
    assert document["apiVersion"] == "admission.k8s.io/v1"
    assert document["kind"] == "AdmissionReview"
    response: dict[str, Any] = document["response"]
    assert response["uid"] == body["request"]["uid"]
    return response


def patched(obj: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
    assert response["allowed"] is True
    assert response["patchType"] == "JSONPatch"
    operations = json.loads(base64.b64decode(response["patch"]))
    result: dict[str, Any] = jsonpatch.apply_patch(obj, operations)
    return result


def required_terms(spec: dict[str, Any]) -> list[dict[str, Any]]:
    terms: list[dict[str, Any]] = spec["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]["nodeSelectorTerms"]
    return terms


def restriction(conn: DbConnection, terms: list[dict[str, Any]]) -> set[str]:
    """The nodes Sovereign's expressions in ``terms`` select, by the Kubernetes rules, on
    the labels the label sync writes from the fleet as it is now (its pure function)."""
    conn.rollback()
    index = load_snapshot(conn).index
    conn.rollback()
    return selected(ours(terms), index)


def injected(terms: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Sovereign's expressions in each term."""
    return [term["matchExpressions"] for term in ours(terms)]


def engine_eligible(conn: DbConnection, request: WorkloadRequest) -> set[str]:
    """The engine's eligible nodes for the declaration, on facts loaded here afresh."""
    conn.rollback()
    view = workload_view(conn, request)
    decision = decide(
        view,
        load_snapshot(conn).index,
        active_policy_set(conn),
        point=EnforcementPoint.WEBHOOK,
        cache=DecisionCache(),
    )
    conn.rollback()
    return set(decision.eligible_node_ids)


_COUNTS: dict[str, LiteralString] = {
    "pod_decision": "SELECT count(*) AS n FROM pod_decision",
    "gpu_reservation": "SELECT count(*) AS n FROM gpu_reservation",
    "workload": "SELECT count(*) AS n FROM workload",
}


def count(conn: DbConnection, table: str) -> int:
    conn.rollback()
    row = conn.execute(_COUNTS[table]).fetchone()
    assert row is not None
    return int(row["n"])


# -- mutate -------------------------------------------------------------------------------


def test_with_zones_whole_eligible_zones_are_written_by_their_labels(
    client: TestClient,
    conn: DbConnection,
    admin: dict[str, str],
    node_ids: dict[str, str],
    settings: Settings,
) -> None:
    """``SOVEREIGN_ADMISSION__AFFINITY=zones``: one zone label, as exact on the sync's labels."""
    apply_policy(client, admin, RESIDENCY)
    by_zone = settings.model_copy(update={"admission": AdmissionSettings(affinity="zones")})
    obj = pod_object()
    with TestClient(create_webhook_app(by_zone)) as webhooks:
        result = patched(obj, post(webhooks, "/k8s/mutate", review(obj)))
    terms = required_terms(result["spec"])
    expected = engine_eligible(
        conn, WorkloadRequest(tenant="research", datasets=["tickets"], output="results-jp")
    )
    assert restriction(conn, terms) == expected == {node_ids["jp-a"], node_ids["jp-b"]}
    assert injected(terms) == [[{"key": ZONE_JP, "operator": "Exists"}]]


def test_an_admitted_pod_is_restricted_to_exactly_the_engines_eligible_nodes(
    client: TestClient,
    conn: DbConnection,
    admin: dict[str, str],
    node_ids: dict[str, str],
    webhooks: TestClient,
) -> None:
    apply_policy(client, admin, RESIDENCY)
    obj = pod_object()
    response = post(webhooks, "/k8s/mutate", review(obj))
    assert "status" not in response
    assert "warnings" not in response
    result = patched(obj, response)

    terms = required_terms(result["spec"])
    expected = engine_eligible(
        conn, WorkloadRequest(tenant="research", datasets=["tickets"], output="results-jp")
    )
    assert restriction(conn, terms) == expected == {node_ids["jp-a"], node_ids["jp-b"]}
    # By default the nodes the engine judged, by id, though they are all of zone jp.
    [[ids]] = injected(terms)
    assert (ids["key"], ids["operator"]) == ("sovereign.io/node-id", "In")
    assert sorted(ids["values"]) == sorted(expected)

    annotations = result["metadata"]["annotations"]
    assert annotations[pods.POLICY_SET_VERSION] == "1"
    decision_id = annotations[pods.DECISION_ID]
    conn.rollback()
    row = conn.execute("SELECT * FROM pod_decision WHERE id = %s", (decision_id,)).fetchone()
    assert row is not None
    assert (row["outcome"], row["webhook"], row["kind"], row["namespace"]) == (
        "admitted",
        "mutate",
        "Pod",
        "research",
    )
    assert row["eligible_nodes"] == 2
    assert row["username"] == "alice@example.com"
    [event] = audit.list_events(conn, action="pod.admitted").items
    assert event.object_type == "pod"
    assert event.object_id == decision_id
    assert event.actor_name == "alice@example.com"
    assert event.after["point"] == "webhook"
    assert event.after["caller"] == UNCHECKED
    assert event.after["policy_set_version"] == 1
    # Nothing is booked: kube-scheduler places the pod.
    assert count(conn, "gpu_reservation") == 0
    assert count(conn, "workload") == 0


def test_several_containers_init_containers_and_existing_affinity_are_merged(
    client: TestClient,
    conn: DbConnection,
    admin: dict[str, str],
    node_ids: dict[str, str],
    webhooks: TestClient,
) -> None:
    apply_policy(client, admin, RESIDENCY)
    gpu_term = {"key": "nvidia.com/gpu.product", "operator": "In", "values": ["H100"]}
    name_term = {"key": "kubernetes.io/hostname", "operator": "Exists"}
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [gpu_term]},
                    {"matchExpressions": [name_term]},
                ]
            }
        }
    }
    # 1 + 2 GPUs in containers, an init container with 3: the pod asks for 3 (max(3, 3)),
    # which jp-b (2 GPUs) cannot hold.
    obj = pod_object(
        container("train", 1),
        container("eval", 2),
        container("log"),
        initContainers=[container("warm", 3), container("fetch")],
        affinity=affinity,
        nodeSelector={"disk": "ssd"},
    )
    result = patched(obj, post(webhooks, "/k8s/mutate", review(obj)))
    terms = required_terms(result["spec"])
    assert [term["matchExpressions"][0] for term in terms] == [gpu_term, name_term]
    # jp-a alone, not all of jp: its id, ANDed into each of the pod's terms.
    assert [restriction(conn, [term]) for term in terms] == [{node_ids["jp-a"]}] * 2
    assert {e["key"] for [e] in injected(terms)} == {NODE_ID_LABEL}
    assert result["spec"]["nodeSelector"] == {"disk": "ssd"}
    assert [c["name"] for c in result["spec"]["initContainers"]] == ["warm", "fetch"]


def test_jobs_and_cronjobs_are_patched_in_their_pod_templates(
    client: TestClient,
    conn: DbConnection,
    admin: dict[str, str],
    node_ids: dict[str, str],
    webhooks: TestClient,
) -> None:
    apply_policy(client, admin, RESIDENCY)
    pod_template = {
        "metadata": {"labels": {"app": "nightly"}},
        "spec": {"containers": [container("train", 2)], "restartPolicy": "Never"},
    }
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        # The declaration on the Job itself: copied into the template for its pods.
        "metadata": {"name": "nightly", "namespace": "research", "annotations": DECLARED},
        "spec": {"backoffLimit": 1, "template": pod_template},
    }
    result = patched(job, post(webhooks, "/k8s/mutate", review(job)))
    template = result["spec"]["template"]
    assert restriction(conn, required_terms(template["spec"])) == {
        node_ids["jp-a"],
        node_ids["jp-b"],
    }
    assert template["metadata"]["labels"] == {"app": "nightly"}
    annotations = template["metadata"]["annotations"]
    assert annotations[pods.DATASETS] == "tickets"
    assert pods.DECISION_ID in annotations

    cron = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": "nightly", "namespace": "research"},
        "spec": {
            "schedule": "0 2 * * *",
            "jobTemplate": {
                "spec": {
                    "template": {
                        "metadata": {"annotations": DECLARED},
                        "spec": {"containers": [container("train", 4)], "restartPolicy": "Never"},
                    }
                }
            },
        },
    }
    result = patched(cron, post(webhooks, "/k8s/mutate", review(cron, operation="UPDATE")))
    inner = result["spec"]["jobTemplate"]["spec"]["template"]
    assert restriction(conn, required_terms(inner["spec"])) == {node_ids["jp-a"]}


def test_pods_without_gpus_and_exempt_namespaces_are_left_alone(
    client: TestClient, conn: DbConnection, node_ids: dict[str, str], webhooks: TestClient
) -> None:
    plain = pod_object(container("web"), annotations={})
    body = review(plain)
    assert post(webhooks, "/k8s/mutate", body) == {"uid": body["request"]["uid"], "allowed": True}
    for path in ("/k8s/mutate", "/k8s/validate"):
        answer = post(webhooks, path, review(plain))
        assert answer["allowed"] is True
        assert "patch" not in answer
        undeclared = pod_object(annotations={}, namespace="kube-system")
        answer = post(webhooks, path, review(undeclared, namespace="kube-system"))
        assert answer["allowed"] is True
        assert "patch" not in answer
    assert count(conn, "pod_decision") == 0


# -- validate -----------------------------------------------------------------------------


def test_an_undeclared_gpu_pod_is_denied_unless_its_namespace_allows_it(
    client: TestClient, settings: Settings, node_ids: dict[str, str], webhooks: TestClient
) -> None:
    obj = pod_object(annotations={"team": "nlp"})
    response = post(webhooks, "/k8s/validate", review(obj))
    assert response["allowed"] is False
    assert response["status"]["code"] == 403
    assert "declares no data or models" in response["status"]["message"]
    assert pods.DATASETS in response["status"]["message"]

    lenient = settings.model_copy(
        update={"admission": AdmissionSettings(undeclared_allowed_namespaces=["research"])}
    )
    with TestClient(create_webhook_app(lenient)) as other:
        response = post(other, "/k8s/validate", review(obj))
    assert response["allowed"] is True
    assert "declares no data or models" in response["warnings"][0]


def test_an_engine_denial_is_denied_with_its_reasons_and_recorded(
    client: TestClient,
    conn: DbConnection,
    admin: dict[str, str],
    node_ids: dict[str, str],
    webhooks: TestClient,
) -> None:
    apply_policy(
        client,
        admin,
        {"name": "compute-in-taiwan", "requirements": {"compute_zones": ["tw"]}},
        RESIDENCY,
    )
    obj = pod_object()
    for path in ("/k8s/validate", "/k8s/mutate"):
        response = post(webhooks, path, review(obj))
        assert response["allowed"] is False
        message = response["status"]["message"]
        assert message.startswith("Sovereign denied this pod (policy set version 1): ")
        assert "compute-in-taiwan" in message
        assert "data-stays-home" in message
    conn.rollback()
    rows = conn.execute("SELECT webhook, outcome FROM pod_decision ORDER BY webhook").fetchall()
    assert [(r["webhook"], r["outcome"]) for r in rows] == [
        ("mutate", "denied"),
        ("validate", "denied"),
    ]
    assert audit.list_events(conn, action="pod.denied").total == 2


def test_warn_policies_come_back_as_warnings(
    client: TestClient,
    conn: DbConnection,
    admin: dict[str, str],
    node_ids: dict[str, str],
    webhooks: TestClient,
) -> None:
    apply_policy(
        client,
        admin,
        {
            "name": "prefer-verified",
            "enforcement_action": "warn",
            "requirements": {"min_provenance_status": "verified"},
        },
    )
    obj = pod_object()
    response = post(webhooks, "/k8s/validate", review(obj))
    assert response["allowed"] is True
    [warning] = response["warnings"]
    assert warning.startswith("Sovereign: prefer-verified: ")
    # The validating webhook records only its denials; the mutating one recorded the admit.
    assert count(conn, "pod_decision") == 0
    mutated = post(webhooks, "/k8s/mutate", review(obj))
    assert "warnings" not in mutated
    assert count(conn, "pod_decision") == 1


def test_a_pod_whose_own_selection_leaves_no_eligible_node_is_denied(
    client: TestClient, admin: dict[str, str], node_ids: dict[str, str], webhooks: TestClient
) -> None:
    apply_policy(client, admin, RESIDENCY)
    obj = pod_object(nodeSelector={"sovereign.io/zone": "tw"})
    response = post(webhooks, "/k8s/validate", review(obj))
    assert response["allowed"] is False
    assert (
        "nodeSelector or node affinity selects none of the 2 nodes"
        in (response["status"]["message"])
    )
    # Pointing inside the eligible set is fine.
    inside = pod_object(nodeSelector={"sovereign.io/node-id": node_ids["jp-b"]})
    assert post(webhooks, "/k8s/validate", review(inside))["allowed"] is True


def test_a_dry_run_records_nothing(
    client: TestClient,
    conn: DbConnection,
    admin: dict[str, str],
    node_ids: dict[str, str],
    webhooks: TestClient,
) -> None:
    apply_policy(client, admin, RESIDENCY)
    obj = pod_object()
    result = patched(obj, post(webhooks, "/k8s/mutate", review(obj, dry_run=True)))
    assert restriction(conn, required_terms(result["spec"])) == {
        node_ids["jp-a"],
        node_ids["jp-b"],
    }
    assert pods.DECISION_ID not in result["metadata"]["annotations"]
    denied = pod_object(nodeSelector={"sovereign.io/zone": "tw"})
    assert post(webhooks, "/k8s/validate", review(denied, dry_run=True))["allowed"] is False
    assert count(conn, "pod_decision") == 0
    assert audit.list_events(conn, object_type="pod").total == 0


# -- reinvocation ----------------------------------------------------------------------------


def decision_id_of(obj: dict[str, Any]) -> str:
    found: str = obj["metadata"]["annotations"][pods.DECISION_ID]
    return found


def test_a_reinvoked_mutate_reuses_its_decision(
    client: TestClient,
    conn: DbConnection,
    admin: dict[str, str],
    node_ids: dict[str, str],
    webhooks: TestClient,
) -> None:
    """reinvocationPolicy: IfNeeded: a later webhook changed the pod, ours is called again."""
    apply_policy(client, admin, RESIDENCY)
    obj = pod_object()
    once = patched(obj, post(webhooks, "/k8s/mutate", review(obj)))
    # A sidecar injector ran after us; the API server calls again, with a fresh uid.
    once["spec"]["containers"].append(container("proxy"))
    twice = patched(once, post(webhooks, "/k8s/mutate", review(once)))
    assert decision_id_of(twice) == decision_id_of(once)
    assert required_terms(twice["spec"]) == required_terms(once["spec"])
    assert count(conn, "pod_decision") == 1
    assert audit.list_events(conn, action="pod.admitted").total == 1


@pytest.mark.parametrize(
    "forgery",
    ["another-pod", "another-user", "not-a-uuid", "unknown-id", "too-late", "policy-changed"],
)
def test_a_decision_id_annotation_never_skips_a_decision(
    client: TestClient,
    conn: DbConnection,
    admin: dict[str, str],
    node_ids: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    forgery: str,
    webhooks: TestClient,
) -> None:
    """A user may copy any decision id onto a pod: it is decided and recorded anew."""
    apply_policy(client, admin, RESIDENCY)
    first = decision_id_of(
        patched(pod_object(), post(webhooks, "/k8s/mutate", review(pod_object())))
    )
    annotated = {**DECLARED, pods.DECISION_ID: first}
    obj = pod_object(annotations=annotated)
    username = "alice@example.com"
    if forgery == "another-pod":
        obj["metadata"]["name"] = "other"
    elif forgery == "another-user":
        username = "mallory@example.com"
    elif forgery == "not-a-uuid":
        obj["metadata"]["annotations"][pods.DECISION_ID] = "skip-me"
    elif forgery == "unknown-id":
        obj["metadata"]["annotations"][pods.DECISION_ID] = str(uuid.uuid4())
    elif forgery == "too-late":
        monkeypatch.setattr(service, "REINVOCATION_WINDOW_SECONDS", 0)
    else:
        apply_policy(client, admin, {"name": "also-jp", "requirements": {"compute_zones": ["jp"]}})
    response = post(webhooks, "/k8s/mutate", review(obj, username=username))
    fresh = decision_id_of(patched(obj, response))
    assert fresh not in (first, obj["metadata"]["annotations"][pods.DECISION_ID])
    assert count(conn, "pod_decision") == 2
    assert audit.list_events(conn, action="pod.admitted").total == 2
    # A forged id on a pod the policy denies is no admit either.
    apply_policy(
        client, admin, {"name": "compute-in-taiwan", "requirements": {"compute_zones": ["tw"]}}
    )
    assert post(webhooks, "/k8s/mutate", review(obj, username=username))["allowed"] is False
    assert audit.list_events(conn, action="pod.denied").total == 1


# -- labels and DRA ---------------------------------------------------------------------------

COST_CENTER = {
    "name": "cost-center-ml",
    "requirements": {
        "cel": [
            {
                "name": "cost-center",
                "expression": '"cost-center" in workload.labels'
                ' && workload.labels["cost-center"] == "ml"',
                "message": "GPU work is billed to the ml cost center",
            }
        ]
    },
}


def test_policies_read_the_pods_labels_as_workload_labels(
    client: TestClient, admin: dict[str, str], node_ids: dict[str, str], webhooks: TestClient
) -> None:
    apply_policy(client, admin, COST_CENTER)
    billed = pod_object()
    billed["metadata"]["labels"]["cost-center"] = "ml"
    assert post(webhooks, "/k8s/mutate", review(billed))["allowed"] is True
    assert post(webhooks, "/k8s/validate", review(billed))["allowed"] is True
    unbilled = pod_object()
    unbilled["metadata"]["labels"]["cost-center"] = "finance"
    for path in ("/k8s/mutate", "/k8s/validate"):
        response = post(webhooks, path, review(unbilled))
        assert response["allowed"] is False
        assert "cost-center-ml" in response["status"]["message"]
    # A Job is decided on its template's labels, those its pods will carry.
    job: dict[str, Any] = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "nightly", "namespace": "research", "labels": {"cost-center": "ml"}},
        "spec": {
            "template": {
                "metadata": {"labels": {"cost-center": "ml"}, "annotations": DECLARED},
                "spec": {"containers": [container("train", 1)], "restartPolicy": "Never"},
            }
        },
    }
    assert post(webhooks, "/k8s/mutate", review(job))["allowed"] is True
    del job["spec"]["template"]["metadata"]["labels"]
    assert post(webhooks, "/k8s/mutate", review(job))["allowed"] is False


def test_a_label_the_api_would_refuse_is_a_denial_naming_it(
    client: TestClient, conn: DbConnection, node_ids: dict[str, str], webhooks: TestClient
) -> None:
    crowded = pod_object()
    crowded["metadata"]["labels"] = {f"label-{i}": "x" for i in range(65)}
    response = post(webhooks, "/k8s/mutate", review(crowded))
    assert response["allowed"] is False
    assert (
        "metadata.labels: has 65 labels; a workload carries at most 64"
        in (response["status"]["message"])
    )
    odd = pod_object()
    odd["metadata"]["labels"]["Team Name"] = "nlp"
    response = post(webhooks, "/k8s/validate", review(odd))
    assert response["allowed"] is False
    assert "metadata.labels[Team Name]" in response["status"]["message"]
    assert count(conn, "pod_decision") == 0


def test_a_dra_pod_is_decided_on_the_gpus_it_declares(
    client: TestClient,
    conn: DbConnection,
    admin: dict[str, str],
    node_ids: dict[str, str],
    webhooks: TestClient,
) -> None:
    apply_policy(client, admin, RESIDENCY)
    claims = [{"name": "gpus", "resourceClaimTemplateName": "four-gpus"}]
    unsaid = pod_object(container("train"), resourceClaims=claims)
    response = post(webhooks, "/k8s/mutate", review(unsaid))
    assert response["allowed"] is False
    message = response["status"]["message"]
    assert "metadata.annotations[sovereign.io/gpus]" in message
    assert "spec.resourceClaims" in message
    # Four GPUs: only jp-a (4) holds them, not jp-b (2).
    said = pod_object(
        container("train"), annotations={**DECLARED, pods.GPUS: "4"}, resourceClaims=claims
    )
    result = patched(said, post(webhooks, "/k8s/mutate", review(said)))
    assert restriction(conn, required_terms(result["spec"])) == {node_ids["jp-a"]}
    # On a Job, the annotation is copied into the template with the declaration.
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": "nightly",
            "namespace": "research",
            "annotations": {**DECLARED, pods.GPUS: "2"},
        },
        "spec": {
            "template": {
                "spec": {
                    "containers": [container("train")],
                    "resourceClaims": claims,
                    "restartPolicy": "Never",
                }
            }
        },
    }
    result = patched(job, post(webhooks, "/k8s/mutate", review(job)))
    assert result["spec"]["template"]["metadata"]["annotations"][pods.GPUS] == "2"


# -- what the pod names, and pods that cannot be read ----------------------------------------


@pytest.mark.parametrize(
    ("annotations", "named"),
    [
        ({pods.DATASETS: "tickets,nope"}, "metadata.annotations[sovereign.io/datasets][1]"),
        ({pods.DATASETS: "Bad Name"}, "metadata.annotations[sovereign.io/datasets][0]"),
        ({pods.OUTPUT: "nowhere"}, "metadata.annotations[sovereign.io/output]"),
        ({pods.DATASETS: "", pods.TENANT: "ghost"}, "metadata.annotations[sovereign.io/tenant]"),
    ],
)
def test_a_bad_or_unknown_name_is_a_denial_naming_the_annotation(
    client: TestClient,
    node_ids: dict[str, str],
    annotations: dict[str, str],
    named: str,
    webhooks: TestClient,
) -> None:
    response = post(webhooks, "/k8s/validate", review(pod_object(annotations=annotations)))
    assert response["allowed"] is False
    assert named in response["status"]["message"]


def test_a_namespace_that_is_no_tenant_says_so(
    client: TestClient, settings: Settings, node_ids: dict[str, str], webhooks: TestClient
) -> None:
    obj = pod_object(namespace="ml-prod")
    response = post(webhooks, "/k8s/validate", review(obj, namespace="ml-prod"))
    assert response["allowed"] is False
    assert "metadata.namespace" in response["status"]["message"]
    mapped = settings.model_copy(
        update={"admission": AdmissionSettings(namespace_tenants={"ml-prod": "research"})}
    )
    with TestClient(create_webhook_app(mapped)) as other:
        assert post(other, "/k8s/validate", review(obj, namespace="ml-prod"))["allowed"] is True


def test_an_unparseable_pod_is_a_denial_naming_the_field(
    client: TestClient, node_ids: dict[str, str], webhooks: TestClient
) -> None:
    obj = pod_object()
    obj["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] = "half"
    response = post(webhooks, "/k8s/mutate", review(obj))
    assert response["allowed"] is False
    assert "spec.containers[0].resources.limits[nvidia.com/gpu]" in response["status"]["message"]
    broken = pod_object()
    broken["spec"]["containers"] = {"name": "not-a-list"}
    response = post(webhooks, "/k8s/validate", review(broken))
    assert response["allowed"] is False
    assert "spec.containers" in response["status"]["message"]


def test_a_malformed_review_is_a_422_naming_the_field(
    client: TestClient, webhooks: TestClient
) -> None:
    body = review(pod_object())
    del body["request"]["uid"]
    answer = webhooks.post("/k8s/validate", json=body)
    assert answer.status_code == 422
    assert answer.json()["error"]["details"]["fields"][0]["field"] == "request.uid"
    wrong = review(pod_object())
    wrong["apiVersion"] = "admission.k8s.io/v1beta1"
    answer = webhooks.post("/k8s/mutate", json=wrong)
    assert answer.status_code == 422
    assert answer.json()["error"]["details"]["fields"][0]["field"] == "apiVersion"
    strict = review(pod_object())
    strict["request"]["dryRun"] = "false"
    answer = webhooks.post("/k8s/mutate", json=strict)
    assert answer.status_code == 422
    assert answer.json()["error"]["details"]["fields"][0]["field"] == "request.dryRun"
    answer = webhooks.post(
        "/k8s/mutate", content=b"{", headers={"content-type": "application/json"}
    )
    assert answer.status_code == 422


def test_the_body_is_bounded(client: TestClient, webhooks: TestClient) -> None:
    answer = webhooks.post(
        "/k8s/validate",
        content=b" " * (4 * 1024 * 1024 + 1),
        headers={"content-type": "application/json"},
    )
    assert answer.status_code == 413
    assert answer.json()["error"]["details"]["field"] == "body"


# -- node protection ------------------------------------------------------------------------


def node(labels: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": "gpu-node-01", "labels": labels},
        "spec": {"podCIDR": "10.244.1.0/24"},
        "status": {"capacity": {"nvidia.com/gpu": "8"}},
    }


@pytest.mark.parametrize(
    ("username", "new_labels", "allowed"),
    [
        ("system:node:gpu-node-01", {"sovereign.io/zone": "tw"}, False),
        ("alice@example.com", {}, False),  # removing counts as changing
        ("alice@example.com", {"sovereign.io/zone": "jp", "team": "nlp"}, True),
        (WORKER, {"sovereign.io/zone": "tw"}, True),
    ],
)
def test_sovereign_node_labels_change_only_by_the_control_plane(
    client: TestClient,
    conn: DbConnection,
    username: str,
    new_labels: dict[str, str],
    allowed: bool,
    webhooks: TestClient,
) -> None:
    old = node({"sovereign.io/zone": "jp", "kubernetes.io/hostname": "gpu-node-01"})
    new = node({"kubernetes.io/hostname": "gpu-node-01", **new_labels})
    body = review(new, operation="UPDATE", username=username, old=old, namespace=None)
    response = post(webhooks, "/k8s/validate-node", body)
    assert response["allowed"] is allowed
    conn.rollback()
    events = audit.list_events(conn, object_type="kubernetes_node").items
    if allowed:
        assert events == []
        return
    message = response["status"]["message"]
    assert WORKER in message
    assert "sovereign.io/zone (jp -> " in message
    # The attempt is evidence: who, which Node, each protected label old -> new.
    [event] = events
    assert event.action == "kubernetes_node.label_change_denied"
    assert (event.object_id, event.actor_name) == ("gpu-node-01", username)
    assert event.after == {
        "node": "gpu-node-01",
        "operation": "UPDATE",
        "username": username,
        "review_uid": body["request"]["uid"],
        "changes": [
            {"key": "sovereign.io/zone", "old": "jp", "new": new_labels.get("sovereign.io/zone")}
        ],
        # No client CA here: the record says the claimed user went unchecked.
        "caller": UNCHECKED,
    }


@pytest.mark.parametrize(
    ("old_labels", "new_labels"),
    [
        # A node in tw claiming also to lie in jp, which the compact affinity selects on.
        ({"sovereign.io/zone.tw": "true"}, {"sovereign.io/zone.tw": "true", ZONE_JP: "true"}),
        ({ZONE_JP: "true"}, {}),  # dropping out of jp
        ({ZONE_JP: "true"}, {ZONE_JP: "false"}),
    ],
)
def test_the_ancestor_zone_labels_are_protected_too(
    conn: DbConnection,
    webhooks: TestClient,
    old_labels: dict[str, str],
    new_labels: dict[str, str],
) -> None:
    body = review(
        node(new_labels),
        operation="UPDATE",
        username="system:node:gpu-node-01",
        old=node(old_labels),
        namespace=None,
    )
    response = post(webhooks, "/k8s/validate-node", body)
    assert response["allowed"] is False
    assert f"{ZONE_JP} ({old_labels.get(ZONE_JP, '<none>')} -> " in response["status"]["message"]
    conn.rollback()
    [event] = audit.list_events(conn, object_type="kubernetes_node").items
    assert event.after["changes"] == [
        {"key": ZONE_JP, "old": old_labels.get(ZONE_JP), "new": new_labels.get(ZONE_JP)}
    ]
    # The label sync's own user may.
    synced = review(node(new_labels), operation="UPDATE", username=WORKER, old=node(old_labels))
    assert post(webhooks, "/k8s/validate-node", synced)["allowed"] is True


def test_a_dry_run_node_denial_records_nothing(
    client: TestClient, conn: DbConnection, webhooks: TestClient
) -> None:
    old = node({"sovereign.io/zone": "jp"})
    new = node({"sovereign.io/zone": "tw", "sovereign.io/country": "TW"})
    body = review(new, operation="UPDATE", username="alice", old=old, namespace=None, dry_run=True)
    response = post(webhooks, "/k8s/validate-node", body)
    assert response["allowed"] is False
    assert (
        "sovereign.io/country (<none> -> TW), sovereign.io/zone (jp -> tw)"
        in (response["status"]["message"])
    )
    conn.rollback()
    assert audit.list_events(conn, object_type="kubernetes_node").total == 0


def test_the_api_and_the_webhook_listener_serve_apart(
    client: TestClient, webhooks: TestClient, admin: dict[str, str]
) -> None:
    """The API's port has no /k8s route; the listener has nothing but /k8s and health."""
    for path in ("/k8s/mutate", "/k8s/validate", "/k8s/validate-node"):
        assert client.post(path, json={}).status_code == 404, path
    for path in ("/v1/nodes", "/v1/policies", "/docs", "/openapi.json", "/metrics"):
        assert webhooks.get(path, headers=admin).status_code == 404, path
    assert webhooks.get("/healthz").json() == {"status": "ok"}
    assert webhooks.get("/readyz").status_code == 200
