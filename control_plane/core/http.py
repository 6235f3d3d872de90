"""HTTP plumbing shared by every router: dependencies, request ids and error mapping.

Routers declare what they need with the ``Annotated`` aliases here (``Conn``,
``RequestId``, ``SettingsDep``, ``Limit``, ``Offset``), and who may call them with
``access.http.require(permission)``; errors from any layer become one JSON shape in
``install_error_handlers``.
"""

import contextlib
import logging
import re
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

import psycopg
from fastapi import Depends, FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from psycopg.pq import TransactionStatus
from psycopg_pool import ConnectionPool, PoolTimeout
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from control_plane.core.db import DbConnection
from control_plane.core.errors import (
    ConflictError,
    InvalidInputError,
    ServiceUnavailableError,
    SovereignError,
)
from control_plane.core.settings import Settings
from control_plane.domain.types import BIGINT_END

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-ID"
_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


# Dependencies that only read request or app state are ``async``: FastAPI runs a sync
# dependency in the thread pool, a hop that costs more than the work under load.


async def get_settings(request: Request) -> Settings:
    """The settings the app was built with."""
    settings: Settings = request.app.state.settings
    return settings


#: How long the event loop itself may wait for a pooled connection that the pool's
#: statistics said was idle (another request can take it first); then a worker thread waits.
_IDLE_CONNECTION_WAIT_SECONDS = 0.001
_CONNECTION_WAIT_SECONDS = 5.0


async def get_conn(request: Request) -> AsyncIterator[DbConnection]:
    """Lend one pooled connection for the request; services open transactions on it.

    ``async`` although the pool is synchronous: taking an idle connection and giving back
    one that has no transaction open cost no I/O, so they run on the event loop instead of
    costing two hops through the thread pool per request. Waiting for a busy pool, and
    giving back a connection with a transaction still open (which rolls it back), happen
    in a worker thread.
    """
    pool: ConnectionPool[DbConnection] = request.app.state.pool
    conn: DbConnection | None = None
    if pool.get_stats().get("pool_available", 0) > 0:
        with contextlib.suppress(PoolTimeout):
            conn = pool.getconn(timeout=_IDLE_CONNECTION_WAIT_SECONDS)
    if conn is None:
        try:
            conn = await run_in_threadpool(pool.getconn, _CONNECTION_WAIT_SECONDS)
        except PoolTimeout as exc:
            raise ServiceUnavailableError(
                f"no database connection within {_CONNECTION_WAIT_SECONDS:g} s: the database "
                "is down or every connection is busy; retry shortly",
                details={"dependency": "database"},
            ) from exc
    try:
        yield conn
    finally:
        if conn.info.transaction_status == TransactionStatus.IDLE:
            pool.putconn(conn)
        else:
            await run_in_threadpool(pool.putconn, conn)


async def get_request_id(request: Request) -> str:
    """The request's id (from ``X-Request-ID`` when the caller sent a sane one)."""
    request_id: str = request.state.request_id
    return request_id


Conn = Annotated[DbConnection, Depends(get_conn)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
RequestId = Annotated[str, Depends(get_request_id)]
#: Page size and start for list routes: at most 500 items a page.
Limit = Annotated[int, Query(ge=1, le=500, description="Items per page (at most 500).")]
#: ``offset`` is bounded by what PostgreSQL's ``OFFSET`` (a bigint) takes, so every value
#: is either served (an empty page past the end) or a 422 that names it.
Offset = Annotated[int, Query(ge=0, lt=BIGINT_END, description="Items to skip.")]


def _field_name(loc: tuple[int | str, ...], error_type: str) -> str:
    if error_type == "json_invalid":
        return "body"  # the location is a character offset, not a field
    parts = list(loc)
    if parts and parts[0] == "body":
        parts = parts[1:]
    # A repeatable query parameter (``?action=a&action=b``) is named, not its position.
    if len(parts) == 3 and parts[0] == "query" and isinstance(parts[2], int):
        parts = parts[:2]
    return ".".join(str(p) for p in parts) or "body"


def _validation_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    fields: list[dict[str, Any]] = [
        {
            "field": _field_name(tuple(err["loc"]), err["type"]),
            "message": err["msg"].removeprefix("Value error, "),
            "type": err["type"],
        }
        for err in exc.errors()
    ]
    message = "; ".join(f"{f['field']}: {f['message']}" for f in fields)
    body = {"error": {"code": "invalid_input", "message": message, "details": {"fields": fields}}}
    return JSONResponse(status_code=422, content=body)


_HTTP_CODES = {
    401: "not_authenticated",
    404: "not_found",
    405: "method_not_allowed",
}


def _http_error(_: Request, exc: Exception) -> Response:
    """Starlette's own errors (unknown route, wrong method) in our error shape."""
    assert isinstance(exc, StarletteHTTPException)
    body = {
        "error": {
            "code": _HTTP_CODES.get(exc.status_code, "http_error"),
            "message": str(exc.detail),
            "details": {},
        }
    }
    return JSONResponse(status_code=exc.status_code, content=body, headers=exc.headers)


def _method_not_allowed(request: Request, exc: Exception) -> Response:
    """A 405 whose ``Allow`` names every method the API documents for the path.

    Starlette names only the methods of the first route that matched the path, and FastAPI
    makes a route per method: ``OPTIONS /v1/zones/{slug}`` would say ``Allow: GET`` and
    leave out PATCH and DELETE. The OpenAPI document lists every method of every path;
    where several of its paths match, the one with the fewest parameters is the path, as
    OpenAPI matches them (``/v1/policies/whatif`` before ``/v1/policies/{name}``).
    """
    response = _http_error(request, exc)
    document: dict[str, Any] = request.app.openapi()
    path = request.url.path
    matching = [
        (template.count("{"), operations)
        for template, operations in document.get("paths", {}).items()
        if compile_path(template)[0].match(path)
    ]
    if matching:
        fewest = min(parameters for parameters, _ in matching)
        allowed = {m.upper() for n, ops in matching if n == fewest for m in ops}
        response.headers["Allow"] = ", ".join(sorted(allowed))
    return response


def _sovereign_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SovereignError)
    if exc.status_code >= 500:
        log.error("request %s failed: %s", request.state.request_id, exc.message)
    return _error_response(exc.status_code, exc.to_body(), exc.headers)


#: How long a client should wait before retrying a 503: the outages behind one (a restart,
#: a failover, a pool that is full) are over in seconds.
RETRY_AFTER_SECONDS = 2


def _error_response(
    status: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> Response:
    """An error answer with the error's own headers; a 503 tells when to retry."""
    if status == 503:
        headers = {"Retry-After": str(RETRY_AFTER_SECONDS), **(headers or {})}
    return JSONResponse(status_code=status, content=body, headers=headers)


#: SQLSTATEs of a database that is gone rather than of a statement that failed: connection
#: exceptions (class 08), insufficient resources (class 53), and the server shutting down,
#: crashing, starting up, or closing an idle session (57P01, 57P02, 57P03, 57P05).
_OUTAGE_CLASSES = frozenset({"08", "53"})
_OUTAGE_STATES = frozenset({"57P01", "57P02", "57P03", "57P05"})


def is_database_outage(exc: psycopg.OperationalError) -> bool:
    """Whether ``exc`` says the database is unavailable, so a retry may succeed.

    No SQLSTATE means the client library itself gave up: the connection broke, none could
    be opened, or the pool had none to lend in time (``PoolTimeout``).
    """
    state = exc.sqlstate
    return state is None or state[:2] in _OUTAGE_CLASSES or state in _OUTAGE_STATES


#: SQLSTATEs of a transaction PostgreSQL rolled back because of a concurrent one: a
#: serialization failure or a deadlock. Nothing was stored, and the same request sent
#: again normally succeeds.
_CONCURRENT_STATES = frozenset({"40001", "40P01"})


def _database_error(request: Request, exc: Exception) -> Response:
    """A database that went away mid-request is a 503 with ``Retry-After``, not a 500.

    A transaction rolled back for a concurrent one (a deadlock, a serialization failure)
    is a 409 ``conflict`` saying so: nothing was stored and a retry may succeed.
    """
    assert isinstance(exc, psycopg.OperationalError)
    if exc.sqlstate in _CONCURRENT_STATES:
        log.info(
            "request %s: rolled back for a concurrent change: %s", request.state.request_id, exc
        )
        conflict = ConflictError(
            "a concurrent change conflicted with this request; nothing was stored, send it again",
            details={"reason": "concurrent_change", "request_id": request.state.request_id},
        )
        return _error_response(conflict.status_code, conflict.to_body())
    if not is_database_outage(exc):
        return _unexpected_error(request, exc)
    log.warning("request %s: database unavailable: %s", request.state.request_id, exc)
    error = ServiceUnavailableError(
        "the database is unavailable; retry shortly",
        details={"dependency": "database", "request_id": request.state.request_id},
    )
    return _error_response(error.status_code, error.to_body())


def _unstorable_value(request: Request, exc: Exception) -> Response:
    """Safety net for values validation let through but PostgreSQL cannot store."""
    log.warning("request %s: unstorable value: %s", request.state.request_id, exc)
    body = InvalidInputError(
        "a value in the request cannot be stored (a NUL character, or a number out of range)",
        details={"request_id": request.state.request_id},
    ).to_body()
    return JSONResponse(status_code=422, content=body)


def _unexpected_error(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error in request %s", request.state.request_id, exc_info=exc)
    body = SovereignError(
        "internal error; the request id identifies it in the server log",
        details={"request_id": request.state.request_id},
    ).to_body()
    return JSONResponse(status_code=500, content=body)


def install_error_handlers(app: FastAPI) -> None:
    """Map every error to ``{"error": {"code", "message", "details"}}`` with its status."""
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(405, _method_not_allowed)
    app.add_exception_handler(SovereignError, _sovereign_error)
    app.add_exception_handler(psycopg.DataError, _unstorable_value)
    app.add_exception_handler(psycopg.OperationalError, _database_error)
    app.add_exception_handler(Exception, _unexpected_error)


class RequestIdMiddleware:
    """Give each request an id, echo it back, and let the audit log record it.

    A plain ASGI middleware (not ``BaseHTTPMiddleware``, which costs a task group and
    memory streams per request): an incoming ``X-Request-ID`` that looks safe is kept,
    anything else is replaced by a fresh UUID; ``request.state.request_id`` holds it.
    """

    def __init__(self, app: ASGIApp) -> None:
        """Wrap ``app``."""
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Tag the request and its response start with the id."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = Headers(scope=scope).get(REQUEST_ID_HEADER, "")
        request_id = incoming if _SAFE_REQUEST_ID.match(incoming) else str(uuid.uuid4())
        scope.setdefault("state", {})["request_id"] = request_id

        async def tagged(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).append(REQUEST_ID_HEADER, request_id)
            await send(message)

        await self.app(scope, receive, tagged)
