"""Provenance use cases: checking a bill of materials against what the agents read.

An import is one transaction. Every node the BOM could name is locked; each BOM server is
matched to a node by system serial, else by asset tag, and compared with it; nodes found
``verified`` or ``mismatch`` get the verdict and its evidence, and one audit event each,
written last. Nodes whose BOM could not be checked against any reading are left as they are.
When a verdict or an origin changed, the import asks for a compliance evaluation in the
same transaction: policies may require verified provenance or particular origins.
"""

from collections import defaultdict
from datetime import UTC, datetime
from uuid import UUID, uuid4

from control_plane.core.audit_log import AuditContext, record_change, transaction
from control_plane.core.db import DbConnection
from control_plane.core.outbox import request_evaluation
from control_plane.domain.audit import AuditAction
from control_plane.domain.compliance import EvaluationTrigger
from control_plane.inventory.identity import CHECKED_IDENTITY
from control_plane.inventory.models import NodeIdentity, NodeRow
from control_plane.inventory.nodes import PROVENANCE_POLICY_FIELDS
from control_plane.provenance import repository
from control_plane.provenance.bom import BomServer, group_servers
from control_plane.provenance.checks import NodeFacts, assess
from control_plane.provenance.models import (
    BomImport,
    ImportResult,
    MatchedBy,
    ServerCheck,
    ServerStatus,
)

#: What ``provenance_evidence.source`` says for a verdict from a BOM import.
EVIDENCE_SOURCE = "bom-import"

#: Node ids named in one compliance request; the request also has the exact count.
_NODE_IDS_PER_REQUEST = 100

#: What policies read of a node's provenance: a change there calls for an evaluation.
_POLICY_FIELDS = set(PROVENANCE_POLICY_FIELDS)

_Index = dict[MatchedBy, dict[str, list[NodeRow]]]


def _index(nodes: list[NodeRow]) -> _Index:
    # MatchedBy's values are the names of the node columns they match on.
    index: _Index = {by: defaultdict(list) for by in MatchedBy}
    for node in nodes:
        for by in MatchedBy:
            value = getattr(node, by.value)
            if value is not None:
                index[by][value].append(node)
    return index


def _find_node(server: BomServer, index: _Index) -> tuple[NodeRow, MatchedBy] | str:
    """The one node the server names (by system serial, else asset tag), or why none."""
    reasons = []
    for by, value in (
        (MatchedBy.SYSTEM_SERIAL, server.system_serial),
        (MatchedBy.ASSET_TAG, server.asset_tag),
    ):
        if value is None:
            continue
        candidates = index[by].get(value, [])
        if len(candidates) == 1:
            return candidates[0], by
        label = by.value.replace("_", " ")
        reasons.append(
            f"{len(candidates)} nodes have {label} {value}"
            if candidates
            else f"no node has {label} {value}"
        )
    return "; ".join(reasons)


def _unmatched(server: BomServer, reason: str) -> ServerCheck:
    return ServerCheck(
        system_serial=server.system_serial,
        asset_tag=server.asset_tag,
        status=ServerStatus.UNMATCHED,
        node_id=None,
        hostname=None,
        matched_by=None,
        reason=reason,
        checks=[],
    )


def import_bom(conn: DbConnection, ctx: AuditContext, bom: BomImport) -> ImportResult:
    """Check a BOM against the nodes it names; store verdicts and evidence; audit each change.

    Declared origins are compared, never overwritten; origins a node lacks are taken from
    the BOM. A node named by two servers of one BOM is checked against the first only.
    """
    servers = group_servers(bom.rows)
    import_id = uuid4()
    checked_at = datetime.now(UTC)
    results: list[ServerCheck] = []
    changed: list[tuple[NodeRow, NodeRow]] = []
    with transaction(conn):
        nodes = repository.lock_nodes_for_bom(
            conn,
            [s.system_serial for s in servers if s.system_serial is not None],
            [s.asset_tag for s in servers if s.asset_tag is not None],
        )
        index = _index(nodes)
        gpus = repository.gpu_identities(conn, [n.id for n in nodes])
        checked: dict[UUID, str] = {}
        for server in servers:
            found = _find_node(server, index)
            if isinstance(found, str):
                results.append(_unmatched(server, found))
                continue
            node, matched_by = found
            if node.id in checked:
                results.append(
                    _unmatched(
                        server,
                        f"node {node.hostname} ({node.id}) is already matched by "
                        f"server {checked[node.id]} of this BOM",
                    )
                )
                continue
            checked[node.id] = str(server.system_serial or server.asset_tag)
            read = gpus.get(node.id, [])
            assessment = assess(
                server,
                NodeFacts(
                    system_serial=node.system_serial,
                    gpu_serials=tuple(gpu.serial for gpu in read),
                    origin_country=node.origin_country,
                    component_origins=node.component_origins,
                ),
            )
            if assessment.status in (ServerStatus.VERIFIED, ServerStatus.MISMATCH):
                after = repository.record_provenance_check(
                    conn,
                    {
                        "id": node.id,
                        "origin_country": assessment.origin_country,
                        "component_origins": assessment.component_origins,
                        "provenance_status": assessment.status.value,
                        "provenance_evidence": {
                            "source": EVIDENCE_SOURCE,
                            "import_id": str(import_id),
                            "checked_at": checked_at.isoformat(),
                            "bom_name": bom.name,
                            "checked_by": ctx.actor_name,
                            "request_id": ctx.request_id,
                            "matched_by": matched_by.value,
                            "checks": [c.model_dump(mode="json") for c in assessment.checks],
                            # What the verdict holds for: a later change of hardware ends it.
                            CHECKED_IDENTITY: NodeIdentity(
                                system_serial=node.system_serial, gpus=read
                            ).model_dump(mode="json"),
                        },
                    },
                )
                changed.append((node, after))
            results.append(
                ServerCheck(
                    system_serial=server.system_serial,
                    asset_tag=server.asset_tag,
                    status=assessment.status,
                    node_id=node.id,
                    hostname=node.hostname,
                    matched_by=matched_by,
                    reason=None,
                    checks=assessment.checks,
                )
            )
        moved = [
            str(after.id)
            for before, after in changed
            if any(
                getattr(before, name) != getattr(after, name) for name in PROVENANCE_POLICY_FIELDS
            )
        ]
        if moved:
            request_evaluation(
                conn,
                EvaluationTrigger.NODE_PROVENANCE_CHANGED,
                {
                    "import_id": str(import_id),
                    "bom_name": bom.name,
                    "nodes": len(moved),
                    "node_ids": moved[:_NODE_IDS_PER_REQUEST],
                },
            )
        # Last, after every change they describe (see record_change on lock order).
        for before, after in changed:
            record_change(
                conn,
                ctx,
                AuditAction.NODE_PROVENANCE_CHECKED,
                str(before.id),
                before=before.provenance,
                after=after.provenance,
            )
    return ImportResult(import_id=import_id, checked_at=checked_at, servers=results)
