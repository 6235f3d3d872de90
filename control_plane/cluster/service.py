"""The node label sync: each Node's ``sovereign.io/*`` labels say what the inventory says.

No other label is ever touched.

A Kubernetes Node is matched to the inventory node by ``facts.kubernetes`` (the name its
agent reported, ``SOVEREIGN_AGENT_KUBERNETES_NODE_NAME``, else its hostname), the rule the
pod sweep judges pods by too. Which labels it should carry is
``desired_labels``: the full set (``models``) for a node anything may be placed on
(``active`` and not drifted, which implies its location was confirmed), none at all for
any other node (planned, maintenance, offline, quarantined), so the webhook's affinity
and a pod's own zone affinity never land a pod there. A Node the inventory does not know
(or knows twice by that name) is reported (the log; the stored report that
``GET /v1/cluster/label-sync`` and the metric ``sovereign_kubernetes_unknown_nodes``
read) and gets no labels of ours; any it still has (a decommissioned node's) are removed.
Every change the sync makes to a Node's labels is audited.

Idempotent: a Node whose labels are already right is not patched, so a second run sends no
request but the listing. Each patch is a strategic merge patch of just the labels that
change (``null`` removes one), so labels set by others between the read and the patch
survive.
"""

import logging
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from control_plane.cluster import repository
from control_plane.cluster.models import (
    UNKNOWN_SAMPLE,
    LabelSyncStatus,
    NodeLabelsSynced,
    SyncReport,
)
from control_plane.core.audit_log import AuditContext, Change, record_changes, transaction
from control_plane.core.db import DbConnection
from control_plane.core.kube import reaching_cluster
from control_plane.core.settings import KubernetesSettings
from control_plane.domain.audit import AuditAction
from control_plane.domain.fleet import placeable
from control_plane.domain.kubernetes import (
    IN_ZONE_PREFIX,
    IN_ZONE_VALUE,
    LABEL_PREFIX,
    NodeLabelChange,
    in_zone_label,
    node_labels,
)
from control_plane.facts.fleet import load_snapshot
from control_plane.facts.kubernetes import by_kubernetes_name, kubernetes_node_names
from control_plane.policy.engine import NodeIndex
from control_plane.policy.models import NodeView

if TYPE_CHECKING:
    from kubernetes.client import ApiClient, CoreV1Api

log = logging.getLogger(__name__)

#: Nodes asked for per list request. One page of 500 Nodes is a few megabytes of JSON at
#: most; a 5,000-node cluster is ten requests, each well under the call timeout.
LIST_PAGE_SIZE = 500


def desired_labels(node: NodeView, index: NodeIndex) -> dict[str, str]:
    """The ``sovereign.io/*`` labels ``node`` should carry; empty unless it is placeable.

    ``domain.kubernetes.node_labels`` is what the admission webhook judges a pod's node
    selection against (``admission.pods.node_labels`` calls it too), so the webhook and
    kube-scheduler read the same; the webhook's compact affinity selects on the
    ``sovereign.io/zone.<slug>`` ones added here.
    """
    if not placeable(node.status, node.drift_status) or node.zone is None:
        return {}
    labels = node_labels(
        node.id,
        node.zone,
        index.country_of(node.zone),
        node.origin_country,
        node.provenance_status.value,
    )
    for zone in index.ancestors(node.zone):
        key = in_zone_label(zone)
        if key is not None:
            labels[key] = IN_ZONE_VALUE
        else:
            log.warning("zone %s: slug too long for a %s<slug> label", zone, IN_ZONE_PREFIX)
    return labels


def label_changes(current: Mapping[str, str], desired: Mapping[str, str]) -> dict[str, str | None]:
    """The label patch from ``current`` (all of a Node's labels) to ``desired`` (ours only).

    Only ``sovereign.io/*`` keys appear: wanted ones that differ, and ``None`` (remove) for
    ours no longer wanted. Empty when nothing needs changing.
    """
    changes: dict[str, str | None] = {
        key: value for key, value in desired.items() if current.get(key) != value
    }
    for key in current:
        if key.startswith(LABEL_PREFIX) and key not in desired:
            changes[key] = None
    return changes


def _kubernetes_nodes(
    core: "CoreV1Api", timeout_seconds: float
) -> Iterator[tuple[str, dict[str, str]]]:
    """Every Node's name and labels, a page at a time."""
    token: str | None = None
    while True:
        with reaching_cluster():
            page = core.list_node(
                limit=LIST_PAGE_SIZE, _continue=token, _request_timeout=timeout_seconds
            )
        for item in page.items:
            metadata = item.metadata
            if metadata is None or not metadata.name:
                continue
            yield metadata.name, dict(metadata.labels or {})
        token = page.metadata._continue if page.metadata is not None else None
        if not token:
            return


def sync_node_labels(
    conn: DbConnection, ctx: AuditContext, api: "ApiClient", *, timeout_seconds: float
) -> SyncReport:
    """Bring every Node's ``sovereign.io/*`` labels in line with the inventory.

    Each Node whose labels were changed is audited (``kubernetes_node.labels_synced``, as
    ``ctx``) and the run's report replaces the stored one, in one transaction after the
    last patch. A run broken off (``ClusterUnavailableError``: the API server down, slow,
    5xx, which the task retries; or a patch refused, a 403 say) still records the patches
    it made, and keeps the last complete report. A Node deleted between the listing and
    its patch is skipped.
    """
    from kubernetes.client import CoreV1Api

    index = load_snapshot(conn).index
    by_name = by_kubernetes_name(index.nodes, kubernetes_node_names(conn))
    # The read transaction is done; the API calls below must not hold it open.
    conn.commit()

    report = SyncReport()
    try:
        _sync(CoreV1Api(api), index, by_name, report, timeout_seconds)
    except Exception:
        _record(conn, ctx, report, complete=False)
        raise
    _record(conn, ctx, report, complete=True)
    return report


def _sync(
    core: "CoreV1Api",
    index: NodeIndex,
    by_name: Mapping[str, list[NodeView]],
    report: SyncReport,
    timeout_seconds: float,
) -> None:
    """List the Nodes and patch those whose labels differ, counting into ``report``."""
    from kubernetes.client.exceptions import ApiException

    for name, current in _kubernetes_nodes(core, timeout_seconds):
        report.nodes_seen += 1
        matches = by_name.get(name.lower(), [])
        if len(matches) == 1:
            desired = desired_labels(matches[0], index)
        else:
            report.unknown_count += 1
            if len(report.unknown) < UNKNOWN_SAMPLE:
                report.unknown.append(name)
            log.warning(
                "Kubernetes node %s: %s; it gets no sovereign.io labels",
                name,
                "no inventory node has this name"
                if not matches
                else f"{len(matches)} inventory nodes have this name",
            )
            desired = {}
        changes = label_changes(current, desired)
        if not changes:
            report.unchanged += 1
            continue
        try:
            with reaching_cluster():
                core.patch_node(
                    name, {"metadata": {"labels": changes}}, _request_timeout=timeout_seconds
                )
        except ApiException as exc:
            if exc.status == 404:
                continue
            raise
        report.synced.append(
            NodeLabelsSynced(
                node=name,
                node_id=matches[0].id if len(matches) == 1 else None,
                changes=[
                    NodeLabelChange(key=key, old=current.get(key), new=value)
                    for key, value in sorted(changes.items())
                ],
            )
        )
        log.info("Kubernetes node %s: labels %s", name, changes)


def _record(conn: DbConnection, ctx: AuditContext, report: SyncReport, *, complete: bool) -> None:
    """Audit the patches ``report`` made and, for a ``complete`` run, store it."""
    if not complete and not report.synced:
        return
    with transaction(conn):
        record_changes(
            conn,
            ctx,
            [
                Change(AuditAction.KUBERNETES_NODE_LABELS_SYNCED, synced.node, after=synced)
                for synced in report.synced
            ],
        )
        if complete:
            repository.save_report(conn, report)


def sync_status(conn: DbConnection, settings: KubernetesSettings) -> LabelSyncStatus:
    """Whether the sync runs here, how often, and the latest run's report."""
    return LabelSyncStatus(
        enabled=settings.label_sync_enabled,
        interval_seconds=settings.label_sync_seconds,
        last_run=repository.last_report(conn),
    )
