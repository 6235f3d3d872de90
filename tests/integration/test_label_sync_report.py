"""The label sync's stored report, as admins, auditors and Prometheus read it.

The sync itself runs against a real kube-apiserver in tests/kube/test_label_sync.py; here
the report is stored as a run stores it, so this part is checked wherever the tier
cannot run.
"""

from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from control_plane.access.models import Role
from control_plane.cluster import repository
from control_plane.cluster.models import NodeLabelsSynced, SyncReport
from control_plane.core.db import DbConnection
from control_plane.domain.kubernetes import NodeLabelChange
from tests.support import bearer


def test_before_any_run_the_answer_says_so(
    client: TestClient, make_token: Callable[[Role], str], admin_sovctl: Any
) -> None:
    answer = client.get("/v1/cluster/label-sync", headers=bearer(make_token(Role.OPERATOR)))
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"enabled": False, "interval_seconds": 60.0, "last_run": None}
    assert "sovereign_kubernetes_unknown_nodes" not in client.get("/metrics").text
    code, out, err = admin_sovctl("cluster", "label-sync")
    assert code == 0, err
    assert "label sync: disabled, every 60 s" in out
    assert "no run has finished yet" in out


def test_a_stored_run_is_shown_and_replaced(
    conn: DbConnection, client: TestClient, make_token: Callable[[Role], str], admin_sovctl: Any
) -> None:
    with conn.transaction():
        repository.save_report(
            conn,
            SyncReport(
                nodes_seen=5,
                unchanged=2,
                unknown_count=2,
                unknown=["x-1", "x-2"],
                synced=[
                    NodeLabelsSynced(
                        node="gpu-1",
                        node_id=None,
                        changes=[NodeLabelChange(key="sovereign.io/zone", old="jp", new=None)],
                    )
                ],
            ),
        )
    auditor = bearer(make_token(Role.AUDITOR))
    first = client.get("/v1/cluster/label-sync", headers=auditor).json()["last_run"]
    assert {key: value for key, value in first.items() if key != "finished_at"} == {
        "nodes_seen": 5,
        "patched": 1,
        "unchanged": 2,
        "unknown_count": 2,
        "unknown": ["x-1", "x-2"],
    }
    assert "sovereign_kubernetes_unknown_nodes 2.0" in client.get("/metrics").text
    code, out, err = admin_sovctl("cluster", "label-sync")
    assert code == 0, err
    assert "Nodes the inventory does not know, never labelled:\n  x-1\n  x-2" in out

    with conn.transaction():
        repository.save_report(conn, SyncReport(nodes_seen=3, unchanged=3))
    second = client.get("/v1/cluster/label-sync", headers=auditor).json()["last_run"]
    assert (second["unknown_count"], second["unknown"]) == (0, [])
    assert second["finished_at"] >= first["finished_at"]
    assert "sovereign_kubernetes_unknown_nodes 0.0" in client.get("/metrics").text


def test_a_report_that_cannot_be_true_is_refused_by_the_store(conn: DbConnection) -> None:
    with pytest.raises(psycopg.errors.CheckViolation), conn.transaction():
        repository.save_report(conn, SyncReport(nodes_seen=1, unknown_count=0, unknown=["x"]))
