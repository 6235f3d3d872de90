"""A database that goes away: 503 with ``Retry-After``, nothing acknowledged lost, and a
``/readyz`` that names what is down.

The shared PostgreSQL server is never stopped: the test database's backends are ended
with ``pg_terminate_backend`` (what a restart or a failover does to a client), and a
lasting outage is the database refusing connections (``ALLOW_CONNECTIONS false``).
"""

import threading
import time
from typing import Any

import httpx
import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg import sql

from control_plane.app import create_app
from control_plane.core.db import DbConnection
from control_plane.core.settings import Settings
from tests.support import ADMIN_URL

pytestmark = pytest.mark.integration

WRITERS = 4
TERMINATIONS = 5


def terminate_backends(owner_conn: DbConnection) -> None:
    """End every other connection to the test database, as a server restart would."""
    owner_conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )


def allow_connections(dbname: str, *, allow: bool) -> None:
    """Let the test database take new connections, or refuse them (from another database)."""
    statement = sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS {}").format(
        sql.Identifier(dbname), sql.SQL("true" if allow else "false")
    )
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin_conn:
        admin_conn.execute(statement)


def test_requests_the_database_drops_are_503_and_writes_resume(
    live_server: str, admin: dict[str, str], owner_conn: DbConnection
) -> None:
    answers: list[tuple[str, httpx.Response]] = []
    stop = threading.Event()

    def write(writer: int) -> None:
        with httpx.Client(base_url=live_server, headers=admin, timeout=30) as api:
            n = 0
            while not stop.is_set():
                slug = f"w{writer}-{n}"
                zone = {"slug": slug, "name": slug, "country": "JP"}
                answers.append((slug, api.post("/v1/zones", json=zone)))
                n += 1

    threads = [threading.Thread(target=write, args=(i,)) for i in range(WRITERS)]
    for thread in threads:
        thread.start()
    for _ in range(TERMINATIONS):
        time.sleep(0.2)
        terminate_backends(owner_conn)
    time.sleep(0.3)
    stop.set()
    for thread in threads:
        thread.join(timeout=30)

    statuses = [response.status_code for _, response in answers]
    assert set(statuses) <= {201, 503}, sorted(set(statuses))
    assert 503 in statuses, "no request was in flight when its backend ended"
    for _, response in answers:
        if response.status_code == 503:
            assert response.headers["Retry-After"] == "2"
            error = response.json()["error"]
            assert error["code"] == "service_unavailable"
            assert error["details"]["dependency"] == "database"
    with httpx.Client(base_url=live_server, headers=admin, timeout=30) as api:
        # Nothing acknowledged was lost, and writes go on.
        stored = {zone["slug"] for zone in api.get("/v1/zones").json()}
        assert {slug for slug, response in answers if response.status_code == 201} <= stored
        after = api.post("/v1/zones", json={"slug": "after", "name": "After", "country": "JP"})
        assert after.status_code == 201, after.text


def readiness(client: TestClient) -> tuple[int, dict[str, Any], str | None]:
    response = client.get("/readyz")
    return response.status_code, response.json(), response.headers.get("Retry-After")


def test_readyz_names_a_database_that_is_down_until_it_is_back(
    client: TestClient, owner_conn: DbConnection
) -> None:
    assert readiness(client) == (200, {"status": "ready", "database": "ok", "redis": "ok"}, None)
    allow_connections(owner_conn.info.dbname, allow=False)
    try:
        terminate_backends(owner_conn)
        down = {"status": "unavailable", "database": "unreachable", "redis": "ok"}
        assert readiness(client) == (503, down, "2")
        response = client.get("/v1/zones", headers={"Authorization": "Bearer sov_x"})
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "2"
        assert response.json()["error"]["details"]["dependency"] == "database"
    finally:
        allow_connections(owner_conn.info.dbname, allow=True)
    deadline = time.monotonic() + 20  # the pool retries with a growing pause
    while readiness(client)[0] != 200:
        assert time.monotonic() < deadline, "readyz did not recover"
        time.sleep(0.2)


def test_readyz_names_redis_when_it_is_down_and_stays_ready(settings: Settings) -> None:
    # Nothing listens on port 1; the API itself does not use Redis, so it stays in service.
    unreachable = settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    with TestClient(create_app(unreachable)) as client:
        degraded = {"status": "degraded", "database": "ok", "redis": "unreachable"}
        assert readiness(client) == (200, degraded, None)


def test_a_request_rolled_back_for_a_deadlock_is_409_and_stores_nothing(
    client: TestClient, admin: dict[str, str], owner_conn: DbConnection
) -> None:
    """A deadlock is PostgreSQL choosing a victim: that request is a 409 saying to retry.

    The test holds zone ``b`` and then asks for zone ``a``, while the API, re-parenting
    ``a`` under ``b``, holds ``a`` and waits for ``b``. The test's session detects
    deadlocks only after 30 s, so the API's backend (1 s) finds it and is the victim.
    """
    for zone in (
        {"slug": "a", "name": "A", "country": "JP"},
        {"slug": "b", "name": "B", "country": "JP"},
    ):
        assert client.post("/v1/zones", json=zone, headers=admin).status_code == 201
    answer: dict[str, Any] = {}

    def reparent() -> None:
        answer["response"] = client.patch("/v1/zones/a", json={"parent": "b"}, headers=admin)

    with owner_conn.transaction():
        owner_conn.execute("SET LOCAL deadlock_timeout = '30s'")
        owner_conn.execute("SELECT 1 FROM residency_zone WHERE slug = 'b' FOR UPDATE")
        thread = threading.Thread(target=reparent)
        thread.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # until the API waits for b, holding a
            waiting = owner_conn.execute(
                "SELECT count(*) AS n FROM pg_locks WHERE NOT granted AND pid <> pg_backend_pid()"
            ).fetchone()
            if waiting and waiting["n"]:
                break
            time.sleep(0.05)
        owner_conn.execute("SELECT 1 FROM residency_zone WHERE slug = 'a' FOR UPDATE")
    thread.join(timeout=30)
    response = answer["response"]
    assert response.status_code == 409, response.text
    error = response.json()["error"]
    assert error["code"] == "conflict"
    assert error["details"]["reason"] == "concurrent_change"
    shown = client.get("/v1/zones/a", headers=admin).json()
    assert shown["parent"] is None
    # Sent again, it goes through.
    again = client.patch("/v1/zones/a", json={"parent": "b"}, headers=admin)
    assert again.status_code == 200, again.text
