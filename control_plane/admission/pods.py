"""Pods as the webhooks read them: GPUs asked for, the declaration, node selection, the patch.

Pure functions over the parsed objects of ``models``; no I/O, so every rule here is
tested without a cluster or a database.

**GPUs.** A pod asks for GPUs when a container or init container requests or limits
``nvidia.com/gpu`` (whole GPUs) or ``nvidia.com/mig-<profile>`` (MIG slices of that
profile, e.g. ``nvidia.com/mig-1g.10gb``), or when it has DRA ``resourceClaims``. How
many: the Kubernetes rule for a pod's effective request. Regular containers run side by
side, so theirs add up; init containers run one after the other before them, so the
largest counts; an init container with ``restartPolicy: Always`` (a sidecar) keeps
running, so it adds to everything after it:

    effective = max(sum(containers) + sum(sidecars),
                    max over init containers i of (init_i + sidecars started before i))

Per container, the limit counts, or the request when there is no limit (Kubernetes
requires them equal for extended resources). One pod asks for one kind: whole GPUs, or
slices of one profile.

**DRA.** A pod that names ``resourceClaims`` says nothing of how many devices they
allocate: the count is in the ResourceClaim or ResourceClaimTemplate, which the review
does not carry (and which may be created after the pod). So such a pod must say it:
``sovereign.io/gpus`` is how many GPUs its claims allocate, whole GPUs or, with
``sovereign.io/mig-profile``, MIG slices of that profile; they add to what its
containers ask for through extended resources. A pod with claims and no such annotation
is a denial naming it, never a guess: a guess of one GPU would let a claim of eight be
placed where one fits. ``0`` is taken only beside extended GPU resources (claims for
other devices); a pod whose only devices come from claims is governed as a GPU pod and
declares at least one, so no annotation lets a DRA GPU pod out of the webhooks' sight.

**Declaration.** ``sovereign.io/datasets`` and ``sovereign.io/models`` (comma-separated
names), ``sovereign.io/output`` and ``sovereign.io/tenant``, validated by the rules of
``POST /v1/workloads`` (``facts.workloads``). A pod declares itself with any of the first
three (an empty ``sovereign.io/datasets: ""`` says it reads none). The pod template's
labels are the workload's ``labels`` (what CEL reads as ``workload.labels``), under the
same rules as the labels of ``POST /v1/workloads``.

**Node selection.** The pod's ``nodeSelector`` and required node affinity, judged against
the ``sovereign.io/*`` labels the label sync puts on each node (``NODE_LABELS``). A
requirement on any other key (or on ``matchFields``) cannot be judged here and is taken
as possibly met, so a pod is refused only when what it asks for certainly leaves it no
eligible node.

**Patch.** The restriction to the eligible nodes is ANDed into every existing required
``nodeSelectorTerm`` (Kubernetes ORs the terms, so adding a term of its own would widen
the pod's choice, never narrow it); an empty term, which matches nothing, is left as it
is. Without required affinity, terms of its own are added. The restriction is the
smallest of a few exact ways (``node_restriction``): ``sovereign.io/node-id In [eligible
ids]``, or, where the eligible nodes are all the labelled nodes of whole zones, those
zones' labels (``sovereign.io/zone.jp Exists``, ``sovereign.io/zone In [...]``), with an
id list for any eligible nodes beside them. A restriction of several alternatives is
ORed as one term per alternative, each a copy of the pod's term, so it stays one
selection ANDed into each. Applying the patch twice adds nothing the second time (the API
server may call the webhook again).
"""

import base64
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pydantic import TypeAdapter, ValidationError

from control_plane.admission.models import (
    Container,
    NodeSelectorRequirement,
    NodeSelectorTerm,
    PodDeclaration,
    PodTemplate,
    WorkloadKind,
)
from control_plane.domain import kubernetes

# The pod annotations this module reads and the webhooks set, named where every feature
# reads them (``domain.kubernetes``) and offered here as the admission's own words.
from control_plane.domain.kubernetes import DATASETS as DATASETS
from control_plane.domain.kubernetes import DECISION_ID as DECISION_ID
from control_plane.domain.kubernetes import GPUS as GPUS
from control_plane.domain.kubernetes import MIG_PROFILE as MIG_PROFILE
from control_plane.domain.kubernetes import MODELS as MODELS
from control_plane.domain.kubernetes import NODE_ID_LABEL, NODE_LABELS, ZONE_LABEL
from control_plane.domain.kubernetes import OUTPUT as OUTPUT
from control_plane.domain.kubernetes import POLICY_SET_VERSION as POLICY_SET_VERSION
from control_plane.domain.kubernetes import TENANT as TENANT
from control_plane.domain.types import MAX_LABELS
from control_plane.facts.workloads import MAX_GPUS_PER_WORKLOAD, MigProfile, WorkloadRequest
from control_plane.policy.engine import NodeIndex
from control_plane.policy.models import NodeView

WHOLE_GPU = "nvidia.com/gpu"
MIG_PREFIX = "nvidia.com/mig-"

_DECLARING = (DATASETS, MODELS, OUTPUT)
_FIELD_ANNOTATION = {"datasets": DATASETS, "models": MODELS, "output": OUTPUT, "tenant": TENANT}


class PodProblemError(Exception):
    """Something in the pod (or its declaration) that makes it a denial, naming the field."""

    def __init__(self, field: str, message: str) -> None:
        """``field``: where in the object, as ``spec.containers[0].resources.limits``."""
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


# -- GPUs ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GpuAsk:
    """What a pod asks for: ``count`` whole GPUs, or MIG slices of ``mig_profile``."""

    count: int
    mig_profile: str | None = None


def _whole_number(value: object, field: str) -> int:
    """A GPU quantity: a whole number (``1``, ``"2"``); ``500m`` or ``1.5`` is refused."""
    if isinstance(value, bool):
        raise PodProblemError(field, "must be a whole number of devices")
    if isinstance(value, int):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and value.strip().isdigit():
        number = int(value.strip())
    else:
        raise PodProblemError(field, f"must be a whole number of devices, not {value!r}")
    if number < 0:
        raise PodProblemError(field, "must not be negative")
    return number


def _profile(resource: str) -> str | None:
    """The MIG profile of an extended resource name, or None if it is not a GPU resource."""
    if resource == WHOLE_GPU:
        return ""
    if resource.startswith(MIG_PREFIX):
        return resource.removeprefix(MIG_PREFIX)
    return None


def container_gpus(container: Container, field: str) -> dict[str, int]:
    """One container's GPU resources: ``""`` for whole GPUs, else the MIG profile, to count.

    The limit counts, else the request (equal when both are given, as Kubernetes
    requires for extended resources; the larger if not).
    """
    found: dict[str, int] = {}
    resources = container.resources
    for part, quantities in (("limits", resources.limits), ("requests", resources.requests)):
        for resource, value in quantities.items():
            profile = _profile(resource)
            if profile is None:
                continue
            count = _whole_number(value, f"{field}.resources.{part}[{resource}]")
            found[profile] = max(found.get(profile, 0), count)
    return found


def effective_gpus(template: PodTemplate) -> dict[str, int]:
    """The pod's effective GPU request per kind, by the Kubernetes rule (module docstring)."""
    spec = template.spec
    running: dict[str, int] = {}
    sidecars: dict[str, int] = {}
    init_peak: dict[str, int] = {}
    where = template.spec_path
    for position, container in enumerate(spec.init_containers):
        asks = container_gpus(container, f"{where}.initContainers[{position}]")
        for kind, count in asks.items():
            if container.restart_policy == "Always":
                sidecars[kind] = sidecars.get(kind, 0) + count
                init_peak[kind] = max(init_peak.get(kind, 0), sidecars[kind])
            else:
                init_peak[kind] = max(init_peak.get(kind, 0), sidecars.get(kind, 0) + count)
    for position, container in enumerate(spec.containers):
        for kind, count in container_gpus(container, f"{where}.containers[{position}]").items():
            running[kind] = running.get(kind, 0) + count
    kinds = set(running) | set(sidecars) | set(init_peak)
    return {
        kind: max(running.get(kind, 0) + sidecars.get(kind, 0), init_peak.get(kind, 0))
        for kind in sorted(kinds)
    }


_MIG_PROFILE = TypeAdapter(MigProfile)


def _annotation(key: str) -> str:
    return f"metadata.annotations[{key}]"


def claimed_gpus(template: PodTemplate) -> dict[str, int]:
    """What the pod's DRA resource claims allocate, as it declares (``""``: whole GPUs).

    Empty for a pod without claims; a pod with claims must carry ``sovereign.io/gpus``
    (module docstring).
    """
    annotations = template.annotations
    if not template.spec.resource_claims:
        return {}
    count_text = annotations.get(GPUS)
    if count_text is None:
        raise PodProblemError(
            _annotation(GPUS),
            f"the pod has DRA resource claims ({template.spec_path}.resourceClaims), whose"
            f" device count is in the ResourceClaim, not in the pod: annotate it with {GPUS}"
            f" (how many GPUs its claims allocate; with {MIG_PROFILE}, MIG slices of that"
            " profile)",
        )
    count = _whole_number(count_text, _annotation(GPUS))
    profile = ""
    if MIG_PROFILE in annotations:
        try:
            profile = _MIG_PROFILE.validate_python(annotations[MIG_PROFILE])
        except ValidationError:
            raise PodProblemError(
                _annotation(MIG_PROFILE),
                f"{annotations[MIG_PROFILE]!r} is not a MIG profile as NVIDIA names them (1g.10gb)",
            ) from None
    return {profile: count} if count else {}


def gpu_ask(template: PodTemplate) -> GpuAsk | None:
    """What the pod asks for, or None when it asks for no GPU (it is then left alone).

    Its containers' extended resources plus what its DRA claims allocate (as it declares).
    """
    asked = {kind: count for kind, count in effective_gpus(template).items() if count > 0}
    where = template.spec_path
    if asked and not template.spec.resource_claims:
        # It would count nothing and say otherwise; on a pod without GPUs it is harmless.
        for key in (GPUS, MIG_PROFILE):
            if key in template.annotations:
                raise PodProblemError(
                    _annotation(key),
                    f"counts the GPUs of DRA resource claims, and the pod has none"
                    f" ({where}.resourceClaims); its containers' nvidia.com/* resources say"
                    " what it asks for",
                )
    for kind, count in claimed_gpus(template).items():
        asked[kind] = asked.get(kind, 0) + count
    if not asked:
        if template.spec.resource_claims:
            raise PodProblemError(
                _annotation(GPUS),
                "must be at least 1: the pod's only devices come from DRA resource claims,"
                " which Sovereign cannot see into, so it is governed as a GPU pod (a pod"
                " whose claims are for other devices runs in an exempt namespace)",
            )
        return None
    if len(asked) > 1:
        names = ", ".join(WHOLE_GPU if kind == "" else MIG_PREFIX + kind for kind in asked)
        raise PodProblemError(
            f"{where}.containers",
            f"asks for {names}: a pod may ask for whole GPUs or for MIG slices of one profile,"
            " not several kinds",
        )
    [(kind, count)] = asked.items()
    if count > MAX_GPUS_PER_WORKLOAD:
        raise PodProblemError(
            f"{where}.containers",
            f"asks for {count} GPUs; placement is on one node, at most {MAX_GPUS_PER_WORKLOAD}",
        )
    return GpuAsk(count, kind or None)


# -- the declaration -----------------------------------------------------------------


def declares(annotations: Mapping[str, str]) -> bool:
    """Whether the pod declares what it touches (any of datasets, models, output)."""
    return any(key in annotations for key in _DECLARING)


def _names(value: str | None) -> list[str]:
    if value is None:
        return []
    return [name.strip() for name in value.split(",") if name.strip()]


def _annotation_field(loc: Sequence[int | str]) -> str:
    """Where a declaration error lies: the annotation, and the position in its list."""
    head = str(loc[0]) if loc else "tenant"
    annotation = _FIELD_ANNOTATION.get(head, head)
    rest = "".join(f"[{part}]" for part in loc[1:])
    return f"metadata.annotations[{annotation}]{rest}"


def declaration(
    template: PodTemplate, namespace: str, namespace_tenants: Mapping[str, str], ask: GpuAsk
) -> WorkloadRequest:
    """The workload the pod declares, checked as ``POST /v1/workloads`` checks one.

    The tenant is ``sovereign.io/tenant``, else the setting's mapping of the namespace,
    else the namespace itself. A bad value is a ``PodProblemError`` naming the annotation.
    """
    annotations = template.annotations
    tenant = annotations.get(TENANT) or namespace_tenants.get(namespace, namespace)
    try:
        declared = PodDeclaration.model_validate(
            {
                "tenant": tenant,
                "datasets": _names(annotations.get(DATASETS)),
                "models": _names(annotations.get(MODELS)),
                "output": annotations.get(OUTPUT) or None,
                "labels": template.labels,
            }
        )
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        message = error["msg"].removeprefix("Value error, ")
        if error["loc"] and error["loc"][0] == "labels":
            raise _label_problem(template, error["loc"], message) from None
        if error["loc"] and error["loc"][0] == "tenant" and TENANT not in annotations:
            raise PodProblemError(
                "metadata.namespace",
                f"namespace {namespace!r} names no valid tenant ({message}); annotate the pod"
                f" with {TENANT}",
            ) from None
        raise PodProblemError(_annotation_field(error["loc"]), message) from None
    return WorkloadRequest(
        tenant=declared.tenant,
        datasets=declared.datasets,
        models=declared.models,
        output=declared.output,
        gpu_count=ask.count,
        mig_profile=ask.mig_profile,
        labels=declared.labels,
    )


def _label_problem(
    template: PodTemplate, loc: Sequence[int | str], message: str
) -> PodProblemError:
    """A label ``POST /v1/workloads`` would refuse, named where it sits in the object."""
    where = f"{template.metadata_path}.labels"
    if len(loc) < 2:
        return PodProblemError(
            where, f"has {len(template.labels)} labels; a workload carries at most {MAX_LABELS}"
        )
    key = str(loc[1])
    if len(loc) > 2:
        message = (
            "is not a label key a workload may carry: an optional lower-case DNS prefix and"
            " '/', then at most 63 letters, digits, '-', '_' or '.', beginning and ending with"
            " a letter or digit"
        )
    return PodProblemError(f"{where}[{key}]", message)


def declared_field(request_field: str, namespace_default: bool) -> str:
    """The pod field behind a field of the workload request (``datasets.1``), for messages."""
    head, _, rest = request_field.partition(".")
    if head == "tenant" and namespace_default:
        return "metadata.namespace"
    return _annotation_field([head, *([int(rest)] if rest.isdigit() else [])])


# -- node selection ------------------------------------------------------------------


class Match(StrEnum):
    """Whether a node requirement holds: yes, no, or unknown (a label not judged here)."""

    YES = "yes"
    NO = "no"
    UNKNOWN = "unknown"


def node_labels(node: NodeView, index: NodeIndex) -> dict[str, str]:
    """The ``NODE_LABELS`` a node carries (those it has a value for), as the sync writes them."""
    return kubernetes.node_labels(
        node.id,
        node.zone,
        index.country_of(node.zone),
        node.origin_country,
        node.provenance_status.value,
    )


def _requirement(requirement: NodeSelectorRequirement, labels: Mapping[str, str]) -> Match:
    if requirement.key not in NODE_LABELS:
        return Match.UNKNOWN
    value = labels.get(requirement.key)
    operator = requirement.operator
    if operator == "In":
        return Match.YES if value is not None and value in requirement.values else Match.NO
    if operator == "NotIn":
        return Match.YES if value is None or value not in requirement.values else Match.NO
    if operator == "Exists":
        return Match.YES if value is not None else Match.NO
    if operator == "DoesNotExist":
        return Match.YES if value is None else Match.NO
    return Match.UNKNOWN  # Gt and Lt compare integers; no label judged here holds one


def _all(matches: Iterable[Match]) -> Match:
    result = Match.YES
    for match in matches:
        if match is Match.NO:
            return Match.NO
        if match is Match.UNKNOWN:
            result = Match.UNKNOWN
    return result


def _term(term: NodeSelectorTerm, labels: Mapping[str, str]) -> Match:
    if not term.match_expressions and not term.match_fields:
        return Match.NO  # an empty term selects nothing
    found = [_requirement(requirement, labels) for requirement in term.match_expressions]
    if term.match_fields:
        found.append(Match.UNKNOWN)
    return _all(found)


def selects(template: PodTemplate, labels: Mapping[str, str]) -> Match:
    """Whether the pod's own nodeSelector and required node affinity admit a node so labelled."""
    spec = template.spec
    by_selector = _all(
        (
            Match.UNKNOWN
            if key not in NODE_LABELS
            else Match.YES
            if labels.get(key) == value
            else Match.NO
        )
        for key, value in spec.node_selector.items()
    )
    terms = spec.required_terms()
    if terms is None:
        return by_selector
    by_terms = Match.NO
    for term in terms:
        match = _term(term, labels)
        if match is Match.YES:
            by_terms = Match.YES
            break
        if match is Match.UNKNOWN:
            by_terms = Match.UNKNOWN
    return _all((by_selector, by_terms))


def selects_any(template: PodTemplate, node_ids: Iterable[str], index: NodeIndex) -> bool:
    """Whether the pod's own node selection may admit one of ``node_ids`` at all.

    Stops at the first node it may admit, and a pod that selects nothing itself (no
    ``nodeSelector``, no required affinity) admits any, so the usual pod costs nothing
    however many nodes are eligible.
    """
    if not template.spec.node_selector and template.spec.required_terms() is None:
        return any(True for _ in node_ids)
    return any(
        selects(template, node_labels(index.node(node_id), index)) is not Match.NO
        for node_id in node_ids
    )


def selectable(template: PodTemplate, node_ids: Iterable[str], index: NodeIndex) -> list[str]:
    """The nodes among ``node_ids`` the pod's own node selection may admit (in that order)."""
    return [
        node_id
        for node_id in node_ids
        if selects(template, node_labels(index.node(node_id), index)) is not Match.NO
    ]


# -- the patch -----------------------------------------------------------------------


def _pointer(*parts: str) -> str:
    """An RFC 6901 JSON pointer from path parts (``~`` and ``/`` escaped)."""
    return "".join("/" + part.replace("~", "~0").replace("/", "~1") for part in parts)


#: One ``matchExpressions`` entry: ``{"key", "operator", "values"?}``.
Requirement = dict[str, Any]


def _ids(index: NodeIndex, mask: int) -> Requirement:
    return {"key": NODE_ID_LABEL, "operator": "In", "values": index.ids_of(mask)}


def _whole_zones(index: NodeIndex, labelled: int, eligible: int) -> tuple[list[str], int]:
    """The own zones all of whose labelled nodes are eligible, and the nodes they hold."""
    zones: list[str] = []
    covered = 0
    for zone, members in index.by_zone.items():
        here = labelled & members
        if zone is not None and here and not here & ~eligible:
            zones.append(zone)
            covered |= here
    return sorted(zones), covered


def _whole_subtrees(index: NodeIndex, labelled: int, eligible: int) -> tuple[list[str], int]:
    """The outermost zones whose labelled nodes, inner zones included, are all eligible.

    Only zones with a ``sovereign.io/zone.<slug>`` label count; also the nodes they hold.
    """
    whole: dict[str, int] = {}
    for zone, members in index.within_zone.items():
        here = labelled & members
        if here and not here & ~eligible and kubernetes.in_zone_label(zone) is not None:
            whole[zone] = here
    outermost = sorted(
        zone for zone in whole if not any(outer in whole for outer in index.ancestors(zone)[1:])
    )
    covered = 0
    for zone in outermost:
        covered |= whole[zone]
    return outermost, covered


def node_restriction(
    index: NodeIndex, eligible: int, *, zone_labels: bool = False
) -> list[list[Requirement]]:
    """Exact ways to select the ``eligible`` nodes (a mask over ``index``) by their labels.

    Without ``zone_labels`` (``SOVEREIGN_ADMISSION__AFFINITY=node_ids``, the default) only the
    id list of 1. below: a pending pod can then go only to nodes the engine judged
    (docs/kubernetes.md, "By id or by zone").

    Each way is a list of alternatives, one requirement each, of which a node must meet
    one (``affinity_patch`` ORs them as terms and keeps the smallest way). On the labels
    the sync writes from the same snapshot (``cluster.service.desired_labels``: a
    placeable node with a zone carries them all, any other none), every way selects
    exactly the eligible nodes that carry labels:

    1. ``sovereign.io/node-id In [every eligible id]``, the plain one (left out where
       the zone list of 2. alone is certainly smaller);
    2. ``sovereign.io/zone In [zones]`` for the zones all of whose labelled nodes are
       eligible, beside (as another alternative) an id list of the eligible nodes
       outside them, if any;
    3. ``sovereign.io/zone.<slug> Exists`` for each outermost zone whose labelled nodes,
       inner zones included, are all eligible, beside ``sovereign.io/zone In`` for the
       zones whole by their own nodes outside those, and an id list for the rest.

    An eligible node without labels (the engine's baseline leaves only active nodes, so
    one without a zone) is selected by none of them, the id list included; the zone ways
    leave it out. Costs a few masks per zone, not a walk of the nodes.
    """
    if not zone_labels:
        return [[_ids(index, eligible)]]
    labelled = index.placeable() & ~index.by_zone.get(None, 0)
    ways: list[list[Requirement]] = []
    zones, by_zone = _whole_zones(index, labelled, eligible)
    ids_lose = False
    if zones:
        way = [{"key": ZONE_LABEL, "operator": "In", "values": zones}]
        rest = eligible & labelled & ~by_zone
        ways.append([*way, _ids(index, rest)] if rest else way)
        # An id list is at least its key and 4 bytes an id: when the zone list alone is
        # smaller, the id list can never be kept, and is not built (5,000 ids: 0.3 ms).
        ids_lose = (
            not rest and _size(way[0]) < _size({"key": NODE_ID_LABEL}) + 4 * eligible.bit_count()
        )
    if not ids_lose:
        ways.insert(0, [_ids(index, eligible)])
    outermost, by_subtree = _whole_subtrees(index, labelled, eligible)
    if outermost:
        way = [
            {"key": kubernetes.IN_ZONE_PREFIX + zone, "operator": "Exists"} for zone in outermost
        ]
        inside = [zone for zone in zones if not index.by_zone[zone] & by_subtree]
        if inside:
            way.append({"key": ZONE_LABEL, "operator": "In", "values": inside})
        rest = eligible & labelled & ~by_subtree & ~by_zone
        ways.append([*way, _ids(index, rest)] if rest else way)
    return ways


def _size(requirement: Requirement) -> int:
    """About how many bytes of JSON a requirement is (its values counted, not encoded)."""
    values = requirement.get("values") or ()
    return 40 + len(requirement["key"]) + sum(map(len, values)) + 3 * len(values)


def _restricted(
    term: dict[str, Any], way: Sequence[Requirement], known: Sequence[Requirement]
) -> list[dict[str, Any]]:
    """``term`` ANDed with the OR of ``way``'s alternatives: one term per alternative.

    An empty term (it matches nothing) is kept as it is, and so is one that already holds
    one of the ``known`` alternatives (of any of the equivalent ways): each selects only
    eligible nodes, so the term is already restricted (the webhook's second call on the
    same object, which may find another way the smallest now that the terms are there).
    """
    expressions = list(term.get("matchExpressions") or [])
    if not expressions and not term.get("matchFields"):
        return [term]
    if any(alternative in expressions for alternative in known):
        return [term]
    return [{**term, "matchExpressions": [*expressions, alternative]} for alternative in way]


def _smallest(
    terms: Sequence[dict[str, Any]], ways: Sequence[Sequence[Requirement]]
) -> Sequence[Requirement]:
    """The way whose merge into ``terms`` is the fewest bytes.

    Each term is copied once per alternative, so an alternative more costs the terms'
    size again, and each alternative is written into every term.
    """
    base = sum(len(json.dumps(term, separators=(",", ":"))) for term in terms)
    count = max(len(terms), 1)

    def cost(way: Sequence[Requirement]) -> int:
        return len(way) * base + count * sum(_size(alternative) for alternative in way)

    return min(ways, key=cost)


def affinity_patch(
    template: PodTemplate,
    raw_template: Mapping[str, Any],
    ways: Sequence[Sequence[Requirement]],
) -> list[dict[str, Any]]:
    """JSONPatch operations that restrict the pod to the nodes ``ways`` select.

    ``ways`` are equivalent selections (``node_restriction``); the smallest merge is
    kept. ``raw_template`` is the pod template as received (a pod: the object itself), so
    the operations address what is really there; see the module docstring for the merge.
    """
    prefix = template.pointer
    spec = raw_template.get("spec") or {}
    affinity = spec.get("affinity")
    node_affinity = affinity.get("nodeAffinity") if isinstance(affinity, dict) else None
    required = (
        node_affinity.get("requiredDuringSchedulingIgnoredDuringExecution")
        if isinstance(node_affinity, dict)
        else None
    )
    terms = required.get("nodeSelectorTerms") if isinstance(required, dict) else None
    existing = terms if isinstance(terms, list) and terms else []
    way = _smallest(existing, ways)
    fresh = {"nodeSelectorTerms": [{"matchExpressions": [alternative]} for alternative in way]}
    if not isinstance(affinity, dict):
        return [
            {
                "op": "add",
                "path": prefix + "/spec/affinity",
                "value": {
                    "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": fresh}
                },
            }
        ]
    if not isinstance(node_affinity, dict):
        return [
            {
                "op": "add",
                "path": prefix + "/spec/affinity/nodeAffinity",
                "value": {"requiredDuringSchedulingIgnoredDuringExecution": fresh},
            }
        ]
    path = prefix + _pointer(
        "spec", "affinity", "nodeAffinity", "requiredDuringSchedulingIgnoredDuringExecution"
    )
    if not existing:
        return [{"op": "add", "path": path, "value": fresh}]
    known = [alternative for each in ways for alternative in each]
    merged = [restricted for term in existing for restricted in _restricted(term, way, known)]
    if merged == existing:
        return []
    return [{"op": "replace", "path": path + "/nodeSelectorTerms", "value": merged}]


def annotation_patch(
    template: PodTemplate, raw_template: Mapping[str, Any], annotations: Mapping[str, str]
) -> list[dict[str, Any]]:
    """JSONPatch operations that set ``annotations`` on the pod template (or the pod)."""
    prefix = template.pointer
    metadata = raw_template.get("metadata")
    if not isinstance(metadata, dict):
        return [
            {"op": "add", "path": prefix + "/metadata", "value": {"annotations": dict(annotations)}}
        ]
    if not isinstance(metadata.get("annotations"), dict):
        return [{"op": "add", "path": prefix + "/metadata/annotations", "value": dict(annotations)}]
    return [
        {"op": "add", "path": prefix + _pointer("metadata", "annotations", key), "value": value}
        for key, value in annotations.items()
    ]


def encode_patch(operations: Sequence[Mapping[str, Any]]) -> str:
    """The patch as ``AdmissionResponse.patch`` carries it: JSON, base64-encoded."""
    return base64.b64encode(json.dumps(list(operations), separators=(",", ":")).encode()).decode()


def template_of(kind: WorkloadKind, raw: Mapping[str, Any]) -> Mapping[str, Any]:
    """The raw pod template inside a raw object of ``kind`` (the object itself for a Pod)."""
    if kind is WorkloadKind.POD:
        return raw
    if kind is WorkloadKind.JOB:
        return raw["spec"]["template"]  # type: ignore[no-any-return]
    return raw["spec"]["jobTemplate"]["spec"]["template"]  # type: ignore[no-any-return]
