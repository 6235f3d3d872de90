"""Admission models: ``admission.k8s.io/v1`` AdmissionReview in and out, and the pod pieces read.

Only the fields the webhooks use are modelled, and every model ignores the rest: the
API server sends whole objects (a Pod has dozens of fields, each Kubernetes release adds
some), and a field Sovereign does not read must never make a review fail.

The review itself is checked as the route's body (strict JSON, 422 naming the field): a
malformed review is the caller's bug. The object inside it is parsed afterwards
(``parse_template``), leniently as Kubernetes itself would accept it, and a pod that does
not parse is a *denial* naming the field, not an error: the API server shows it to the
user who created the pod.
"""

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from control_plane.domain.decisions import DecisionOutcome, EnforcementPoint
from control_plane.domain.kubernetes import NodeLabelChange
from control_plane.domain.types import Input, Labels, Slug
from control_plane.facts.workloads import AssetNames
from control_plane.policy.models import ExplanationPublic, ReasonPublic

ADMISSION_API_VERSION: Literal["admission.k8s.io/v1"] = "admission.k8s.io/v1"


class _Kubernetes(BaseModel):
    """A piece of a Kubernetes object: camelCase on the wire, unknown fields ignored."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)


# -- the review ------------------------------------------------------------------------


class GroupVersionKind(_Kubernetes):
    """The kind of the object under review (``{"group": "batch", "kind": "Job"}``)."""

    group: str = ""
    version: str = ""
    kind: str


class UserInfo(_Kubernetes):
    """Who made the request the API server is admitting."""

    username: str = ""
    uid: str | None = None
    groups: list[str] = Field(default_factory=list)


class Operation(StrEnum):
    """What the request does to the object."""

    CREATE = "CREATE"
    UPDATE = "UPDATE"
    DELETE = "DELETE"
    CONNECT = "CONNECT"


class AdmissionRequest(_Kubernetes):
    """``AdmissionReview.request``: the object, who asks, and whether it is a dry run."""

    uid: str = Field(min_length=1, max_length=128)
    kind: GroupVersionKind
    namespace: str | None = None
    name: str | None = None
    operation: Operation
    user_info: UserInfo = Field(default_factory=UserInfo, alias="userInfo")
    object: dict[str, Any] | None = None
    old_object: dict[str, Any] | None = Field(default=None, alias="oldObject")
    dry_run: bool = Field(default=False, alias="dryRun")


class AdmissionReview(_Kubernetes):
    """An ``admission.k8s.io/v1`` AdmissionReview as the API server sends it."""

    api_version: Literal["admission.k8s.io/v1"] = Field(alias="apiVersion")
    kind: Literal["AdmissionReview"]
    request: AdmissionRequest


class AdmissionStatus(BaseModel):
    """Why a request is denied: shown by the API server to the user (``kubectl``)."""

    code: int
    reason: str
    message: str


class AdmissionResponse(BaseModel):
    """``AdmissionReview.response``: the verdict, and for the mutating webhook the patch."""

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    uid: str
    allowed: bool
    status: AdmissionStatus | None = None
    patch: str | None = Field(default=None, description="Base64 of a JSONPatch (RFC 6902).")
    patch_type: Literal["JSONPatch"] | None = Field(default=None, alias="patchType")
    warnings: list[str] | None = None


class AdmissionReviewResponse(BaseModel):
    """The AdmissionReview a webhook answers with."""

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    api_version: Literal["admission.k8s.io/v1"] = Field(
        default=ADMISSION_API_VERSION, alias="apiVersion"
    )
    kind: Literal["AdmissionReview"] = "AdmissionReview"
    response: AdmissionResponse


# -- the pod pieces read ---------------------------------------------------------------

#: A resource quantity as Kubernetes accepts it in JSON: ``1``, ``"2"``, ``"500m"``.
Quantity = int | float | str


class ResourceRequirements(_Kubernetes):
    """A container's ``resources``: what it requests and its limits."""

    limits: dict[str, Quantity] = Field(default_factory=dict)
    requests: dict[str, Quantity] = Field(default_factory=dict)


class Container(_Kubernetes):
    """A container or init container; ``restartPolicy: Always`` makes an init one a sidecar."""

    name: str = ""
    resources: ResourceRequirements = Field(default_factory=ResourceRequirements)
    restart_policy: str | None = Field(default=None, alias="restartPolicy")


class NodeSelectorRequirement(_Kubernetes):
    """One ``matchExpressions`` (or ``matchFields``) entry: key, operator, values."""

    key: str
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"]
    values: list[str] = Field(default_factory=list)


class NodeSelectorTerm(_Kubernetes):
    """One term of a node selector: all its requirements hold (the terms are ORed)."""

    match_expressions: list[NodeSelectorRequirement] = Field(
        default_factory=list, alias="matchExpressions"
    )
    match_fields: list[NodeSelectorRequirement] = Field(default_factory=list, alias="matchFields")


class NodeSelector(_Kubernetes):
    """Required node affinity: a node must match one of the terms."""

    node_selector_terms: list[NodeSelectorTerm] = Field(
        default_factory=list, alias="nodeSelectorTerms"
    )


class NodeAffinity(_Kubernetes):
    """``affinity.nodeAffinity``; only the required part constrains where a pod may run."""

    required: NodeSelector | None = Field(
        default=None, alias="requiredDuringSchedulingIgnoredDuringExecution"
    )


class Affinity(_Kubernetes):
    """``spec.affinity``; pod (anti-)affinity is not read."""

    node_affinity: NodeAffinity | None = Field(default=None, alias="nodeAffinity")


class PodSpec(_Kubernetes):
    """The parts of a pod spec the webhooks read."""

    containers: list[Container] = Field(default_factory=list)
    init_containers: list[Container] = Field(default_factory=list, alias="initContainers")
    node_selector: dict[str, str] = Field(default_factory=dict, alias="nodeSelector")
    affinity: Affinity | None = None
    resource_claims: list[dict[str, Any]] = Field(default_factory=list, alias="resourceClaims")

    def required_terms(self) -> list[NodeSelectorTerm] | None:
        """The required node affinity's terms, or None when the pod has no such affinity."""
        node_affinity = self.affinity.node_affinity if self.affinity else None
        if node_affinity is None or node_affinity.required is None:
            return None
        return node_affinity.required.node_selector_terms


class ObjectMeta(_Kubernetes):
    """The metadata read: names, labels and annotations."""

    name: str | None = None
    generate_name: str | None = Field(default=None, alias="generateName")
    namespace: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class PodTemplateSpec(_Kubernetes):
    """A pod, or a pod template: metadata and spec."""

    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: PodSpec


class _JobSpec(_Kubernetes):
    template: PodTemplateSpec


class _Job(_Kubernetes):
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: _JobSpec


class _JobTemplate(_Kubernetes):
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: _JobSpec


class _CronJobSpec(_Kubernetes):
    job_template: _JobTemplate = Field(alias="jobTemplate")


class _CronJob(_Kubernetes):
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: _CronJobSpec


class WorkloadKind(StrEnum):
    """The objects whose pods the webhooks govern."""

    POD = "Pod"
    JOB = "Job"
    CRONJOB = "CronJob"

    @classmethod
    def of(cls, kind: GroupVersionKind) -> "WorkloadKind | None":
        """The kind under review, if it is one of these (``Pod`` in core, the others in batch)."""
        group = "" if kind.kind == "Pod" else "batch"
        try:
            found = cls(kind.kind)
        except ValueError:
            return None
        return found if kind.group == group else None


#: Per kind: the JSON pointer of the pod template in the object, and its spec's dotted path.
_WHERE = {
    WorkloadKind.POD: ("", "spec"),
    WorkloadKind.JOB: ("/spec/template", "spec.template.spec"),
    WorkloadKind.CRONJOB: (
        "/spec/jobTemplate/spec/template",
        "spec.jobTemplate.spec.template.spec",
    ),
}


class PodTemplate(BaseModel):
    """The pod an object will run, with where it sits in the object.

    ``annotations`` are the template's, over the object's own for a Job or CronJob (the
    declaration may sit on either, and the mutating webhook copies it into the template).
    ``labels`` are the template's alone: they are the labels the pods will carry (a Job's
    own labels stay on the Job), so a Job and the pods it makes are decided on the same
    ``workload.labels``. ``pointer`` is the template's JSON pointer in the object (``""``
    for a Pod), ``spec_path`` its spec's dotted path, for messages.
    """

    kind: WorkloadKind
    name: str | None
    pointer: str
    spec_path: str
    annotations: dict[str, str]
    template_annotations: dict[str, str]
    labels: dict[str, str]
    spec: PodSpec

    @property
    def metadata_path(self) -> str:
        """The template's metadata as a dotted path (``spec.template.metadata``), for messages."""
        return self.spec_path.removesuffix("spec") + "metadata"


def _field(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "object"


def parse_template(kind: WorkloadKind, raw: dict[str, Any]) -> PodTemplate:
    """The pod template of an object of ``kind``; a ``ValueError`` naming the field if bad."""
    pointer, spec_path = _WHERE[kind]
    try:
        if kind is WorkloadKind.POD:
            pod = PodTemplateSpec.model_validate(raw)
            own, template = pod.metadata, pod
        elif kind is WorkloadKind.JOB:
            job = _Job.model_validate(raw)
            own, template = job.metadata, job.spec.template
        else:
            cron = _CronJob.model_validate(raw)
            own, template = cron.metadata, cron.spec.job_template.spec.template
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        raise ValueError(f"{_field(tuple(error['loc']))}: {error['msg']}") from None
    annotations = dict(template.metadata.annotations)
    if kind is not WorkloadKind.POD:
        annotations = {**own.annotations, **annotations}
    return PodTemplate(
        kind=kind,
        name=own.name or own.generate_name,
        pointer=pointer,
        spec_path=spec_path,
        annotations=annotations,
        template_annotations=dict(template.metadata.annotations),
        labels=dict(template.metadata.labels),
        spec=template.spec,
    )


# -- the declaration, checked like POST /v1/workloads ----------------------------------


class PodDeclaration(Input):
    """What a pod's annotations and labels declare, under the rules of ``WorkloadCreate``.

    ``labels`` are the pod template's labels, which policies read as ``workload.labels``
    (CEL), checked as ``POST /v1/workloads`` checks its ``labels``.
    """

    tenant: Slug
    datasets: AssetNames = Field(default_factory=list)
    models: AssetNames = Field(default_factory=list)
    output: Slug | None = None
    labels: Labels = Field(default_factory=dict)


# -- what is stored and audited --------------------------------------------------------


class PodDecisionPublic(BaseModel):
    """A decision of an admission webhook on a pod (or a Job's or CronJob's pod template).

    Nothing is booked: kube-scheduler places the pod, on the nodes the decision allowed
    (``eligible_nodes`` of them, the ones in its injected node affinity).
    """

    id: UUID
    namespace: str
    kind: WorkloadKind
    name: str | None
    review_uid: str
    webhook: Literal["mutate", "validate"]
    tenant: str
    request: dict[str, Any]
    outcome: DecisionOutcome
    reasons: list[ReasonPublic]
    explanation: ExplanationPublic | None
    eligible_nodes: int
    fleet_generation: int
    policy_set_version: int
    policy_set_hash: str
    username: str
    created_at: datetime


class WebhookCaller(BaseModel):
    """Who called a webhook, as TLS proved it: the review's user is only what it claims.

    ``client_certificate``: the caller's certificate, verified against
    ``SOVEREIGN_ADMISSION__CLIENT_CA_FILE`` in the handshake (in a cluster set up as
    docs/kubernetes.md says, the kube-apiserver's own). ``none``: no client CA is
    configured, so whoever reached the listener was heard; the decision's user is then a
    claim nobody checked, and an auditor should read it so.
    """

    authentication: Literal["client_certificate", "none"]
    subject: str | None = Field(default=None, description="RFC 4514 subject.")
    serial: str | None = Field(default=None, description="Serial number, hex.")
    sha256: str | None = Field(default=None, description="SHA-256 of the DER certificate.")


class PodDecided(PodDecisionPublic):
    """A pod decision as the audit log records it: the enforcement point and the caller."""

    point: EnforcementPoint
    caller: WebhookCaller


class NodeLabelChangeDenied(BaseModel):
    """A Node update the node-protection webhook refused, as the audit log records it.

    Who tried (the event's actor is the Kubernetes user too), on which Node, in which
    review, and every protected label it would have changed, old value to new.
    """

    node: str
    operation: Operation
    username: str
    review_uid: str
    changes: list[NodeLabelChange]
    caller: WebhookCaller
