"""Apply the versioned SQL migrations in ``control_plane/migrations`` with yoyo-migrations.

yoyo keeps a record of applied migrations and a lock table, so two processes upgrading at
once do not race. Migrations run as the login user (the schema owner), not ``APP_ROLE``.
"""

from importlib import resources
from typing import Any
from urllib.parse import quote, urlencode

import psycopg
from psycopg import sql
from yoyo import get_backend, read_migrations

from control_plane.core.db import postgres_unreachable_message
from control_plane.core.errors import ServiceUnavailableError


def _yoyo_url(database_url: str) -> str:
    """Rewrite any libpq URL or ``key=value`` string as the URL yoyo wants (psycopg 3)."""
    params = {k: str(v) for k, v in psycopg.conninfo.conninfo_to_dict(database_url).items()}
    user = quote(params.pop("user", ""), safe="")
    password = quote(params.pop("password", ""), safe="")
    host = params.pop("host", "")
    port = params.pop("port", "")
    dbname = quote(params.pop("dbname", ""), safe="")
    auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    netloc = f"{auth}{host}{':' + port if port else ''}"
    query = f"?{urlencode(params)}" if params else ""
    return f"postgresql+psycopg://{netloc}/{dbname}{query}"


def ensure_database(database_url: str) -> bool:
    """Create the database named in ``database_url`` if it is missing; True if created.

    Saves a manual ``createdb`` on a fresh machine; in production the DBA has made it.
    """
    params = psycopg.conninfo.conninfo_to_dict(database_url)
    dbname = str(params.get("dbname") or "")
    maintenance = psycopg.conninfo.make_conninfo(database_url, dbname="postgres")
    try:
        with psycopg.connect(maintenance, autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)
            ).fetchone()
            if exists:
                return False
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
            return True
    except psycopg.OperationalError as exc:
        raise ServiceUnavailableError(postgres_unreachable_message(database_url)) from exc


def _backend(database_url: str) -> Any:
    try:
        return get_backend(_yoyo_url(database_url))
    except psycopg.OperationalError as exc:
        raise ServiceUnavailableError(postgres_unreachable_message(database_url)) from exc


def _migrations() -> Any:
    return read_migrations(str(resources.files("control_plane").joinpath("migrations")))


def pending(database_url: str) -> list[str]:
    """Return the ids of migrations not yet applied, in order."""
    with _backend(database_url) as backend:
        return [m.id for m in backend.to_apply(_migrations())]


def upgrade(database_url: str) -> list[str]:
    """Apply every pending migration; return the ids applied (empty when up to date)."""
    with _backend(database_url) as backend, backend.lock():
        to_apply = backend.to_apply(_migrations())
        backend.apply_migrations(to_apply)
        return [m.id for m in to_apply]
