"""List filters that cannot match anything are refused, not answered with an empty page.

A misspelt zone (``jpp``), a country that is not one (``JAPAN``, ``XX``) or a status no
object has would otherwise read as "there are none", which a compliance report must never
say by mistake. Every list route checks its filters the same way: format by the filter
model's types, existence of the zones, sites and tenants they name by one helper.
"""

from typing import Any

import pytest
from fastapi.testclient import TestClient

from control_plane.access.models import Role
from tests.support import Run, registration

pytestmark = pytest.mark.integration


@pytest.fixture
def world(client: TestClient, admin: dict[str, str]) -> None:
    """A zone tree jp > jp-east with a site, a tenant with a dataset and a model, a node."""
    for path, created in (
        ("/v1/zones", {"slug": "jp", "name": "Japan", "country": "JP"}),
        ("/v1/zones", {"slug": "jp-east", "name": "Japan East", "country": "JP", "parent": "jp"}),
        ("/v1/sites", {"slug": "tokyo-1", "name": "Tokyo 1", "zone": "jp-east"}),
        ("/v1/tenants", {"slug": "research", "name": "Research"}),
        (
            "/v1/datasets",
            {
                "name": "tickets",
                "tenant": "research",
                "classification": "internal",
                "zones": ["jp"],
            },
        ),
        (
            "/v1/models",
            {
                "name": "llama",
                "tenant": "research",
                "classification": "internal",
                "zones": ["jp-east"],
                "supplier": "Meta",
                "origin_country": "US",
                "license": "llama3",
            },
        ),
        (
            "/v1/agents/register",
            registration(hostname="gpu-1", zone="jp-east", origin_country="TW", site="tokyo-1"),
        ),
    ):
        response = client.post(path, json=created, headers=admin)
        assert response.status_code == 201, response.text


def refused(client: TestClient, admin: dict[str, str], path: str, **params: str) -> list[Any]:
    """The fields a 422 names, with their messages and values."""
    response = client.get(path, params=params, headers=admin)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_input"
    fields: list[Any] = error["details"]["fields"]
    return fields


REFUSED = [
    # (path, query parameter, value, what the message says)
    ("/v1/nodes", "zone", "jpp", "unknown zone 'jpp'"),
    ("/v1/nodes", "site", "osaka-9", "unknown site 'osaka-9'"),
    ("/v1/nodes", "origin_country", "JAPAN", ""),
    ("/v1/nodes", "origin_country", "XX", "'XX' is not an ISO 3166-1 alpha-2 country code"),
    ("/v1/nodes", "status", "runing", ""),
    ("/v1/nodes", "provenance_status", "checked", ""),
    ("/v1/datasets", "zone", "mars", "unknown zone 'mars'"),
    ("/v1/datasets", "tenant", "reserch", "unknown tenant 'reserch'"),
    ("/v1/datasets", "classification", "secret", ""),
    ("/v1/models", "zone", "mars", "unknown zone 'mars'"),
    ("/v1/models", "tenant", "reserch", "unknown tenant 'reserch'"),
    ("/v1/models", "origin_country", "USA", ""),
    ("/v1/models", "origin_country", "XX", "'XX' is not an ISO 3166-1 alpha-2 country code"),
    ("/v1/workloads", "tenant", "reserch", "unknown tenant 'reserch'"),
    ("/v1/workloads", "status", "running", ""),
    ("/v1/audit/events", "action", "node.drift_detectd", ""),
    ("/v1/audit/events", "object_type", "nodes", ""),
]


@pytest.mark.parametrize(("path", "param", "value", "says"), REFUSED)
def test_a_filter_that_can_match_nothing_is_422_naming_the_parameter(
    client: TestClient,
    admin: dict[str, str],
    world: None,
    path: str,
    param: str,
    value: str,
    says: str,
) -> None:
    [field] = refused(client, admin, path, **{param: value})
    assert field["field"] == f"query.{param}"
    assert says in field["message"]


def test_every_unknown_reference_is_named_at_once(
    client: TestClient, admin: dict[str, str], world: None
) -> None:
    fields = refused(client, admin, "/v1/nodes", zone="jpp", site="osaka-9", status="active")
    assert [(f["field"], f["value"]) for f in fields] == [
        ("query.zone", "jpp"),
        ("query.site", "osaka-9"),
    ]


def test_filters_that_name_what_exists_are_served(
    client: TestClient, admin: dict[str, str], world: None
) -> None:
    def names(path: str, key: str, **params: str) -> list[str]:
        response = client.get(path, params=params, headers=admin)
        assert response.status_code == 200, response.text
        return [item[key] for item in response.json()["items"]]

    # Any case, as everywhere else; a zone includes the zones inside it.
    assert names("/v1/nodes", "hostname", zone="JP", origin_country="tw") == ["gpu-1"]
    assert names("/v1/nodes", "hostname", site="tokyo-1", status="active") == ["gpu-1"]
    # A real country no node comes from, and a real zone with nothing in it, match nothing.
    assert names("/v1/nodes", "hostname", origin_country="DE") == []
    assert names("/v1/datasets", "name", zone="jp-east") == []
    assert names("/v1/datasets", "name", tenant="research", zone="jp") == ["tickets"]
    assert names("/v1/models", "name", zone="jp", origin_country="us") == ["llama"]
    assert names("/v1/workloads", "id", tenant="research", status="admitted") == []
    assert names("/v1/audit/events", "action", object_type="zone", action="zone.created") == [
        "zone.created",
        "zone.created",
    ]


def test_sovctl_shows_the_refusal_and_fails(sovctl_as: Any, world: None, make_token: Any) -> None:
    sovctl: Run = sovctl_as(Role.ADMIN)
    for args, says in (
        (("nodes", "list", "--zone", "jpp"), "query.zone: unknown zone 'jpp'"),
        (("nodes", "list", "--origin", "JAPAN"), "query.origin_country"),
        (("nodes", "list", "--origin", "XX"), "'XX' is not an ISO 3166-1 alpha-2 country code"),
        (("datasets", "list", "--zone", "mars"), "query.zone: unknown zone 'mars'"),
        (("models", "list", "--origin", "XX"), "query.origin_country"),
        (("workloads", "list", "--tenant", "reserch"), "query.tenant: unknown tenant 'reserch'"),
    ):
        code, out, err = sovctl(*args)
        assert code == 1, (args, out, err)
        assert "HTTP 422" in err, (args, err)
        assert says in err, (args, err)
        assert out == ""
    code, out, err = sovctl("nodes", "list", "--zone", "jp", "--origin", "tw")
    assert code == 0, err
    assert "gpu-1" in out
