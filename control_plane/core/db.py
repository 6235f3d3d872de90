"""PostgreSQL access: the connection pool, named SQL queries and error translation.

Every feature keeps its SQL in a ``queries.sql`` beside its ``repository.py``, one query
per ``-- name: query_name`` header, with ``%(param)s`` placeholders. Repository functions
take the caller's connection; the caller (a service function) owns the transaction. Rows
leave a repository typed (``fetch_one_as`` and the other ``*_as`` helpers, psycopg's
``class_row`` into a pydantic model or a dataclass); the plain ``fetch_one``/``fetch_all``
are for single values (a count, a generation, a list of ids) the repository returns typed.
"""

import functools
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from importlib import resources
from typing import Any, LiteralString, TypeVar, cast

import psycopg
from psycopg import Connection, sql
from psycopg.rows import DictRow, class_row, dict_row
from psycopg_pool import ConnectionPool

from control_plane.core.errors import (
    ConflictError,
    InvalidInputError,
    ServiceUnavailableError,
    SovereignError,
)

#: The database role the application runs as. Migrations grant it what it may do (and,
#: for the audit log, what it may not: UPDATE and DELETE); every pooled connection
#: switches to it, so even a superuser login cannot rewrite history through the API.
APP_ROLE = "sovereign_app"

DbConnection = Connection[DictRow]

#: A row type: a dataclass or pydantic model whose fields are the query's columns.
RowT = TypeVar("RowT")

_NAME_HEADER = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)


@functools.cache
def load_queries(package: str, resource: str = "queries.sql") -> Mapping[str, LiteralString]:
    """Parse a package's ``queries.sql`` into ``{name: sql}``, once per process.

    The text comes from a file we ship, not from input, so it is safe to treat as a
    ``LiteralString`` for psycopg's type checks.
    """
    text = resources.files(package).joinpath(resource).read_text(encoding="utf-8")
    parts = _NAME_HEADER.split(text)
    queries: dict[str, LiteralString] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in queries:
            raise ValueError(f"{package}/{resource}: query {name!r} is defined twice")
        queries[name] = cast(LiteralString, body.strip())
    return queries


def postgres_unreachable_message(database_url: str) -> str:
    """Say in one sentence that PostgreSQL is down and how to start it."""
    host = psycopg.conninfo.conninfo_to_dict(database_url).get("host", "localhost")
    return (
        f"PostgreSQL is not reachable at {host} ({database_url.split('@')[-1]}); start it with "
        "`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` "
        "or point SOVEREIGN_DATABASE_URL at a running server."
    )


def _configure(conn: DbConnection) -> None:
    conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(APP_ROLE)))


def create_pool(
    database_url: str, *, min_size: int = 1, max_size: int = 10
) -> ConnectionPool[DbConnection]:
    """Open a pool of autocommit connections running as ``APP_ROLE``.

    Autocommit keeps reads cheap; writes open ``conn.transaction()`` explicitly so the
    change and its audit event commit together.
    """
    pool: ConnectionPool[DbConnection] = ConnectionPool(
        database_url,
        min_size=min_size,
        max_size=max_size,
        kwargs={"autocommit": True, "row_factory": dict_row},
        configure=_configure,
        connection_class=Connection[DictRow],
        open=False,
        name="sovereign",
    )
    try:
        pool.open(wait=True, timeout=10)
    except psycopg.OperationalError as exc:
        pool.close()
        raise ServiceUnavailableError(postgres_unreachable_message(database_url)) from exc
    except Exception:
        pool.close()
        raise
    return pool


def connect(database_url: str, *, as_app: bool = True) -> DbConnection:
    """Open one connection (for the CLI and Celery tasks), as ``APP_ROLE`` unless told not."""
    try:
        conn = psycopg.connect(database_url, autocommit=True, row_factory=dict_row)
    except psycopg.OperationalError as exc:
        raise ServiceUnavailableError(postgres_unreachable_message(database_url)) from exc
    if as_app:
        _configure(conn)
    return conn


ErrorFactory = Callable[[psycopg.errors.IntegrityError], SovereignError]


def unique(field: str, message: str) -> ErrorFactory:
    """Map a unique violation to a 409 that names the field."""
    return lambda exc: ConflictError(
        f"{field}: {message}", details={"field": field, "constraint": exc.diag.constraint_name}
    )


def in_use(message: str) -> ErrorFactory:
    """Map a foreign-key violation on delete (something still refers to the row) to a 409."""
    return lambda exc: ConflictError(message, details={"constraint": exc.diag.constraint_name})


def refused(field: str, message: str) -> ErrorFactory:
    """Map a check-constraint violation to a 422 that names the field it is about."""
    return lambda exc: InvalidInputError.for_field(field, message)


_KEY_DETAIL = re.compile(r"^Key \((?P<column>[^)]*)\)=\((?P<value>.*)\) ")


def references(field: str, message: str) -> ErrorFactory:
    """Map a foreign-key violation to a 422 that names the field and the value given."""

    def factory(exc: psycopg.errors.IntegrityError) -> SovereignError:
        found = _KEY_DETAIL.match(exc.diag.message_detail or "")
        value = found.group("value") if found else None
        text = f"{message} {value!r}" if value is not None else message
        return InvalidInputError.for_field(field, text, value)

    return factory


@contextmanager
def translate_integrity_errors(constraints: Mapping[str, ErrorFactory]) -> Iterator[None]:
    """Turn named constraint violations into domain errors at the repository boundary.

    A violation of a constraint not in ``constraints`` is a bug, so it propagates.
    """
    try:
        yield
    except psycopg.errors.IntegrityError as exc:
        factory = constraints.get(exc.diag.constraint_name or "")
        if factory is None:
            raise
        raise factory(exc) from exc


def fetch_one(
    conn: DbConnection, query: LiteralString, params: Mapping[str, Any]
) -> DictRow | None:
    """Run a query and return its first row, or None."""
    return conn.execute(query, params).fetchone()


def fetch_returning(
    conn: DbConnection,
    query: LiteralString,
    params: Mapping[str, Any],
    constraints: Mapping[str, ErrorFactory] | None = None,
) -> DictRow:
    """Run a write with ``RETURNING`` and return its row, translating named violations.

    For statements that always yield a row when they succeed (INSERT, upsert); a missing
    row is a bug, not an input error.
    """
    with translate_integrity_errors(constraints or {}):
        row = conn.execute(query, params).fetchone()
    if row is None:
        raise RuntimeError("a write with RETURNING returned no row")
    return row


def fetch_all(conn: DbConnection, query: LiteralString, params: Mapping[str, Any]) -> list[DictRow]:
    """Run a query and return every row."""
    return conn.execute(query, params).fetchall()


# -- typed rows: what crosses the repository boundary ---------------------------------


def fetch_one_as(
    conn: DbConnection, row_type: type[RowT], query: LiteralString, params: Mapping[str, Any]
) -> RowT | None:
    """Run a query and return its first row as ``row_type`` (columns by name), or None.

    ``row_type`` is a dataclass or a pydantic model; a column it lacks, or a field the
    query does not return, fails here, at the database boundary, not in a service.
    """
    with conn.cursor(row_factory=class_row(row_type)) as cursor:
        return cursor.execute(query, params).fetchone()


def fetch_all_as(
    conn: DbConnection, row_type: type[RowT], query: LiteralString, params: Mapping[str, Any]
) -> list[RowT]:
    """Run a query and return every row as ``row_type`` (see ``fetch_one_as``)."""
    with conn.cursor(row_factory=class_row(row_type)) as cursor:
        return cursor.execute(query, params).fetchall()


def fetch_returning_as(
    conn: DbConnection,
    row_type: type[RowT],
    query: LiteralString,
    params: Mapping[str, Any],
    constraints: Mapping[str, ErrorFactory] | None = None,
) -> RowT:
    """A write with ``RETURNING`` whose row comes back as ``row_type`` (see ``fetch_returning``)."""
    with translate_integrity_errors(constraints or {}):
        row = fetch_one_as(conn, row_type, query, params)
    if row is None:
        raise RuntimeError("a write with RETURNING returned no row")
    return row


def fetch_page_as(
    conn: DbConnection,
    row_type: type[RowT],
    page_query: LiteralString,
    count_query: LiteralString,
    filters: Mapping[str, Any],
    limit: int,
    offset: int,
) -> tuple[list[RowT], int]:
    """One page of typed rows matching ``filters`` and how many match in all.

    ``page_query`` takes ``filters`` plus ``limit`` and ``offset``; ``count_query`` takes
    ``filters`` alone and returns one row with ``total``.
    """
    rows = fetch_all_as(conn, row_type, page_query, {**filters, "limit": limit, "offset": offset})
    total = fetch_one(conn, count_query, filters)
    return rows, int(total["total"]) if total else 0
