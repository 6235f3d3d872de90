"""The admission webhooks' decisions: the same engine and facts as ``POST /v1/workloads``.

A GPU pod (or the pod template of a Job or CronJob) is decided as a workload would be:
its declaration (``pods.declaration``) becomes a ``WorkloadRequest``, ``facts`` turns it
into the engine's view with what it names read from the registry, and the engine decides
on the snapshot of the fleet's current generation (the API's own, ``SnapshotSource``)
under the active policy set, at the enforcement point ``webhook``. Unlike
``POST /v1/workloads`` nothing is booked: kube-scheduler places the pod, and the mutating
webhook's affinity keeps it on the nodes the engine found eligible.

What each webhook does with the same decision:

* **mutate** (``/k8s/mutate``) denies what the engine denies; on admit it answers a
  JSONPatch with the node affinity (the eligible nodes, by id or by whole zones,
  ``pods.node_restriction``) and the ``sovereign.io/decision-id`` and
  ``sovereign.io/policy-set-version`` annotations, and records the decision
  (``pod.admitted`` or ``pod.denied``). Called again for the same object (the chart's
  ``reinvocationPolicy: IfNeeded``), it decides again and reuses the first call's record
  when that is provably the same decision (``_reinvoked``), so one pod is one record;
* **validate** (``/k8s/validate``) sees the pod after every mutation. It denies an
  undeclared GPU pod (unless its namespace allows them), one the engine denies, and one
  whose own node selection leaves none of the eligible nodes; it passes warn-mode reasons
  back as warnings. It records its denials only: the pods it admits were recorded by the
  mutating webhook, whose decision id they carry;
* **validate-node** (``/k8s/validate-node``) denies a change to a Node's ``sovereign.io/*``
  labels by anyone but the control plane's ServiceAccount, and audits the attempt.

A dry run (``dryRun: true``) is answered the same way and records nothing (the patch then
carries no decision id, as there is no stored decision). A pod Sovereign cannot read
(a field of the wrong type, an unusable GPU quantity, a bad annotation, a name the
registry does not hold) is a denial naming the field, never an error: the user who
created it reads the message.
"""

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal
from uuid import UUID, uuid4

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from control_plane.admission import pods, repository
from control_plane.admission.models import (
    AdmissionRequest,
    AdmissionResponse,
    AdmissionStatus,
    NodeLabelChangeDenied,
    Operation,
    PodDecided,
    PodTemplate,
    WebhookCaller,
    WorkloadKind,
    parse_template,
)
from control_plane.core.audit_log import AuditContext, audited, transaction
from control_plane.core.db import DbConnection
from control_plane.core.errors import InvalidInputError
from control_plane.core.settings import AdmissionSettings
from control_plane.domain.audit import AuditAction
from control_plane.domain.decisions import DecisionOutcome, EnforcementAction, EnforcementPoint
from control_plane.domain.kubernetes import LABEL_PREFIX, NodeLabelChange
from control_plane.facts.fleet import SnapshotSource
from control_plane.facts.workloads import WorkloadRequest, workload_view
from control_plane.policy.engine import DecisionCache, decide_with_mask
from control_plane.policy.models import Decision, Reason
from control_plane.policy.service import CompiledPolicySets, active_policy_set

Webhook = Literal["mutate", "validate"]

#: The HTTP status a denial carries in ``response.status.code`` (shown by kubectl).
_FORBIDDEN = 403
#: How long after a mutating webhook's admit a reinvocation may reuse its decision. The API
#: server reinvokes within the same request, right after the webhooks that follow ours
#: (each bounded by its 30 s timeout at most, the request by its 60 s default); a call
#: later than this records a decision of its own, the safe direction.
REINVOCATION_WINDOW_SECONDS = 60


# -- answers ---------------------------------------------------------------------------


def allow(
    uid: str, *, warnings: list[str] | None = None, patch: list[dict[str, Any]] | None = None
) -> AdmissionResponse:
    """An admit, with warnings and a JSONPatch when there are any."""
    return AdmissionResponse(
        uid=uid,
        allowed=True,
        warnings=warnings or None,
        patch=pods.encode_patch(patch) if patch else None,
        patch_type="JSONPatch" if patch else None,
    )


def deny(uid: str, message: str) -> AdmissionResponse:
    """A denial whose message the API server shows to the user."""
    return AdmissionResponse(
        uid=uid,
        allowed=False,
        status=AdmissionStatus(code=_FORBIDDEN, reason="Forbidden", message=message),
    )


# -- pods ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Deps:
    """What a pod review decides with: the process's caches and the site's settings."""

    settings: AdmissionSettings
    policy_sets: CompiledPolicySets
    fleet: SnapshotSource
    decisions: DecisionCache
    deny_unselected: bool


def _governed(request: AdmissionRequest) -> WorkloadKind | None:
    """The kind under review when it is one the webhooks decide on for this operation."""
    kind = WorkloadKind.of(request.kind)
    if kind is None or request.object is None:
        return None
    if request.operation is Operation.CREATE:
        return kind
    # A CronJob's template can change after it is created; a Pod's and a Job's cannot.
    if request.operation is Operation.UPDATE and kind is WorkloadKind.CRONJOB:
        return kind
    return None


def _namespace(request: AdmissionRequest) -> str:
    """The namespace of the object (the request's, which the API server always sets)."""
    if request.namespace:
        return request.namespace
    metadata = (request.object or {}).get("metadata")
    found = metadata.get("namespace") if isinstance(metadata, dict) else None
    return found if isinstance(found, str) and found else "default"


def _denial_words(decision: Decision, reasons: list[Reason]) -> str:
    found = [
        reason.message if reason.policy is None else f"{reason.policy}: {reason.message}"
        for reason in reasons
        if reason.action is EnforcementAction.DENY
    ]
    version = decision.policy_set_version
    return f"Sovereign denied this pod (policy set version {version}): " + "; ".join(found)


def _warnings(reasons: list[Reason]) -> list[str]:
    return [
        f"Sovereign: {reason.message}"
        if reason.policy is None
        else f"Sovereign: {reason.policy}: {reason.message}"
        for reason in reasons
        if reason.action is EnforcementAction.WARN
    ]


def _unknown_name(exc: InvalidInputError, template: PodTemplate) -> str:
    """A 422 of ``facts.workloads.workload_view`` in the pod's terms (the annotation)."""
    fields = exc.details.get("fields") or [{"field": "tenant", "message": exc.message}]
    first = fields[0]
    from_namespace = pods.TENANT not in template.annotations
    return f"{pods.declared_field(first['field'], from_namespace)}: {first['message']}"


#: The annotations that declare a workload, which its pods must carry to be decided the same.
_DECLARATION = (pods.DATASETS, pods.MODELS, pods.OUTPUT, pods.TENANT, pods.GPUS, pods.MIG_PROFILE)


def _copied_declaration(template: PodTemplate) -> dict[str, str]:
    """Declaration annotations a Job or CronJob carries on itself but not on its template.

    Copied into the template, so the pods it makes carry them and are decided the same.
    """
    return {
        key: value
        for key, value in template.annotations.items()
        if key in _DECLARATION and key not in template.template_annotations
    }


def review_workload(
    conn: DbConnection,
    ctx: AuditContext,
    request: AdmissionRequest,
    webhook: Webhook,
    deps: Deps,
    caller: WebhookCaller,
) -> AdmissionResponse:
    """Answer one AdmissionReview of a Pod, Job or CronJob (see the module docstring).

    ``caller`` is who called, as TLS proved it (``admission.trust``): recorded with the
    decision beside the user the review claims.
    """
    uid = request.uid
    kind = _governed(request)
    namespace = _namespace(request)
    if kind is None or namespace in deps.settings.exempt_namespaces:
        return allow(uid)
    assert request.object is not None
    try:
        template = parse_template(kind, request.object)
        ask = pods.gpu_ask(template)
        if ask is None:
            return allow(uid)
        if not pods.declares(template.annotations):
            if namespace in deps.settings.undeclared_allowed_namespaces:
                return allow(
                    uid,
                    warnings=[
                        f"Sovereign: this GPU pod declares no data or models; namespace"
                        f" {namespace} allows that, so it runs undecided, on any node"
                    ],
                )
            return deny(
                uid,
                f"Sovereign: this pod asks for GPUs but declares no data or models: annotate"
                f" it with {pods.DATASETS}, {pods.MODELS} and {pods.OUTPUT} (comma-separated"
                f' registry names; {pods.DATASETS}: "" for none)',
            )
        declared = pods.declaration(template, namespace, deps.settings.namespace_tenants, ask)
    except pods.PodProblemError as problem:
        return deny(uid, f"Sovereign cannot read this pod: {problem.field}: {problem.message}")
    except ValueError as exc:
        return deny(uid, f"Sovereign cannot read this pod: {exc}")
    with transaction(conn):
        try:
            workload = workload_view(conn, declared)
        except InvalidInputError as exc:
            return deny(uid, f"Sovereign cannot admit this pod: {_unknown_name(exc, template)}")
        snapshot = deps.fleet.snapshot(conn)
        index = snapshot.index
        decision, eligible = decide_with_mask(
            workload,
            index,
            active_policy_set(conn, deps.policy_sets),
            point=EnforcementPoint.WEBHOOK,
            cache=deps.decisions,
            deny_unselected=deps.deny_unselected,
        )
        if decision.admitted and not pods.selects_any(template, decision.eligible_node_ids, index):
            count = len(decision.eligible_node_ids)
            decision = replace(
                decision,
                outcome=DecisionOutcome.DENIED,
                eligible_node_ids=[],
                reasons=[
                    *decision.reasons,
                    Reason(
                        None,
                        "node_selection",
                        EnforcementAction.DENY,
                        f"the pod's own nodeSelector or node affinity selects none of the"
                        f" {count} node{'s' if count != 1 else ''} its data and models may"
                        " run on",
                    ),
                ],
            )
        decision_id = None
        if not request.dry_run and (webhook == "mutate" or not decision.admitted):
            values = _decision_values(
                request, webhook, template, declared, decision, snapshot.generation
            )
            reinvoked = _reinvoked(conn, template, values) if decision.admitted else None
            decision_id = str(reinvoked or _record(conn, ctx, values, decision, caller))
    if not decision.admitted:
        return deny(uid, _denial_words(decision, decision.reasons))
    if webhook == "validate":
        return allow(uid, warnings=_warnings(decision.reasons))
    annotations = {
        **_copied_declaration(template),
        pods.POLICY_SET_VERSION: str(decision.policy_set_version),
    }
    if decision_id is not None:
        annotations[pods.DECISION_ID] = decision_id
    raw = pods.template_of(kind, request.object)
    patch = [
        *pods.affinity_patch(
            template,
            raw,
            pods.node_restriction(index, eligible, zone_labels=deps.settings.affinity == "zones"),
        ),
        *pods.annotation_patch(template, raw, annotations),
    ]
    return allow(uid, patch=patch)


def _decision_values(
    request: AdmissionRequest,
    webhook: Webhook,
    template: PodTemplate,
    declared: WorkloadRequest,
    decision: Decision,
    generation: int,
) -> dict[str, Any]:
    """The stored columns of a decision (by the queries' parameter names), id aside."""
    return {
        "namespace": _namespace(request),
        "kind": template.kind.value,
        "name": template.name,
        "review_uid": request.uid,
        "webhook": webhook,
        "tenant": declared.tenant,
        "request": declared.model_dump(mode="json"),
        "outcome": decision.outcome.value,
        "reasons": [reason.to_json() for reason in decision.reasons],
        "explanation": decision.explanation.to_json(),
        "eligible_nodes": len(decision.eligible_node_ids),
        "fleet_generation": generation,
        "policy_set_version": decision.policy_set_version,
        "policy_set_hash": decision.policy_set_hash,
        "username": request.user_info.username,
    }


def _reinvoked(conn: DbConnection, template: PodTemplate, values: dict[str, Any]) -> UUID | None:
    """The decision a reinvoked mutating call already recorded for this object, if it is one.

    With ``reinvocationPolicy: IfNeeded`` the API server calls the mutating webhook again
    when a later webhook changed the object; it then carries the ``sovereign.io/decision-id``
    of the first call. Nothing in the review proves it is the same request (the API server
    gives every call a fresh ``uid``), and a user can put any id on a pod, so the pod has
    just been decided again anyway and the id is taken only when the stored decision is
    this one: the mutating webhook's admit, moments ago (``REINVOCATION_WINDOW_SECONDS``),
    of the same kind, namespace and name, for the same user, on the same declaration, with
    the same outcome, eligible count, fleet generation and policy set. Otherwise (a forged,
    copied or stale id) the decision is recorded afresh and its id replaces the annotation.
    What this cannot tell apart: a second, identical pod by the same user within the window
    carrying the first one's id shares its record, which then says exactly what its own
    would have; it is decided, and restricted, all the same.
    """
    annotated = template.template_annotations.get(pods.DECISION_ID)
    if annotated is None:
        return None
    try:
        decision_id = UUID(annotated)
    except ValueError:
        return None
    found = repository.find_reinvoked_decision(
        conn, decision_id, values, REINVOCATION_WINDOW_SECONDS
    )
    return None if found is None else found.id


def _record(
    conn: DbConnection,
    ctx: AuditContext,
    values: dict[str, Any],
    decision: Decision,
    caller: WebhookCaller,
) -> UUID:
    """Store and audit the decision (``pod.admitted`` or ``pod.denied``); its id."""
    decision_id = uuid4()
    action = AuditAction.POD_ADMITTED if decision.admitted else AuditAction.POD_DENIED
    with audited(conn, ctx, action, str(decision_id)) as change:
        stored = repository.insert_pod_decision(conn, {**values, "id": decision_id})
        change.after = PodDecided.model_validate(
            {**stored.model_dump(), "point": decision.point, "caller": caller}
        )
    return decision_id


def audit_context(request: AdmissionRequest, request_id: str) -> AuditContext:
    """Who a webhook decides for: the Kubernetes user creating the object."""
    user = request.user_info
    name = user.username or "unknown"
    return AuditContext(
        actor_id=f"kubernetes:{user.uid or name}", actor_name=name, request_id=request_id
    )


# -- nodes -----------------------------------------------------------------------------


class _NodeMetadata(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)


class _Node(BaseModel):
    model_config = ConfigDict(extra="ignore")

    metadata: _NodeMetadata = Field(default_factory=_NodeMetadata)


def _node_metadata(raw: Mapping[str, Any] | None, field: str) -> _NodeMetadata:
    try:
        return _Node.model_validate(raw or {}).metadata
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in error["loc"])
        raise ValueError(f"{field}.{where}: {error['msg']}") from None


def review_node(
    conn: DbConnection,
    ctx: AuditContext,
    request: AdmissionRequest,
    settings: AdmissionSettings,
    caller: WebhookCaller,
) -> AdmissionResponse:
    """Deny a change to a Node's ``sovereign.io/*`` labels by anyone but the label sync.

    The labels say where a node is and where its hardware comes from; the injected
    affinity trusts them, so a node (or anyone) relabelling itself into another zone would
    walk data out of its zone. A denial is audited (``kubernetes_node.label_change_denied``,
    with who tried and each label old to new), unless it is a dry run: an attempt to move
    a node is evidence, whether or not the Kubernetes audit log is kept. What is allowed is
    not recorded; ``conn`` is used only for a denial.
    """
    uid = request.uid
    if request.kind.kind != "Node" or request.kind.group != "":
        return allow(uid)
    if request.operation not in (Operation.CREATE, Operation.UPDATE):
        return allow(uid)
    username = request.user_info.username
    if username == settings.label_sync_user:
        return allow(uid)
    try:
        node = _node_metadata(request.object, "object")
        new = node.labels
        old = _node_metadata(request.old_object, "oldObject").labels
    except ValueError as exc:
        return deny(uid, f"Sovereign cannot read this Node: {exc}")
    changed = sorted(
        key
        for key in set(old) | set(new)
        if key.startswith(LABEL_PREFIX) and old.get(key) != new.get(key)
    )
    if not changed:
        return allow(uid)
    if not request.dry_run:
        name = request.name or node.name or "(unnamed)"
        with audited(conn, ctx, AuditAction.KUBERNETES_NODE_LABEL_CHANGE_DENIED, name) as change:
            change.after = NodeLabelChangeDenied(
                node=name,
                operation=request.operation,
                username=username,
                review_uid=uid,
                changes=[
                    NodeLabelChange(key=key, old=old.get(key), new=new.get(key)) for key in changed
                ],
                caller=caller,
            )
    words = ", ".join(
        f"{key} ({old.get(key, '<none>')} -> {new.get(key, '<none>')})" for key in changed
    )
    return deny(
        uid,
        f"Sovereign: only {settings.label_sync_user} may change {LABEL_PREFIX}* labels on"
        f" Nodes; {username or 'this user'} tried to change {words}",
    )
