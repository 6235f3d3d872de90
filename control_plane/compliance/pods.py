"""Which running pods the pod sweep judges, on which node, and what it does about each. Pure.

The admission webhooks decide a GPU pod once, when it is created, and store the decision
(``pod_decision``, migration 0023) whose id the pod carries in ``sovereign.io/decision-id``.
Policies and the fleet change afterwards; the pod sweep (``eviction.sweep_pods``) judges
every running pod again, as the compliance evaluation judges booked workloads: the stored
declaration, under the active policy set, on the node the pod actually runs on, through
the same ``evaluation.assess`` and ``evaluation.enforcements``. A pod that now breaks a
deny policy whose ``on_violation`` is ``revoke`` is evicted.

**What is trusted.** An annotation is anyone's to write, so a pod is judged only when its
decision is provably its own (``decision_problem``): a stored admit of the mutating
webhook, in the pod's namespace, for the pod itself (its name or generateName) or for the
Job or CronJob that owns it, with the declaration annotations the pod carries now. And the
node is the inventory node its Kubernetes Node answers to (``facts.kubernetes``, the rule
the label sync labels by). Anything else is skipped and reported, never evicted: a copied
or forged id must neither get a pod evicted under someone else's declaration nor keep one
running under a compliant declaration that is not its own. What this cannot tell: a pod
re-created without the webhooks (an exempt namespace, a webhook that was down and failed
open) under the same name and declaration as one decided earlier is judged by that
decision, which says what its own would.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from control_plane.compliance.evaluation import Enforcement, Finding, RunningWorkload
from control_plane.compliance.models import PodDecisionRow
from control_plane.domain.decisions import DecisionOutcome

# The annotations the sweep reads, the webhooks' own (``domain.kubernetes``).
from control_plane.domain.kubernetes import DATASETS as DATASETS
from control_plane.domain.kubernetes import DECISION_ID as DECISION_ID
from control_plane.domain.kubernetes import MODELS as MODELS
from control_plane.domain.kubernetes import OUTPUT as OUTPUT
from control_plane.domain.kubernetes import TENANT as TENANT
from control_plane.policy.models import NodeView, WorkloadView

#: How many skipped pods (and evicted, blocked ones) a report lists; the counts are exact.
REPORT_SAMPLE = 100

_ADMITTED = (DecisionOutcome.ADMITTED.value, DecisionOutcome.ADMITTED_WITH_WARNINGS.value)


@dataclass(frozen=True, slots=True)
class RunningPod:
    """A pod bound to a node, running or about to, that names a Sovereign decision.

    ``owners`` are its controller owner references as (kind, name).
    """

    namespace: str
    name: str
    uid: str
    node_name: str
    decision_id: str
    annotations: Mapping[str, str] = field(default_factory=dict)
    generate_name: str | None = None
    owners: tuple[tuple[str, str], ...] = ()

    @property
    def key(self) -> str:
        """``namespace/name``, as reports and logs name a pod."""
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class BoundPod:
    """A pod with the decision that is provably its own and the inventory node it runs on."""

    pod: RunningPod
    decision: PodDecisionRow
    node: NodeView


@dataclass(frozen=True, slots=True)
class SkippedPod:
    """A pod the sweep does not judge, and why in words."""

    pod: RunningPod
    reason: str

    def to_json(self) -> dict[str, str]:
        """The skip as JSON-safe values."""
        return {"pod": self.pod.key, "reason": self.reason}


def _names(value: str | None) -> list[str]:
    """A comma-separated annotation as the webhook reads it (``admission.pods``)."""
    if value is None:
        return []
    return [name.strip() for name in value.split(",") if name.strip()]


def declaration_differs(annotations: Mapping[str, str], request: Mapping[str, Any]) -> str | None:
    """Which declaration annotation of the pod says otherwise than the stored request.

    The tenant is compared only when the pod names one (otherwise the namespace named
    it, and the namespace is compared apart). None when they agree.
    """
    if _names(annotations.get(DATASETS)) != list(request.get("datasets") or []):
        return DATASETS
    if _names(annotations.get(MODELS)) != list(request.get("models") or []):
        return MODELS
    if (annotations.get(OUTPUT) or None) != request.get("output"):
        return OUTPUT
    if TENANT in annotations and annotations[TENANT] != request.get("tenant"):
        return TENANT
    return None


def _decided_for(pod: RunningPod, decision: PodDecisionRow) -> bool:
    """Whether the decision was taken for this pod, or for the Job or CronJob that owns it."""
    if decision.name is None:
        return False
    if decision.kind == "Pod":
        return decision.name in (pod.name, pod.generate_name)
    jobs = [name for kind, name in pod.owners if kind == "Job"]
    if decision.kind == "Job":
        return decision.name in jobs
    # A CronJob's Jobs are named after it: <cronjob>-<scheduled time>.
    return decision.kind == "CronJob" and any(job.startswith(f"{decision.name}-") for job in jobs)


def decision_problem(pod: RunningPod, decision: PodDecisionRow | None) -> str | None:
    """Why ``decision`` cannot be taken as the pod's own (module docstring); None if it can."""
    if decision is None:
        return f"no stored decision has the id {pod.decision_id} its {DECISION_ID} names"
    if decision.webhook != "mutate" or decision.outcome not in _ADMITTED:
        return f"decision {decision.id} is not an admit of the mutating webhook"
    if decision.namespace != pod.namespace:
        return f"decision {decision.id} was taken in namespace {decision.namespace}"
    if not _decided_for(pod, decision):
        return f"decision {decision.id} was taken for {decision.kind} {decision.name}"
    differs = declaration_differs(pod.annotations, decision.request)
    if differs is not None:
        return f"the pod's {differs} says otherwise than decision {decision.id}"
    return None


def bind(
    pods: Sequence[RunningPod],
    decisions: Mapping[UUID, PodDecisionRow],
    nodes: Mapping[str, Sequence[NodeView]],
) -> tuple[list[BoundPod], list[SkippedPod]]:
    """Each pod with its own decision and its inventory node, or skipped saying why.

    ``nodes``: lower-cased Kubernetes node name to the inventory nodes answering to it
    (``facts.kubernetes.by_kubernetes_name``).
    """
    bound: list[BoundPod] = []
    skipped: list[SkippedPod] = []
    for pod in pods:
        try:
            decision_id: UUID | None = UUID(pod.decision_id)
        except ValueError:
            decision_id = None
        if decision_id is None:
            skipped.append(SkippedPod(pod, f"its {DECISION_ID} is not a decision id"))
            continue
        problem = decision_problem(pod, decisions.get(decision_id))
        if problem is not None:
            skipped.append(SkippedPod(pod, problem))
            continue
        matches = nodes.get(pod.node_name.lower(), ())
        if len(matches) != 1:
            skipped.append(
                SkippedPod(
                    pod,
                    f"Kubernetes node {pod.node_name} is not in the inventory"
                    if not matches
                    else f"Kubernetes node {pod.node_name} answers to {len(matches)}"
                    " inventory nodes",
                )
            )
            continue
        found = decisions[decision_id]
        bound.append(BoundPod(pod, found, matches[0]))
    return bound, skipped


def running_workload(bound: BoundPod, view: WorkloadView | str) -> RunningWorkload:
    """The pod as the compliance evaluation sees a running workload, by the pod's uid.

    ``view``: the engine's view of its stored declaration, or why there is none in words
    (``facts.workloads.RegistryViews.view``).
    """
    node = bound.node
    return RunningWorkload(
        id=bound.pod.uid,
        tenant=bound.decision.tenant,
        node_id=node.id,
        view=None if isinstance(view, str) else view,
        problem=view if isinstance(view, str) else None,
        hostname=node.hostname,
        node_status=node.status.value,
        zone=node.zone,
    )


@dataclass(frozen=True, slots=True)
class PodVerdict:
    """What the sweep does about one violating pod: evict it, or only say so.

    ``revoke_by`` are the deny policies with ``on_violation: revoke`` it breaks (evict
    when not empty); ``notify_by`` those with ``notify``.
    """

    bound: BoundPod
    finding: Finding
    revoke_by: tuple[str, ...]
    notify_by: tuple[str, ...]

    @property
    def evict(self) -> bool:
        """Whether the pod is to be evicted."""
        return bool(self.revoke_by)


def verdicts(bound: Sequence[BoundPod], planned: Sequence[Enforcement]) -> list[PodVerdict]:
    """The violating pods whose policies call for more than a record, by pod uid."""
    by_uid = {item.pod.uid: item for item in bound}
    found = []
    for plan in planned:
        item = by_uid[plan.finding.workload_id]
        notify_by = tuple(name for name, _ in plan.notify if name not in plan.revoke_by)
        found.append(PodVerdict(item, plan.finding, plan.revoke_by, notify_by))
    return found


@dataclass(slots=True)
class PodSweepReport:
    """What one pod sweep found and did (the Celery task's result).

    ``pods_seen``: pods bound to a node that name a Sovereign decision; ``judged`` those
    with a decision of their own on a known node, ``skipped`` the rest (a sample with
    reasons in ``skipped_pods``). Of the judged, ``violating`` break a deny policy;
    ``evicted`` were evicted, ``blocked`` refused by a PodDisruptionBudget (asked again
    next sweep), ``deferred`` refused otherwise for now (throttled), ``gone`` went away
    before their eviction; ``notified`` break only ``notify`` policies (reported, left
    running). Samples hold at most ``REPORT_SAMPLE`` pods; counts are exact.
    ``already_running``: another sweep held the lock, so this one did nothing.
    """

    already_running: bool = False
    pods_seen: int = 0
    judged: int = 0
    violating: int = 0
    evicted: int = 0
    blocked: int = 0
    deferred: int = 0
    gone: int = 0
    notified: int = 0
    skipped: int = 0
    evicted_pods: list[str] = field(default_factory=list)
    blocked_pods: list[str] = field(default_factory=list)
    notified_pods: list[str] = field(default_factory=list)
    skipped_pods: list[dict[str, str]] = field(default_factory=list)

    def add_skipped(self, skip: SkippedPod) -> None:
        """Count a skipped pod, listing it while the sample has room."""
        self.skipped += 1
        if len(self.skipped_pods) < REPORT_SAMPLE:
            self.skipped_pods.append(skip.to_json())

    def to_json(self) -> dict[str, object]:
        """The report as JSON-safe values."""
        return {
            "already_running": self.already_running,
            "pods_seen": self.pods_seen,
            "judged": self.judged,
            "violating": self.violating,
            "evicted": self.evicted,
            "blocked": self.blocked,
            "deferred": self.deferred,
            "gone": self.gone,
            "notified": self.notified,
            "skipped": self.skipped,
            "evicted_pods": list(self.evicted_pods),
            "blocked_pods": list(self.blocked_pods),
            "notified_pods": list(self.notified_pods),
            "skipped_pods": list(self.skipped_pods),
        }


def sample(into: list[str], pod: RunningPod) -> None:
    """List ``pod`` in a report's sample while it has room."""
    if len(into) < REPORT_SAMPLE:
        into.append(pod.key)
