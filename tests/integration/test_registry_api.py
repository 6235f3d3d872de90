"""The registry through the API: tenants and quotas, datasets, models, destinations."""

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from control_plane.access.models import Role
from control_plane.audit import service as audit
from control_plane.core.db import DbConnection
from tests.support import bearer

pytestmark = pytest.mark.integration


@pytest.fixture
def world(client: TestClient, admin: dict[str, str]) -> None:
    """Zones (jp > jp-east > tokyo-dc1, tw-north) and two tenants."""
    for zone in (
        {"slug": "jp", "name": "Japan", "country": "JP"},
        {"slug": "jp-east", "name": "Japan East", "country": "JP", "parent": "jp"},
        {"slug": "tokyo-dc1", "name": "Tokyo DC1", "country": "JP", "parent": "jp-east"},
        {"slug": "tw-north", "name": "Taiwan North", "country": "TW"},
    ):
        assert client.post("/v1/zones", json=zone, headers=admin).status_code == 201
    for tenant in (
        {"slug": "research", "name": "Research", "description": "ML research"},
        {"slug": "finance", "name": "Finance"},
    ):
        assert client.post("/v1/tenants", json=tenant, headers=admin).status_code == 201


def dataset(**overrides: Any) -> dict[str, Any]:
    body = {
        "name": "support-tickets",
        "tenant": "research",
        "classification": "confidential",
        "zones": ["jp-east"],
        "labels": {"pii": "yes"},
    }
    return {**body, **overrides}


def model(**overrides: Any) -> dict[str, Any]:
    body = {
        "name": "llama-3-8b",
        "tenant": "research",
        "classification": "internal",
        "zones": ["jp-east"],
        "supplier": "Meta",
        "origin_country": "US",
        "license": "llama3",
    }
    return {**body, **overrides}


def created(client: TestClient, path: str, body: dict[str, Any], headers: dict[str, str]) -> Any:
    response = client.post(path, json=body, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


def error_fields(response: Any) -> list[dict[str, Any]]:
    fields: list[dict[str, Any]] = response.json()["error"]["details"]["fields"]
    return fields


def names(response: Any) -> list[str]:
    return [item["name"] for item in response.json()["items"]]


# -- tenants and quotas ----------------------------------------------------------------


def test_tenants_are_created_listed_and_shown(
    client: TestClient, admin: dict[str, str], world: None, conn: DbConnection
) -> None:
    research = client.get("/v1/tenants/research", headers=admin).json()
    assert research["name"] == "Research"
    assert research["description"] == "ML research"
    assert research["quotas"] == []
    slugs = [t["slug"] for t in client.get("/v1/tenants", headers=admin).json()]
    assert slugs == ["finance", "research"]
    event = audit.list_events(conn, object_id="research", action="tenant.created").items[0]
    assert event.object_type == "tenant"
    assert event.before is None
    assert event.after["slug"] == "research"


def test_quota_is_set_replaced_and_removed(
    client: TestClient, admin: dict[str, str], world: None, conn: DbConnection
) -> None:
    url = "/v1/tenants/research/quotas/jp-east"
    first = client.put(url, json={"max_gpus": 16}, headers=admin)
    assert first.status_code == 200, first.text
    assert first.json() == {
        **first.json(),
        "tenant": "research",
        "zone": "jp-east",
        "max_gpus": 16,
        "gpu_hours_per_period": None,
        "period": "month",
    }
    second = client.put(
        url, json={"max_gpus": 8, "gpu_hours_per_period": 1200.5, "period": "week"}, headers=admin
    ).json()
    assert (second["max_gpus"], second["gpu_hours_per_period"], second["period"]) == (
        8,
        1200.5,
        "week",
    )
    client.put("/v1/tenants/research/quotas/tw-north", json={"max_gpus": 0}, headers=admin)
    quotas = client.get("/v1/tenants/research", headers=admin).json()["quotas"]
    assert [(q["zone"], q["max_gpus"]) for q in quotas] == [("jp-east", 8), ("tw-north", 0)]
    listed = {t["slug"]: t for t in client.get("/v1/tenants", headers=admin).json()}
    assert len(listed["research"]["quotas"]) == 2
    assert listed["finance"]["quotas"] == []

    assert client.delete(url, headers=admin).status_code == 204
    again = client.delete(url, headers=admin)
    assert again.status_code == 404
    assert "no quota" in again.json()["error"]["message"]

    events = audit.list_events(conn, object_type="tenant", object_id="research").items
    assert [e.action for e in events] == [
        "tenant.created",
        "tenant.quota_set",
        "tenant.quota_set",
        "tenant.quota_set",
        "tenant.quota_removed",
    ]
    assert events[1].before is None
    assert events[1].after["max_gpus"] == 16
    assert (events[2].before["max_gpus"], events[2].after["max_gpus"]) == (16, 8)
    assert events[4].before["zone"] == "jp-east"
    assert events[4].after is None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"max_gpus": -1}, "max_gpus"),
        ({"max_gpus": 2**31}, "max_gpus"),
        ({}, "max_gpus"),
        ({"max_gpus": 1, "gpu_hours_per_period": -5}, "gpu_hours_per_period"),
        ({"max_gpus": 1, "period": "year"}, "period"),
        ({"max_gpus": 1, "burst": 2}, "burst"),
    ],
)
def test_invalid_quota_is_422_naming_the_field(
    client: TestClient, admin: dict[str, str], world: None, body: dict[str, Any], field: str
) -> None:
    response = client.put("/v1/tenants/research/quotas/jp-east", json=body, headers=admin)
    assert response.status_code == 422, response.text
    assert field in [f["field"] for f in error_fields(response)]


def test_quota_hours_may_not_be_nan(client: TestClient, admin: dict[str, str], world: None) -> None:
    # Python's JSON accepts NaN; PostgreSQL's numeric would store it and call it >= 0.
    response = client.put(
        "/v1/tenants/research/quotas/jp-east",
        content=b'{"max_gpus": 1, "gpu_hours_per_period": NaN}',
        headers={**admin, "Content-Type": "application/json"},
    )
    assert response.status_code == 422
    assert [f["field"] for f in error_fields(response)] == ["gpu_hours_per_period"]


def test_quota_in_unknown_zone_or_for_unknown_tenant(
    client: TestClient, admin: dict[str, str], world: None, conn: DbConnection
) -> None:
    before = audit.list_events(conn).total
    response = client.put("/v1/tenants/research/quotas/mars", json={"max_gpus": 1}, headers=admin)
    assert response.status_code == 422
    assert error_fields(response) == [
        {"field": "zone", "message": "unknown zone 'mars'", "value": "mars"}
    ]
    missing = client.put("/v1/tenants/nobody/quotas/jp", json={"max_gpus": 1}, headers=admin)
    assert missing.status_code == 404
    assert client.delete("/v1/tenants/nobody/quotas/jp", headers=admin).status_code == 404
    assert audit.list_events(conn).total == before


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"slug": "Not A Slug!", "name": "X"}, "slug"),
        ({"slug": "ops", "name": ""}, "name"),
        ({"slug": "ops"}, "name"),
        ({"slug": "ops", "name": "Ops", "budget": 1}, "budget"),
    ],
)
def test_invalid_tenant_is_422_naming_the_field(
    client: TestClient, admin: dict[str, str], body: dict[str, Any], field: str
) -> None:
    response = client.post("/v1/tenants", json=body, headers=admin)
    assert response.status_code == 422, response.text
    assert field in [f["field"] for f in error_fields(response)]
    assert field in response.json()["error"]["message"]


def test_duplicate_tenant_is_409(client: TestClient, admin: dict[str, str], world: None) -> None:
    response = client.post("/v1/tenants", json={"slug": "research", "name": "R"}, headers=admin)
    assert response.status_code == 409
    assert response.json()["error"]["details"]["field"] == "slug"


def test_tenant_that_owns_assets_cannot_be_deleted(
    client: TestClient, admin: dict[str, str], world: None, conn: DbConnection
) -> None:
    created(client, "/v1/datasets", dataset(), admin)
    created(client, "/v1/models", model(tenant="finance"), admin)
    client.put("/v1/tenants/research/quotas/jp", json={"max_gpus": 4}, headers=admin)
    for slug, what in (("research", "datasets"), ("finance", "models")):
        response = client.delete(f"/v1/tenants/{slug}", headers=admin)
        assert response.status_code == 409
        assert response.json()["error"]["code"] == "conflict"
        assert what in response.json()["error"]["message"]

    assert client.delete("/v1/datasets/support-tickets", headers=admin).status_code == 204
    assert client.delete("/v1/tenants/research", headers=admin).status_code == 204
    assert client.get("/v1/tenants/research", headers=admin).status_code == 404
    event = audit.list_events(conn, action="tenant.deleted").items[0]
    assert event.before["quotas"][0]["zone"] == "jp"
    assert event.after is None


# -- datasets --------------------------------------------------------------------------


def test_dataset_is_registered_and_shown(
    client: TestClient, admin: dict[str, str], world: None, conn: DbConnection
) -> None:
    body = dataset(zones=["tw-north", "jp-east"], description="tickets 2020-2024")
    registered = created(client, "/v1/datasets", body, admin)
    assert registered == {
        **registered,
        "name": "support-tickets",
        "tenant": "research",
        "classification": "confidential",
        "zones": ["jp-east", "tw-north"],
        "labels": {"pii": "yes"},
        "description": "tickets 2020-2024",
    }
    assert client.get("/v1/datasets/support-tickets", headers=admin).json() == registered
    event = audit.list_events(conn, action="dataset.registered").items[0]
    assert (event.object_type, event.object_id) == ("dataset", "support-tickets")
    assert event.after == registered


@pytest.mark.parametrize(
    ("body", "field", "value"),
    [
        (dataset(tenant="nobody"), "tenant", "nobody"),
        (dataset(zones=["jp-east", "mars"]), "zones", "mars"),
        (dataset(classification="secret"), "classification", None),
        (dataset(classification=None), "classification", None),
        (dataset(zones=[]), "zones", None),
        (dataset(zones=["jp", "jp"]), "zones", None),
        (dataset(zones=["Not a zone"]), "zones.0", None),
        (dataset(name="Support Tickets"), "name", None),
        (dataset(labels={"-bad-": "x"}), "labels.-bad-.[key]", None),
        (dataset(labels={"pii": None}), "labels.pii", None),
        (dataset(owner="research"), "owner", None),
    ],
)
def test_invalid_dataset_is_422_naming_the_field(
    client: TestClient,
    admin: dict[str, str],
    world: None,
    conn: DbConnection,
    body: dict[str, Any],
    field: str,
    value: str | None,
) -> None:
    before = audit.list_events(conn).total
    response = client.post("/v1/datasets", json=body, headers=admin)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "invalid_input"
    fields = error_fields(response)
    assert field in [f["field"] for f in fields]
    if value is not None:
        assert fields[0]["value"] == value
        assert repr(value) in response.json()["error"]["message"]
    # Nothing half-written: no dataset row left behind by a refused storage zone.
    assert client.get("/v1/datasets", headers=admin).json()["total"] == 0
    assert audit.list_events(conn).total == before


def test_duplicate_dataset_is_409(client: TestClient, admin: dict[str, str], world: None) -> None:
    created(client, "/v1/datasets", dataset(), admin)
    response = client.post("/v1/datasets", json=dataset(tenant="finance"), headers=admin)
    assert response.status_code == 409
    assert response.json()["error"]["details"]["field"] == "name"
    assert client.get("/v1/datasets/support-tickets", headers=admin).json()["tenant"] == "research"


def test_dataset_filters_and_pagination(
    client: TestClient, admin: dict[str, str], world: None
) -> None:
    for body in (
        dataset(name="a-tickets", zones=["tokyo-dc1"]),
        dataset(name="b-web", classification="public", zones=["tw-north"]),
        dataset(name="c-payroll", tenant="finance", classification="restricted", zones=["jp"]),
        dataset(name="d-docs", classification="internal", zones=["tw-north", "jp-east"]),
    ):
        created(client, "/v1/datasets", body, admin)

    def listed(**params: Any) -> list[str]:
        return names(client.get("/v1/datasets", params=params, headers=admin))

    assert listed() == ["a-tickets", "b-web", "c-payroll", "d-docs"]
    assert listed(tenant="finance") == ["c-payroll"]
    assert listed(classification="public") == ["b-web"]
    assert listed(zone="jp-east") == ["a-tickets", "d-docs"]  # tokyo-dc1 lies inside jp-east
    assert listed(zone="jp") == ["a-tickets", "c-payroll", "d-docs"]
    assert listed(zone="tw-north", classification="internal") == ["d-docs"]
    # A zone that does not exist is no place with nothing in it: 422 naming the parameter.
    unknown = client.get("/v1/datasets", params={"zone": "atlantis"}, headers=admin)
    assert unknown.status_code == 422
    assert [(f["field"], f["value"]) for f in error_fields(unknown)] == [("query.zone", "atlantis")]
    page = client.get("/v1/datasets", params={"limit": 2, "offset": 1}, headers=admin).json()
    assert [d["name"] for d in page["items"]] == ["b-web", "c-payroll"]
    assert (page["total"], page["limit"], page["offset"]) == (4, 2, 1)
    bad = client.get("/v1/datasets", params={"classification": "secret"}, headers=admin)
    assert bad.status_code == 422
    assert [f["field"] for f in error_fields(bad)] == ["query.classification"]


def test_dataset_is_changed_and_audited(
    client: TestClient, admin: dict[str, str], world: None, conn: DbConnection
) -> None:
    created(client, "/v1/datasets", dataset(labels={"pii": "yes", "source": "crm"}), admin)
    response = client.patch(
        "/v1/datasets/support-tickets",
        json={
            "classification": "restricted",
            "zones": ["tw-north", "jp"],
            "labels": {"pii": None, "retention": "5y"},
            "tenant": "finance",
        },
        headers=admin,
    )
    assert response.status_code == 200, response.text
    changed = response.json()
    assert changed["classification"] == "restricted"
    assert changed["zones"] == ["jp", "tw-north"]
    assert changed["labels"] == {"source": "crm", "retention": "5y"}
    assert changed["tenant"] == "finance"
    assert changed["updated_at"] > changed["created_at"]
    event = audit.list_events(conn, action="dataset.updated").items[0]
    assert event.before["classification"] == "confidential"
    assert event.before["zones"] == ["jp-east"]
    assert event.after == changed

    only_description = client.patch(
        "/v1/datasets/support-tickets", json={"description": "v2"}, headers=admin
    ).json()
    assert {**only_description, "description": "v2", "updated_at": None} == {
        **changed,
        "description": "v2",
        "updated_at": None,
    }


@pytest.mark.parametrize(
    ("body", "field", "value"),
    [
        ({"zones": ["jp", "mars"]}, "zones", "mars"),
        ({"tenant": "nobody"}, "tenant", "nobody"),
        ({"classification": None}, "classification", None),
        ({"classification": "top-secret"}, "classification", None),
        ({"zones": None}, "zones", None),
        ({"zones": []}, "zones", None),
        ({"tenant": None}, "tenant", None),
        ({"name": "renamed"}, "name", None),
    ],
)
def test_invalid_dataset_change_is_422_and_changes_nothing(
    client: TestClient,
    admin: dict[str, str],
    world: None,
    body: dict[str, Any],
    field: str,
    value: str | None,
) -> None:
    original = created(client, "/v1/datasets", dataset(), admin)
    response = client.patch("/v1/datasets/support-tickets", json=body, headers=admin)
    assert response.status_code == 422, response.text
    fields = error_fields(response)
    assert [f["field"] for f in fields] == [field]
    if value is not None:
        assert fields[0]["value"] == value
    assert client.get("/v1/datasets/support-tickets", headers=admin).json() == original


def test_dataset_is_deleted_and_audited(
    client: TestClient, admin: dict[str, str], world: None, conn: DbConnection
) -> None:
    registered = created(client, "/v1/datasets", dataset(), admin)
    assert client.delete("/v1/datasets/support-tickets", headers=admin).status_code == 204
    assert client.get("/v1/datasets/support-tickets", headers=admin).status_code == 404
    event = audit.list_events(conn, action="dataset.deleted").items[0]
    assert event.before == registered
    assert event.after is None
    # Its storage zones went with it, so the zone is free again.
    assert client.delete("/v1/zones/tw-north", headers=admin).status_code == 204


# -- models ----------------------------------------------------------------------------


def test_model_is_registered_with_provenance(
    client: TestClient, admin: dict[str, str], world: None, conn: DbConnection
) -> None:
    registered = created(client, "/v1/models", model(origin_country="us"), admin)
    assert registered == {
        **registered,
        "name": "llama-3-8b",
        "tenant": "research",
        "classification": "internal",
        "zones": ["jp-east"],
        "labels": {},
        "supplier": "Meta",
        "origin_country": "US",
        "license": "llama3",
    }
    assert client.get("/v1/models/llama-3-8b", headers=admin).json() == registered
    event = audit.list_events(conn, action="model.registered").items[0]
    assert (event.object_type, event.after) == ("model", registered)


@pytest.mark.parametrize(
    ("body", "field", "value"),
    [
        (model(origin_country="XX"), "origin_country", None),
        (model(origin_country="USA"), "origin_country", None),
        (model(origin_country=None), "origin_country", None),
        (model(supplier=""), "supplier", None),
        (model(license=""), "license", None),
        (model(classification="secret"), "classification", None),
        (model(tenant="nobody"), "tenant", "nobody"),
        (model(zones=["mars"]), "zones", "mars"),
    ],
)
def test_invalid_model_is_422_naming_the_field(
    client: TestClient,
    admin: dict[str, str],
    world: None,
    body: dict[str, Any],
    field: str,
    value: str | None,
) -> None:
    response = client.post("/v1/models", json=body, headers=admin)
    assert response.status_code == 422, response.text
    fields = error_fields(response)
    assert field in [f["field"] for f in fields]
    if value is not None:
        assert fields[0]["value"] == value


def test_model_filters_change_and_delete(
    client: TestClient, admin: dict[str, str], world: None, conn: DbConnection
) -> None:
    created(client, "/v1/models", model(), admin)
    created(
        client,
        "/v1/models",
        model(name="qwen-7b", supplier="Alibaba", origin_country="CN", zones=["tw-north"]),
        admin,
    )
    assert client.post("/v1/models", json=model(), headers=admin).status_code == 409

    def listed(**params: Any) -> list[str]:
        return names(client.get("/v1/models", params=params, headers=admin))

    assert listed(origin_country="cn") == ["qwen-7b"]
    assert listed(zone="jp") == ["llama-3-8b"]
    assert listed(tenant="finance") == []
    assert listed(classification="internal") == ["llama-3-8b", "qwen-7b"]

    changed = client.patch(
        "/v1/models/qwen-7b",
        json={"origin_country": "sg", "license": "apache-2.0", "classification": "restricted"},
        headers=admin,
    ).json()
    assert (changed["origin_country"], changed["license"], changed["supplier"]) == (
        "SG",
        "apache-2.0",
        "Alibaba",
    )
    for body, field in (
        ({"supplier": None}, "supplier"),
        ({"origin_country": "XX"}, "origin_country"),
        ({"license": None}, "license"),
    ):
        response = client.patch("/v1/models/qwen-7b", json=body, headers=admin)
        assert response.status_code == 422
        assert [f["field"] for f in error_fields(response)] == [field]
    event = audit.list_events(conn, action="model.updated").items[0]
    assert (event.before["origin_country"], event.after["origin_country"]) == ("CN", "SG")

    assert client.delete("/v1/models/qwen-7b", headers=admin).status_code == 204
    assert listed() == ["llama-3-8b"]
    assert audit.list_events(conn, action="model.deleted").items[0].object_id == "qwen-7b"


# -- artifact destinations -------------------------------------------------------------


def test_destinations(
    client: TestClient, admin: dict[str, str], world: None, conn: DbConnection
) -> None:
    body = {"name": "results-jp", "zone": "jp-east", "description": "s3://results-jp"}
    destination = created(client, "/v1/destinations", body, admin)
    assert (destination["zone"], destination["description"]) == ("jp-east", "s3://results-jp")
    assert client.get("/v1/destinations/results-jp", headers=admin).json() == destination
    assert [d["name"] for d in client.get("/v1/destinations", headers=admin).json()] == [
        "results-jp"
    ]
    duplicate = client.post("/v1/destinations", json=body, headers=admin)
    assert duplicate.status_code == 409
    assert duplicate.json()["error"]["details"]["field"] == "name"
    unknown = client.post(
        "/v1/destinations", json={"name": "results-mars", "zone": "mars"}, headers=admin
    )
    assert unknown.status_code == 422
    assert error_fields(unknown)[0] == {
        "field": "zone",
        "message": "unknown zone 'mars'",
        "value": "mars",
    }
    missing_zone = client.post("/v1/destinations", json={"name": "x"}, headers=admin)
    assert [f["field"] for f in error_fields(missing_zone)] == ["zone"]

    assert client.delete("/v1/destinations/results-jp", headers=admin).status_code == 204
    assert client.get("/v1/destinations/results-jp", headers=admin).status_code == 404
    actions = [e.action for e in audit.list_events(conn, object_type="destination").items]
    assert actions == ["destination.created", "destination.deleted"]


# -- across the registry ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("use", "users"),
    [
        (lambda c, h: c.put("/v1/tenants/finance/quotas/tw-north", json={"max_gpus": 1}, headers=h),
         "tenant quotas"),
        (lambda c, h: c.post("/v1/datasets", json=dataset(zones=["tw-north"]), headers=h),
         "datasets"),
        (lambda c, h: c.post("/v1/models", json=model(zones=["tw-north"]), headers=h), "models"),
        (lambda c, h: c.post("/v1/destinations", json={"name": "d", "zone": "tw-north"}, headers=h),
         "artifact destinations"),
    ],
)  # fmt: skip
def test_zone_used_by_the_registry_cannot_be_deleted(
    client: TestClient,
    admin: dict[str, str],
    world: None,
    use: Callable[[TestClient, dict[str, str]], Any],
    users: str,
) -> None:
    assert use(client, admin).status_code in {200, 201}
    response = client.delete("/v1/zones/tw-north", headers=admin)
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "conflict"
    assert users in response.json()["error"]["message"]
    assert client.get("/v1/zones/tw-north", headers=admin).status_code == 200


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/tenants/nobody"),
        ("DELETE", "/v1/tenants/nobody"),
        ("GET", "/v1/datasets/nothing"),
        ("PATCH", "/v1/datasets/nothing"),
        ("DELETE", "/v1/datasets/nothing"),
        ("GET", "/v1/models/nothing"),
        ("PATCH", "/v1/models/nothing"),
        ("DELETE", "/v1/models/nothing"),
        ("GET", "/v1/destinations/nowhere"),
        ("DELETE", "/v1/destinations/nowhere"),
    ],
)
def test_unknown_objects_are_404(
    client: TestClient, admin: dict[str, str], world: None, method: str, path: str
) -> None:
    body: dict[str, Any] | None = {} if method == "PATCH" else None
    response = client.request(method, path, json=body, headers=admin)
    assert response.status_code == 404, response.text
    assert response.json()["error"]["code"] == "not_found"
    assert repr(path.rsplit("/", 1)[1]) in response.json()["error"]["message"]


def test_readers_see_but_do_not_change_the_registry(
    client: TestClient, admin: dict[str, str], world: None, make_token: Callable[[Role], str]
) -> None:
    created(client, "/v1/datasets", dataset(), admin)
    operator = bearer(make_token(Role.OPERATOR))
    assert client.get("/v1/datasets/support-tickets", headers=operator).status_code == 200
    refused = client.patch(
        "/v1/datasets/support-tickets", json={"classification": "public"}, headers=operator
    )
    assert refused.status_code == 403
    assert refused.json()["error"]["details"]["permission"] == "registry:write"


def test_every_registry_change_is_in_the_chain(
    client: TestClient, admin: dict[str, str], world: None, conn: DbConnection
) -> None:
    created(client, "/v1/datasets", dataset(), admin)
    created(client, "/v1/models", model(), admin)
    created(client, "/v1/destinations", {"name": "out", "zone": "jp"}, admin)
    client.put("/v1/tenants/research/quotas/jp", json={"max_gpus": 2}, headers=admin)
    actions = {e.action for e in audit.list_events(conn, limit=1000).items}
    assert {
        "tenant.created",
        "tenant.quota_set",
        "dataset.registered",
        "model.registered",
        "destination.created",
    } <= actions
    assert audit.verify_chain(conn).ok
