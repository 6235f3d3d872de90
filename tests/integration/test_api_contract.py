"""Schemathesis over the whole OpenAPI document, once per role: the server keeps its word.

Each run drives the real API (a live server on a private database) with every check on:
no 5xx, no status the operation does not document, no body outside its schema, nothing
the schema refuses accepted and, for reads, nothing it allows refused. The configuration
(budget, seed, the one tuning and why) is ``schemathesis.toml`` beside this file; the
failures accepted for now, each with the item that removes it, are in
``schemathesis-baseline.json``.
"""

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from control_plane.access.models import Role
from control_plane.core.settings import Settings
from tests.support import bearer, registration

pytestmark = pytest.mark.integration

HERE = Path(__file__).parent
CONFIG = HERE / "schemathesis.toml"
BASELINE = HERE / "schemathesis-baseline.json"
SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
#: Far above a run's ~20 s: only a hung server reaches it.
RUN_TIMEOUT_SECONDS = 300


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The test's settings with the failed-login throttle out of the way.

    Schemathesis sends requests without the token on purpose (every operation's 401); past
    ``auth_failure_limit`` of them the server would answer 429 to everything, hiding the
    operations behind it. The throttle has its own tests (``test_hostile_bodies``).
    """
    return settings.model_copy(update={"auth_failure_limit": 1_000_000})


def seed_world(base: str, admin: dict[str, str]) -> str:
    """Objects for the run to find (zones, a node, the registry, a policy, a workload).

    Schemathesis reuses what list routes answer as path parameters, so the operations on
    one object are tried on objects that exist. Returns the node's agent token.
    """
    policy: dict[str, Any] = {"name": "stays-in-japan", "requirements": {"compute_zones": ["jp"]}}
    with httpx.Client(base_url=base, headers=admin) as api:
        steps: list[tuple[str, str, Any]] = [
            ("POST", "/v1/zones", {"slug": "jp", "name": "Japan", "country": "JP"}),
            (
                "POST",
                "/v1/zones",
                {"slug": "jp-east", "name": "East", "country": "JP", "parent": "jp"},
            ),
            ("POST", "/v1/sites", {"slug": "tokyo-1", "name": "Tokyo 1", "zone": "jp-east"}),
            ("POST", "/v1/tenants", {"slug": "platform", "name": "Platform"}),
            ("PUT", "/v1/tenants/platform/quotas/jp", {"max_gpus": 4}),
            (
                "POST",
                "/v1/datasets",
                {
                    "name": "tickets",
                    "tenant": "platform",
                    "classification": "internal",
                    "zones": ["jp"],
                },
            ),
            (
                "POST",
                "/v1/models",
                {
                    "name": "llama",
                    "tenant": "platform",
                    "classification": "internal",
                    "zones": ["jp"],
                    "supplier": "Meta",
                    "origin_country": "US",
                    "license": "llama3",
                },
            ),
            ("POST", "/v1/destinations", {"name": "results-jp", "zone": "jp"}),
            ("POST", "/v1/policies", policy),
            ("POST", "/v1/policy-sets/activate", {}),
        ]
        for method, path, body in steps:
            response = api.request(method, path, json=body)
            assert response.is_success, (path, response.text)
        registered = api.post("/v1/agents/register", json=registration(zone="jp"))
        assert registered.status_code == 201, registered.text
        workload = {
            "tenant": "platform",
            "datasets": ["tickets"],
            "models": ["llama"],
            "output": "results-jp",
            "gpu_count": 1,
        }
        admitted = api.post("/v1/workloads", json=workload)
        assert admitted.json()["status"] == "admitted", admitted.text
        assert api.post("/v1/compliance/evaluations").status_code == 202
        token: str = registered.json()["token"]
        return token


@pytest.mark.parametrize("role", [*Role, None], ids=lambda role: role.value if role else "none")
def test_the_api_answers_as_it_documents(
    role: Role | None,
    live_server: str,
    make_token: Callable[[Role], str],
    tmp_path: Path,
) -> None:
    agent_token = seed_world(live_server, bearer(make_token(Role.ADMIN)))
    token = agent_token if role is Role.AGENT else make_token(role) if role else None
    report = tmp_path / "report.json"
    command = [
        str(SCHEMATHESIS),
        "--config-file",
        str(CONFIG),
        "run",
        f"{live_server}/openapi.json",
        "--baseline",
        str(BASELINE),
        "--report",
        "json",
        "--report-json-path",
        str(report),
        "--no-color",
        *(["--header", f"Authorization: Bearer {token}"] if token else []),
    ]
    run = subprocess.run(command, capture_output=True, text=True, timeout=RUN_TIMEOUT_SECONDS)
    summary = json.loads(report.read_text()) if report.exists() else {}
    assert run.returncode == 0, f"{run.stdout[-20000:]}\n{run.stderr[-4000:]}"
    # Every operation of the document was tried, none skipped or errored.
    assert summary["operations"]["tested"] == summary["operations"]["total"], summary["operations"]


# -- what the runs found, pinned as plain tests --------------------------------------


@pytest.mark.parametrize(
    ("query", "status"),
    [("offset=9223372036854775807", 200), ("offset=9223372036854775808", 422)],
)
def test_any_offset_is_served_or_refused_by_name(
    client: TestClient, admin: dict[str, str], query: str, status: int
) -> None:
    # Audit events page by cursor: test_audit_checkpoints.py refuses their offset by name.
    for path in ("/v1/nodes", "/v1/datasets", "/v1/workloads"):
        response = client.get(f"{path}?{query}", headers=admin)
        assert response.status_code == status, response.text
        if status == 422:
            assert [f["field"] for f in response.json()["error"]["details"]["fields"]] == [
                "query.offset"
            ]


@pytest.mark.parametrize(
    "url", ["/v1/zones/j%00p", "/v1/workloads?tenant=a%00b", "/v1/nodes?gpu_model=%00"]
)
def test_nul_in_a_parameter_is_refused_by_name(
    client: TestClient, admin: dict[str, str], url: str
) -> None:
    # PostgreSQL text cannot hold NUL; the 422 names the parameter, as its schema says.
    response = client.get(url, headers=admin)
    assert response.status_code == 422, response.text
    [field] = response.json()["error"]["details"]["fields"]
    assert field["field"].split(".")[0] in {"path", "query"}


def test_a_405_allows_every_method_of_the_path(client: TestClient) -> None:
    assert client.options("/v1/zones/jp").headers["Allow"] == "DELETE, GET, PATCH"
    # A path of its own comes before a template that also matches it.
    assert client.options("/v1/policies/whatif").headers["Allow"] == "POST"
