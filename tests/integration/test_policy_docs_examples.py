"""docs/policy.md's worked examples for ownership and grants, and for revoking a violation.

Each ``api-example`` request on the page is sent to the real API in order, and the answer
must hold every documented field and value (``…`` stands for a value that differs on every
run). ``{workload}`` and ``{grant}`` in a path or answer are the ids the examples before
created. A ``202`` from ``POST /v1/compliance/evaluations`` is followed by the evaluation
the worker would run on its next beat. (The confirmed-locations example runs in
``test_confirmed_locations.py``.)
"""

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from control_plane.compliance import service as compliance
from control_plane.compliance.tasks import COMPLIANCE_ACTOR
from control_plane.core.db import DbConnection
from tests.support import documented_api_examples, matches_documented, registration

pytestmark = pytest.mark.integration

PAGE = Path("docs/policy.md")


def setup(client: TestClient, admin: dict[str, str], nodes: dict[str, str]) -> None:
    """Zones jp and tw, the tenants, the hospital's restricted data, nodes by zone."""
    for path, body in (
        ("/v1/zones", {"slug": "jp", "name": "Japan", "country": "JP"}),
        ("/v1/zones", {"slug": "tw", "name": "Taiwan", "country": "TW"}),
        ("/v1/tenants", {"slug": "hospital", "name": "Hospital"}),
        ("/v1/tenants", {"slug": "retail", "name": "Retail"}),
        ("/v1/tenants", {"slug": "research", "name": "Research"}),
        (
            "/v1/datasets",
            {
                "name": "patients",
                "tenant": "hospital",
                "classification": "restricted",
                "zones": ["jp"],
            },
        ),
    ):
        response = client.post(path, json=body, headers=admin)
        assert response.status_code == 201, response.text
    for hostname, zone in nodes.items():
        body = registration(hostname=hostname, zone=zone, gpu_uuids=(f"GPU-{hostname}-0000",))
        response = client.post("/v1/agents/register", json=body, headers=admin)
        assert response.status_code == 201, response.text


def run_examples(
    client: TestClient, admin: dict[str, str], conn: DbConnection, group: str
) -> list[str]:
    """Send the group's documented requests in order; check each answer; the steps run."""
    ids: dict[str, str] = {}

    def filled(text: str) -> str:
        for name, value in ids.items():
            text = text.replace("{" + name + "}", value)
        return text

    steps = []
    for example in documented_api_examples(PAGE, group):
        path = filled(example.path)
        response = client.request(
            example.method,
            path,
            headers=admin,
            **({} if example.body is None else {"json": example.body}),
        )
        assert response.status_code == example.status, (example.step, response.text)
        answer: Any = response.json()
        if isinstance(answer, dict) and "outcome" in answer:
            ids.setdefault("workload", answer["id"])
        if isinstance(answer, dict) and "in_force" in answer:
            ids.setdefault("grant", answer["id"])
        expected = json.loads(filled(json.dumps(example.answer)))
        assert matches_documented(expected, answer), (example.step, answer)
        if path == "/v1/compliance/evaluations" and response.status_code == 202:
            compliance.run_pending(
                conn, COMPLIANCE_ACTOR, sample_size=100, request_retention_days=7
            )
        steps.append(example.step)
    return steps


def test_the_ownership_and_grants_example(
    client: TestClient, admin: dict[str, str], conn: DbConnection
) -> None:
    setup(client, admin, {"jp-a": "jp"})
    steps = run_examples(client, admin, conn, "grants")
    assert steps == ["no-grant", "grant", "granted", "revoke"]
    # Revoking the grant asked for an evaluation: the running workload is a violation.
    compliance.run_pending(conn, COMPLIANCE_ACTOR, sample_size=100, request_retention_days=7)
    latest = client.get("/v1/compliance/evaluations/latest", headers=admin).json()
    [violation] = latest["sample"]
    assert [(r["policy"], r["rule"]) for r in violation["reasons"]] == [(None, "ownership")]


def test_the_revoke_on_violation_example(
    client: TestClient, admin: dict[str, str], conn: DbConnection
) -> None:
    setup(client, admin, {"tw-a": "tw"})
    steps = run_examples(client, admin, conn, "revoke")
    assert steps == ["running", "apply", "activate", "evaluate", "revoked"]
