"""The pure rules of the admission webhooks: GPUs asked for, the declaration, the patch."""

import base64
import copy
import json
import random
import uuid
from dataclasses import replace
from typing import Any

import jsonpatch
import pytest

from control_plane.admission import pods
from control_plane.admission.models import PodTemplate, WorkloadKind, parse_template
from control_plane.domain.fleet import DriftStatus, NodeStatus, ProvenanceStatus
from control_plane.domain.kubernetes import IN_ZONE_PREFIX, NODE_ID_LABEL, ZONE_LABEL
from control_plane.policy.engine import NodeIndex
from control_plane.policy.models import NodeView, ZoneView
from tests.unit.admission.affinity import matches, selected, synced_labels
from tests.unit.policy.builders import ZONES, node


def container(name: str = "main", **resources: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "image": "registry.local/train:1", "resources": resources}


def pod(
    containers: list[dict[str, Any]],
    init: list[dict[str, Any]] | None = None,
    annotations: dict[str, str] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "train", "namespace": "research"},
        "spec": {"containers": containers, **spec},
    }
    if init is not None:
        body["spec"]["initContainers"] = init
    if annotations is not None:
        body["metadata"]["annotations"] = annotations
    return body


def template(raw: dict[str, Any], kind: WorkloadKind = WorkloadKind.POD) -> PodTemplate:
    return parse_template(kind, raw)


def gpus(n: float | str) -> dict[str, Any]:
    return {"nvidia.com/gpu": n}


# -- GPU detection and the count rule ---------------------------------------------------


def test_a_pod_without_gpus_asks_for_none() -> None:
    raw = pod([container(limits={"cpu": "2", "memory": "8Gi"})])
    assert pods.gpu_ask(template(raw)) is None


def test_limits_or_requests_of_whole_gpus_count() -> None:
    assert pods.gpu_ask(template(pod([container(limits=gpus(2))]))) == pods.GpuAsk(2)
    assert pods.gpu_ask(template(pod([container(requests=gpus("1"))]))) == pods.GpuAsk(1)
    assert pods.gpu_ask(template(pod([container(limits=gpus(0))]))) is None


def test_regular_containers_add_up() -> None:
    raw = pod([container("a", limits=gpus(2)), container("b", limits=gpus(3)), container("c")])
    assert pods.gpu_ask(template(raw)) == pods.GpuAsk(5)


def test_init_containers_count_by_the_largest_not_the_sum() -> None:
    raw = pod(
        [container("main", limits=gpus(1))],
        init=[container("warm", limits=gpus(4)), container("fetch", limits=gpus(2))],
    )
    # max(sum(containers)=1, max(init)=4)
    assert pods.gpu_ask(template(raw)) == pods.GpuAsk(4)
    smaller = pod([container("main", limits=gpus(3))], init=[container("warm", limits=gpus(2))])
    assert pods.gpu_ask(template(smaller)) == pods.GpuAsk(3)


def test_a_sidecar_init_container_adds_to_the_containers() -> None:
    sidecar = {**container("proxy", limits=gpus(1)), "restartPolicy": "Always"}
    raw = pod([container("main", limits=gpus(2))], init=[sidecar])
    assert pods.gpu_ask(template(raw)) == pods.GpuAsk(3)


def test_mig_resources_ask_for_slices_of_their_profile() -> None:
    raw = pod([container(limits={"nvidia.com/mig-1g.10gb": 2})])
    assert pods.gpu_ask(template(raw)) == pods.GpuAsk(2, "1g.10gb")


CLAIMS = [{"name": "gpu", "resourceClaimTemplateName": "a100-x4"}]


def test_resource_claims_count_what_the_pod_declares_in_sovereign_gpus() -> None:
    # The count is in the ResourceClaimTemplate, which the review does not carry.
    raw = pod([container()], annotations={pods.GPUS: "4"}, resourceClaims=CLAIMS)
    assert pods.gpu_ask(template(raw)) == pods.GpuAsk(4)
    sliced = pod(
        [container()],
        annotations={pods.GPUS: "3", pods.MIG_PROFILE: "1g.10gb"},
        resourceClaims=CLAIMS,
    )
    assert pods.gpu_ask(template(sliced)) == pods.GpuAsk(3, "1g.10gb")
    # They add to the containers' extended resources; 0 says the claims are for other
    # devices, which only a pod with GPUs of its own may say.
    both = pod([container(limits=gpus(2))], annotations={pods.GPUS: "2"}, resourceClaims=CLAIMS)
    assert pods.gpu_ask(template(both)) == pods.GpuAsk(4)
    nics = pod([container(limits=gpus(2))], annotations={pods.GPUS: "0"}, resourceClaims=CLAIMS)
    assert pods.gpu_ask(template(nics)) == pods.GpuAsk(2)


@pytest.mark.parametrize(
    ("annotations", "claims", "field", "words"),
    [
        ({}, CLAIMS, "metadata.annotations[sovereign.io/gpus]", "annotate it with"),
        ({pods.GPUS: "0"}, CLAIMS, "metadata.annotations[sovereign.io/gpus]", "at least 1"),
        ({pods.GPUS: "two"}, CLAIMS, "metadata.annotations[sovereign.io/gpus]", "whole number"),
        ({pods.GPUS: "65"}, CLAIMS, "spec.containers", "at most 64"),
        (
            {pods.GPUS: "1", pods.MIG_PROFILE: "big"},
            CLAIMS,
            "metadata.annotations[sovereign.io/mig-profile]",
            "not a MIG profile",
        ),
    ],
)
def test_a_dra_pod_that_does_not_say_its_gpus_is_refused_not_guessed(
    annotations: dict[str, str], claims: list[dict[str, str]], field: str, words: str
) -> None:
    raw = pod([container()], annotations=annotations, resourceClaims=claims)
    with pytest.raises(pods.PodProblemError) as raised:
        pods.gpu_ask(template(raw))
    assert raised.value.field == field
    assert words in raised.value.message


def test_sovereign_gpus_without_claims_is_refused_on_a_gpu_pod_only() -> None:
    raw = pod([container(limits=gpus(1))], annotations={pods.GPUS: "2"})
    with pytest.raises(pods.PodProblemError) as raised:
        pods.gpu_ask(template(raw))
    assert raised.value.field == "metadata.annotations[sovereign.io/gpus]"
    assert "the pod has none (spec.resourceClaims)" in raised.value.message
    # A pod that asks for no GPU is left alone, stray annotation or not.
    assert pods.gpu_ask(template(pod([container()], annotations={pods.GPUS: "2"}))) is None


@pytest.mark.parametrize(
    ("limits", "field"),
    [
        (gpus("500m"), "spec.containers[0].resources.limits[nvidia.com/gpu]"),
        (gpus(1.5), "spec.containers[0].resources.limits[nvidia.com/gpu]"),
        (gpus(-1), "spec.containers[0].resources.limits[nvidia.com/gpu]"),
        ({"nvidia.com/gpu": 1, "nvidia.com/mig-1g.10gb": 1}, "spec.containers"),
        (gpus(65), "spec.containers"),
    ],
)
def test_an_unusable_gpu_request_names_the_field(limits: dict[str, Any], field: str) -> None:
    with pytest.raises(pods.PodProblemError) as raised:
        pods.gpu_ask(template(pod([container(limits=limits)])))
    assert raised.value.field == field


def test_a_malformed_pod_names_the_field() -> None:
    raw = pod([container()])
    raw["spec"]["containers"][0]["resources"] = {"limits": ["nvidia.com/gpu"]}
    with pytest.raises(ValueError, match=r"^spec\.containers\[0\]\.resources\.limits: "):
        template(raw)


def job(spec: dict[str, Any], annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "nightly", "annotations": annotations or {}},
        "spec": {"template": {"metadata": {}, "spec": spec}, "backoffLimit": 2},
    }


def cronjob(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": "nightly"},
        "spec": {
            "schedule": "0 2 * * *",
            "jobTemplate": {"spec": {"template": {"spec": spec}}},
        },
    }


def test_jobs_and_cronjobs_are_read_through_their_pod_templates() -> None:
    spec = {"containers": [container(limits=gpus(2))], "restartPolicy": "Never"}
    found = template(job(spec, {pods.DATASETS: "tickets"}), WorkloadKind.JOB)
    assert pods.gpu_ask(found) == pods.GpuAsk(2)
    assert found.pointer == "/spec/template"
    # The Job's own annotations declare it when its template does not.
    assert pods.declares(found.annotations)
    cron = template(cronjob(spec), WorkloadKind.CRONJOB)
    assert pods.gpu_ask(cron) == pods.GpuAsk(2)
    assert cron.pointer == "/spec/jobTemplate/spec/template"
    bad = cronjob({"containers": [container(limits=gpus("x"))]})
    with pytest.raises(pods.PodProblemError) as raised:
        pods.gpu_ask(template(bad, WorkloadKind.CRONJOB))
    assert raised.value.field.startswith("spec.jobTemplate.spec.template.spec.containers[0]")


# -- the declaration --------------------------------------------------------------------


def declared(annotations: dict[str, str], namespace: str = "research", **mapping: str) -> Any:
    found = template(pod([container(limits=gpus(1))], annotations=annotations))
    return pods.declaration(found, namespace, mapping, pods.GpuAsk(1))


def test_annotations_declare_the_workload() -> None:
    request = declared(
        {pods.DATASETS: "tickets, logs", pods.MODELS: "llama", pods.OUTPUT: "results-jp"}
    )
    assert request.tenant == "research"
    assert request.datasets == ["tickets", "logs"]
    assert request.models == ["llama"]
    assert request.output == "results-jp"
    assert request.gpu_count == 1


def test_the_tenant_is_the_annotation_else_the_mapping_else_the_namespace() -> None:
    assert declared({pods.DATASETS: ""}).tenant == "research"
    assert declared({pods.DATASETS: ""}, "ml-prod", **{"ml-prod": "research"}).tenant == "research"
    assert declared({pods.DATASETS: "", pods.TENANT: "platform"}).tenant == "platform"


def test_declared_means_any_of_datasets_models_or_output() -> None:
    assert pods.declares({pods.DATASETS: ""})
    assert pods.declares({pods.OUTPUT: "results-jp"})
    assert not pods.declares({pods.TENANT: "research", "team": "nlp"})


@pytest.mark.parametrize(
    ("annotations", "field"),
    [
        ({pods.DATASETS: "tickets,Tickets"}, "metadata.annotations[sovereign.io/datasets]"),
        ({pods.MODELS: "bad name"}, "metadata.annotations[sovereign.io/models][0]"),
        ({pods.OUTPUT: "-x"}, "metadata.annotations[sovereign.io/output]"),
        ({pods.DATASETS: "", pods.TENANT: "No_Such"}, "metadata.annotations[sovereign.io/tenant]"),
    ],
)
def test_a_bad_annotation_names_it(annotations: dict[str, str], field: str) -> None:
    with pytest.raises(pods.PodProblemError) as raised:
        declared(annotations)
    assert raised.value.field == field


def test_the_pod_templates_labels_are_the_workloads_labels() -> None:
    raw = pod([container(limits=gpus(1))], annotations={pods.DATASETS: ""})
    raw["metadata"]["labels"] = {"team": "nlp", "app.kubernetes.io/name": "train"}
    request = pods.declaration(template(raw), "research", {}, pods.GpuAsk(1))
    assert request.labels == {"team": "nlp", "app.kubernetes.io/name": "train"}
    # A Job's pods carry its template's labels, not the Job's: so is the Job decided.
    spec = {"containers": [container(limits=gpus(1))]}
    raw_job = job(spec, {pods.DATASETS: ""})
    raw_job["metadata"]["labels"] = {"team": "job-level"}
    raw_job["spec"]["template"]["metadata"]["labels"] = {"team": "pods"}
    found = template(raw_job, WorkloadKind.JOB)
    assert pods.declaration(found, "research", {}, pods.GpuAsk(1)).labels == {"team": "pods"}


@pytest.mark.parametrize(
    ("labels", "field", "words"),
    [
        ({"Bad Key": "x"}, "metadata.labels[Bad Key]", "not a label key"),
        ({"team": "x" * 257}, "metadata.labels[team]", "at most 256 characters"),
        ({"team": "a\u202eb"}, "metadata.labels[team]", "U+202E"),
        ({f"k{i}": "v" for i in range(65)}, "metadata.labels", "at most 64"),
    ],
)
def test_a_label_a_workload_may_not_carry_names_it(
    labels: dict[str, str], field: str, words: str
) -> None:
    raw = pod([container(limits=gpus(1))], annotations={pods.DATASETS: ""})
    raw["metadata"]["labels"] = labels
    with pytest.raises(pods.PodProblemError) as raised:
        pods.declaration(template(raw), "research", {}, pods.GpuAsk(1))
    assert raised.value.field == field
    assert words in raised.value.message
    spec = {"containers": [container(limits=gpus(1))]}
    raw_job = job(spec, {pods.DATASETS: ""})
    raw_job["spec"]["template"]["metadata"]["labels"] = labels
    with pytest.raises(pods.PodProblemError) as raised:
        pods.declaration(template(raw_job, WorkloadKind.JOB), "research", {}, pods.GpuAsk(1))
    assert raised.value.field == "spec.template." + field


def test_a_namespace_that_is_no_tenant_slug_says_so() -> None:
    with pytest.raises(pods.PodProblemError) as raised:
        declared({pods.DATASETS: ""}, "x" * 70)
    assert raised.value.field == "metadata.namespace"
    assert pods.TENANT in raised.value.message


# -- the affinity merge -----------------------------------------------------------------

ELIGIBLE = ["node-a", "node-b"]
RESTRICTION = {"key": NODE_ID_LABEL, "operator": "In", "values": ELIGIBLE}


def patched(raw: dict[str, Any], kind: WorkloadKind = WorkloadKind.POD) -> dict[str, Any]:
    found = template(raw, kind)
    inner = pods.template_of(kind, raw)
    operations = [
        *pods.affinity_patch(found, inner, [[RESTRICTION]]),
        *pods.annotation_patch(found, inner, {pods.DECISION_ID: "d-1"}),
    ]
    # Through the wire encoding, as the API server reads it.
    decoded = json.loads(base64.b64decode(pods.encode_patch(operations)))
    result: dict[str, Any] = jsonpatch.apply_patch(raw, decoded)
    return result


def required(spec: dict[str, Any]) -> list[dict[str, Any]]:
    terms: list[dict[str, Any]] = spec["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]["nodeSelectorTerms"]
    return terms


def test_without_affinity_one_term_is_added() -> None:
    result = patched(pod([container(limits=gpus(1))]))
    assert required(result["spec"]) == [{"matchExpressions": [RESTRICTION]}]
    assert result["metadata"]["annotations"] == {pods.DECISION_ID: "d-1"}


def test_the_restriction_is_anded_into_every_existing_term() -> None:
    terms = [
        {"matchExpressions": [{"key": "gpu", "operator": "In", "values": ["h100"]}]},
        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]},
        {},  # matches nothing: left as it is
    ]
    affinity: dict[str, Any] = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms},
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 1, "preference": {"matchExpressions": []}}
            ],
        },
        "podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": []},
    }
    raw = pod(
        [container(limits=gpus(1))],
        annotations={"team": "nlp"},
        affinity=copy.deepcopy(affinity),
        nodeSelector={"disk": "ssd"},
    )
    result = patched(raw)
    assert required(result["spec"]) == [
        {"matchExpressions": [terms[0]["matchExpressions"][0], RESTRICTION]},
        {"matchFields": terms[1]["matchFields"], "matchExpressions": [RESTRICTION]},
        {},
    ]
    # Everything else the pod said is kept.
    kept = result["spec"]["affinity"]
    assert kept["podAntiAffinity"] == affinity["podAntiAffinity"]
    assert (
        kept["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
        == (affinity["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"])
    )
    assert result["spec"]["nodeSelector"] == {"disk": "ssd"}
    assert result["metadata"]["annotations"] == {"team": "nlp", pods.DECISION_ID: "d-1"}


def test_affinity_without_node_affinity_or_required_part_gets_one_added() -> None:
    only_pod = pod([container(limits=gpus(1))], affinity={"podAffinity": {}})
    result = patched(only_pod)
    assert required(result["spec"]) == [{"matchExpressions": [RESTRICTION]}]
    assert result["spec"]["affinity"]["podAffinity"] == {}
    preferred_only = pod(
        [container(limits=gpus(1))],
        affinity={"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}},
    )
    assert required(patched(preferred_only)["spec"]) == [{"matchExpressions": [RESTRICTION]}]


def test_patching_twice_adds_nothing_more() -> None:
    once = patched(pod([container(limits=gpus(1))]))
    twice = patched(once)
    assert required(twice["spec"]) == required(once["spec"])


def test_jobs_and_cronjobs_are_patched_in_their_templates() -> None:
    spec = {"containers": [container(limits=gpus(1))], "restartPolicy": "Never"}
    result = patched(job(spec), WorkloadKind.JOB)
    assert required(result["spec"]["template"]["spec"]) == [{"matchExpressions": [RESTRICTION]}]
    assert result["spec"]["template"]["metadata"]["annotations"] == {pods.DECISION_ID: "d-1"}
    assert result["spec"]["backoffLimit"] == 2
    cron = patched(cronjob(spec), WorkloadKind.CRONJOB)
    inner = cron["spec"]["jobTemplate"]["spec"]["template"]
    assert required(inner["spec"]) == [{"matchExpressions": [RESTRICTION]}]
    assert inner["metadata"] == {"annotations": {pods.DECISION_ID: "d-1"}}


# -- the compact restriction: whole zones by their labels ---------------------------------

#: A zone whose slug is too long for a ``sovereign.io/zone.<slug>`` label (63 characters).
LONG = "z" * 63
TREE = {**ZONES, LONG: ZoneView(LONG, None, "JP"), "kyoto": ZoneView("kyoto", LONG, "JP")}


def uid(name: str) -> str:
    """A node id as the inventory gives them (a UUID), so id lists cost what they do."""
    return str(uuid.uuid5(uuid.NAMESPACE_DNS, name))


def fleet() -> NodeIndex:
    """Placeable nodes in most zones, and in jp-east and kyoto nodes nothing may use."""
    nodes = [
        *(node(f"east-{i}", "jp-east") for i in range(3)),
        *(node(f"dc1-{i}", "tokyo-dc1") for i in range(2)),
        node("west-0", "jp-west"),
        node("jp-0", "jp"),
        *(node(f"tw-{i}", "tw-north") for i in range(8)),
        *(node(f"us-{i}", "us-west") for i in range(2)),
        *(node(f"long-{i}", LONG) for i in range(2)),
        node("kyoto-0", "kyoto"),
        node("east-planned", "jp-east", status=NodeStatus.PLANNED),
        node("kyoto-drifted", "kyoto", drift=DriftStatus.DRIFTED),
        node("nowhere", None),
    ]
    return NodeIndex.build([replace(n, id=uid(n.hostname)) for n in nodes], TREE)


def mask(found: NodeIndex, names: set[str]) -> int:
    return sum(1 << found.position(uid(name)) for name in names)


def labelled(found: NodeIndex) -> set[str]:
    """The names of the nodes the sync labels."""
    return {found.node(i).hostname for i, labels in synced_labels(found).items() if labels}


def names(found: NodeIndex, ids: set[str]) -> set[str]:
    return {found.node(node_id).hostname for node_id in ids}


def injected(found: NodeIndex, eligible: set[str], **spec: Any) -> list[dict[str, Any]]:
    """The required terms of a pod (with ``spec``) patched for ``eligible``."""
    raw = pod([container(limits=gpus(1))], **spec)
    ways = pods.node_restriction(found, mask(found, eligible), zone_labels=True)
    result = jsonpatch.apply_patch(raw, pods.affinity_patch(template(raw), raw, ways))
    return required(result["spec"])


def test_every_way_selects_exactly_the_eligible_nodes_on_the_synced_labels() -> None:
    found = fleet()
    everyone = [n.hostname for n in found.nodes]
    chance = random.Random(12)
    cases = [set(everyone), labelled(found), {"east-0"}]
    for _ in range(300):
        # Unions of whole zones (all their nodes, placeable or not), plus a few strays.
        zones = chance.sample(sorted(found.within_zone), chance.randint(1, 3))
        eligible = {n.hostname for n in found.nodes if set(found.ancestors(n.zone)) & set(zones)}
        cases.append(eligible | set(chance.sample(everyone, chance.randint(0, 2))))
        cases.append(set(chance.sample(everyone, chance.randint(1, len(everyone)))))
    for eligible in cases:
        expected = eligible & labelled(found)
        for way in pods.node_restriction(found, mask(found, eligible), zone_labels=True):
            terms = [{"matchExpressions": [alternative]} for alternative in way]
            assert names(found, selected(terms, found)) == expected, (eligible, way)
        assert names(found, selected(injected(found, eligible), found)) == expected


def test_a_whole_zone_tree_is_one_zone_label() -> None:
    found = fleet()
    jp = {"east-0", "east-1", "east-2", "dc1-0", "dc1-1", "west-0", "jp-0", "east-planned"}
    assert injected(found, jp) == [
        {"matchExpressions": [{"key": IN_ZONE_PREFIX + "jp", "operator": "Exists"}]}
    ]


def test_every_placeable_node_is_one_zone_list() -> None:
    found = fleet()
    [term] = injected(found, labelled(found))
    [expression] = term["matchExpressions"]
    assert expression["key"] == ZONE_LABEL
    assert set(expression["values"]) == {
        n.zone for n in found.nodes if n.hostname in labelled(found)
    }


def test_whole_zones_and_a_few_more_nodes_are_a_term_each_anded_into_every_term() -> None:
    found = fleet()
    eligible = {f"tw-{i}" for i in range(8)} | {"us-0"}
    gpu = {"key": "gpu", "operator": "In", "values": ["h100"]}
    arch = {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [gpu]}, {"matchExpressions": [arch]}]
            }
        }
    }
    terms = injected(found, eligible, affinity=affinity)
    whole = {"key": IN_ZONE_PREFIX + "tw-north", "operator": "Exists"}
    stray = {"key": NODE_ID_LABEL, "operator": "In", "values": [uid("us-0")]}
    assert terms == [
        {"matchExpressions": [gpu, whole]},
        {"matchExpressions": [gpu, stray]},
        {"matchExpressions": [arch, whole]},
        {"matchExpressions": [arch, stray]},
    ]
    # Each of the pod's own terms still holds, now only on the eligible nodes.
    for own in (gpu, arch):
        mine = [term for term in terms if own in term["matchExpressions"]]
        on = {
            node_id: {**labels, own["key"]: own["values"][0]}
            for node_id, labels in synced_labels(found).items()
        }
        chosen = {node_id for node_id, labels in on.items() if matches(mine, labels)}
        assert names(found, chosen) == eligible


def test_a_zone_too_long_for_its_label_is_listed_by_its_own_zone() -> None:
    found = fleet()
    [term] = injected(found, {"long-0", "long-1", "kyoto-0"})
    assert term["matchExpressions"] == [
        {"key": ZONE_LABEL, "operator": "In", "values": sorted(["kyoto", LONG])}
    ]


def test_patching_twice_with_several_terms_adds_nothing_more() -> None:
    found = fleet()
    ways = pods.node_restriction(
        found, mask(found, {f"tw-{i}" for i in range(8)} | {"us-0"}), zone_labels=True
    )
    raw = pod([container(limits=gpus(1))])
    once = jsonpatch.apply_patch(raw, pods.affinity_patch(template(raw), raw, ways))
    assert len(required(once["spec"])) == 2
    assert pods.affinity_patch(template(once), once, ways) == []


# -- the pod's own node selection -------------------------------------------------------


def index() -> NodeIndex:
    zones = {"jp": ZoneView("jp", None, "JP"), "tw": ZoneView("tw", None, "TW")}
    nodes = [
        NodeView("node-a", "a", "jp", provenance_status=ProvenanceStatus.VERIFIED),
        NodeView("node-b", "b", "jp"),
        NodeView("node-c", "c", "tw"),
    ]
    return NodeIndex.build(nodes, zones)


def selectable(**spec: Any) -> list[str]:
    found = template(pod([container(limits=gpus(1))], **spec))
    return pods.selectable(found, ["node-a", "node-b", "node-c"], index())


def term(*expressions: dict[str, Any]) -> dict[str, Any]:
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": list(expressions)}]
            }
        }
    }


def test_node_selection_is_judged_on_the_sovereign_labels() -> None:
    assert selectable() == ["node-a", "node-b", "node-c"]
    assert selectable(nodeSelector={"sovereign.io/country": "TW"}) == ["node-c"]
    assert selectable(nodeSelector={"sovereign.io/zone": "de"}) == []
    verified = {"key": "sovereign.io/provenance", "operator": "In", "values": ["verified"]}
    assert selectable(affinity=term(verified)) == ["node-a"]
    not_jp = {"key": "sovereign.io/zone", "operator": "NotIn", "values": ["jp"]}
    assert selectable(affinity=term(not_jp)) == ["node-c"]
    origin = {"key": "sovereign.io/origin-country", "operator": "Exists"}
    assert selectable(affinity=term(origin)) == []


def test_labels_not_judged_here_never_exclude_a_node() -> None:
    assert selectable(nodeSelector={"nvidia.com/gpu.product": "H100"}) == [
        "node-a",
        "node-b",
        "node-c",
    ]
    other = {"key": "kubernetes.io/hostname", "operator": "In", "values": ["x"]}
    assert selectable(affinity=term(other)) == ["node-a", "node-b", "node-c"]
