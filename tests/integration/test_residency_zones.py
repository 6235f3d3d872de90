"""A zone inside another lies in its parent's country: creating, moving or editing a zone
may not make a child claim another country than the zone it is in."""

from typing import Any

import pytest
from fastapi.testclient import TestClient

from control_plane.audit import service as audit
from control_plane.core.db import DbConnection

pytestmark = pytest.mark.integration


@pytest.fixture
def zones(client: TestClient, admin: dict[str, str]) -> None:
    """de > de-fra, and us on its own."""
    for zone in (
        {"slug": "de", "name": "Germany", "country": "DE"},
        {"slug": "de-fra", "name": "Frankfurt", "country": "DE", "parent": "de"},
        {"slug": "us", "name": "United States", "country": "US"},
        {"slug": "us-cage", "name": "US cage", "country": "US"},
    ):
        response = client.post("/v1/zones", json=zone, headers=admin)
        assert response.status_code == 201, response.text


def refused_field(response: Any) -> tuple[str, str]:
    """The one field a 422 names, and its message."""
    assert response.status_code == 422, response.text
    body = response.json()["error"]
    assert body["code"] == "invalid_input"
    [field] = body["details"]["fields"]
    return field["field"], field["message"]


def zone_events(conn: DbConnection) -> int:
    return audit.list_events(conn, object_type="zone").total


def test_a_child_zone_may_not_claim_another_country_than_its_parent(
    client: TestClient, admin: dict[str, str], zones: None, conn: DbConnection
) -> None:
    before = zone_events(conn)
    response = client.post(
        "/v1/zones",
        json={"slug": "de-fra-us-cage", "name": "US cage", "country": "US", "parent": "de-fra"},
        headers=admin,
    )
    field, message = refused_field(response)
    assert field == "country"
    assert "'de-fra'" in message
    assert "DE" in message
    assert client.get("/v1/zones/de-fra-us-cage", headers=admin).status_code == 404
    assert zone_events(conn) == before
    # In the parent's country it is a zone like any other (any case on input).
    response = client.post(
        "/v1/zones",
        json={"slug": "de-fra-cage", "name": "Cage", "country": "de", "parent": "de-fra"},
        headers=admin,
    )
    assert response.status_code == 201, response.text


def test_moving_a_zone_under_a_parent_of_another_country_is_refused(
    client: TestClient, admin: dict[str, str], zones: None, conn: DbConnection
) -> None:
    before = zone_events(conn)
    field, message = refused_field(
        client.patch("/v1/zones/us-cage", json={"parent": "de-fra"}, headers=admin)
    )
    assert field == "parent"
    assert "US" in message
    assert client.get("/v1/zones/us-cage", headers=admin).json()["parent"] is None
    # Moving it and changing its country in one request names the country that is wrong.
    field, _ = refused_field(
        client.patch("/v1/zones/us-cage", json={"parent": "de-fra", "country": "FR"}, headers=admin)
    )
    assert field == "country"
    assert zone_events(conn) == before
    moved = client.patch(
        "/v1/zones/us-cage", json={"parent": "de-fra", "country": "DE"}, headers=admin
    )
    assert moved.status_code == 200, moved.text
    assert (moved.json()["parent"], moved.json()["country"]) == ("de-fra", "DE")
    # And under a parent of its own country.
    back = client.patch("/v1/zones/us-cage", json={"parent": "us", "country": "US"}, headers=admin)
    assert back.status_code == 200, back.text


def test_a_child_may_not_change_its_country_away_from_its_parent(
    client: TestClient, admin: dict[str, str], zones: None
) -> None:
    field, message = refused_field(
        client.patch("/v1/zones/de-fra", json={"country": "US"}, headers=admin)
    )
    assert field == "country"
    assert "'de'" in message
    assert client.get("/v1/zones/de-fra", headers=admin).json()["country"] == "DE"
    # Other edits of a child are fine.
    renamed = client.patch("/v1/zones/de-fra", json={"name": "Frankfurt am Main"}, headers=admin)
    assert renamed.status_code == 200, renamed.text


def test_a_parent_may_not_change_its_country_while_it_has_children(
    client: TestClient, admin: dict[str, str], zones: None
) -> None:
    field, message = refused_field(
        client.patch("/v1/zones/de", json={"country": "FR"}, headers=admin)
    )
    assert field == "country"
    assert "de-fra" in message
    assert client.get("/v1/zones/de", headers=admin).json()["country"] == "DE"
    # The same country again is no change; a childless zone changes freely.
    assert client.patch("/v1/zones/de", json={"country": "de"}, headers=admin).status_code == 200
    assert client.patch("/v1/zones/us", json={"country": "CA"}, headers=admin).status_code == 200
    # Detach the child, and the parent may move to another country.
    detached = client.patch("/v1/zones/de-fra", json={"parent": None}, headers=admin)
    assert detached.status_code == 200, detached.text
    assert client.patch("/v1/zones/de", json={"country": "FR"}, headers=admin).status_code == 200
