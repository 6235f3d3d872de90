"""The pod sweep: evict running pods whose workload now violates a ``revoke`` policy.

``sweep_pods`` is what the Celery task runs (``tasks.py``), a plain function over a
database connection and a Kubernetes API client:

1. It lists every pod bound to a node (``spec.nodeName`` set), a page at a time, and keeps
   those that name a Sovereign decision (``sovereign.io/decision-id``), are not being
   deleted and have not finished.
2. In one read transaction it loads the fleet snapshot, the active policy set, the
   Kubernetes node names, the decisions the pods name and the registry entries those
   declare; ``pods.bind`` keeps the pods whose decision is provably theirs, on a Node the
   inventory knows (the others are reported, never evicted).
3. ``evaluation.assess`` judges each pod's stored declaration on the node it runs on, at
   the enforcement point ``sweep``, as the compliance evaluation judges booked workloads,
   and ``evaluation.enforcements`` says which violations call for action. The read
   transaction is over before the API server is called.
4. A pod breaking a deny policy whose ``on_violation`` is ``revoke`` is evicted through
   the Eviction API, so PodDisruptionBudgets are respected, with the pod's uid as a
   precondition (a new pod of the same name is not this one), and ``pod.evicted`` is
   audited right after, in its own transaction. One refused with 429 because of a
   disruption budget is asked again on the next sweep; it is audited
   (``pod.eviction_blocked``) when first refused and again only if the policies that
   revoke it change (``pod_eviction_block``, migration 0025). A pod that broke only
   ``notify`` policies is reported and left running: violation webhooks are about booked
   workloads, and a pod has none.

Idempotent: an evicted pod is terminating (or gone) at the next sweep, which skips it. An
eviction accepted by the API server but not audited, because the database went away in
between, is the one thing a crash here can leave; the API server's own audit log has it.
"""

import json
import logging
from collections.abc import Iterator, Sequence
from enum import StrEnum
from typing import TYPE_CHECKING, Any
from uuid import UUID

from control_plane.compliance import evaluation, pods, repository
from control_plane.compliance.models import (
    PodEvicted,
    PodEvictionBlocked,
    PodEvictionNode,
)
from control_plane.compliance.pods import PodSweepReport, PodVerdict, RunningPod
from control_plane.core.audit_log import AuditContext, record_change, transaction
from control_plane.core.db import DbConnection
from control_plane.core.kube import reaching_cluster
from control_plane.domain.audit import AuditAction
from control_plane.domain.decisions import EnforcementPoint
from control_plane.facts.fleet import load_snapshot
from control_plane.facts.kubernetes import by_kubernetes_name, kubernetes_node_names
from control_plane.facts.workloads import RegistryViews, WorkloadRequest
from control_plane.policy.engine import DecisionCache
from control_plane.policy.models import ReasonPublic
from control_plane.policy.service import CompiledPolicySets, active_policy_set
from control_plane.policy.store_models import PolicySetRef

if TYPE_CHECKING:
    from kubernetes.client import ApiClient, CoreV1Api, V1Pod

log = logging.getLogger(__name__)

#: Pods asked for per list request. Only pods bound to a node are listed; a page of 500
#: is a few megabytes of JSON at most, well under one call's timeout.
LIST_PAGE_SIZE = 500
#: Phases of pods that have finished: nothing left to evict.
_FINISHED = ("Succeeded", "Failed")
#: Refused evictions: 429 is a disruption budget (or throttling), 404 and 409 a pod gone
#: or replaced since it was listed (the uid precondition).
_TOO_MANY_REQUESTS = 429
_GONE = (404, 409)
#: The pod sweep's advisory lock ("SovPodSw"); the audit chain's is another key.
SWEEP_LOCK = 0x536F76506F645377


def _running_pod(item: "V1Pod") -> RunningPod | None:
    """The pod as the sweep reads it, or None when it is not one to judge (step 1)."""
    metadata, spec, status = item.metadata, item.spec, item.status
    if metadata is None or spec is None or not spec.node_name:
        return None
    annotations = dict(metadata.annotations or {})
    decision_id = annotations.get(pods.DECISION_ID)
    if decision_id is None or metadata.deletion_timestamp is not None:
        return None
    if status is not None and status.phase in _FINISHED:
        return None
    if not metadata.name or not metadata.namespace or not metadata.uid:
        return None
    owners = tuple(
        (owner.kind, owner.name) for owner in metadata.owner_references or () if owner.controller
    )
    return RunningPod(
        namespace=metadata.namespace,
        name=metadata.name,
        uid=metadata.uid,
        node_name=spec.node_name,
        decision_id=decision_id,
        annotations=annotations,
        generate_name=metadata.generate_name,
        owners=owners,
    )


def _bound_pods(core: "CoreV1Api", timeout_seconds: float) -> Iterator[RunningPod]:
    """Every pod to judge, a page at a time (``spec.nodeName`` set, filtered server-side)."""
    token: str | None = None
    while True:
        with reaching_cluster():
            page = core.list_pod_for_all_namespaces(
                field_selector="spec.nodeName!=",
                limit=LIST_PAGE_SIZE,
                _continue=token,
                _request_timeout=timeout_seconds,
            )
        for item in page.items:
            pod = _running_pod(item)
            if pod is not None:
                yield pod
        token = page.metadata._continue if page.metadata is not None else None
        if not token:
            return


def _eviction_version(api: "ApiClient", timeout_seconds: float) -> str:
    """``policy/v1`` where the API server serves it (1.22 on), else ``policy/v1beta1``.

    As ``kubectl drain`` chooses, from discovery, which every authenticated user may read.
    """
    from kubernetes.client import PolicyApi

    with reaching_cluster():
        group = PolicyApi(api).get_api_group(_request_timeout=timeout_seconds)
    versions = {version.version for version in group.versions or ()}
    return "policy/v1" if "v1" in versions else "policy/v1beta1"


def _refusal(exc: Any) -> tuple[str, bool]:
    """The API server's message for a 429, and whether a disruption budget is the cause.

    The Eviction API says so in words (``Cannot evict pod as it would violate the pod's
    disruption budget``) and, from Kubernetes 1.26, as a cause ``DisruptionBudget``; a
    429 without either is API priority and fairness throttling, tried again next sweep.
    """
    try:
        body = json.loads(exc.body or "{}")
    except (TypeError, ValueError):
        body = {}
    message = str(body.get("message") or exc.reason or "Too Many Requests")
    causes = (body.get("details") or {}).get("causes") or []
    budget = "disruption budget" in message.lower() or any(
        cause.get("reason") == "DisruptionBudget" for cause in causes if isinstance(cause, dict)
    )
    return message, budget


class Eviction(StrEnum):
    """What the Eviction API answered for one pod."""

    EVICTED = "evicted"
    #: 429 for a disruption budget: asked again next sweep, audited once.
    BLOCKED = "blocked"
    #: 429 for throttling: asked again next sweep, not audited.
    DEFERRED = "deferred"
    #: 404 or 409: the pod went, or was replaced, since it was listed.
    GONE = "gone"


def _evict(
    core: "CoreV1Api", pod: RunningPod, api_version: str, timeout_seconds: float
) -> tuple[Eviction, str]:
    """Ask the Eviction API to evict ``pod``; what it answered, and its message if refused."""
    from kubernetes.client import V1DeleteOptions, V1Eviction, V1ObjectMeta, V1Preconditions
    from kubernetes.client.exceptions import ApiException

    body = V1Eviction(
        api_version=api_version,
        kind="Eviction",
        metadata=V1ObjectMeta(name=pod.name, namespace=pod.namespace),
        delete_options=V1DeleteOptions(preconditions=V1Preconditions(uid=pod.uid)),
    )
    try:
        with reaching_cluster():
            core.create_namespaced_pod_eviction(
                pod.name, pod.namespace, body, _request_timeout=timeout_seconds
            )
    except ApiException as exc:
        if exc.status == _TOO_MANY_REQUESTS:
            message, budget = _refusal(exc)
            return (Eviction.BLOCKED if budget else Eviction.DEFERRED), message
        if exc.status in _GONE:
            return Eviction.GONE, str(exc.reason)
        raise
    return Eviction.EVICTED, ""


def _evicted(verdict: PodVerdict, policy_set: PolicySetRef) -> PodEvicted:
    """The ``pod.evicted`` snapshot of one verdict."""
    pod, node = verdict.bound.pod, verdict.bound.node
    return PodEvicted(
        namespace=pod.namespace,
        name=pod.name,
        uid=pod.uid,
        node=PodEvictionNode(
            name=pod.node_name, node_id=UUID(node.id), hostname=node.hostname, zone=node.zone
        ),
        decision_id=verdict.bound.decision.id,
        policy_set=policy_set,
        policies=list(verdict.revoke_by),
        reasons=[ReasonPublic(**reason.to_json()) for reason in verdict.finding.reasons],
    )


def sweep_pods(
    conn: DbConnection,
    api: "ApiClient",
    ctx: AuditContext,
    *,
    timeout_seconds: float,
    policy_sets: CompiledPolicySets | None = None,
    decisions: DecisionCache | None = None,
    deny_unselected: bool = False,
) -> PodSweepReport:
    """Judge every running pod Sovereign decided and evict the revoked ones (module docstring).

    Raises ``ClusterUnavailableError`` when the API server is down, slow or answers 5xx
    (the task retries; what was evicted before stays evicted and audited). ``decisions``
    and ``deny_unselected`` as for the compliance evaluation. One sweep at a time: while
    another holds the lock (``SWEEP_LOCK``), this one does nothing and says so
    (``already_running``). ``conn`` must be in autocommit mode, as ``core.db.connect``
    opens it: the lock is the session's and each audit commits on its own.
    """
    if not repository.try_pod_sweep_lock(conn, SWEEP_LOCK):
        log.info("another pod sweep is running; this one leaves it the pods")
        return PodSweepReport(already_running=True)
    try:
        return _sweep(
            conn,
            api,
            ctx,
            timeout_seconds=timeout_seconds,
            policy_sets=policy_sets,
            decisions=decisions,
            deny_unselected=deny_unselected,
        )
    finally:
        repository.pod_sweep_unlock(conn, SWEEP_LOCK)


def _sweep(
    conn: DbConnection,
    api: "ApiClient",
    ctx: AuditContext,
    *,
    timeout_seconds: float,
    policy_sets: CompiledPolicySets | None,
    decisions: DecisionCache | None,
    deny_unselected: bool,
) -> PodSweepReport:
    """``sweep_pods`` under the sweep's lock."""
    from kubernetes.client import CoreV1Api

    core = CoreV1Api(api)
    report = PodSweepReport()
    running = list(_bound_pods(core, timeout_seconds))
    report.pods_seen = len(running)
    ids = sorted({UUID(pod.decision_id) for pod in running if _is_uuid(pod.decision_id)})
    with transaction(conn):
        snapshot = load_snapshot(conn)
        policy_set = active_policy_set(conn, policy_sets)
        nodes = by_kubernetes_name(snapshot.index.nodes, kubernetes_node_names(conn))
        bound, skipped = pods.bind(running, repository.pod_decisions(conn, ids), nodes)
        views = RegistryViews(conn)
        workloads = [
            pods.running_workload(
                item, views.view(WorkloadRequest.model_validate(item.decision.request))
            )
            for item in bound
        ]
    for skip in skipped:
        report.add_skipped(skip)
        log.warning("pod %s: not judged: %s", skip.pod.key, skip.reason)
    report.judged = len(bound)
    found = evaluation.assess(
        workloads,
        snapshot.index,
        policy_set,
        point=EnforcementPoint.SWEEP,
        cache=decisions or DecisionCache(),
        deny_unselected=deny_unselected,
    )
    report.violating = len(found.violations)
    judged_under = PolicySetRef(version=policy_set.version, content_hash=policy_set.content_hash)
    still_blocked = _act(
        conn,
        ctx,
        api,
        pods.verdicts(bound, evaluation.enforcements(found, policy_set)),
        policy_set=judged_under,
        report=report,
        timeout_seconds=timeout_seconds,
    )
    with transaction(conn):
        repository.forget_eviction_blocks(conn, still_blocked)
    return report


def _act(
    conn: DbConnection,
    ctx: AuditContext,
    api: "ApiClient",
    verdicts: Sequence[PodVerdict],
    *,
    policy_set: PolicySetRef,
    report: PodSweepReport,
    timeout_seconds: float,
) -> list[str]:
    """Evict (and audit) or report each violating pod (step 4); the uids still refused."""
    from kubernetes.client import CoreV1Api

    core = CoreV1Api(api)
    still_blocked: list[str] = []
    api_version: str | None = None
    for verdict in verdicts:
        pod = verdict.bound.pod
        if not verdict.evict:
            report.notified += 1
            pods.sample(report.notified_pods, pod)
            log.warning(
                "pod %s breaks %s (on_violation: notify); left running",
                pod.key,
                ", ".join(verdict.notify_by),
            )
            continue
        if api_version is None:
            api_version = _eviction_version(api, timeout_seconds)
        outcome, message = _evict(core, pod, api_version, timeout_seconds)
        if outcome is Eviction.EVICTED:
            report.evicted += 1
            pods.sample(report.evicted_pods, pod)
            log.info("pod %s evicted: it breaks %s", pod.key, ", ".join(verdict.revoke_by))
            with transaction(conn):
                record_change(
                    conn,
                    ctx,
                    AuditAction.POD_EVICTED,
                    str(verdict.bound.decision.id),
                    after=_evicted(verdict, policy_set),
                )
        elif outcome is Eviction.BLOCKED:
            report.blocked += 1
            pods.sample(report.blocked_pods, pod)
            still_blocked.append(pod.uid)
            log.warning("pod %s: eviction refused: %s", pod.key, message)
            _note_blocked(conn, ctx, verdict, policy_set, message)
        elif outcome is Eviction.DEFERRED:
            report.deferred += 1
            still_blocked.append(pod.uid)
            log.warning("pod %s: eviction deferred: %s", pod.key, message)
        else:
            report.gone += 1
    return still_blocked


def _is_uuid(text: str) -> bool:
    try:
        UUID(text)
    except ValueError:
        return False
    return True


def _note_blocked(
    conn: DbConnection,
    ctx: AuditContext,
    verdict: PodVerdict,
    policy_set: PolicySetRef,
    message: str,
) -> None:
    """Keep the refusal on record; audit it when it is new or its policies changed."""
    pod = verdict.bound.pod
    policies = list(verdict.revoke_by)
    with transaction(conn):
        previous = repository.note_eviction_refused(
            conn,
            {
                "pod_uid": pod.uid,
                "namespace": pod.namespace,
                "name": pod.name,
                "decision_id": verdict.bound.decision.id,
                "policies": policies,
                "refusal": message,
            },
        )
        if previous == policies:
            return
        record_change(
            conn,
            ctx,
            AuditAction.POD_EVICTION_BLOCKED,
            str(verdict.bound.decision.id),
            after=PodEvictionBlocked(**_evicted(verdict, policy_set).model_dump(), refusal=message),
        )
