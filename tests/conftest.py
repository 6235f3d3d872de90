"""Shared fixtures: a migrated template database per session, cloned for every test.

Cloning a template (``CREATE DATABASE ... TEMPLATE``) gives each test a private, fully
migrated database in a few tens of milliseconds, so tests never see each other's rows.
"""

import logging
import os
import sys
import uuid
from collections.abc import Callable, Iterator

import pytest
from celery import Celery
from celery.contrib.testing.worker import start_worker
from fastapi import FastAPI
from fastapi.testclient import TestClient

from control_plane.access import service as access
from control_plane.access.models import Role
from control_plane.app import create_app
from control_plane.audit import service as audit
from control_plane.celery_app import create_celery
from control_plane.cli.main import main
from control_plane.core import migrations
from control_plane.core.db import DbConnection, connect
from control_plane.core.settings import Settings
from control_plane.inventory import agents, zones
from control_plane.inventory.models import ZoneCreate
from tests.support import (
    REDIS_URL,
    SECRET,
    TEST_ACTOR,
    MakeBootstrap,
    Run,
    api_in_thread,
    bearer,
    scratch_database,
    url_for,
)


@pytest.fixture(autouse=True)
def _no_sovereign_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests must not pick up a developer's SOVEREIGN_* or SOVCTL_* settings."""
    for key in list(os.environ):
        if key.startswith(("SOVEREIGN_", "SOVCTL_")):
            monkeypatch.delenv(key)


_ROOT_LEVEL = logging.getLogger().level


@pytest.fixture(autouse=True)
def _our_loggers_are_heard() -> None:
    """Each test hears our loggers, whatever an earlier one configured in the process.

    Something earlier in a full run can leave loggers that existed then disabled, or the
    root logger raised: an embedded Celery worker (``start_worker``) sets the root level
    to its own ``loglevel``, ERROR by default. A test that reads its warnings with
    ``caplog`` would then see nothing: seen in CI for the label sync and the audit key,
    never alone.
    """
    logging.getLogger().setLevel(_ROOT_LEVEL)
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if name.startswith(("control_plane", "agents")) and isinstance(logger, logging.Logger):
            logger.disabled = False
            logger.propagate = True


@pytest.fixture(scope="session")
def template_database() -> Iterator[str]:
    """A database with every migration applied, used only as a template."""
    with scratch_database("sovereign_tmpl") as name:
        migrations.upgrade(url_for(name))
        yield name


@pytest.fixture
def database_url(template_database: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """A private, migrated database for one test (owner/login connection URL).

    When the test is done, its audit chain must still verify, as ``sovctl audit verify``
    checks it: whatever the test sent, through whatever route, the record holds. A test
    that rewrites the log on purpose says so with ``@pytest.mark.tampers_audit``.
    """
    with scratch_database("sovereign_t", template=template_database) as name:
        url = url_for(name)
        yield url
        if request.node.get_closest_marker("tampers_audit") is None:
            with connect(url) as conn:
                result = audit.verify_chain(conn)
            assert result.ok, f"audit chain broken after the test: {result}"


@pytest.fixture
def settings(database_url: str) -> Settings:
    """Settings pointing at the test's database, with a queue of its own on Redis."""
    return Settings(
        database_url=database_url,
        redis_url=REDIS_URL,
        secret_key=SECRET,
        celery_queue=f"sovereign-test-{uuid.uuid4().hex[:8]}",
        db_pool_min_size=1,
        db_pool_max_size=4,
    )


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    return create_app(settings)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def conn(database_url: str) -> Iterator[DbConnection]:
    """A connection as the application role (what the API uses)."""
    with connect(database_url) as connection:
        yield connection


@pytest.fixture
def owner_conn(database_url: str) -> Iterator[DbConnection]:
    """A connection as the database owner (what migrations and a tamperer use)."""
    with connect(database_url, as_app=False) as connection:
        yield connection


@pytest.fixture
def make_token(conn: DbConnection) -> Callable[[Role], str]:
    """Create a token of a role and return its secret."""

    def make(role: Role, name: str | None = None) -> str:
        issued = access.create_token(
            conn,
            TEST_ACTOR,
            name=name or f"{role.value}-{uuid.uuid4().hex[:6]}",
            role=role,
            secret_key=SECRET,
        )
        return issued.token

    return make


@pytest.fixture
def make_bootstrap(conn: DbConnection) -> MakeBootstrap:
    """Create a bootstrap token scoped to ``zone`` (default ``rack``, made if missing).

    The rack installer's token: the nodes it registers stand in that zone, confirmed, so
    they are active at once (an unscoped bootstrap token's nodes wait ``planned``).
    """

    def make(zone: str = "rack", site: str | None = None, country: str = "JP") -> str:
        if zone not in {z.slug for z in zones.list_zones(conn)}:
            zones.create_zone(
                conn, TEST_ACTOR, ZoneCreate(slug=zone, name=zone.title(), country=country)
            )
        issued = agents.create_bootstrap_token(
            conn,
            TEST_ACTOR,
            name=f"bootstrap-{zone}-{uuid.uuid4().hex[:6]}",
            secret_key=SECRET,
            zone=zone,
            site=site,
        )
        return issued.token

    return make


@pytest.fixture
def admin(make_token: Callable[[Role], str]) -> dict[str, str]:
    """Headers that authenticate as a fresh admin token."""
    return bearer(make_token(Role.ADMIN))


@pytest.fixture
def live_server(settings: Settings) -> Iterator[str]:
    """The real API on a real port, in a thread of the test process."""
    with api_in_thread(settings) as base:
        yield base


@pytest.fixture
def sovctl(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Run:
    """Run ``sovctl`` in-process with the test database; return (exit code, stdout, stderr)."""
    monkeypatch.setenv("SOVEREIGN_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("SOVEREIGN_SECRET_KEY", settings.secret_key.get_secret_value())
    monkeypatch.setenv("SOVCTL_CONFIG", "/nonexistent/sovctl.yaml")

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        monkeypatch.setattr(sys, "argv", ["sovctl", *args])
        code = main()
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def sovctl_as(
    sovctl: Run,
    live_server: str,
    make_token: Callable[[Role], str],
    monkeypatch: pytest.MonkeyPatch,
) -> Callable[[Role], Run]:
    """Point ``sovctl`` at the live API (``live_server``) with a fresh token of a role."""

    def point(role: Role) -> Run:
        monkeypatch.setenv("SOVCTL_URL", live_server)
        monkeypatch.setenv("SOVCTL_TOKEN", make_token(role))
        return sovctl

    return point


@pytest.fixture
def admin_sovctl(sovctl_as: Callable[[Role], Run]) -> Run:
    """``sovctl`` pointed at the live API (``live_server``) with a fresh admin token."""
    return sovctl_as(Role.ADMIN)


@pytest.fixture
def celery_app(settings: Settings) -> Celery:
    """The real Celery app on Redis, with this test's own queue."""
    return create_celery(settings)


@pytest.fixture
def worker(celery_app: Celery, settings: Settings) -> Iterator[None]:
    """A real Celery worker (solo pool, in a thread) consuming this test's queue."""
    with start_worker(
        celery_app,
        pool="solo",
        perform_ping_check=False,
        queues=[settings.celery_queue],
        shutdown_timeout=20,
    ):
        yield
